"""httpx.Auth adapter: adds the provider's credentials; on a rejection, invalidates and retries once."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator

import httpx

from consumer.auth.base import TokenProvider, headers_for


def token_rejected(response: httpx.Response) -> bool:
    """True if a resource server rejected the token: 401, or WWW-Authenticate error="invalid_token"."""
    if response.status_code == 401:
        return True
    challenge = response.headers.get("WWW-Authenticate", "")
    return "invalid_token" in challenge and challenge.lower().startswith("bearer")


class BearerAuth(httpx.Auth):
    """`httpx.AsyncClient(auth=BearerAuth(provider))`: async only.

    Sends `Authorization: Bearer <token>` (or the provider's raw header, or nothing for grant none).
    When the response says the token was rejected, calls `provider.invalidate(token)` and retries the
    request once with a new token (if the provider hands out a different one).
    """

    def __init__(self, provider: TokenProvider) -> None:
        self._provider = provider

    def __repr__(self) -> str:
        return f"BearerAuth({self._provider!r})"

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("BearerAuth needs httpx.AsyncClient (token providers are asyncio-based)")
        yield request  # pragma: no cover

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self._provider.get_token()
        request.headers.update(headers_for(self._provider.header_name, token))
        response = yield request
        if not token or not token_rejected(response):
            return
        self._provider.invalidate(token)
        fresh = await self._provider.get_token()
        if fresh and fresh != token:
            request.headers.update(headers_for(self._provider.header_name, fresh))
            yield request
