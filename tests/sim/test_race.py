"""Race sources: the replay engine reproduces the recording; the synthetic generator is seeded."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.redmist.contract import CONTRACT, to_msgpack_array, value_to_msgpack
from consumer.sim.race import (
    PACKAGED_REPLAYS,
    RaceEngine,
    ReplayError,
    format_lap_time,
    load_replay,
    synthetic_replay,
)


def _recording_truth(replay: dict[str, Any]) -> tuple[dict[str, int], dict[str, str]]:
    laps = {str(c["n"]): int(c["laps"][-1][0]) for c in replay["cars"] if c["laps"]}
    best = {
        str(c["n"]): format_lap_time(min(int(lap[1]) for lap in c["laps"]))
        for c in replay["cars"]
        if c["laps"]
    }
    return laps, best


def _play(engine: RaceEngine, step_ms: int) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    # start from the snapshot, as a consumer does (patches only carry what changed since)
    cars = {
        row["n"]: {"overallPosition": row["ovp"], "pitStopCount": row["psc"]}
        for row in engine.snapshot()["carPositions"]
    }
    sessions: list[dict[str, Any]] = []
    t = 0
    while not engine.finished:
        t += step_ms
        update = engine.advance_to(t)
        numbers = [p["number"] for p in update.car_patches]
        assert len(numbers) == len(set(numbers))
        for patch in update.car_patches:
            assert patch["eventId"] == str(engine.event_id) and patch["sessionId"] == str(engine.session_id)
            assert len(patch) > 3  # at least one changed field besides the identity
            cars.setdefault(patch["number"], {}).update(patch)
        if update.session_patch is not None:
            sessions.append(update.session_patch)
    return cars, sessions


@pytest.mark.parametrize("name", PACKAGED_REPLAYS)
def test_replay_reproduces_the_recording(name: str) -> None:
    replay = load_replay(name)
    laps, best = _recording_truth(replay)
    cars, sessions = _play(RaceEngine(replay), step_ms=20_000)
    assert {n: c["lastLapCompleted"] for n, c in cars.items()} == laps
    assert {n: c["bestTime"] for n, c in cars.items()} == best
    # flag changes are derived: the race ends checkered, yellows were counted
    flags = [s["currentFlag"] for s in sessions if "currentFlag" in s]
    assert flags[-1] == 5 and 2 in flags and 1 in flags
    assert max(s.get("numberOfYellows") or 0 for s in sessions) >= 1
    # positions are a permutation 1..N at the end
    assert sorted(c["overallPosition"] for c in cars.values()) == list(range(1, len(cars) + 1))
    # pit flags: some car pitted and its stop count matches the recording's pit laps
    pits = {str(c["n"]): sum(1 for lap in c["laps"] if lap[4]) for c in replay["cars"]}
    assert {n: c.get("pitStopCount", 0) for n, c in cars.items()} == pits


def test_patches_carry_only_changed_fields() -> None:
    engine = RaceEngine(load_replay("244-6"))
    first = engine.advance_to(3_600_000)
    assert first.car_patches
    again = engine.advance_to(3_600_000)  # nothing happened since
    assert again.car_patches == [] and again.session_patch is None


def test_snapshot_uses_short_car_names_and_encodes() -> None:
    engine = RaceEngine(load_replay("390-13"))
    engine.advance_to(1_800_000)
    snap = engine.snapshot()
    assert set(snap) == {f.json_name for f in CONTRACT.type("SessionState").fields}
    row = snap["carPositions"][0]
    assert set(row) == {f.json_name for f in CONTRACT.type("CarPosition").fields}
    assert row["ovp"] == 1 and row["n"] and row["eid"] == "390"
    arr = value_to_msgpack("SessionState", snap)
    assert len(arr) == 36 and arr[14][0][2] == row["n"]


def test_synthetic_generator_is_seeded_and_replay_shaped() -> None:
    a = synthetic_replay(7, event_id=1001, cars=25, duration_ms=600_000)
    b = synthetic_replay(7, event_id=1001, cars=25, duration_ms=600_000)
    c = synthetic_replay(8, event_id=1001, cars=25, duration_ms=600_000)
    assert a == b and a != c
    assert len(a["cars"]) == 25
    laps, best = _recording_truth(a)
    cars, _ = _play(RaceEngine(a), step_ms=5_000)
    assert {n: x["lastLapCompleted"] for n, x in cars.items()} == laps
    assert {n: x["bestTime"] for n, x in cars.items()} == best
    for patch in list(cars.values())[:3]:
        to_msgpack_array("CarPositionPatch", patch)


def test_bad_replays_are_rejected(tmp_path: Any) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something-else"}')
    with pytest.raises(ReplayError):
        load_replay(bad)
    with pytest.raises(ReplayError):
        load_replay(tmp_path / "missing.json")
