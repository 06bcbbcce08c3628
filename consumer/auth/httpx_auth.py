"""THE 401 -> invalidate -> retry-once flow, as an `httpx.Auth` generator (no I/O of its own).

    http = httpx.AsyncClient(auth=BearerAuth(provider))                 # REST: snapshots, check-config
    await http.post(negotiate_url, auth=BearerAuth(provider, rejected=rejected_401_403))  # negotiate

The flow: take a token from the provider, send the request with it (`headers_for`); if the response
says the token was rejected (`rejected(response)`: by default `token_rejected`, i.e. 401 or a Bearer
challenge with `error="invalid_token"`), call `provider.invalidate(token)`, take a fresh token and send
the request once more — only when the provider hands out a *different* token (a static or empty one
would be rejected again). The second response is final, whatever it says; a token it rejects is
invalidated too, so the next request starts with a new one. An empty token (grant none) sends no
credentials and is never retried.

Requests httpx does not send drive the same generator (`async_auth_flow`): the SignalR client's
WebSocket upgrade (`consumer.signalr.connector`) sends each request it yields and answers with an
`httpx.Response` of the upgrade's status and headers. `place` puts the token where the peer wants it
(default: the provider's header; the SignalR client may also use the `access_token` query parameter).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Generator
from typing import Protocol

import httpx

from consumer.auth.base import headers_for

__all__ = ["BearerAuth", "rejected_401_403", "token_rejected"]

Rejected = Callable[[httpx.Response], bool]
Place = Callable[[httpx.Request, str], None]


class RenewableToken(Protocol):
    """What the flow needs from a token source (`consumer.auth.TokenProvider` is one)."""

    header_name: str

    async def get_token(self) -> str: ...

    def invalidate(self, token: str) -> None: ...


def token_rejected(response: httpx.Response) -> bool:
    """True if a resource server rejected the token: 401, or WWW-Authenticate error="invalid_token"."""
    if response.status_code == 401:
        return True
    challenge = response.headers.get("WWW-Authenticate", "")
    return "invalid_token" in challenge and challenge.lower().startswith("bearer")


def rejected_401_403(response: httpx.Response) -> bool:
    """SignalR negotiate's rule: 401 and 403 both mean "this token is not accepted here"."""
    return response.status_code in (401, 403) or token_rejected(response)


class BearerAuth(httpx.Auth):
    """`httpx.AsyncClient(auth=BearerAuth(provider))`: async only.

    Sends `Authorization: Bearer <token>` (or the provider's raw header, or nothing for grant none).
    When the response says the token was rejected (`rejected`, default `token_rejected`), calls
    `provider.invalidate(token)` and retries the request once with a new token (if the provider hands
    out a different one).
    """

    def __init__(
        self, provider: RenewableToken, *, rejected: Rejected = token_rejected, place: Place | None = None
    ) -> None:
        self._provider = provider
        self._rejected = rejected
        self._place = place if place is not None else self._header

    def _header(self, request: httpx.Request, token: str) -> None:
        request.headers.update(headers_for(self._provider.header_name, token))

    def __repr__(self) -> str:
        return f"BearerAuth({self._provider!r})"

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("BearerAuth needs httpx.AsyncClient (token providers are asyncio-based)")
        yield request  # pragma: no cover

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self._provider.get_token()
        self._place(request, token)
        response = yield request
        if not token or not self._rejected(response):
            return
        self._provider.invalidate(token)
        fresh = await self._provider.get_token()
        if fresh and fresh != token:
            self._place(request, fresh)
            response = yield request
            if self._rejected(response):
                self._provider.invalidate(fresh)
