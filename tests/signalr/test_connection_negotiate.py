"""Negotiate fault shapes a real peer cannot easily produce (httpx.MockTransport), and token redaction."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import httpx
import pytest
import structlog
from aiohttp import web
from test_client_hub import Tokens, build_hub, client, running

from consumer.logs import setup_logging
from consumer.signalr.connection import HubConnection, NegotiateError
from consumer.signalr.retry import NEVER
from consumer.sim.hubhost import Principal

DEAD = "http://127.0.0.1:1/hub"  # nothing listens on port 1: the WebSocket step fails fast


def mock_client(handler: Any) -> tuple[httpx.AsyncClient, list[httpx.Request]]:
    requests: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        result: httpx.Response = handler(request)
        return result

    return httpx.AsyncClient(transport=httpx.MockTransport(record)), requests


def one_shot(url: str = DEAD, **options: Any) -> HubConnection:
    return HubConnection(url, retry_policy=NEVER, retry_initial_start=False, handshake_timeout=1, **options)


OK = {
    "negotiateVersion": 1,
    "connectionId": "cid",
    "connectionToken": "ctok",
    "availableTransports": [{"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}],
}


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (200, {"error": "This connection is not allowed."}, "This connection is not allowed."),
        (200, {"ProtocolVersion": "1.5"}, "ASP.NET SignalR Server"),
        (
            200,
            {**OK, "availableTransports": [{"transport": "LongPolling", "transferFormats": ["Text"]}]},
            "WebSockets",
        ),
        (200, {**OK, "useStatefulReconnect": True}, "Stateful Reconnect"),
        (200, {"negotiateVersion": 1}, "no connection token"),
        (200, [1, 2], "not a JSON object"),
        (404, {}, "'404'"),
        (500, {}, "'500'"),
    ],
)
async def test_negotiate_failures_are_clear(status: int, body: Any, message: str) -> None:
    http, _ = mock_client(lambda _r: httpx.Response(status, json=body))
    async with http:
        with pytest.raises(NegotiateError) as info:
            await one_shot(http_client=http).start()
    assert message in str(info.value)


async def test_binary_protocol_needs_binary_websockets() -> None:
    body = {**OK, "availableTransports": [{"transport": "WebSockets", "transferFormats": ["Text"]}]}
    http, _ = mock_client(lambda _r: httpx.Response(200, json=body))
    async with http:
        with pytest.raises(NegotiateError, match="Binary"):
            await one_shot(http_client=http, protocol="messagepack").start()


async def test_redirect_chain_followed_with_new_token_and_stateful_flag() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/hub/negotiate":
            return httpx.Response(
                200, json={"url": "http://127.0.0.1:1/other?x=1", "accessToken": "redirected-tok-123"}
            )
        return httpx.Response(200, json={**OK, "useStatefulReconnect": True})

    http, requests = mock_client(handler)
    tokens = Tokens()
    async with http:
        with pytest.raises(Exception, match="WebSocket connect"):
            await one_shot(
                http_client=http, access_token_factory=tokens.get_token, stateful_reconnect=True
            ).start()
    assert [r.url.path for r in requests] == ["/hub/negotiate", "/other/negotiate"]
    assert requests[0].headers["Authorization"] == f"Bearer {tokens.current}"
    assert requests[1].headers["Authorization"] == "Bearer redirected-tok-123"
    assert requests[1].url.params["x"] == "1"
    assert requests[1].url.params["negotiateVersion"] == "1"
    assert requests[1].url.params["useStatefulReconnect"] == "true"
    assert tokens.calls == 1  # the redirect token replaced the factory for this attempt


async def test_redirect_loop_is_bounded() -> None:
    http, requests = mock_client(lambda _r: httpx.Response(200, json={"url": "http://127.0.0.1:1/hub"}))
    async with http:
        with pytest.raises(NegotiateError, match="redirection limit"):
            await one_shot(http_client=http).start()
    assert len(requests) == 100


async def test_plain_http_redirect_refused() -> None:
    http, _ = mock_client(lambda _r: httpx.Response(200, json={"url": "http://evil.example/hub"}))
    async with http:
        with pytest.raises(Exception, match="allow_insecure_http"):
            await one_shot(http_client=http).start()


async def test_no_token_in_any_log_line() -> None:
    """Capture every log event raw (before redaction processors) and rendered (after); no token anywhere."""
    tokens = Tokens(prefix="eyJsecret", rotate_every_call=True)
    rejected_once: list[str] = []

    async def authenticate(token: str | None, request: web.Request) -> Principal | None:
        if token and not rejected_once:
            rejected_once.append(token)
            return None  # one 401 → invalidate + retry path is logged too
        return Principal("svc") if token else None

    stream = io.StringIO()
    setup_logging("DEBUG", fmt="json", stream=stream)
    server = build_hub(authenticate=authenticate, require_auth=True)
    try:
        with structlog.testing.capture_logs() as raw:
            async with server.serve() as url:
                conn = client(
                    url,
                    access_token_factory=tokens.get_token,
                    invalidate_token=tokens.invalidate,
                    token_transport="both",
                    stateful_reconnect=True,
                )
                reconnected = asyncio.Event()
                conn.on_reconnected(lambda _cid: reconnected.set())
                async with running(conn):
                    server.drop_all()  # stateful resume: one more WebSocket connect
                    await conn.invoke("Add", 1, 1)
                    await server.close_all(allow_reconnect=True)  # full reconnect: negotiate again
                    await asyncio.wait_for(reconnected.wait(), 5)
                    await conn.invoke("Add", 1, 1)
    finally:
        setup_logging("INFO", fmt="console")
    raw_text = json.dumps(raw, default=str)
    assert "signalr.connected" in raw_text and "signalr.auth_rejected" in raw_text
    assert "eyJsecret" not in raw_text  # our own events never carry a token, even unredacted
    assert "eyJsecret" not in stream.getvalue()
