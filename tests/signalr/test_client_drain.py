"""Nothing decoded is lost (stop and connection loss), and callbacks run with the receive loop alive.

Against our own hub (consumer.sim.hubhost.HubServer) on loopback. Handlers are held on an
asyncio.Event the test controls, so the client's dispatch queue is provably non-empty when stop()
or the loss happens; nothing here uses a sleep to synchronise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from consumer.signalr.connection import ConnectionState, HubConnection
from consumer.signalr.retry import DaemonRetryPolicy
from consumer.sim.hubhost import HubCallContext, HubServer

PROTOCOLS = ("json", "messagepack")
FAST = DaemonRetryPolicy(base=0.05, cap=0.2)


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition nothing can await (counters inside the client or server) until it holds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def build_hub() -> HubServer:
    server = HubServer("/hub", keepalive_interval=0.2, client_timeout=5.0, outbound_queue_size=100_000)

    @server.method("Add")
    async def add(ctx: HubCallContext, x: int, y: int) -> int:
        return x + y

    @server.method("Hello")
    async def hello(ctx: HubCallContext, text: str) -> str:
        # An invocation for the caller, queued before this method's Completion.
        ctx.server.send_to_connection(ctx.connection_id, "Item", f"pushed-by-{text}")
        return f"hello {text}"

    return server


def client(url: str, **options: Any) -> HubConnection:
    options.setdefault("keepalive_interval", 0.2)
    options.setdefault("server_timeout", 2.0)
    options.setdefault("handshake_timeout", 2.0)
    options.setdefault("close_timeout", 0.5)
    options.setdefault("retry_policy", FAST)
    return HubConnection(url, **options)


class Held:
    """An `Item` handler that records its argument; the first call waits until `release()`."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def __call__(self, value: Any) -> None:
        if not self.entered.is_set():
            self.entered.set()
            await self.gate.wait()
        self.seen.append(value)

    def release(self) -> None:
        self.gate.set()


def flood(server: HubServer, connection_id: str, count: int) -> None:
    for i in range(count):
        assert server.send_to_connection(connection_id, "Item", i) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stop_dispatches_every_decoded_invocation(protocol: str) -> None:
    total = 20_000
    server = build_hub()
    async with server.serve() as url:
        # A small queue: the receive loop ends up blocked on a full queue in the middle of a
        # multi-message frame, the hardest place for stop() to find it.
        conn = client(url, protocol=protocol, dispatch_queue_size=64)
        held = Held()
        conn.on("Item", held)
        closed: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        conn.on_closed(closed.set_result)
        await conn.start()
        assert conn.connection_id is not None
        flood(server, conn.connection_id, total)
        await asyncio.wait_for(held.entered.wait(), 10)
        await until(lambda: conn.stats.invocations_decoded > 64)  # queue full behind the held handler

        stopping = asyncio.create_task(conn.stop(drain_timeout=30))
        await until(lambda: conn.state is ConnectionState.DISCONNECTING)
        assert not stopping.done()  # the drain waits for the held handler
        held.release()
        await asyncio.wait_for(stopping, 30)

        stats = conn.stats
        assert conn.state is ConnectionState.DISCONNECTED
        assert await asyncio.wait_for(closed, 5) is None
        assert stats.invocations_decoded > 64
        assert stats.invocations_decoded < total  # reading stopped mid-flood
        assert held.seen == list(range(stats.invocations_decoded))  # all of them, in order, no gap
        assert stats.invocations_dispatched == stats.invocations_decoded
        assert stats.invocations_abandoned == 0


async def test_handlers_answer_server_invocations_while_draining() -> None:
    server = build_hub()
    async with server.serve() as url:
        conn = client(url, protocol="messagepack")
        held = Held()
        conn.on("Item", held)
        conn.on("Ask", lambda x: x * 2)
        await conn.start()
        cid = conn.connection_id
        assert cid is not None
        flood(server, cid, 10)
        await asyncio.wait_for(held.entered.wait(), 10)
        answer = asyncio.create_task(server.invoke_client(cid, "Ask", 21, timeout=10))
        await until(lambda: conn.stats.invocations_decoded == 11)  # the Ask sits behind the Items
        stopping = asyncio.create_task(conn.stop(drain_timeout=30))
        await until(lambda: conn.state is ConnectionState.DISCONNECTING)
        held.release()
        await asyncio.wait_for(stopping, 30)
        assert await asyncio.wait_for(answer, 10) == 42  # the Completion went out before the Close
        assert held.seen == list(range(10))


async def test_drain_timeout_abandons_the_rest_and_counts_it() -> None:
    server = build_hub()
    async with server.serve() as url:
        conn = client(url)
        held = Held()  # never released
        conn.on("Item", held)
        closed: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        conn.on_closed(closed.set_result)
        await conn.start()
        assert conn.connection_id is not None
        flood(server, conn.connection_id, 50)
        await until(lambda: conn.stats.invocations_decoded == 50)
        await asyncio.wait_for(conn.stop(drain_timeout=0.1), 10)
        stats = conn.stats
        assert conn.state is ConnectionState.DISCONNECTED
        assert await asyncio.wait_for(closed, 5) is None
        assert held.seen == []
        assert (stats.invocations_dispatched, stats.invocations_abandoned) == (0, 50)


async def test_cancelled_stop_still_closes_and_counts_the_abandoned() -> None:
    server = build_hub()
    async with server.serve() as url:
        conn = client(url)
        held = Held()  # never released
        conn.on("Item", held)
        await conn.start()
        assert conn.connection_id is not None
        flood(server, conn.connection_id, 20)
        await until(lambda: conn.stats.invocations_decoded == 20)
        stopping = asyncio.create_task(conn.stop(drain_timeout=60))
        await until(lambda: conn.state is ConnectionState.DISCONNECTING)
        stopping.cancel()  # e.g. the daemon's shutdown budget ran out
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(stopping, 10)
        assert conn.state is ConnectionState.DISCONNECTED
        assert conn.stats.invocations_abandoned == 20
        await asyncio.wait_for(conn.wait_closed(), 5)


async def test_stop_from_a_handler_returns_and_the_rest_is_still_dispatched() -> None:
    server = build_hub()
    async with server.serve() as url:
        conn = client(url)
        seen: list[int] = []

        async def handler(i: int) -> None:
            seen.append(i)
            if i == 3:
                await conn.stop()  # must not wait for the drain it is part of

        conn.on("Item", handler)
        await conn.start()
        assert conn.connection_id is not None
        flood(server, conn.connection_id, 100)
        await asyncio.wait_for(conn.wait_closed(), 10)
        assert seen == list(range(conn.stats.invocations_decoded))
        assert len(seen) >= 4 and conn.stats.invocations_abandoned == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_loss_dispatches_what_was_decoded_before_the_reconnecting_callbacks(protocol: str) -> None:
    total = 500
    server = build_hub()
    async with server.serve() as url:
        conn = client(url, protocol=protocol)
        events: list[Any] = []
        gate = asyncio.Event()
        reconnected = asyncio.Event()

        async def item(value: Any) -> None:
            if value == 0:
                await gate.wait()
            events.append(value)

        def on_reconnecting(error: BaseException | None) -> None:
            events.append("reconnecting")

        def on_reconnected(connection_id: str | None) -> None:
            events.append("reconnected")
            reconnected.set()

        conn.on("Item", item)
        conn.on_reconnecting(on_reconnecting)
        conn.on_reconnected(on_reconnected)
        await conn.start()
        assert conn.connection_id is not None
        flood(server, conn.connection_id, total)
        await until(lambda: conn.stats.invocations_decoded == total)  # all decoded, almost none handled
        assert server.drop_all() == 1
        await until(lambda: conn.state is ConnectionState.RECONNECTING)
        assert events == []  # neither the data nor the marker overtook the held handler
        gate.set()
        await asyncio.wait_for(reconnected.wait(), 10)
        assert events == [*range(total), "reconnecting", "reconnected"]
        assert conn.connection_id is not None
        flood(server, conn.connection_id, 1)
        await until(lambda: conn.stats.invocations_dispatched == total + 1)
        assert events[-1] == 0
        await conn.stop()
        assert conn.stats.invocations_abandoned == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_on_reconnected_callback_can_await_invoke(protocol: str) -> None:
    server = build_hub()
    async with server.serve() as url:
        conn = client(url, protocol=protocol)
        order: list[str] = []
        results: asyncio.Queue[Any] = asyncio.Queue()

        async def resubscribe(connection_id: str | None) -> None:
            assert conn.state is ConnectionState.CONNECTED
            order.append("callback started")
            try:
                answer = await asyncio.wait_for(conn.invoke("Hello", "cb"), 5)
            except Exception as exc:  # surfaced to the test below, not swallowed
                await results.put(exc)
                return
            order.append(f"callback got {answer}")
            await results.put(answer)

        conn.on("Item", lambda value: order.append(f"item {value}"))
        conn.on_reconnected(resubscribe)
        await conn.start()
        first_id = conn.connection_id
        assert server.drop_all() == 1
        assert await asyncio.wait_for(results.get(), 10) == "hello cb"
        assert conn.connection_id != first_id
        await until(lambda: len(order) == 3)
        # The Item the hub pushed before answering waited for the callback: data received on the
        # new transport is dispatched after the reconnected callbacks have finished.
        assert order == ["callback started", "callback got hello cb", "item pushed-by-cb"]
        assert await conn.invoke("Add", 1, 2) == 3
        await conn.stop()


async def test_cancelled_stop_cuts_a_running_hung_on_closed_callback_short() -> None:
    server = build_hub()
    async with server.serve() as url:
        conn = client(url)
        entered = asyncio.Event()

        async def hung(error: BaseException | None) -> None:
            entered.set()
            await asyncio.Event().wait()  # never set: e.g. a write to a stalled sink

        conn.on_closed(hung)
        await conn.start()
        stopping = asyncio.create_task(conn.stop())
        await asyncio.wait_for(entered.wait(), 10)
        assert not stopping.done()  # stop() waits for on_closed ...
        stopping.cancel()  # ... until its caller gives up: then it returns promptly
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(stopping, 5)
        await asyncio.wait_for(conn.wait_closed(), 5)
        assert conn.state is ConnectionState.DISCONNECTED


async def test_stop_cancelled_while_draining_bounds_a_hung_on_closed_callback() -> None:
    server = build_hub()
    async with server.serve() as url:
        conn = client(url, close_timeout=0.3)
        held = Held()  # never released
        conn.on("Item", held)
        entered = asyncio.Event()

        async def hung(error: BaseException | None) -> None:
            entered.set()
            await asyncio.Event().wait()

        conn.on_closed(hung)
        await conn.start()
        assert conn.connection_id is not None
        flood(server, conn.connection_id, 5)
        await until(lambda: conn.stats.invocations_decoded == 5)
        stopping = asyncio.create_task(conn.stop(drain_timeout=60))
        await until(lambda: conn.state is ConnectionState.DISCONNECTING)
        stopping.cancel()  # during the drain: on_closed has not started yet
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(stopping, 5)  # close_timeout bounds the hung callback
        assert entered.is_set()  # it did run
        assert conn.stats.invocations_abandoned == 5
        await asyncio.wait_for(conn.wait_closed(), 5)
