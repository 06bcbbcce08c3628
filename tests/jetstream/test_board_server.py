"""Board servers fed from NATS (issue 14 item 4): `event-consumer board` serves, from the KV bucket the
daemon writes and with no hub connection, the same board as the daemon's own API."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import pytest
from daemon.helpers import sim_settings, until
from daemon.test_e2e import daemon_config, start_daemon
from web.sse import StreamBoard, frames, normal

from consumer.commands.board import serve
from consumer.config import Config
from consumer.daemon import Daemon
from consumer.errors import ConfigError
from consumer.kvboard import BoardValue, KvBoardSource
from consumer.sim.simulator import SimConfig, Simulator

from .natsserver import NatsServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(sim: Simulator, tmp_path: Path, nats_url: str, port: int) -> Config:
    return daemon_config(
        sim,
        tmp_path / "out.jsonl",
        http={"enabled": True, "port": port},
        nats={"servers": [nats_url], "board_bucket": "board", "board_max_hz": 20.0},
    )


class Pair:
    def __init__(self, sim: Simulator, daemon: Daemon, daemon_url: str, board_url: str) -> None:
        self.sim, self.daemon, self.daemon_url, self.board_url = sim, daemon, daemon_url, board_url


@pytest.fixture
async def pair(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[Pair]:
    async with Simulator(SimConfig(events=2, hub=sim_settings(speed=120.0))) as sim:
        daemon, task = await start_daemon(config(sim, tmp_path, nats_server.url, 0))
        assert daemon.observability is not None
        port = free_port()
        stop = asyncio.Event()
        server = asyncio.create_task(serve(config(sim, tmp_path, nats_server.url, port), stop, env={}))
        try:
            yield Pair(sim, daemon, daemon.observability.url, f"http://127.0.0.1:{port}")
        finally:
            stop.set()
            assert await asyncio.wait_for(server, 15) == 0
            daemon.stop()
            assert await asyncio.wait_for(task, 15) == 0


async def first_board(http: httpx.AsyncClient, eid: int) -> tuple[list[str], dict[str, Any]]:
    """The frames up to and including the first full board of a fresh stream."""
    kinds: list[str] = []
    async with http.stream("GET", f"/v1/events/{eid}/stream") as r:
        assert r.headers["content-type"] == "text/event-stream"
        async with asyncio.timeout(30):
            async for kind, data, _frame_id in frames(r):
                kinds.append(kind)
                if kind == "board":
                    return kinds, data
    raise AssertionError("the stream ended before a board")


def without_age(listing: dict[str, Any]) -> dict[str, Any]:
    return {**listing, "events": [{**e, "last_message_age_seconds": None} for e in listing["events"]]}


async def test_kv_fed_board_server_serves_the_daemons_board(pair: Pair) -> None:
    sim = pair.sim
    async with (
        httpx.AsyncClient(base_url=pair.daemon_url, timeout=30) as own,
        httpx.AsyncClient(base_url=pair.board_url, timeout=30) as kv,
    ):

        async def serving() -> bool:
            try:
                events = (await kv.get("/v1/events")).json()["events"]
            except httpx.HTTPError:
                return False
            return len(events) == 2 and all(e["cars"] > 0 and e["status"] == "live" for e in events)

        await until(serving, what="the board server's events live with cars")
        sim.hub.paused = True  # freeze the race: then both must show exactly the same board

        async def same_board() -> bool:
            for eid in sim.event_ids:
                a = await own.get(f"/v1/events/{eid}/board")
                b = await kv.get(f"/v1/events/{eid}/board")
                if a.status_code != 200 or (a.content, a.headers["etag"]) != (b.content, b.headers["etag"]):
                    return False
            return True

        await until(same_board, timeout=30, what="/board from KV == the daemon's /board (bytes and ETag)")
        for eid in sim.event_ids:
            r = await kv.get(f"/v1/events/{eid}/board")
            assert len(r.json()["carPositions"]) > 5
            again = await kv.get(f"/v1/events/{eid}/board", headers={"If-None-Match": r.headers["etag"]})
            assert again.status_code == 304
        # the SSE full board: equal JSON (the frame ids differ: each server has its own boot id). A new
        # stream starts from the last publication (at most 1 / board_max_hz old), so compare once both
        # servers published the frozen board.
        boards: dict[int, tuple[Any, Any]] = {}

        async def same_stream_board() -> bool:
            for eid in sim.event_ids:
                kinds_a, board_a = await first_board(own, eid)
                kinds_b, board_b = await first_board(kv, eid)
                assert kinds_a == kinds_b == ["hub", "board"]
                api = normal((await own.get(f"/v1/events/{eid}/board")).json())
                if (board_a["session"], board_a["cars"]) != api or board_b != board_a:
                    return False
                boards[eid] = board_a, board_b
            return True

        await until(same_stream_board, timeout=30, what="SSE full board from KV == the daemon's")
        assert all(b["cars"] and b["epoch"] == 0 for a, b in boards.values())
        listing_a, listing_b = (await own.get("/v1/events")).json(), (await kv.get("/v1/events")).json()
        assert without_age(listing_b) == without_age(listing_a) and listing_b["hub"] == "connected"
        for a, b in zip(listing_a["events"], listing_b["events"], strict=True):
            assert abs(a["last_message_age_seconds"] - b["last_message_age_seconds"]) < 2.0
        # errors as the daemon answers them, health and metrics of its own
        for path, status in [
            ("/v1/events/abc/board", 400),
            ("/v1/events/99999/board", 404),
            ("/nothing", 404),
        ]:
            assert (await kv.get(path)).status_code == status, path
        health = await kv.get("/healthz")
        assert health.status_code == 200 and health.json()["state"] == "connected"
        metrics = (await kv.get("/metrics")).text
        assert "event_consumer_board_kv_connected 1.0" in metrics
        assert "event_consumer_board_kv_events 2.0" in metrics
        assert sim.client_secret not in metrics and "messages_received" not in metrics
        assert (await kv.get("/")).status_code == 200


async def test_hub_state_and_reset_reach_kv_fed_streams(pair: Pair) -> None:
    sim = pair.sim
    eid = sim.event_ids[0]
    board = StreamBoard()
    it: AsyncIterator[tuple[str, dict[str, Any], str | None]] | None = None

    async def read_until(cond: Any) -> None:
        assert it is not None
        async with asyncio.timeout(30):
            async for kind, data, frame_id in it:
                board.apply(kind, data, frame_id)
                if cond(board):
                    return

    async with (
        httpx.AsyncClient(base_url=pair.board_url, timeout=30) as kv,
        kv.stream("GET", f"/v1/events/{eid}/stream") as r,
    ):
        it = frames(r)
        await read_until(lambda b: "board" in b.kinds and b.cars)
        assert board.hub[-1] == "connected"
        # the daemon loses the hub (and cannot come back until upgrades are accepted again)
        sim.hub.server.refuse_upgrades(503, 120.0)
        await sim.faults.close_all(allow_reconnect=True)
        await read_until(lambda b: b.hub[-1] == "reconnecting")
        listing = (await kv.get("/v1/events")).json()
        assert listing["hub"] == "reconnecting"
        assert {e["status"] for e in listing["events"]} == {"reconnecting"}
        sim.hub.server.accept_upgrades()
        await read_until(lambda b: b.hub[-1] == "connected")
        # a reset of the event's board: reset, then a new full board
        epoch = pair.daemon.state.epoch(str(eid)) if pair.daemon.state is not None else -1
        sim.faults.reset_event(eid)
        n = len(board.kinds)
        await read_until(lambda b: "reset" in b.kinds[n:] and "board" in b.kinds[n:])
        after = board.kinds[n:]
        assert after.index("reset") < after.index("board")
        assert (await kv.get("/v1/events")).json()["events"][0]["epoch"] > epoch


async def test_board_server_follows_nats_restarts_and_ignores_bad_values(tmp_path: Path) -> None:
    """The source alone: a value that does not decode is counted and skipped; a NATS restart shows
    `reconnecting`, then the values again."""
    server = NatsServer(tmp_path / "js")
    await server.start()
    hub_states: list[str] = []
    source = KvBoardSource(
        {"servers": [server.url], "allow_reconnect": False},
        bucket="board",
        hub="redmist",
        on_hub_state=hub_states.append,
    )
    task = asyncio.create_task(source.run())
    nc = await nats.connect(server.url)
    try:
        await until(lambda: source.connected, what="the source following the bucket")
        kv = await nc.jetstream().key_value("board")
        await kv.put("redmist.7", msgspec.json.encode(BoardValue(epoch=3, status="live", board={"n": 1})))
        await kv.put("redmist.8", b"not json")
        await kv.put("other.9", msgspec.json.encode(BoardValue(board={})))  # another hub's key
        version = source.version
        await kv.put("redmist.8", b'{"v": 1, "epoch": "x", "board": {}}')  # a wrong type
        await kv.put("redmist.7", msgspec.json.encode(BoardValue(epoch=4, status="live", board={"n": 2})))
        while source.epoch("7") != 4:
            version = await source.wait_changed(version)
        assert source.events() == ["7"] and source.event_state("7") == {"n": 2}
        assert source.invalid == 2 and hub_states == ["connecting", "connected"]  # empty bucket, then a value
        await nc.close()
        await server.kill()
        await until(lambda: hub_states[-1:] == ["reconnecting"], what="reconnecting")
        await server.start()  # same port and store: the values are still there
        await until(lambda: hub_states[-1:] == ["connected"] and source.connected, timeout=30, what="back")
        assert source.event_state("7") == {"n": 2} and source.reconnects >= 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await nc.close()
        await server.kill()


async def test_board_server_needs_the_bucket(tmp_path: Path) -> None:
    async with Simulator(SimConfig(events=1, hub=sim_settings())) as sim:
        cfg = daemon_config(sim, tmp_path / "out.jsonl", http={"port": free_port()})
        with pytest.raises(ConfigError) as err:
            await serve(cfg, asyncio.Event(), env={})
        assert "nats.board_bucket" in str(err.value)
