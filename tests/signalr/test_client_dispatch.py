"""The receive → dispatch hand-off: one batch per frame, bounded in invocations, nothing lost or reordered.

The queue itself is tested on its own (pure asyncio); everything else against our own HubServer on
loopback. Handlers are held on events the test controls; nothing here uses a sleep to synchronise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import pytest

from consumer.signalr import protocol as proto
from consumer.signalr.connection import ConnectionLostError, ConnectionState, HubConnection
from consumer.signalr.dispatch import DispatchQueue, Notify
from consumer.signalr.retry import DaemonRetryPolicy
from consumer.sim.hubhost import ClientResultError, HubCallContext, HubServer

PROTOCOLS = ("json", "messagepack")
FAST = DaemonRetryPolicy(base=0.05, cap=0.2)
FRAME_BYTES = 64 * 1024  # the server coalesces queued messages into frames of at most about this much


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition nothing can await (counters inside the client) until it holds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def client(url: str, **options: Any) -> HubConnection:
    options.setdefault("keepalive_interval", 0.2)
    options.setdefault("server_timeout", 5.0)
    options.setdefault("handshake_timeout", 2.0)
    options.setdefault("close_timeout", 0.5)
    options.setdefault("retry_policy", FAST)
    return HubConnection(url, **options)


def build_hub() -> HubServer:
    server = HubServer("/hub", keepalive_interval=0.2, client_timeout=5.0, outbound_queue_size=100_000)
    counter = iter(range(1_000_000))

    @server.method("Add")
    async def add(ctx: HubCallContext, x: int, y: int) -> int:
        return x + y

    @server.method("Burst")
    async def burst(ctx: HubCallContext, n: int) -> int:
        # n invocations queued before this method's Completion: usually one frame with both kinds
        for _ in range(n):
            ctx.server.send_to_connection(ctx.connection_id, "Item", next(counter))
        return n

    return server


def invocation(i: int) -> proto.Invocation:
    return proto.Invocation(target="Item", arguments=[i])


# --- the queue ------------------------------------------------------------------------------------


async def test_queue_is_bounded_in_invocations_and_never_splits_a_batch() -> None:
    queue = DispatchQueue(4)
    assert queue.put_nowait([invocation(0), invocation(1), invocation(2)])
    assert queue.size == 3
    # room for one more invocation: a whole batch of three is admitted (never split) ...
    assert queue.put_nowait([invocation(3), invocation(4), invocation(5)])
    assert queue.size == 6 and len(queue) == 2
    # ... and from now on nothing is, not even a connection callback marker
    marker = Notify([], ())
    assert not queue.put_nowait(marker)
    assert not queue.put_nowait([invocation(6)])
    blocked = asyncio.create_task(queue.put([invocation(6)]))
    await asyncio.sleep(0)  # one loop pass: the task runs up to its wait for room
    assert not blocked.done()
    first = await queue.get()
    assert [m.arguments for m in first] == [[0], [1], [2]]  # type: ignore[union-attr]
    assert queue.size == 6  # the batch the dispatcher works on still counts ...
    await asyncio.sleep(0)
    assert not blocked.done()
    queue.task_done(first)  # ... until it is done with it
    assert queue.size == 3
    await asyncio.wait_for(blocked, 5)
    assert queue.size == 4 and len(queue) == 2
    assert not queue.put_nowait(marker)
    second = await queue.get()
    queue.task_done(second)
    third = await queue.get()
    assert [m.arguments for m in second] == [[3], [4], [5]]  # type: ignore[union-attr]
    assert [m.arguments for m in third] == [[6]]  # type: ignore[union-attr]
    assert queue.put_nowait(marker)  # a marker counts one
    assert queue.size == 2 and await queue.get() is marker


async def test_cancelled_put_adds_nothing_and_join_waits_for_task_done() -> None:
    queue = DispatchQueue(1)
    assert queue.put_nowait([invocation(0)])
    blocked = asyncio.create_task(queue.put([invocation(1)]))
    await asyncio.sleep(0)  # one loop pass: the task runs up to its wait for room
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    assert queue.size == 1 and len(queue) == 1

    joined = asyncio.create_task(queue.join())
    item = await queue.get()
    assert [m.arguments for m in item] == [[0]]  # type: ignore[union-attr]
    await asyncio.sleep(0)
    assert not joined.done()  # taken but not finished
    queue.task_done(item)
    await asyncio.wait_for(joined, 5)
    assert queue.size == 0
    # an empty queue's get() waits for the next put
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.put_nowait([invocation(2)])
    assert [m.arguments for m in await asyncio.wait_for(getter, 5)] == [[2]]  # type: ignore[union-attr]


# --- against the hub ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_full_queue_stops_reading_and_nothing_is_lost_or_reordered(protocol: str) -> None:
    total, limit = 20_000, 64
    server = build_hub()
    async with server.serve() as url:
        conn = client(url, protocol=protocol, dispatch_queue_size=limit)
        seen: list[int] = []
        gate = asyncio.Event()
        entered = asyncio.Event()
        done = asyncio.Event()

        async def item(value: int) -> None:
            if not entered.is_set():
                entered.set()
                await gate.wait()
            seen.append(value)
            if len(seen) == total:
                done.set()

        conn.on("Item", item)
        await conn.start()
        cid = conn.connection_id
        assert cid is not None
        for i in range(total):
            assert server.send_to_connection(cid, "Item", i) == 1
        await asyncio.wait_for(entered.wait(), 10)
        await until(lambda: conn.stats.invocations_decoded > limit)
        # The receive loop is parked on the full queue: the Completion of this invoke is not read.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(conn.invoke("Add", 1, 2), 0.3)
        smallest = len(proto.get_protocol(protocol).encode(invocation(0)))
        per_frame = FRAME_BYTES // smallest + 1
        # decoded, not dispatched: under the bound + one frame admitted over it + one waiting for room
        assert conn.stats.invocations_decoded <= limit - 1 + 2 * per_frame < total
        gate.set()
        await asyncio.wait_for(done.wait(), 30)
        assert seen == list(range(total))
        assert await asyncio.wait_for(conn.invoke("Add", 2, 3), 10) == 5
        await conn.stop()
        stats = conn.stats
        assert stats.invocations_decoded == stats.invocations_dispatched == total
        assert stats.invocations_abandoned == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_loop_parked_on_a_full_queue_longer_than_server_timeout_is_no_server_timeout(
    protocol: str,
) -> None:
    """Only the wait on the socket is timed: the receive loop's watchdog ignores time spent handing
    frames over, however long, and still times the next wait once the loop reads again."""
    total, timeout = 200, 0.5
    server = build_hub()
    async with server.serve() as url:
        conn = client(url, protocol=protocol, dispatch_queue_size=8, server_timeout=timeout)
        lost: list[Any] = []
        conn.on_reconnecting(lost.append)
        seen: list[int] = []
        gate = asyncio.Event()
        entered = asyncio.Event()
        done = asyncio.Event()

        async def item(value: int) -> None:
            if not entered.is_set():
                entered.set()
                await gate.wait()
            seen.append(value)
            if len(seen) == total:
                done.set()

        conn.on("Item", item)
        await conn.start()
        cid = conn.connection_id
        assert cid is not None
        for i in range(total):
            assert server.send_to_connection(cid, "Item", i) == 1
        await asyncio.wait_for(entered.wait(), 10)
        await until(lambda: conn.stats.invocations_decoded > 8)
        await asyncio.sleep(3 * timeout)  # an observation window longer than the timeout, not a sync point
        assert lost == [] and conn.state is ConnectionState.CONNECTED
        gate.set()
        await asyncio.wait_for(done.wait(), 10)
        assert seen == list(range(total))
        assert await asyncio.wait_for(conn.invoke("Add", 2, 3), 10) == 5
        assert lost == []
        await conn.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stop_while_a_mixed_frame_waits_for_room_keeps_every_invocation(protocol: str) -> None:
    server = build_hub()
    async with server.serve() as url:
        conn = client(url, protocol=protocol, dispatch_queue_size=8)
        seen: list[int] = []
        gate = asyncio.Event()
        entered = asyncio.Event()

        async def item(value: int) -> None:
            if not entered.is_set():
                entered.set()
                await gate.wait()
            seen.append(value)

        conn.on("Item", item)
        await conn.start()
        # Items then the Completion: the Items are handed over before the Completion resolves
        assert await asyncio.wait_for(conn.invoke("Burst", 50), 10) == 50
        await asyncio.wait_for(entered.wait(), 10)
        # the queue is over its bound now: this burst's Items wait for room, its Completion unread
        second = asyncio.create_task(conn.invoke("Burst", 50))
        await until(lambda: conn.stats.invocations_decoded == 100)
        assert not second.done()
        stopping = asyncio.create_task(conn.stop(drain_timeout=30))
        await until(lambda: conn.state is ConnectionState.DISCONNECTING)
        gate.set()
        await asyncio.wait_for(stopping, 30)
        with pytest.raises(ConnectionLostError):
            await second
        assert seen == list(range(100))
        stats = conn.stats
        assert (stats.invocations_decoded, stats.invocations_dispatched, stats.invocations_abandoned) == (
            100,
            100,
            0,
        )


class AsyncCallable:
    """A callable object whose __call__ is async (not an `async def` function to inspect)."""

    def __init__(self, sink: list[tuple[str, Any]]) -> None:
        self.sink = sink

    async def __call__(self, target: str, raw: Any) -> None:
        await asyncio.sleep(0)
        self.sink.append((target, raw))


def raw_handlers(sink: list[tuple[str, Any]]) -> dict[str, Callable[[str, Any], Any]]:
    async def coroutine_function(target: str, raw: Any) -> None:
        sink.append((target, raw))

    def plain(target: str, raw: Any) -> None:
        sink.append((target, raw))

    def returns_awaitable(target: str, raw: Any) -> Awaitable[None]:
        return coroutine_function(target, raw)

    return {
        "async def": coroutine_function,
        "sync": plain,
        "sync returning a coroutine": returns_awaitable,
        "async __call__": AsyncCallable(sink),
    }


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", list(raw_handlers([])))
async def test_raw_handler_kinds_get_every_invocation_in_order(protocol: str, kind: str) -> None:
    total = 3_000
    server = build_hub()
    async with server.serve() as url:
        conn = client(url, protocol=protocol, raw_arguments=True)
        sink: list[tuple[str, Any]] = []
        conn.on_raw(raw_handlers(sink)[kind])
        await conn.start()
        cid = conn.connection_id
        assert cid is not None
        for i in range(total):
            server.send_to_connection(cid, "Item", i)
        await until(lambda: conn.stats.invocations_dispatched == total)
        decode = msgspec.json.decode if protocol == "json" else msgspec.msgpack.decode
        assert [t for t, _ in sink] == ["Item"] * total
        assert [decode(bytes(raw)) for _, raw in sink] == [[i] for i in range(total)]
        await conn.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_raw_handler_failures_are_contained_counted_and_answered(protocol: str) -> None:
    server = build_hub()
    async with server.serve() as url:
        conn = client(url, protocol=protocol, raw_arguments=True)
        seen: list[int] = []
        decode = msgspec.json.decode if protocol == "json" else msgspec.msgpack.decode

        async def on_raw(target: str, raw: Any) -> Any:
            (value,) = decode(bytes(raw))
            if value % 5 == 0:
                raise RuntimeError(f"no {value}")
            seen.append(value)
            return value * 2

        conn.on_raw(on_raw)
        await conn.start()
        cid = conn.connection_id
        assert cid is not None
        for i in range(100):
            server.send_to_connection(cid, "Item", i)
        await until(lambda: conn.stats.invocations_dispatched == 100)
        assert seen == [i for i in range(100) if i % 5]
        assert conn.state is ConnectionState.CONNECTED
        # server invocations that expect a result take the general path: result or error Completion
        assert await server.invoke_client(cid, "Ask", 21, timeout=5) == 42
        with pytest.raises(ClientResultError, match="no 10"):
            await server.invoke_client(cid, "Ask", 10, timeout=5)
        await conn.stop()
        assert conn.stats.invocations_dispatched == conn.stats.invocations_decoded == 102


async def test_route_cache_follows_on_off_and_on_raw() -> None:
    server = build_hub()
    async with server.serve() as url:
        conn = client(url, protocol="messagepack", raw_arguments=True)
        events: list[tuple[str, Any]] = []
        conn.on_raw(lambda target, raw: events.append(("raw", target)))
        await conn.start()
        cid = conn.connection_id
        assert cid is not None

        async def send_and_wait(target: str, value: int) -> None:
            expected = conn.stats.invocations_dispatched + 1
            server.send_to_connection(cid, target, value)
            await until(lambda: conn.stats.invocations_dispatched == expected)

        await send_and_wait("Item", 1)

        def decoded(value: int) -> None:
            events.append(("on", value))

        conn.on("item", decoded)  # case-insensitive: takes "Item" over from the raw handler
        await send_and_wait("Item", 2)
        await send_and_wait("ITEM", 3)
        conn.off("Item", decoded)
        await send_and_wait("Item", 4)
        conn.on_raw(lambda target, raw: events.append(("raw2", target)))
        await send_and_wait("Item", 5)
        conn.on_raw(None)  # nothing handles it now: logged once, still counted as dispatched
        await send_and_wait("Item", 6)
        assert events == [("raw", "Item"), ("on", 2), ("on", 3), ("raw", "Item"), ("raw2", "Item")]
        await conn.stop()
