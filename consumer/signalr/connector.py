"""Opening one transport for the SignalR client: negotiate over httpx (redirects, token transport,
proxy, deadline and size limit) and the WebSocket connect, each under the project's one 401 ->
invalidate -> retry-once flow (`consumer.auth.BearerAuth`, with SignalR's rule that 403 also rejects
the token). The handshake is the core's, written by `wire.py`.

Interface: `Connector(options, token_factory, invalidate).open()` → `Opened` (the WebSocket, the URL
it was opened with, the connection id and whether stateful reconnect was negotiated);
`open_ws(url)` opens a WebSocket to a known connect URL (a stateful resume) under the same flow.
Neither knows about the core, the dispatcher or the reconnect policy.

Behaviour (as the official @microsoft/signalr HttpConnection.js, plus what a daemon needs):

- Negotiate: `POST {url}/negotiate?negotiateVersion=1` (plus `useStatefulReconnect=true` when asked);
  `connectionToken` (v1) or `connectionId` (v0); redirect responses (`url` + optional `accessToken`)
  are followed, at most 100 hops, the redirect token replacing the factory for that attempt; the
  WebSockets transport must be offered with the protocol's transfer format. `skip_negotiation=True`
  connects straight to the WebSocket URL (RedMist does this).
- Transport: `websockets` (asyncio API). http(s) → ws(s); the bearer goes in an `Authorization` header,
  the `access_token` query parameter or both (`token_transport`); TLS verification is on. Plain
  http/ws is refused (ConfigError) unless the host is loopback or `allow_insecure_http=True`.
- The async token factory is awaited before every negotiate and every WebSocket connect. A 401/403
  there calls `invalidate_token(token)` and retries that request once at once with a fresh token
  (when the factory hands out a different one); a second rejection invalidates that token too and is
  `HubAuthError`. The negotiate request gets the flow as its httpx `auth`; the WebSocket upgrade (not
  httpx) is driven through the same generator by `_upgrade`.
- Proxies: `proxy="env"` (default) follows HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY as httpx
  does, for the negotiate request and the WebSocket (HTTP CONNECT); `"off"` connects directly; an
  `http(s)://` URL is used for every hub connection. Proxy credentials are never logged.
- Negotiate: one total deadline (`negotiate_timeout`) over connect, request and body, and a body
  size limit (`max_negotiate_bytes`, 1 MiB); exceeding either is a clear NegotiateError.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias

import httpx
import msgspec
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from consumer.auth.httpx_auth import BearerAuth, rejected_401_403
from consumer.logs import get_logger, register_secret
from consumer.signalr.errors import HubAuthError, HubConnectionError, NegotiateError
from consumer.signalr.proxies import httpx_proxy_options, redact_proxy, resolve_proxy
from consumer.signalr.urls import (
    build_negotiate_url,
    build_ws_url,
    check_url_security,
    redact_url,
)

__all__ = [
    "MAX_NEGOTIATE_BYTES",
    "MAX_REDIRECTS",
    "Connector",
    "ConnectorOptions",
    "Opened",
    "TokenFactory",
    "TokenProviderLike",
]

log = get_logger("consumer.signalr.connection")  # the client's log events keep their logger name

MAX_REDIRECTS = 100
MAX_NEGOTIATE_BYTES = 1024 * 1024

TokenFactory: TypeAlias = Callable[[], Awaitable[str]]


class TokenProviderLike(Protocol):
    """A token provider (`consumer.auth.TokenProvider` is one): a token, and invalidating it."""

    async def get_token(self) -> str: ...

    def invalidate(self, token: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ConnectorOptions:
    """What the connector needs from the client's configuration (validated by `HubConnection`)."""

    url: str
    text: bool  # the protocol's transfer format is text (negotiate must offer WebSockets + Text)
    skip_negotiation: bool = False
    stateful_reconnect: bool = False  # ask for useStatefulReconnect in negotiate
    token_transport: Literal["header", "query", "both"] = "both"
    headers: Mapping[str, str] = field(default_factory=dict)
    allow_insecure_http: bool = False
    proxy: str = "env"
    negotiate_timeout: float = 100.0
    max_negotiate_bytes: int = MAX_NEGOTIATE_BYTES
    open_timeout: float = 15.0  # the WebSocket opening handshake
    close_timeout: float = 2.0
    max_frame_size: int = 8 * 1024 * 1024
    read_ahead: int = 16  # frames websockets may buffer before it pauses the socket
    http_client: httpx.AsyncClient | None = None
    ssl: Any = None


@dataclass(frozen=True, slots=True)
class Opened:
    """An open WebSocket, ready for the SignalR handshake."""

    ws: ClientConnection
    connect_url: str  # negotiated URL + connection token (what a stateful resume reconnects to)
    connection_id: str | None
    stateful: bool


@dataclass(slots=True)
class _Negotiated:
    url: str
    connection_id: str | None
    connection_token: str | None
    stateful_reconnect: bool


@dataclass(slots=True)
class _Redirect:
    url: str
    access_token: str | None


class Connector:
    """Negotiate (+ redirects) and WebSocket connect for one hub URL."""

    def __init__(
        self,
        options: ConnectorOptions,
        token_factory: TokenFactory | None = None,
        invalidate: Callable[[str], None] | None = None,
    ) -> None:
        self._o = options
        self._token_factory = token_factory
        self._invalidate = invalidate
        self._auth = self._flow(_FactoryTokens(token_factory, invalidate))

    async def open(self) -> Opened:
        """One connect attempt: [negotiate (+redirects)] → WebSocket; a bearer rejected again after
        the retry with a fresh token is HubAuthError."""
        o = self._o
        url = o.url
        auth = self._auth  # a redirect's accessToken replaces the factory for this attempt
        negotiated: _Negotiated | None = None
        if not o.skip_negotiation:
            for _ in range(MAX_REDIRECTS):
                result = await self._negotiate_once(url, auth)
                if isinstance(result, _Negotiated):
                    negotiated = result
                    break
                check_url_security(result.url, o.allow_insecure_http)
                log.info("signalr.negotiate_redirect", url=redact_url(result.url))
                url = result.url
                if result.access_token is not None:
                    auth = self._flow(_FixedToken(result.access_token))
            else:
                raise NegotiateError("Negotiate redirection limit exceeded.")
        connect_url = build_ws_url(url, negotiated.connection_token if negotiated else None)
        ws = await self._upgrade(connect_url, auth)
        return Opened(
            ws=ws,
            connect_url=connect_url,
            connection_id=negotiated.connection_id if negotiated else None,
            stateful=bool(negotiated and negotiated.stateful_reconnect),
        )

    async def open_ws(self, url: str) -> ClientConnection:
        """A WebSocket to `url` (already negotiated), under the same 401/403 flow."""
        return await self._upgrade(url, self._auth)

    # --- internals ---------------------------------------------------------------------------

    def _flow(self, tokens: _FactoryTokens | _FixedToken) -> BearerAuth:
        return BearerAuth(tokens, rejected=_logged_rejection, place=self._place)

    def _place(self, request: httpx.Request, token: str) -> None:
        """Where the bearer goes: the Authorization header, the access_token query parameter, or both."""
        if not token:  # no token factory: no credentials
            return
        if self._o.token_transport in ("header", "both"):
            request.headers["Authorization"] = f"Bearer {token}"
        if self._o.token_transport in ("query", "both"):
            request.url = request.url.copy_set_param("access_token", token)

    async def _upgrade(self, url: str, auth: BearerAuth) -> ClientConnection:
        """The WebSocket connect driven through the 401 flow: each request the flow yields is sent as
        an upgrade, a refusal answered with its status and headers."""
        flow = auth.async_auth_flow(httpx.Request("GET", url, headers=self._o.headers))
        try:
            request = await anext(flow)
            while True:
                try:
                    return await self._open_ws(request)
                except _Refused as refused:
                    try:
                        request = await flow.asend(refused.response)
                    except StopAsyncIteration:
                        raise refused.error() from None
        finally:
            await flow.aclose()

    @contextlib.asynccontextmanager
    async def _http(self) -> AsyncIterator[httpx.AsyncClient]:
        if self._o.http_client is not None:
            yield self._o.http_client
            return
        options = httpx_proxy_options(self._o.proxy)
        async with httpx.AsyncClient(
            timeout=self._o.negotiate_timeout, follow_redirects=True, **options
        ) as client:
            yield client

    async def _negotiate_once(self, url: str, auth: BearerAuth) -> _Negotiated | _Redirect:
        o = self._o
        negotiate_url = build_negotiate_url(url, stateful_reconnect=o.stateful_reconnect)
        log.debug("signalr.negotiate", url=redact_url(negotiate_url))
        content = await self._post_negotiate(url, negotiate_url, auth)
        try:
            body = msgspec.json.decode(content)
        except msgspec.DecodeError:
            raise NegotiateError("negotiate response is not JSON") from None
        if not isinstance(body, dict):
            raise NegotiateError("negotiate response is not a JSON object")
        return self._parse_negotiate(url, body)

    async def _post_negotiate(self, url: str, negotiate_url: str, auth: BearerAuth) -> bytes:
        """The negotiate POST under one total deadline and a body size limit."""
        o = self._o
        limit = o.max_negotiate_bytes
        try:
            async with (
                asyncio.timeout(o.negotiate_timeout),
                self._http() as client,
                client.stream(
                    "POST",
                    negotiate_url,
                    headers=dict(o.headers),
                    content=b"",
                    auth=auth,
                    timeout=o.negotiate_timeout,
                ) as response,
            ):
                status = response.status_code
                if status in (401, 403):  # the flow already retried with a fresh token
                    raise _rejected_again("negotiate", status)
                if status != 200:
                    hint = " (not a SignalR endpoint, or a proxy is in the way)" if status == 404 else ""
                    raise NegotiateError(f"Unexpected status code returned from negotiate '{status}'{hint}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise NegotiateError(
                        f"negotiate response too large: {declared} bytes declared, limit {limit}"
                    )
                content = bytearray()
                async for chunk in response.aiter_bytes():
                    content += chunk
                    if len(content) > limit:
                        raise NegotiateError(f"negotiate response too large: over the {limit}-byte limit")
        except TimeoutError:
            raise NegotiateError(
                f"no complete negotiate response from {redact_url(url)} within {o.negotiate_timeout} s"
            ) from None
        except httpx.HTTPError as exc:
            proxy = resolve_proxy(negotiate_url, o.proxy)
            via = f" via proxy {redact_proxy(proxy)}" if proxy else ""
            raise NegotiateError(
                f"Failed to complete negotiation with the server at {redact_url(url)}{via}: "
                f"{type(exc).__name__}"
            ) from None
        return bytes(content)

    def _parse_negotiate(self, url: str, body: dict[str, Any]) -> _Negotiated | _Redirect:
        if body.get("error"):
            raise NegotiateError(f"negotiate refused: {body['error']}")
        if "ProtocolVersion" in body:
            raise NegotiateError(
                "Detected a connection attempt to an ASP.NET SignalR Server; "
                "only ASP.NET Core SignalR is supported."
            )
        if body.get("url"):
            new_url = str(body["url"])
            access_token = body.get("accessToken")
            if access_token is not None:
                access_token = str(access_token)
                register_secret(access_token)
            return _Redirect(new_url, access_token)
        version = body.get("negotiateVersion") or 0
        connection_id = body.get("connectionId")
        connection_token = body.get("connectionToken") if version >= 1 else connection_id
        if not isinstance(connection_token, str) or not connection_token:
            raise NegotiateError("negotiate response has no connection token")
        stateful = bool(body.get("useStatefulReconnect"))
        if stateful and not self._o.stateful_reconnect:
            raise NegotiateError("Client didn't negotiate Stateful Reconnect but the server did.")
        wanted = "Text" if self._o.text else "Binary"
        transports = body.get("availableTransports") or []
        if not any(
            isinstance(t, dict)
            and t.get("transport") == "WebSockets"
            and wanted in (t.get("transferFormats") or [])
            for t in transports
        ):
            raise NegotiateError(f"the server does not offer the WebSockets transport with {wanted} frames")
        return _Negotiated(url, str(connection_id) if connection_id else None, connection_token, stateful)

    async def _open_ws(self, request: httpx.Request) -> ClientConnection:
        """One WebSocket upgrade with the request's URL and headers; a 401/403 is `_Refused`."""
        o = self._o
        ws_url = str(request.url)
        check_url_security(ws_url, o.allow_insecure_http)
        proxy = resolve_proxy(ws_url, o.proxy)
        log.debug("signalr.websocket_connect", url=redact_url(ws_url), proxy=redact_proxy(proxy))
        extra: dict[str, Any] = {"ssl": o.ssl} if o.ssl is not None else {}
        try:
            return await websockets.connect(
                ws_url,
                additional_headers=[  # httpx added a Host header; websockets writes its own
                    (k.decode(), v.decode()) for k, v in request.headers.raw if k.lower() != b"host"
                ],
                max_size=o.max_frame_size,
                max_queue=o.read_ahead,
                open_timeout=o.open_timeout,
                close_timeout=o.close_timeout,
                ping_interval=None,
                ping_timeout=None,
                proxy=proxy,
                **extra,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise _Refused(
                    httpx.Response(status, headers=list(exc.response.headers.raw_items()))
                ) from None
            raise HubConnectionError(
                f"WebSocket upgrade to {redact_url(ws_url)} refused with HTTP {status}"
            ) from None
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            via = f" via proxy {redact_proxy(proxy)}" if proxy else ""
            detail = str(exc)
            if "access_token" in detail or (proxy and "@" in detail):
                detail = "[redacted]"
            raise HubConnectionError(
                f"WebSocket connect to {redact_url(ws_url)}{via} failed: {type(exc).__name__}: "
                f"{redact_url(detail)}"
            ) from None


class _Refused(Exception):
    """The WebSocket upgrade answered 401/403: handed to the flow as its response."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response

    def error(self) -> HubAuthError:
        return _rejected_again("WebSocket upgrade", self.response.status_code)


def _rejected_again(where: str, status: int) -> HubAuthError:
    return HubAuthError(
        f"{where} rejected the bearer with HTTP {status} (and the fresh token, when the factory gave one)",
        status,
    )


def _logged_rejection(response: httpx.Response) -> bool:
    """SignalR's rule (401 or 403 rejects the token), logged when it applies."""
    rejected = rejected_401_403(response)
    if rejected:
        log.warning("signalr.auth_rejected", status=response.status_code, retry="fresh token")
    return rejected


class _FactoryTokens:
    """The client's `access_token_factory` + `invalidate_token` as the flow's token source."""

    __slots__ = ("_factory", "_invalidate")
    header_name = "Authorization"

    def __init__(self, factory: TokenFactory | None, invalidate: Callable[[str], None] | None) -> None:
        self._factory = factory
        self._invalidate = invalidate

    async def get_token(self) -> str:
        if self._factory is None:
            return ""
        token = await self._factory()
        register_secret(token)
        return token

    def invalidate(self, token: str) -> None:
        if self._invalidate is not None:
            self._invalidate(token)


class _FixedToken:
    """A negotiate redirect's accessToken: used as is for the rest of that attempt, never renewed."""

    __slots__ = ("_token",)
    header_name = "Authorization"

    def __init__(self, token: str) -> None:
        self._token = token

    async def get_token(self) -> str:
        return self._token

    def invalidate(self, token: str) -> None:
        pass
