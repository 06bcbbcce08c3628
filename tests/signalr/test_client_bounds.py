"""Memory the hub controls, bounded in bytes and in cardinality (issue 10, item 5).

- The dispatch queue is bounded in wire bytes as well as in invocations: large invocations stop the
  receive loop at `max_dispatch_bytes` (+ a frame), nothing is dropped, `buffer_usage()` reports it.
- Target names never grow a structure: the route cache keeps at most `MAX_ROUTES` names of at most
  `MAX_TARGET_LENGTH` characters, and the warned-once set of unhandled targets is bounded too.

Against our own HubServer on loopback; handlers are held on events the test controls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import structlog
import test_client_hub as hubs  # the demo hub of the client tests (stateful reconnect, half-open)

from consumer.signalr import protocol as proto
from consumer.signalr.connection import MAX_TARGET_LENGTH, HubConnection
from consumer.signalr.dispatch import MAX_ROUTES, DispatchQueue, Notify
from consumer.signalr.retry import DaemonRetryPolicy
from consumer.sim.hubhost import HubCallContext, HubServer

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

    @server.method("Add")
    async def add(ctx: HubCallContext, x: int, y: int) -> int:
        return x + y

    @server.method("Names")
    async def names(ctx: HubCallContext, n: int, length: int) -> int:
        # n invocations of n distinct targets, each `length` characters long, then the Completion
        for i in range(n):
            ctx.server.send_to_connection(ctx.connection_id, f"t{i:0{length - 1}d}", i)
        return n

    return server


def invocation(i: int) -> proto.Invocation:
    return proto.Invocation(target="Item", arguments=[i])


async def test_queue_is_bounded_in_bytes_admits_one_item_over_and_frees_on_task_done() -> None:
    queue = DispatchQueue(1000, byte_limit=100)
    assert queue.put_nowait([invocation(0)], 60)
    assert queue.bytes == 60
    # under the byte bound: the next frame is admitted whole, even though it takes the queue over
    assert queue.put_nowait([invocation(1), invocation(2)], 70)
    assert queue.bytes == 130 and queue.size == 3
    assert not queue.put_nowait([invocation(3)], 1)  # at the bound: nothing, however small
    assert not queue.put_nowait(Notify([], ()))  # not even a marker
    blocked = asyncio.create_task(queue.put([invocation(3)], 10))
    await asyncio.sleep(0)  # one loop pass: the task runs up to its wait for room
    first = await queue.get()
    assert queue.bytes == 130  # the batch the dispatcher works on still counts ...
    await asyncio.sleep(0)
    assert not blocked.done()
    queue.task_done(first)  # ... until it is done with it
    assert queue.bytes == 70
    await asyncio.wait_for(blocked, 5)
    assert queue.bytes == 80 and queue.size == 3
    for _ in range(2):
        queue.task_done(await queue.get())
    assert queue.bytes == 0 and queue.size == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_large_invocations_stop_the_receive_loop_at_the_byte_bound_and_nothing_is_lost(
    protocol: str,
) -> None:
    """20 KB invocations with a 256 KB byte bound: at most ~12 + two frames are decoded and not yet
    dispatched, far under the 10,000-invocation bound; the rest waits in the socket (backpressure),
    and once the handler goes on every invocation arrives, in order."""
    limit = 256 * 1024
    payload = "x" * 20_000
    total = 200  # 4 MB: sixteen times the bound
    server = build_hub()
    async with server.serve() as url:
        conn = client(url, protocol=protocol, max_dispatch_bytes=limit)
        seen: list[int] = []
        gate = asyncio.Event()
        entered = asyncio.Event()
        done = asyncio.Event()

        async def item(value: int, _payload: str) -> None:
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
            assert server.send_to_connection(cid, "Item", i, payload) == 1
        await asyncio.wait_for(entered.wait(), 10)
        await until(lambda: conn.buffer_usage().dispatch_bytes >= limit)
        # The receive loop is parked on the full queue: the Completion of this invoke is not read.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(conn.invoke("Add", 1, 2), 0.3)
        usage = conn.buffer_usage()
        frame = FRAME_BYTES + len(payload) + 64  # a coalesced frame: up to 64 KB + one message
        assert usage.dispatch_limit_bytes == limit
        assert limit <= usage.dispatch_bytes <= limit + 2 * frame
        assert usage.dispatch_invocations < 100 < usage.dispatch_limit_invocations
        assert conn.stats.invocations_decoded < total
        gate.set()
        await asyncio.wait_for(done.wait(), 30)
        assert seen == list(range(total))
        assert await asyncio.wait_for(conn.invoke("Add", 2, 3), 10) == 5
        assert conn.buffer_usage().dispatch_bytes == 0
        await conn.stop()
        assert conn.stats.invocations_decoded == conn.stats.invocations_dispatched == total
        assert conn.stats.invocations_abandoned == 0


async def test_target_names_from_the_hub_never_grow_the_route_cache_or_the_warned_set() -> None:
    """5,000 distinct targets nobody handles (warned once each, up to the bound) and 300 targets
    longer than MAX_TARGET_LENGTH: both sets stay bounded; every invocation is dispatched."""
    server = build_hub()
    async with server.serve() as url:
        conn = client(url)
        await conn.start()
        assert await asyncio.wait_for(conn.invoke("Names", 5000, 12), 30) == 5000
        assert await asyncio.wait_for(conn.invoke("Names", 300, MAX_TARGET_LENGTH + 1), 30) == 300
        await until(lambda: conn.stats.invocations_dispatched == 5300)
        routes = conn._routes
        warned = conn._warned_targets
        assert len(routes) <= MAX_ROUTES
        assert all(len(t) <= MAX_TARGET_LENGTH for t in routes)
        assert len(warned) <= MAX_ROUTES
        assert all(len(t) <= MAX_TARGET_LENGTH for t in warned)
        await conn.stop()


async def test_raw_handler_gets_long_targets_uncached_and_unchanged() -> None:
    server = build_hub()
    async with server.serve() as url:
        conn = client(url, raw_arguments=True)
        got: list[str] = []
        conn.on_raw(lambda target, raw: got.append(target))
        await conn.start()
        assert await asyncio.wait_for(conn.invoke("Names", 3, MAX_TARGET_LENGTH * 4), 30) == 3
        await until(lambda: len(got) == 3)
        assert [len(t) for t in got] == [MAX_TARGET_LENGTH * 4] * 3  # relayed whole, not truncated
        assert not any(len(t) > MAX_TARGET_LENGTH for t in conn._routes)
        await conn.stop()


async def test_buffer_usage_reports_the_replay_bound() -> None:
    server = build_hub()
    async with server.serve() as url:
        conn = client(url, stateful_buffer_size=12_345, max_dispatch_bytes=777_777, dispatch_queue_size=99)
        usage = conn.buffer_usage()
        assert (usage.dispatch_bytes, usage.replay_bytes) == (0, 0)
        assert (usage.dispatch_limit_bytes, usage.dispatch_limit_invocations) == (777_777, 99)
        assert usage.replay_limit_bytes == 12_345


async def test_a_failing_handler_logs_a_long_target_truncated() -> None:
    server = build_hub()
    async with server.serve() as url:
        conn = client(url, raw_arguments=True)
        calls: list[int] = []

        def fail(target: str, raw: Any) -> None:
            calls.append(len(target))
            raise ValueError("boom")

        conn.on_raw(fail)
        await conn.start()
        with structlog.testing.capture_logs() as logs:
            assert await asyncio.wait_for(conn.invoke("Names", 2, 100_000), 30) == 2
            await until(lambda: conn.stats.invocations_dispatched == 2)
        await conn.stop()
    assert calls == [100_000, 100_000]
    failed = [e for e in logs if e["event"] == "signalr.handler_failed"]
    assert len(failed) == 2
    assert all(len(e["target"]) == MAX_TARGET_LENGTH for e in failed)  # not a 100 KB log line


async def test_replay_buffer_bytes_are_reported_and_bounded() -> None:
    """Stateful reconnect: with the hub not reading (nothing acked), sends wait once the replay buffer
    holds `stateful_buffer_size` bytes; buffer_usage() shows the bytes held, 0 again once acked."""
    server = hubs.build_hub(client_timeout=10.0, keepalive_interval=0.1)
    async with server.serve() as url:
        conn = hubs.client(
            url, stateful_reconnect=True, stateful_buffer_size=300, ack_interval=0.05, server_timeout=10
        )
        async with hubs.running(conn):
            server.half_open()  # the server stops reading: nothing gets acked
            sender = asyncio.create_task(_send_many(conn, 20))
            await until(lambda: conn.buffer_usage().replay_bytes >= 300)
            usage = conn.buffer_usage()
            one = len(conn._protocol.encode(proto.Invocation(target="Record", arguments=[19])))
            assert usage.replay_limit_bytes == 300
            assert 300 <= usage.replay_bytes < 300 + one  # the send that crossed the bound waits
            assert not sender.done()
            server.end_half_open()
            assert await asyncio.wait_for(sender, 5) == 20
            await until(lambda: conn.buffer_usage().replay_bytes == 0)


async def _send_many(conn: HubConnection, n: int) -> int:
    for i in range(n):
        await conn.send("Record", i)
    return n
