"""The board in NATS KV (issue 14, acceptance: KV) against a real nats-server."""

from __future__ import annotations

import asyncio
import json
import time

import msgspec
import nats
import pytest

from consumer.kvboard import BoardValue, KvBoard, board_key
from consumer.redmist.state import LiveState
from consumer.sim.race import PACKAGED_REPLAYS, RaceEngine, load_replay

from .natsserver import NatsServer


async def test_watcher_sees_the_board_converge_to_live_state_json(nats_server: NatsServer) -> None:
    state = LiveState(None)
    max_hz = 5.0
    board = KvBoard(state, {"servers": [nats_server.url]}, bucket="board", hub="redmist", max_hz=max_hz)
    writer = asyncio.create_task(board.run())
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        engines = {int(name.split("-")[0]): RaceEngine(load_replay(name)) for name in PACKAGED_REPLAYS}
        for ev, engine in engines.items():
            state.on_snapshot(engine.snapshot(), ev)
        while True:  # the writer creates the bucket on its first write
            try:
                kv = await js.key_value("board")
                break
            except nats.js.errors.BucketNotFoundError:
                await asyncio.sleep(0.02)
        watcher = await kv.watch("redmist.*")
        seen: dict[str, bytes] = {}
        revisions: dict[str, list[int]] = {}

        async def follow() -> None:
            async for entry in watcher:
                if entry is None or entry.value is None:
                    continue
                seen[entry.key] = entry.value
                revisions.setdefault(entry.key, []).append(entry.revision)

        follower = asyncio.create_task(follow())
        changes = 0
        started = time.monotonic()
        clocks = {ev: e.first_lap_ms for ev, e in engines.items()}
        for _ in range(150):  # patches over ~1.5 s
            for ev, engine in engines.items():
                clocks[ev] += 20_000
                update = engine.advance_to(clocks[ev])
                if update.car_patches:
                    state.on_car_patches([update.car_patches], str(ev))
                    changes += 1
                if update.session_patch:
                    state.on_session_patch([update.session_patch], ev)
                    changes += 1
            await asyncio.sleep(0.01)
        expected = {board_key("redmist", ev): state.event_state(ev) for ev in engines}

        def converged() -> bool:
            return all(k in seen and json.loads(seen[k])["board"] == v for k, v in expected.items())

        deadline = time.monotonic() + 30
        while not converged():
            assert time.monotonic() < deadline, "the KV board did not converge"
            await asyncio.sleep(0.02)
        # the same document LiveState gives (byte-equal JSON), with the revision as change marker
        for ev in engines:
            key = board_key("redmist", ev)
            entry = await kv.get(key)
            value = msgspec.json.decode(entry.value, type=BoardValue)
            assert msgspec.json.encode(value.board) == msgspec.json.encode(state.event_state(ev))
            assert (value.v, value.hub, value.epoch) == (1, "connecting", 0)
            assert value.status == state.event_status(ev) == "live"
            assert entry.revision == revisions[key][-1]
        # coalesced: far fewer writes than changes, at most max_hz per event (+ first and last)
        for revs in revisions.values():
            assert len(revs) <= (time.monotonic() - started) * max_hz + 2
        assert changes > 100 and sum(len(r) for r in revisions.values()) < changes
        follower.cancel()
        await watcher.stop()
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await nc.close()


async def test_reset_deletes_the_event_key(nats_server: NatsServer) -> None:
    state = LiveState(None)
    board = KvBoard(state, {"servers": [nats_server.url]}, bucket="board", hub="redmist", max_hz=20)
    state.on_snapshot({"eventId": 7, "carPositions": [{"n": "1"}]}, 7)
    writer = asyncio.create_task(board.run())
    nc = await nats.connect(nats_server.url)
    try:
        while board.writes < 1:
            await asyncio.sleep(0.02)
        kv = await nc.jetstream().key_value("board")
        assert json.loads((await kv.get("redmist.7")).value)["board"] == {
            "eventId": 7,
            "carPositions": [{"n": "1"}],
        }
        state.reset()
        while board.writes < 2:
            await asyncio.sleep(0.02)
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await kv.get("redmist.7")
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await nc.close()
