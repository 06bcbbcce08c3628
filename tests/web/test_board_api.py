"""The board API against the real daemon (in-process) following the simulator."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from daemon.helpers import records, sim_settings, until
from daemon.test_e2e import daemon_config, start_daemon

from consumer.daemon import Daemon
from consumer.sim.simulator import SimConfig, Simulator

from .sse import StreamBoard, boards_from_lines, frames, normal


class Setup:
    def __init__(self, sim: Simulator, daemon: Daemon, task: asyncio.Task[int], out: Path) -> None:
        self.sim, self.daemon, self.task, self.out = sim, daemon, task, out
        assert daemon.observability is not None
        self.url = daemon.observability.url


async def launch(tmp_path: Path, sim: Simulator, **http: Any) -> Setup:
    out = tmp_path / "out.jsonl"
    cfg = daemon_config(sim, out, http={"enabled": True, "port": 0, **http})
    daemon, task = await start_daemon(cfg)
    return Setup(sim, daemon, task, out)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with Simulator(SimConfig(events=2, hub=sim_settings(speed=120.0))) as sim:
        s = await launch(tmp_path, sim)
        try:
            yield s
        finally:
            s.daemon.stop()
            assert await asyncio.wait_for(s.task, 15) == 0


_ITERS: dict[int, Any] = {}


async def read_until(response: httpx.Response, board: StreamBoard, cond: Any, timeout: float = 30.0) -> None:
    """Apply the stream's frames to `board` until `cond(board)` (one frame iterator per response)."""
    it = _ITERS.setdefault(id(response), frames(response))
    async with asyncio.timeout(timeout):
        async for kind, data, frame_id in it:
            board.apply(kind, data, frame_id)
            if cond(board):
                return


async def test_events_board_equals_relayed_lines_and_etag(setup: Setup) -> None:
    sim = setup.sim
    async with httpx.AsyncClient(base_url=setup.url) as http:

        async def cars_everywhere() -> bool:
            events = (await http.get("/v1/events")).json()["events"]
            return len(events) == 2 and all(e["cars"] > 0 and e["status"] == "live" for e in events)

        await until(cars_everywhere, what="both events live with cars")
        listing = (await http.get("/v1/events")).json()
        assert listing["hub"] == "connected"
        assert sorted(e["id"] for e in listing["events"]) == sorted(sim.event_ids)
        first = listing["events"][0]
        assert first["session"]["name"] and first["flag_name"] and first["last_message_age_seconds"] >= 0
        # let patches flow, then freeze the race and compare with the lines the daemon relayed
        await until(
            lambda: sum(r.get("target") == "ReceiveCarPatches" for r in records(setup.out)) >= 10,
            what="car patches relayed",
        )
        sim.hub.paused = True

        async def same() -> bool:
            rebuilt = boards_from_lines(records(setup.out))
            for eid in sim.event_ids:
                r = await http.get(f"/v1/events/{eid}/board")
                if r.status_code != 200 or normal(r.json()) != normal(rebuilt[str(eid)]):
                    return False
            return True

        await until(same, timeout=30, what="API board == board rebuilt from the relayed lines")
        eid = sim.event_ids[0]
        r = await http.get(f"/v1/events/{eid}/board")
        assert len(r.json()["carPositions"]) > 5
        etag = r.headers["etag"]
        again = await http.get(f"/v1/events/{eid}/board", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
        sim.hub.paused = False
        await until(
            lambda: setup.daemon.board is not None and setup.daemon.board.published > 0, what="published"
        )

        async def changed() -> bool:
            r = await http.get(f"/v1/events/{eid}/board", headers={"If-None-Match": etag})
            return r.status_code == 200 and r.headers["etag"] != etag

        await until(changed, what="a new ETag once the race moves on")
        # malformed or unknown ids: JSON errors
        for path, status in [
            ("/v1/events/abc/board", 400),
            ("/v1/events/-1/stream", 400),
            ("/v1/events/99999/board", 404),
            ("/v1/events/99999/stream", 404),
            ("/v1/nothing", 404),
        ]:
            r = await http.get(path)
            assert r.status_code == status and r.json()["error"]["status"] == status, path
        r = await http.post("/v1/events")
        assert r.status_code == 405 and r.json()["error"]["status"] == 405
        # nothing secret in any response
        bodies = [
            (await http.get(p)).text for p in ("/", "/v1/events", f"/v1/events/{eid}/board", "/metrics")
        ]
        for body in bodies:
            assert sim.client_secret not in body and sim.token_url not in body
            assert "Bearer" not in body and "access_token" not in body


async def test_stream_full_board_then_deltas_and_resume_after_a_drop(setup: Setup) -> None:
    sim = setup.sim
    eid = sim.event_ids[0]
    board = StreamBoard()
    async with httpx.AsyncClient(base_url=setup.url, timeout=30) as http:
        async with http.stream("GET", f"/v1/events/{eid}/stream") as r:
            assert r.headers["content-type"] == "text/event-stream"
            await read_until(r, board, lambda b: b.kinds.count("delta") >= 3)
        assert board.kinds[0] == "hub" and board.kinds[1] == "board" and board.hub == ["connected"]
        assert board.cars
        dropped_at = board.last_id
        assert dropped_at is not None
        # changes happen while we are away; then resume with Last-Event-ID
        published = setup.daemon.board.published if setup.daemon.board else 0
        await until(
            lambda: setup.daemon.board is not None and setup.daemon.board.published >= published + 3,
            what="changes while disconnected",
        )
        resumed = StreamBoard()
        resumed.session, resumed.cars = board.session, board.cars
        async with http.stream("GET", f"/v1/events/{eid}/stream", headers={"Last-Event-ID": dropped_at}) as r:
            await read_until(r, resumed, lambda b: b.kinds.count("delta") >= 1)
            assert "board" not in resumed.kinds  # the missed changes came from the ring
            sim.hub.paused = True

            async def caught_up() -> bool:
                api = (await http.get(f"/v1/events/{eid}/board")).json()
                session, cars = normal(api)
                return resumed.cars == cars and resumed.session == session

            # keep reading the stream until it has everything the API shows
            async def pump() -> None:
                await read_until(r, resumed, lambda _b: False, timeout=60)

            reader = asyncio.create_task(pump())
            try:
                await until(caught_up, timeout=30, what="resumed stream == API board")
            finally:
                reader.cancel()
        # an id from another run (or too old) gets a fresh full board
        fresh = StreamBoard()
        async with http.stream("GET", f"/v1/events/{eid}/stream", headers={"Last-Event-ID": "feed.1"}) as r:
            await read_until(r, fresh, lambda b: "board" in b.kinds)
        assert fresh.kinds[:2] == ["hub", "board"] and fresh.cars == resumed.cars


async def test_stream_reports_hub_down_and_reset(setup: Setup) -> None:
    sim = setup.sim
    eid = sim.event_ids[0]
    board = StreamBoard()
    async with (
        httpx.AsyncClient(base_url=setup.url, timeout=30) as http,
        http.stream("GET", f"/v1/events/{eid}/stream") as r,
    ):
        await read_until(r, board, lambda b: "board" in b.kinds)
        await sim.faults.close_all(allow_reconnect=True)
        await read_until(r, board, lambda b: b.hub[-2:] == ["reconnecting", "connected"])
        listing = (await http.get("/v1/events")).json()
        assert listing["hub"] == "connected"
        sim.faults.reset_event(eid)
        n = len(board.kinds)
        await read_until(r, board, lambda b: "reset" in b.kinds[n:] and "board" in b.kinds[n:])
        after = board.kinds[n:]
        assert after.index("reset") < after.index("board")


async def test_client_limit(tmp_path: Path) -> None:
    async with Simulator(SimConfig(events=1, hub=sim_settings())) as sim:
        s = await launch(tmp_path, sim, board_max_clients=2)
        try:
            eid = sim.event_ids[0]
            async with httpx.AsyncClient(base_url=s.url, timeout=30) as http:
                async with http.stream("GET", f"/v1/events/{eid}/stream") as a:
                    await read_until(a, StreamBoard(), lambda b: "board" in b.kinds)
                    async with http.stream("GET", f"/v1/events/{eid}/stream") as b:
                        await read_until(b, StreamBoard(), lambda x: "board" in x.kinds)
                        third = await http.get(f"/v1/events/{eid}/stream")
                        assert third.status_code == 503 and third.headers["retry-after"]
                        assert third.json()["error"]["message"] == "too many stream clients"
                assert s.daemon.board is not None
                await until(lambda: s.daemon.board is not None and s.daemon.board.clients() == 0)
                async with http.stream("GET", f"/v1/events/{eid}/stream") as c:
                    assert c.status_code == 200
                metrics = (await http.get("/metrics")).text
                assert 'event_consumer_board_clients_dropped_total{reason="limit"} 1.0' in metrics
        finally:
            s.daemon.stop()
            assert await asyncio.wait_for(s.task, 15) == 0


async def test_slow_client_dropped_fast_client_keeps_receiving(tmp_path: Path) -> None:
    # many cars and a fast race: enough bytes per second to overrun a client that never reads
    config = SimConfig(replays=[], events=1, synthetic_cars=60, hub=sim_settings(speed=2000.0))
    async with Simulator(config) as sim:
        s = await launch(tmp_path, sim, board_client_buffer_bytes=65536)
        try:
            eid = sim.event_ids[0]
            slow = socket.socket()
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            slow.setblocking(False)
            host, port = s.url.removeprefix("http://").split(":")
            await asyncio.get_running_loop().sock_connect(slow, (host, int(port)))
            slow.send(f"GET /v1/events/{eid}/stream HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            fast = StreamBoard()
            async with httpx.AsyncClient(base_url=s.url, timeout=60) as http:
                async with http.stream("GET", f"/v1/events/{eid}/stream") as r:
                    board = s.daemon.board
                    assert board is not None
                    await read_until(r, fast, lambda _b: board.dropped["slow"] >= 1, timeout=90)
                    n = fast.kinds.count("delta")
                    await read_until(r, fast, lambda b: b.kinds.count("delta") >= n + 5)
                metrics = (await http.get("/metrics")).text
            assert 'event_consumer_board_clients_dropped_total{reason="slow"} 1.0' in metrics
            slow.close()
        finally:
            s.daemon.stop()
            assert await asyncio.wait_for(s.task, 15) == 0


async def test_heartbeat_comments(tmp_path: Path) -> None:
    async with Simulator(SimConfig(events=1, hub=sim_settings())) as sim:
        s = await launch(tmp_path, sim, board_heartbeat_seconds=0.2)
        try:
            sim.hub.paused = True  # nothing to publish: only heartbeats keep the stream talking
            eid = sim.event_ids[0]
            async with (
                httpx.AsyncClient(base_url=s.url, timeout=30) as http,
                http.stream("GET", f"/v1/events/{eid}/stream") as r,
            ):
                beats = 0
                async with asyncio.timeout(30):
                    async for line in r.aiter_lines():
                        beats += line == ": heartbeat"
                        if beats == 2:
                            break
                assert beats == 2
        finally:
            s.daemon.stop()
            assert await asyncio.wait_for(s.task, 15) == 0
