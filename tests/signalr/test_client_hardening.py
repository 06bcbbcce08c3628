"""Issue 10, client side: no reconnect hot loop (healthy-before-reset backoff, flapping), invalid UTF-8
text frames, proxies (a real CONNECT proxy on loopback), negotiate deadline and size limit."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import structlog
from aiohttp import WSMsgType, web
from prometheus_client import generate_latest
from test_client_hub import build_hub, client, running, until

from consumer.config import ConfigError, parse_config, to_display
from consumer.logs import setup_logging
from consumer.observability import DaemonCollector, build_registry
from consumer.relay.stats import RelayStats
from consumer.signalr.connection import ConnectionState, HubConnection, NegotiateError
from consumer.signalr.errors import InvalidTextFrameError
from consumer.signalr.proxies import redact_proxy, resolve_proxy
from consumer.signalr.retry import NEVER, DaemonRetryPolicy

# --- backoff that resets only after a healthy connection -------------------------------------------


@dataclass
class Recording:
    """A DaemonRetryPolicy that records the retry count it is asked for."""

    inner: DaemonRetryPolicy
    counts: list[int] = field(default_factory=list)

    def next_delay(self, previous_retry_count: int, elapsed: float, reason: BaseException | None) -> float:
        self.counts.append(previous_retry_count)
        return self.inner.next_delay(previous_retry_count, elapsed, reason)


@pytest.mark.parametrize("mode", ["close", "malformed", "invalid_utf8"])
async def test_short_lived_connections_back_off_like_failures_then_reset_when_healthy(mode: str) -> None:
    server = build_hub()
    policy = Recording(DaemonRetryPolicy(base=0.02, cap=0.08))
    async with server.serve() as url:
        conn = client(url, retry_policy=policy, healthy_after=0.6)
        with structlog.testing.capture_logs() as logs:
            async with running(conn):
                await asyncio.sleep(0.7)  # the scenario: the first connection lives past healthy_after
                before = server.stats.connections_total
                server.flap(mode, 30.0)
                await server.close_all(allow_reconnect=True)  # a healthy connection is lost: retry 0
                await until(lambda: server.stats.connections_total >= before + 6)
                assert conn.flapping
                # each loss of a connection that lived milliseconds is one more failed attempt: the
                # policy is asked for retry 1, 2, 3, ... (the old client asked for 0, i.e. 0 s, each time)
                assert policy.counts[:6] == [0, 1, 2, 3, 4, 5], policy.counts
                assert conn.stats.short_lived_connections >= 5
                server.flap(mode, 0.0)  # the hub is well again
                await until(lambda: conn.state is ConnectionState.CONNECTED and not conn.flapping)
                asked = len(policy.counts)
                opened = conn.stats.connections_opened
                await server.close_all(allow_reconnect=True)  # a healthy connection lost: retry 0 again
                await until(lambda: conn.stats.connections_opened > opened)
                assert policy.counts[asked:] == [0], policy.counts[asked:]
                assert await conn.invoke("Add", 1, 1) == 2
    warnings = [e for e in logs if e["event"] == "signalr.flapping"]
    assert len(warnings) == 1  # rate-bounded: one a minute, however many short-lived connections
    assert warnings[0]["consecutive_short_lived"] == 3
    assert any(e["event"] == "signalr.flapping_ended" for e in logs)


async def test_stateful_resumes_that_drop_at_once_back_off_too() -> None:
    """A resume (stateful reconnect) is a connection too: dropped again at once, the next resume
    waits the policy's delay for retry 1, 2, 3, ... (the old client resumed at once, every time)."""
    server = build_hub()
    policy = Recording(DaemonRetryPolicy(base=0.02, cap=0.08))
    async with server.serve() as url:
        conn = client(url, stateful_reconnect=True, retry_policy=policy, healthy_after=5.0)
        async with running(conn):
            for round_ in range(1, 5):
                assert server.drop_all() == 1
                await until(lambda n=round_: server.stats.reconnects >= n)  # reattached: resumed
            assert policy.counts == [1, 2, 3, 4]
            assert await conn.invoke("Add", 2, 2) == 4


async def test_flapping_metrics_exposed() -> None:
    counts = {"connections": 7.0, "short_lived": 6.0, "flapping": 1.0}
    registry = build_registry(DaemonCollector(RelayStats(), [], hub_counts=lambda: counts))
    text = generate_latest(registry).decode()
    assert "event_consumer_hub_connections_total 7.0" in text
    assert "event_consumer_hub_short_lived_connections_total 6.0" in text
    assert "event_consumer_hub_flapping 1.0" in text


# --- invalid UTF-8 in a text frame ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def raw_hub(per_connection: list[list[bytes]]) -> AsyncIterator[tuple[str, list[int | None]]]:
    """A hub that answers the handshake and then sends the given text frames verbatim (connection i
    gets per_connection[i]), then waits; yields its URL and the close codes it received."""
    close_codes: list[int | None] = []
    served = 0

    async def handler(request: web.Request) -> web.WebSocketResponse:
        nonlocal served
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        await ws.receive()  # the handshake request
        await ws.send_frame(b"{}\x1e", WSMsgType.TEXT)
        frames = per_connection[min(served, len(per_connection) - 1)]
        served += 1
        for frame in frames:
            await ws.send_frame(frame, WSMsgType.TEXT)
        async for _ in ws:
            pass
        close_codes.append(ws.close_code)
        return ws

    app = web.Application()
    app.router.add_get("/hub", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hub", close_codes
    finally:
        await runner.cleanup()


def invocation(target: str, arg: bytes) -> bytes:
    return b'{"type":1,"target":"' + target.encode() + b'","arguments":["' + arg + b'"]}\x1e'


async def test_invalid_utf8_text_frame_is_a_protocol_error_never_relayed() -> None:
    first = [
        invocation("Good", "caf\u00e9".encode()),  # valid non-ASCII UTF-8 passes
        invocation("Bad", b"\xff\xfe\x80"),  # not UTF-8
        invocation("After", b"x"),  # the connection is dead by then
    ]
    second = [invocation("Second", b"ok")]
    async with raw_hub([first, second]) as (url, close_codes):
        conn = client(url, skip_negotiation=True, raw_arguments=True, healthy_after=0.0)
        got: list[tuple[str, bytes]] = []
        second_seen = asyncio.Event()

        def on_raw(target: str, args: Any) -> None:
            got.append((target, bytes(args)))
            if target == "Second":
                second_seen.set()

        conn.on_raw(on_raw)
        reasons: list[BaseException | None] = []
        conn.on_reconnecting(reasons.append)
        with structlog.testing.capture_logs() as logs:
            async with running(conn):
                await asyncio.wait_for(second_seen.wait(), 5)
        await until(lambda: len(close_codes) >= 1)
    assert [t for t, _ in got] == ["Good", "Second"]
    assert json.loads(got[0][1]) == ["caf\u00e9"]
    assert len(reasons) == 1 and isinstance(reasons[0], InvalidTextFrameError)
    assert close_codes[0] == 1007  # RFC 6455: invalid frame payload data
    ended = [e for e in logs if e["event"] == "signalr.transport_ended"]
    assert ended and "invalid UTF-8" in ended[0]["error"]


async def test_invalid_utf8_in_the_handshake_response_fails_the_handshake() -> None:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()
        await ws.send_frame(b'{"error":"\xff"}\x1e', WSMsgType.TEXT)
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/hub", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/hub"
        conn = HubConnection(url, skip_negotiation=True, retry_policy=NEVER, retry_initial_start=False)
        with pytest.raises(Exception, match="invalid UTF-8"):
            await conn.start()
    finally:
        await runner.cleanup()


# --- proxies ------------------------------------------------------------------------------------------


class CountingProxy:
    """A small HTTP proxy on loopback: CONNECT tunnels and absolute-form forwarding, counted."""

    def __init__(self) -> None:
        self.tunnels: list[str] = []
        self.forwards: list[str] = []
        self.proxy_auth: list[str | None] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> CountingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *headers = head.decode("latin-1").split("\r\n")
            method, target, version = line.split(" ", 2)
            auth = [
                h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("proxy-authorization:")
            ]
            self.proxy_auth.append(auth[0] if auth else None)
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
                self.tunnels.append(target)
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                parts = urlsplit(target)
                up_reader, up_writer = await asyncio.open_connection(parts.hostname, parts.port)
                self.forwards.append(target)
                path = parts.path + (f"?{parts.query}" if parts.query else "")
                kept = [h for h in headers if h and not h.lower().startswith("proxy-")]
                request_head = f"{method} {path} {version}\r\n" + "".join(f"{h}\r\n" for h in kept) + "\r\n"
                up_writer.write(request_head.encode("latin-1"))
            async with asyncio.TaskGroup() as tg:
                tg.create_task(_pipe(reader, up_writer))
                tg.create_task(_pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()


PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


async def test_environment_proxy_used_for_negotiate_and_websocket(
    clean_proxy_env: pytest.MonkeyPatch,
) -> None:
    server = build_hub()
    async with CountingProxy() as proxy, server.serve() as url:
        clean_proxy_env.setenv("HTTP_PROXY", proxy.url)
        hub_host = urlsplit(url).netloc
        async with running(client(url, skip_negotiation=False)) as conn:
            assert await conn.invoke("Add", 2, 3) == 5
        assert proxy.tunnels == [hub_host]  # the WebSocket went through CONNECT
        assert len(proxy.forwards) == 1 and "/hub/negotiate" in proxy.forwards[0]  # negotiate (httpx)


async def test_no_proxy_bypasses_and_off_ignores_the_environment(clean_proxy_env: pytest.MonkeyPatch) -> None:
    server = build_hub()
    async with CountingProxy() as proxy, server.serve() as url:
        clean_proxy_env.setenv("HTTP_PROXY", proxy.url)
        clean_proxy_env.setenv("NO_PROXY", "example.org,127.0.0.1")
        async with running(client(url, skip_negotiation=False)) as conn:
            assert await conn.invoke("Add", 1, 1) == 2
        clean_proxy_env.delenv("NO_PROXY")
        async with running(client(url, skip_negotiation=False, proxy="off")) as conn:
            assert await conn.invoke("Add", 1, 2) == 3
        assert proxy.tunnels == [] and proxy.forwards == []


async def test_explicit_proxy_with_credentials_never_logged(clean_proxy_env: pytest.MonkeyPatch) -> None:
    server = build_hub()
    stream = io.StringIO()
    setup_logging("DEBUG", fmt="json", stream=stream)
    try:
        with structlog.testing.capture_logs() as raw:
            async with CountingProxy() as proxy, server.serve() as url:
                port = urlsplit(proxy.url).port
                explicit = f"http://relay:pw-s3cret-xyz@127.0.0.1:{port}"
                async with running(client(url, skip_negotiation=False, proxy=explicit)) as conn:
                    assert await conn.invoke("Add", 4, 4) == 8
                assert len(proxy.tunnels) == 1 and len(proxy.forwards) == 1
                expected = "Basic " + base64.b64encode(b"relay:pw-s3cret-xyz").decode()
                assert proxy.proxy_auth == [expected, expected]
            # the proxy is gone: the connect error names it, without the credentials
            dead = HubConnection(url, proxy=explicit, retry_policy=NEVER, retry_initial_start=False)
            with pytest.raises(Exception, match=r"via proxy http://\[redacted\]@127\.0\.0\.1") as info:
                await dead.start()
            assert "pw-s3cret" not in str(info.value)
    finally:
        setup_logging("INFO", fmt="console")
    raw_text = json.dumps(raw, default=str)
    assert "[redacted]@127.0.0.1" in raw_text  # the proxy is logged ...
    assert "pw-s3cret" not in raw_text and "pw-s3cret" not in stream.getvalue()  # ... its password never


@pytest.mark.parametrize(
    ("url", "env", "expected"),
    [
        ("wss://hub.example.com/x", {"HTTPS_PROXY": "http://p:1"}, "http://p:1"),
        ("ws://hub.example.com/x", {"HTTPS_PROXY": "http://p:1"}, None),  # ws:// uses HTTP_PROXY
        ("ws://hub.example.com/x", {"HTTP_PROXY": "p:2"}, "http://p:2"),  # no scheme: http://
        ("wss://hub.example.com/x", {"ALL_PROXY": "http://a:3"}, "http://a:3"),
        (
            "wss://hub.example.com/x",
            {"https_proxy": "http://low:1", "HTTPS_PROXY": "http://up:1"},
            "http://low:1",
        ),
        ("wss://hub.example.com/x", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, None),
        ("wss://hub.example.com/x", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com"}, None),
        ("wss://hub.example.com/x", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".example.com"}, None),
        ("wss://example.com/x", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".example.com"}, "http://p:1"),
        ("wss://badexample.com/x", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com"}, "http://p:1"),
        ("wss://10.1.2.3/x", {"HTTPS_PROXY": "http://p:1", "no_proxy": "10.1.2.3"}, None),
        ("ws://localhost:81/x", {"HTTP_PROXY": "http://p:1", "NO_PROXY": "localhost"}, None),
        (
            "wss://hub.example.com/x",
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "https://hub.example.com"},
            None,
        ),
        (
            "wss://hub.example.com/x",
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "http://hub.example.com"},
            "http://p:1",
        ),
    ],
)
def test_resolve_proxy_follows_the_httpx_environment_rules(
    url: str, env: dict[str, str], expected: str | None
) -> None:
    assert resolve_proxy(url, "env", env) == expected
    assert resolve_proxy(url, "off", env) is None
    assert resolve_proxy(url, "http://explicit:8080", env) == "http://explicit:8080"


def test_proxy_setting_is_validated_and_redacted() -> None:
    with pytest.raises(ConfigError, match="proxy"):
        HubConnection("http://127.0.0.1:1/hub", proxy="socks5://127.0.0.1:1080")
    with pytest.raises(ConfigError) as info:
        parse_config({"hub": {"proxy": "ftp://user:pw-secret@proxy:21"}}, source="cfg.toml")
    assert "hub.proxy" in str(info.value) and "cfg.toml" in str(info.value)
    assert "pw-secret" not in str(info.value)
    cfg = parse_config({"hub": {"proxy": "http://user:pw-secret@proxy:3128"}}, source="cfg.toml")
    assert to_display(cfg)["hub"]["proxy"] == "http://[redacted]@proxy:3128"
    assert redact_proxy("http://proxy:3128") == "http://proxy:3128"


# --- negotiate: total deadline and size limit ---------------------------------------------------------


@contextlib.asynccontextmanager
async def negotiate_server(handler: Any) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hub/negotiate", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hub"
    finally:
        await runner.cleanup()


async def test_negotiate_trickle_hits_the_total_deadline() -> None:
    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for _ in range(100):  # one byte every 0.2 s: every single read is fast, the whole is not
            await response.write(b" ")
            await asyncio.sleep(0.2)
        return response

    async with negotiate_server(trickle) as url:
        conn = HubConnection(url, retry_policy=NEVER, retry_initial_start=False, negotiate_timeout=1.0)
        t0 = time.monotonic()
        with pytest.raises(NegotiateError, match=r"within 1\.0 s"):
            async with asyncio.timeout(10):  # the old client waited for all 20 s
                await conn.start()
        assert time.monotonic() - t0 < 3.0


@pytest.mark.parametrize("declared", [True, False])
async def test_negotiate_response_over_1_mib_is_refused(declared: bool) -> None:
    body = json.dumps(
        {
            "negotiateVersion": 1,
            "connectionId": "c",
            "connectionToken": "t",
            "availableTransports": [{"transport": "WebSockets", "transferFormats": ["Text"]}],
            "padding": "x" * (2 * 1024 * 1024),
        }
    ).encode()

    async def big(request: web.Request) -> web.StreamResponse:
        if declared:
            return web.Response(body=body, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)  # chunked: no Content-Length to check up front
        for i in range(0, len(body), 65536):
            await response.write(body[i : i + 65536])
        return response

    async with negotiate_server(big) as url:
        conn = HubConnection(url, retry_policy=NEVER, retry_initial_start=False)
        with pytest.raises(NegotiateError, match="too large"):
            await conn.start()


def test_hub_config_defaults_for_the_recovery_bound() -> None:
    hub = parse_config({}, source="cfg.toml").hub
    assert hub.reconnect_max_delay_seconds == 5.0
    assert hub.healthy_after_seconds == 10.0
    assert hub.proxy == "env"
    with pytest.raises(ConfigError, match=r"hub\.healthy_after_seconds"):
        parse_config({"hub": {"healthy_after_seconds": -1}}, source="cfg.toml")
