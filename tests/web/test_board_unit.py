"""BoardService and the HTTP endpoint without a hub: coalescing, deltas, CORS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from daemon.helpers import until

from consumer.observability import DaemonCollector, ObservabilityServer, build_registry
from consumer.redmist.state import LiveState
from consumer.relay.stats import RelayStats
from consumer.web import BoardService, board_delta


def snapshot(n: int = 3) -> dict[str, object]:
    return {
        "eventId": 7,
        "sessionId": 1,
        "sessionName": "Race",
        "currentFlag": 1,
        "carPositions": [{"n": str(i), "ovp": i, "llp": 0, "ltm": None} for i in range(1, n + 1)],
    }


def test_delta_has_only_changed_fields_new_and_removed_rows() -> None:
    old = ({"a": 1, "b": 2}, {"1": {"n": "1", "x": 1, "y": 2}, "2": {"n": "2", "x": 5}})
    new = ({"a": 1, "b": 3}, {"1": {"n": "1", "x": 1, "y": 4}, "3": {"n": "3", "x": 9}})
    assert board_delta(old, new) == {
        "session": {"b": 3},
        "cars": {"1": {"y": 4}, "3": {"n": "3", "x": 9}},
        "removed": ["2"],
    }
    assert board_delta(new, new) is None


async def test_a_burst_of_changes_is_coalesced_into_one_delta() -> None:
    state = LiveState(None)
    board = BoardService(state, events=[7], max_hz=10)
    pump = asyncio.create_task(board.run())
    try:
        state.on_snapshot(snapshot(), 7)
        await until(lambda: board.published == 1, what="the first board")
        for lap in range(1, 101):  # 100 changes before the pump gets to run again
            state.on_car_patches([[{"number": "2", "lastLapCompleted": lap}]], 7)
        await until(lambda: board.published == 2, what="one delta")
        channel = board.channels["7"]
        (seq, frame), *rest = channel.ring
        assert not rest and seq == channel.seq
        assert frame.startswith(b"event: delta\n") and b'"cars":{"2":{"llp":100}}' in frame
        assert state.version == 101  # 101 changes were merged ...
        assert board.published == 2  # ... into two publications
    finally:
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)


async def test_reset_bumps_the_epoch_and_sends_reset_then_board() -> None:
    state = LiveState(None)
    board = BoardService(state, events=[7])
    state.on_snapshot(snapshot(), 7)
    board.publish()
    epoch = state.epoch(7)
    state.reset()
    board.publish()
    assert state.epoch(7) == epoch + 1 and board.channels["7"].board == ({}, {})
    state.on_snapshot(snapshot(), 7)  # the snapshot after a reset is the new baseline, same epoch
    assert state.epoch(7) == epoch + 1
    state.on_snapshot({**snapshot(), "sessionId": 2}, 7)  # a new session without a reset: new epoch
    assert state.epoch(7) == epoch + 2


@pytest.fixture
async def served() -> AsyncIterator[str]:
    state = LiveState(None)
    state.on_snapshot(snapshot(), 7)
    board = BoardService(state, events=[7])
    stats = RelayStats()
    registry = build_registry(DaemonCollector(stats, []))
    server = ObservabilityServer(stats, registry, port=0, board=board, cors_origins=["https://dash.example"])
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop()


async def test_cors_only_for_listed_origins(served: str) -> None:
    async with httpx.AsyncClient(base_url=served) as http:
        ok = await http.get("/v1/events/7/board", headers={"Origin": "https://dash.example"})
        assert ok.headers["access-control-allow-origin"] == "https://dash.example"
        other = await http.get("/v1/events/7/board", headers={"Origin": "https://evil.example"})
        assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
        pre = await http.options("/v1/events/7/stream", headers={"Origin": "https://dash.example"})
        assert pre.status_code == 204 and "Last-Event-ID" in pre.headers["access-control-allow-headers"]


async def test_cors_is_off_by_default() -> None:
    state = LiveState(None)
    stats = RelayStats()
    server = ObservabilityServer(
        stats, build_registry(DaemonCollector(stats, [])), port=0, board=BoardService(state, events=[7])
    )
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.get("/v1/events", headers={"Origin": "https://dash.example"})
            assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
            assert (await http.get("/v1/events/7/board")).status_code == 503  # followed, no board yet
            pre = await http.options("/v1/events")
            assert pre.status_code == 405 and pre.json()["error"]["status"] == 405
    finally:
        await server.stop()


async def test_events_listing_follows_the_hub_state() -> None:
    state = LiveState(None)
    state.on_snapshot({**snapshot(), "isLive": True}, 7)
    board = BoardService(state, events=[7, 8])
    stats = RelayStats()
    server = ObservabilityServer(stats, build_registry(DaemonCollector(stats, [])), port=0, board=board)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            board.set_hub_state("connected")
            live, waiting = (await http.get("/v1/events")).json()["events"]
            assert live["status"] == "live" and live["cars"] == 3 and live["flag_name"] == "Green"
            assert waiting == {**waiting, "id": 8, "status": "unknown", "cars": 0, "session": None}
            board.set_hub_state("reconnecting")
            listing = (await http.get("/v1/events")).json()
            assert listing["hub"] == "reconnecting"
            assert [e["status"] for e in listing["events"]] == ["reconnecting", "reconnecting"]
    finally:
        await server.stop()


async def test_resume_gets_a_full_board_once_the_missed_changes_left_the_ring() -> None:
    state = LiveState(None)
    state.on_snapshot(snapshot(), 7)
    board = BoardService(state, events=[7], ring_size=3)
    stats = RelayStats()
    server = ObservabilityServer(stats, build_registry(DaemonCollector(stats, [])), port=0, board=board)
    await server.start()

    async def first_frames(http: httpx.AsyncClient, last_id: str, n: int) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        kind = ""
        async with http.stream("GET", "/v1/events/7/stream", headers={"Last-Event-ID": last_id}) as r:
            async for line in r.aiter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("id: "):
                    out.append((kind, line[4:]))
                    if len(out) == n:
                        return out
        return out

    try:
        board.publish()
        boot = board.boot
        for lap in range(1, 7):  # six deltas, seq 2..7; the ring keeps 5, 6, 7
            state.on_car_patches([[{"number": "1", "lastLapCompleted": lap}]], 7)
            board.publish()
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            # seen up to seq 4: 5, 6, 7 are in the ring
            assert await first_frames(http, f"{boot}.4", 3) == [
                ("delta", f"{boot}.5"),
                ("delta", f"{boot}.6"),
                ("delta", f"{boot}.7"),
            ]
            # seen up to seq 2: 3 and 4 are gone, so a full board (not 5, 6, 7 with a hole)
            assert await first_frames(http, f"{boot}.2", 1) == [("board", f"{boot}.7")]
            assert await first_frames(http, "otherboot.4", 1) == [("board", f"{boot}.7")]
    finally:
        await server.stop()
