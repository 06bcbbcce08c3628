"""The Python SignalR peers (pysignalr, signalrcore) connect to HubServer with negotiate v0 and receive
broadcasts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from pysignalr.client import SignalRClient
from signalrcore.hub_connection_builder import HubConnectionBuilder


async def test_pysignalr_connects_and_receives_group_broadcasts(hub, until) -> None:
    server, url = hub
    received: asyncio.Queue[list[Any]] = asyncio.Queue()
    opened = asyncio.Event()
    client = SignalRClient(url, access_token_factory=lambda: "tok-pysignalr")

    async def on_news(args: Any) -> None:
        await received.put(args)

    async def on_open() -> None:
        opened.set()

    client.on("News", on_news)
    client.on_open(on_open)
    runner = asyncio.create_task(client.run())
    try:
        async with asyncio.timeout(10):
            await opened.wait()
        (cid,) = server.connection_ids
        assert server.protocol_of(cid) == "json"
        assert server.stats.negotiations == {0: 1}
        await client.send("JoinGroup", ["pysignalr"])
        await until(lambda: server.group_members("pysignalr") == {cid})
        for i in range(3):
            assert server.send_to_group("pysignalr", "News", i, {"n": i}) == 1
        got = [await asyncio.wait_for(received.get(), 10) for _ in range(3)]
        assert got == [[i, {"n": i}] for i in range(3)]
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    await until(lambda: not server.connection_ids)


async def test_signalrcore_connects_with_negotiate_v0_and_receives_broadcasts(hub, until) -> None:
    server, url = hub
    loop = asyncio.get_running_loop()
    received: asyncio.Queue[Any] = asyncio.Queue()
    opened = asyncio.Event()
    connection = (
        HubConnectionBuilder()
        .with_url(url, options={"access_token_factory": lambda: "tok-signalrcore"})
        .configure_logging(logging.CRITICAL)
        .build()
    )
    connection.on_open(lambda: loop.call_soon_threadsafe(opened.set))
    connection.on("News", lambda args: loop.call_soon_threadsafe(received.put_nowait, args))
    await asyncio.to_thread(connection.start)
    try:
        async with asyncio.timeout(10):
            await opened.wait()
        (cid,) = server.connection_ids
        assert server.stats.negotiations == {0: 1}
        await asyncio.to_thread(connection.send, "JoinGroup", ["core"])
        await until(lambda: server.group_members("core") == {cid})
        for i in range(3):
            assert server.send_to_group("core", "News", f"item-{i}") == 1
        got = [await asyncio.wait_for(received.get(), 10) for _ in range(3)]
        assert got == [["item-0"], ["item-1"], ["item-2"]]
    finally:
        await asyncio.to_thread(connection.stop)
    await until(lambda: not server.connection_ids)
