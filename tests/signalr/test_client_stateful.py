"""Stateful reconnect against our hub: forced transport drops lose and duplicate nothing, both ways."""

from __future__ import annotations

import asyncio

import pytest
from test_client_hub import PROTOCOLS, build_hub, client, running, until

from consumer.signalr.connection import ConnectionState

N = 300


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_no_lost_or_duplicated_message_across_forced_drops(protocol: str) -> None:
    server = build_hub()
    async with server.serve() as url:
        conn = client(url, protocol=protocol, stateful_reconnect=True, ack_interval=0.05)
        got: list[int] = []
        conn.on("Seq", got.append)
        lost: list[object] = []
        conn.on_reconnecting(lost.append)
        async with running(conn):
            first_id = conn.connection_id
            await conn.invoke("JoinGroup", "g")
            drops = 0
            for i in range(N):
                server.send_to_group("g", "Seq", i)
                await conn.send("Record", i)
                if i % 50 == 25:
                    # drop exactly once, as soon as the previous resume has attached a transport
                    await until(lambda: server.drop_all() == 1)
                    drops += 1
            assert drops == 6
            await until(lambda: len(got) >= N and len(server.received) >= N)  # type: ignore[attr-defined]
            await asyncio.sleep(0.2)  # a window for late duplicates to show up (none may)
            assert got == list(range(N))
            assert server.received == list(range(N))  # type: ignore[attr-defined]
            assert lost == [] and conn.connection_id == first_id
            assert conn.state is ConnectionState.CONNECTED
            assert server.stats.reconnects >= 1
            assert await conn.invoke("Add", 1, 2) == 3


async def test_pending_invoke_survives_a_resumed_drop() -> None:
    server = build_hub()
    release = asyncio.Event()

    @server.method("Slow")
    async def slow(ctx: object, x: int) -> int:
        await release.wait()
        return x + 1

    async with (
        server.serve() as url,
        running(client(url, stateful_reconnect=True, ack_interval=0.05)) as conn,
    ):
        pending = asyncio.create_task(conn.invoke("Slow", 41))
        await until(lambda: conn.pending_calls > 0)
        assert server.drop_all() == 1
        await until(lambda: server.stats.reconnects >= 1)
        release.set()
        assert await asyncio.wait_for(pending, 5) == 42


async def test_falls_back_to_normal_reconnect_when_resume_is_refused() -> None:
    server = build_hub(reconnect_window=0.0)  # the server forgets the connection at once → 404 on resume
    async with server.serve() as url:
        conn = client(url, stateful_reconnect=True)
        reconnected = asyncio.Event()
        conn.on_reconnected(lambda _cid: reconnected.set())
        async with running(conn):
            first_id = conn.connection_id
            server.drop_all()
            await asyncio.wait_for(reconnected.wait(), 5)
            assert conn.connection_id != first_id
            assert await conn.invoke("Add", 2, 2) == 4


async def test_server_without_stateful_reconnect_gets_a_normal_connection() -> None:
    server = build_hub(stateful_reconnect=False)
    async with server.serve() as url:
        conn = client(url, stateful_reconnect=True)
        reconnected = asyncio.Event()
        conn.on_reconnected(lambda _cid: reconnected.set())
        async with running(conn):
            server.drop_all()
            await asyncio.wait_for(reconnected.wait(), 5)
            assert await conn.invoke("Add", 2, 3) == 5


async def test_sends_wait_when_the_replay_buffer_is_full() -> None:
    server = build_hub(client_timeout=10.0, keepalive_interval=0.1)
    async with server.serve() as url:
        conn = client(
            url, stateful_reconnect=True, stateful_buffer_size=300, ack_interval=0.05, server_timeout=10
        )
        async with running(conn):
            server.half_open()  # the server stops reading: nothing gets acked
            blocked = asyncio.create_task(_send_many(conn, 20))
            done, _ = await asyncio.wait([blocked], timeout=0.5)
            assert not done  # backpressure: the buffer is full and unacked
            server.end_half_open()
            sent = await asyncio.wait_for(blocked, 5)
            assert sent == 20
            await until(lambda: server.received == list(range(20)))  # type: ignore[attr-defined]


async def _send_many(conn: object, n: int) -> int:
    from consumer.signalr.connection import HubConnection

    assert isinstance(conn, HubConnection)
    for i in range(n):
        await conn.send("Record", i)
    return n
