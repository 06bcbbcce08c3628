"""The client against our own hub server (consumer.sim.hubhost): features and faults, on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from consumer.signalr.connection import (
    ConnectionLostError,
    ConnectionState,
    HubAuthError,
    HubConnection,
    HubError,
    ServerClosedError,
    ServerTimeoutError,
)
from consumer.signalr.retry import NEVER, DaemonRetryPolicy
from consumer.sim.hubhost import ClientResultError, HubCallContext, HubServer, Principal

PROTOCOLS = ("json", "messagepack")
FAST = DaemonRetryPolicy(base=0.05, cap=0.2)


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition nothing can await (server-side state) until it holds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


class Tokens:
    """An accessTokenFactory + invalidate pair that hands out a fresh token after each invalidate."""

    def __init__(self, prefix: str = "token", rotate_every_call: bool = False) -> None:
        self.prefix = prefix
        self.rotate = rotate_every_call
        self.serial = 1
        self.calls = 0
        self.invalidated: list[str] = []

    @property
    def current(self) -> str:
        return f"{self.prefix}-{self.serial:04d}-abcdefghijklmnop"

    async def get_token(self) -> str:
        self.calls += 1
        if self.rotate and self.calls > 1:
            self.serial += 1
        return self.current

    def invalidate(self, token: str) -> None:
        self.invalidated.append(token)
        if token == self.current:
            self.serial += 1


def build_hub(**options: Any) -> HubServer:
    options.setdefault("keepalive_interval", 0.2)
    options.setdefault("client_timeout", 2.0)
    server = HubServer("/hub", **options)
    server.received = []  # type: ignore[attr-defined]
    server.stream_stopped = asyncio.Event()  # type: ignore[attr-defined]

    @server.method("Add")
    async def add(ctx: HubCallContext, x: int, y: int) -> int:
        return x + y

    @server.method("Fail")
    async def fail(ctx: HubCallContext, text: str) -> None:
        from consumer.sim.hubhost import HubError as ServerHubError

        raise ServerHubError(text)

    @server.method("Record")
    async def record(ctx: HubCallContext, value: Any) -> None:
        server.received.append(value)  # type: ignore[attr-defined]

    @server.method("JoinGroup")
    async def join(ctx: HubCallContext, group: str) -> None:
        await ctx.add_to_group(group)

    @server.method("Hang")
    async def hang(ctx: HubCallContext) -> None:
        await asyncio.Event().wait()

    @server.method("Count")
    async def count(ctx: HubCallContext, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    @server.method("Forever")
    async def forever(ctx: HubCallContext) -> AsyncIterator[int]:
        try:
            for i in itertools.count():
                yield i
                await asyncio.sleep(0.005)
        finally:
            server.stream_stopped.set()  # type: ignore[attr-defined]

    return server


def client(url: str, **options: Any) -> HubConnection:
    options.setdefault("keepalive_interval", 0.2)
    options.setdefault("server_timeout", 1.5)
    options.setdefault("handshake_timeout", 2.0)
    options.setdefault("close_timeout", 0.5)
    options.setdefault("retry_policy", FAST)
    return HubConnection(url, **options)


@contextlib.asynccontextmanager
async def running(conn: HubConnection) -> AsyncIterator[HubConnection]:
    await conn.start()
    try:
        yield conn
    finally:
        await conn.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("skip", [False, True])
async def test_invoke_send_receive_stream(protocol: str, skip: bool) -> None:
    server = build_hub()
    async with server.serve() as url:
        conn = client(url, protocol=protocol, skip_negotiation=skip)
        received: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        conn.on("Tick", lambda *args: received.put_nowait(args))
        async with running(conn):
            assert conn.state is ConnectionState.CONNECTED
            assert (conn.connection_id is None) == skip
            assert await conn.invoke("Add", 40, 2) == 42
            with pytest.raises(HubError, match="nope"):
                await conn.invoke("Fail", "nope")
            await conn.send("Record", {"ü": [1, 2.5, None]})
            await conn.invoke("JoinGroup", "g")
            await until(lambda: server.received == [{"ü": [1, 2.5, None]}])  # type: ignore[attr-defined]
            server.send_to_group("g", "tick", "a", 1)  # handler names are case-insensitive
            assert await asyncio.wait_for(received.get(), 5) == ("a", 1)
            assert [x async for x in conn.stream("Count", 4)] == [0, 1, 2, 3]
        assert conn.state is ConnectionState.DISCONNECTED


async def test_negotiate_version_0_uses_connection_id() -> None:
    server = build_hub()
    async with server.serve() as url, running(client(url + "?negotiateVersion=0")) as conn:
        assert conn.connection_id in server.connection_ids
        assert await conn.invoke("Add", 1, 1) == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stream_cancel_sends_cancel_invocation(protocol: str) -> None:
    server = build_hub()
    async with server.serve() as url, running(client(url, protocol=protocol)) as conn:
        stream = conn.stream("Forever")
        got = []
        async with stream:
            async for item in stream:
                got.append(item)
                if len(got) == 3:
                    break
        assert got == [0, 1, 2]
        await asyncio.wait_for(server.stream_stopped.wait(), 5)  # type: ignore[attr-defined]
        assert await conn.invoke("Add", 1, 2) == 3


async def test_cancelling_the_consumer_task_cancels_the_stream() -> None:
    server = build_hub()
    async with server.serve() as url, running(client(url)) as conn:
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in conn.stream("Forever"):
                first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(server.stream_stopped.wait(), 5)  # type: ignore[attr-defined]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_client_results(protocol: str) -> None:
    server = build_hub()
    async with server.serve() as url:
        conn = client(url, protocol=protocol)

        async def answer(x: int) -> int:
            return x * 2

        def broken() -> None:
            raise ValueError("handler says no")

        conn.on("Double", answer)
        conn.on("Broken", broken)
        async with running(conn):
            assert conn.connection_id is not None
            cid = conn.connection_id
            assert await server.invoke_client(cid, "Double", 21, timeout=5) == 42
            with pytest.raises(ClientResultError, match="Client didn't provide a result"):
                await server.invoke_client(cid, "Unknown", timeout=5)
            with pytest.raises(ClientResultError, match="handler says no"):
                await server.invoke_client(cid, "Broken", timeout=5)


async def test_handlers_run_in_order_and_exceptions_do_not_stop_the_loop() -> None:
    server = build_hub()
    async with server.serve() as url:
        conn = client(url)
        seen: list[int] = []
        done = asyncio.Event()

        async def handler(i: int) -> None:
            if i % 7 == 0:
                await asyncio.sleep(0)  # yield mid-handler: ordering must still hold
                raise RuntimeError("boom")
            seen.append(i)
            if i == 199:
                done.set()

        conn.on("Item", handler)
        async with running(conn):
            await conn.invoke("JoinGroup", "g")
            for i in range(200):
                server.send_to_group("g", "Item", i)
            await asyncio.wait_for(done.wait(), 10)
            assert seen == [i for i in range(200) if i % 7]
            assert conn.state is ConnectionState.CONNECTED


async def test_close_allow_reconnect_true_reconnects_false_stops() -> None:
    server = build_hub()
    async with server.serve() as url:
        tokens = Tokens()
        conn = client(url, access_token_factory=tokens.get_token)
        reconnecting: list[BaseException | None] = []
        reconnected: asyncio.Queue[str | None] = asyncio.Queue()
        closed: asyncio.Queue[BaseException | None] = asyncio.Queue()
        conn.on_reconnecting(reconnecting.append)
        conn.on_reconnected(reconnected.put_nowait)
        conn.on_closed(closed.put_nowait)
        await conn.start()
        first_id = conn.connection_id
        await server.close_all(error="maintenance", allow_reconnect=True)
        new_id = await asyncio.wait_for(reconnected.get(), 5)
        assert new_id != first_id and conn.state is ConnectionState.CONNECTED
        assert len(reconnecting) == 1 and "maintenance" in str(reconnecting[0])
        assert await conn.invoke("Add", 2, 2) == 4
        await server.close_all(error="go away", allow_reconnect=False)
        error = await asyncio.wait_for(closed.get(), 5)
        assert isinstance(error, ServerClosedError) and "go away" in str(error)
        assert conn.state is ConnectionState.DISCONNECTED
        assert len(reconnecting) == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_reconnect_after_server_killed_and_restarted_with_fresh_token() -> None:
    seen: list[str | None] = []

    async def authenticate(token: str | None, request: web.Request) -> Principal | None:
        seen.append(token)
        return Principal("svc") if token else None

    port = free_port()
    tokens = Tokens(rotate_every_call=True)
    conn = client(
        f"http://127.0.0.1:{port}/hub", access_token_factory=tokens.get_token, token_transport="header"
    )
    reconnected = asyncio.Event()
    conn.on_reconnected(lambda _cid: reconnected.set())
    server = build_hub(authenticate=authenticate, require_auth=True)
    async with server.serve(port=port):
        await conn.start()
        before = set(seen)
        server.drop_all()
    assert conn.state in (ConnectionState.RECONNECTING, ConnectionState.CONNECTED)
    await until(lambda: conn.state is ConnectionState.RECONNECTING)
    calls_while_down = tokens.calls
    await until(lambda: tokens.calls >= calls_while_down + 2)  # still retrying, factory awaited each time
    server2 = build_hub(authenticate=authenticate, require_auth=True)
    async with server2.serve(port=port):
        await asyncio.wait_for(reconnected.wait(), 10)
        assert await conn.invoke("Add", 1, 2) == 3
        assert seen[-1] not in before  # the restarted server saw a token the first one never saw
        await conn.stop()


async def test_half_open_detected_within_server_timeout() -> None:
    server = build_hub(keepalive_interval=0.1)
    async with server.serve() as url:
        conn = client(url, server_timeout=0.8)
        reasons: asyncio.Queue[BaseException | None] = asyncio.Queue()
        conn.on_reconnecting(reasons.put_nowait)
        reconnected = asyncio.Event()
        conn.on_reconnected(lambda _cid: reconnected.set())
        async with running(conn):
            frozen_at = time.monotonic()
            assert server.half_open() == 1
            reason = await asyncio.wait_for(reasons.get(), 5)
            assert isinstance(reason, ServerTimeoutError)
            assert time.monotonic() - frozen_at < 0.8 + 0.5
            await asyncio.wait_for(reconnected.wait(), 5)
            assert await conn.invoke("Add", 3, 4) == 7
            server.end_half_open()


async def test_idle_healthy_connection_stays_up_with_keepalives() -> None:
    server = build_hub(keepalive_interval=0.1, client_timeout=0.6)
    async with server.serve() as url:
        conn = client(url, keepalive_interval=0.1, server_timeout=0.6)
        lost: list[Any] = []
        conn.on_reconnecting(lost.append)
        async with running(conn):
            pings_before = server.stats.pings_sent
            received_before = server.stats.messages_received
            await asyncio.sleep(1.5)  # an observation window longer than both timeouts, not a sync point
            assert lost == [] and conn.state is ConnectionState.CONNECTED
            assert server.stats.pings_sent > pings_before
            assert server.stats.messages_received > received_before  # our pings kept the server happy
            assert await conn.invoke("Add", 0, 1) == 1


@pytest.mark.parametrize(("where", "skip"), [("negotiate", False), ("upgrade", False), ("upgrade", True)])
async def test_401_invalidates_and_retries_once_with_fresh_token(where: str, skip: bool) -> None:
    tokens = Tokens()
    rejected_at: list[str] = []

    async def authenticate(token: str | None, request: web.Request) -> Principal | None:
        is_negotiate = request.path.endswith("/negotiate")
        if token == tokens.current.replace(f"{tokens.serial:04d}", "0001") and (
            is_negotiate == (where == "negotiate")
        ):
            rejected_at.append(request.path)
            return None
        return Principal("svc") if token else None

    server = build_hub(authenticate=authenticate, require_auth=True)
    async with server.serve() as url:
        conn = client(
            url,
            skip_negotiation=skip,
            access_token_factory=tokens.get_token,
            invalidate_token=tokens.invalidate,
            retry_policy=NEVER,
            retry_initial_start=False,
        )
        async with running(conn):
            assert tokens.invalidated == ["token-0001-abcdefghijklmnop"]
            assert len(rejected_at) == 1
            assert await conn.invoke("Add", 1, 1) == 2


async def test_401_twice_is_one_failed_attempt() -> None:
    tokens = Tokens()
    server = build_hub(authenticate=lambda *_: _none(), require_auth=True)
    async with server.serve() as url:
        conn = client(
            url,
            access_token_factory=tokens.get_token,
            invalidate_token=tokens.invalidate,
            retry_policy=NEVER,
            retry_initial_start=False,
        )
        with pytest.raises(HubAuthError) as info:
            await conn.start()
        assert info.value.status == 401
        assert len(tokens.invalidated) == 2 and conn.state is ConnectionState.DISCONNECTED


async def _none() -> None:
    return None


async def test_token_transport_header_query_both() -> None:
    seen: list[tuple[bool, bool]] = []

    async def authenticate(token: str | None, request: web.Request) -> Principal | None:
        seen.append(("Authorization" in request.headers, "access_token" in request.query))
        return Principal("svc")

    server = build_hub(authenticate=authenticate, require_auth=True)
    async with server.serve() as url:
        for mode, expected in (("header", (True, False)), ("query", (False, True)), ("both", (True, True))):
            seen.clear()
            tokens = Tokens()
            async with running(client(url, access_token_factory=tokens.get_token, token_transport=mode)):
                assert seen == [expected, expected]  # negotiate and upgrade
                assert tokens.calls == 2  # awaited before negotiate and before the WebSocket connect


async def test_token_expiry_close_reconnects_with_new_token() -> None:
    seen: list[str | None] = []

    async def authenticate(token: str | None, request: web.Request) -> Principal | None:
        seen.append(token)
        # the first token expires almost at once, later ones live long
        lifetime = 0.3 if token and "-0001-" in token else 3600
        return Principal("svc", expires_at=time.time() + lifetime)

    tokens = Tokens(rotate_every_call=True)
    server = build_hub(authenticate=authenticate, require_auth=True)
    async with server.serve() as url:
        conn = client(url, access_token_factory=tokens.get_token, skip_negotiation=True)
        reasons: list[BaseException | None] = []
        conn.on_reconnecting(reasons.append)
        reconnected = asyncio.Event()
        conn.on_reconnected(lambda _cid: reconnected.set())
        async with running(conn):
            await asyncio.wait_for(reconnected.wait(), 5)
            assert "expired" in str(reasons[0])
            assert seen[0] != seen[-1] and "-0001-" not in str(seen[-1])
            assert await conn.invoke("Add", 5, 5) == 10


async def test_initial_start_retried_while_server_down() -> None:
    port = free_port()
    tokens = Tokens()
    conn = client(
        f"http://127.0.0.1:{port}/hub", access_token_factory=tokens.get_token, skip_negotiation=True
    )
    starting = asyncio.create_task(conn.start())
    await until(lambda: tokens.calls >= 3)  # three attempts failed: nothing listens yet
    assert not starting.done() and conn.state is ConnectionState.CONNECTING
    server = build_hub()
    async with server.serve(port=port):
        await asyncio.wait_for(starting, 10)
        assert await conn.invoke("Add", 2, 3) == 5
        await conn.stop()


async def test_initial_start_not_retried_when_disabled() -> None:
    conn = client(f"http://127.0.0.1:{free_port()}/hub", retry_initial_start=False)
    with pytest.raises(Exception, match="negotiat"):
        await conn.start()
    assert conn.state is ConnectionState.DISCONNECTED


async def test_stop_during_retrying_start() -> None:
    tokens = Tokens()
    conn = client(f"http://127.0.0.1:{free_port()}/hub", access_token_factory=tokens.get_token)
    starting = asyncio.create_task(conn.start())
    await until(lambda: tokens.calls >= 2)
    await conn.stop()
    with pytest.raises(Exception, match="stopped during start"):
        await starting
    assert conn.state is ConnectionState.DISCONNECTED


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_pending_invoke_and_stream_fail_on_loss(protocol: str) -> None:
    server = build_hub()
    async with server.serve() as url, running(client(url, protocol=protocol)) as conn:
        pending = asyncio.create_task(conn.invoke("Hang"))
        stream = conn.stream("Forever")
        assert await anext(stream) == 0
        await until(lambda: conn.pending_calls > 0)
        server.drop_all()
        with pytest.raises(ConnectionLostError):
            await asyncio.wait_for(pending, 5)
        with pytest.raises(ConnectionLostError):
            async with asyncio.timeout(5):
                async for _ in stream:
                    pass


async def test_invoke_fails_on_stop() -> None:
    server = build_hub()
    async with server.serve() as url:
        conn = client(url)
        await conn.start()
        pending = asyncio.create_task(conn.invoke("Hang"))
        await until(lambda: conn.pending_calls > 0)
        await conn.stop()
        with pytest.raises(ConnectionLostError):
            await pending
        with pytest.raises(Exception, match="connected"):
            await conn.send("Record", 1)


async def test_negotiate_redirect_followed_with_its_access_token() -> None:
    seen: list[tuple[str, str | None]] = []

    async def authenticate(token: str | None, request: web.Request) -> Principal | None:
        seen.append((request.path, token))
        return Principal("svc") if token == "redirect-token-0123456789" else None

    server = build_hub(authenticate=authenticate, require_auth=True)
    async with server.serve() as hub_url:
        redirects: list[str | None] = []

        async def redirect(request: web.Request) -> web.Response:
            redirects.append(request.headers.get("Authorization"))
            return web.json_response({"url": hub_url, "accessToken": "redirect-token-0123456789"})

        app = web.Application()
        app.router.add_post("/front/negotiate", redirect)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            tokens = Tokens()
            conn = client(f"http://127.0.0.1:{port}/front", access_token_factory=tokens.get_token)
            async with running(conn):
                assert await conn.invoke("Add", 1, 2) == 3
            assert redirects == [f"Bearer {tokens.current}"]
            assert [t for _, t in seen] == ["redirect-token-0123456789"] * 2
            assert seen[0][0] == "/hub/negotiate" and seen[1][0] == "/hub"
        finally:
            await runner.cleanup()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_raw_arguments_pass_through(protocol: str) -> None:
    import msgspec

    server = build_hub()
    async with server.serve() as url:
        conn = client(url, protocol=protocol, raw_arguments=True)
        raw: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        decoded: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        conn.on_raw(lambda target, args: raw.put_nowait((target, args)))
        conn.on("Decoded", lambda *args: decoded.put_nowait(args))
        async with running(conn):
            await conn.invoke("JoinGroup", "g")
            server.send_to_group("g", "ReceiveCarPatches", [{"number": "7", "lastLapTime": None}])
            server.send_to_group("g", "Decoded", 1, "two")
            target, args = await asyncio.wait_for(raw.get(), 5)
            assert target == "ReceiveCarPatches" and isinstance(args, msgspec.Raw)
            data = bytes(args)
            value = msgspec.json.decode(data) if protocol == "json" else msgspec.msgpack.decode(data)
            assert value == [[{"number": "7", "lastLapTime": None}]]
            assert await asyncio.wait_for(decoded.get(), 5) == (1, "two")  # on() handlers still decode
            assert await conn.invoke("Add", 1, 2) == 3  # Completion results stay decoded
