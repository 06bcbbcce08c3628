"""The daemon against the simulator playing RedMist as it really is: a newer server's extra slots, a
session change without ReceiveReset, a silent hub, an event that is not live."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from daemon.helpers import records, sim_settings, until
from daemon.test_e2e import daemon_config, start_daemon
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumer.observability import DaemonCollector, build_registry
from consumer.redmist import contract
from consumer.redmist.state import LiveState
from consumer.relay.stats import RelayStats
from consumer.sim.simulator import SimConfig, Simulator


def invocations(path: Path) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in r.items() if k not in ("received_at", "seq")}
        for r in records(path)
        if r["kind"] == "invocation"
    ]


async def test_json_and_messagepack_identical_with_extra_slots_gps_and_a_session_change(
    tmp_path: Path,
) -> None:
    outs = {p: tmp_path / f"{p}.jsonl" for p in ("json", "messagepack")}
    # two recorded races and a synthetic one (with GPS health); a newer server adding two slots
    sim_cfg = SimConfig(events=3, synthetic_cars=8, hub=sim_settings(extra_slots=2), autostart=False)
    async with Simulator(sim_cfg) as sim:
        started = [await start_daemon(daemon_config(sim, outs[p], protocol=p)) for p in outs]
        for ev in sim.event_ids:
            await until(lambda ev=ev: len(sim.hub.server.group_members(f"evt{ev}-sub")) == 2, what="groups")
        for _ in range(30):
            sim.hub.step(120.0)
        sim.faults.new_session(sim.event_ids[0])  # no ReceiveReset
        for _ in range(10):
            sim.hub.step(120.0)
        sim.hub.reset_event(sim.event_ids[1])
        sim.hub.step(120.0)
        sent = sim.hub.stats["session_patches"] + sim.hub.stats["car_patch_batches"] + 1
        await until(lambda: all(len(invocations(outs[p])) >= sent for p in outs), what="all relayed")
        for daemon, task in started:
            daemon.stop()
            assert await asyncio.wait_for(task, 10) == 0
    via_json, via_msgpack = invocations(outs["json"]), invocations(outs["messagepack"])
    assert len(via_json) == sent
    assert via_json == via_msgpack
    cars = [c for r in via_json if r["target"] == "ReceiveCarPatches" for c in r["arguments"][0]]
    sessions = [r["arguments"][0] for r in via_json if r["target"] == "ReceiveSessionPatch"]
    assert all("gpsHealth" in c and "key69" in c and "key70" in c for c in cars)  # nothing dropped
    assert all("gpsSourceHealth" in s and "key36" in s and "key37" in s for s in sessions)
    assert any(c["gpsHealth"] is not None for c in cars)  # the synthetic race has telemetry
    first = sim.event_ids[0]
    assert len({s["sessionId"] for s in sessions if s["eventId"] == first}) == 2  # the session change
    targets = [r["target"] for r in via_json]
    assert targets.count("ReceiveReset") == 1


async def test_session_change_drops_the_old_cars_and_fetches_a_snapshot(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    sim_cfg = SimConfig(events=1, hub=sim_settings(), autostart=False)
    async with Simulator(sim_cfg) as sim:
        ev = sim.event_ids[0]
        cfg = daemon_config(sim, out, redmist={"state_path": str(tmp_path / "state.json")})
        daemon, task = await start_daemon(cfg)
        state = daemon.state
        assert isinstance(state, LiveState)
        await until(lambda: state.event_status(str(ev)) == "live", what="first snapshot")
        sim.hub.step(600.0)
        await until(
            lambda: len((state.event_state(str(ev)) or {}).get("carPositions", [])) > 10, what="board"
        )
        old_session = sim.hub.events[ev].engine.session_id
        sim.faults.new_session(ev)
        new_session = old_session + 1
        await until(lambda: state.epoch(str(ev)) == 1, what="board reset by the new sessionId")

        def snapshot_sessions() -> list[int]:
            return [r["arguments"][0]["sessionId"] for r in records(out) if r["kind"] == "snapshot"]

        await until(lambda: new_session in snapshot_sessions(), what="snapshot of the new session")
        await until(lambda: (state.event_state(str(ev)) or {}).get("sessionId") == new_session)
        sim.hub.step(600.0)
        await until(lambda: any(r["n"] for r in (state.event_state(str(ev)) or {}).get("carPositions", [])))
        board = state.event_state(str(ev))
        assert board is not None
        assert {r["sid"] for r in board["carPositions"]} == {str(new_session)}  # no old session's rows
        daemon.stop()
        assert await asyncio.wait_for(task, 10) == 0
    assert "ReceiveReset" not in [r["target"] for r in records(out)]
    assert snapshot_sessions()[0] == old_session


async def test_silent_hub_is_resynced_and_a_not_live_event_waits_for_a_hub_message(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    sim_cfg = SimConfig(events=2, hub=sim_settings(), autostart=False)
    async with Simulator(sim_cfg) as sim:
        live, finished = sim.event_ids
        engine = sim.hub.events[finished].engine
        engine.advance_to(engine.end_ms)  # this event's session is over: its snapshot is a 404
        redmist = {
            "state_path": str(tmp_path / "state.json"),
            "resync_quiet_seconds": 0.4,
            "not_live_recheck_seconds": 60,
        }
        daemon, task = await start_daemon(daemon_config(sim, out, redmist=redmist))
        state = daemon.state
        assert state is not None and daemon.profile is not None
        await until(lambda: state.event_status(str(finished)) == "not_live", what="404: not live")

        def snapshots(ev: int) -> int:
            return sum(r["kind"] == "snapshot" and r["event_id"] == ev for r in records(out))

        # the hub sends nothing: the live event is resynced about every 0.4 s, the other one waits
        await until(lambda: snapshots(live) >= 4, what="quiet resyncs")
        assert snapshots(finished) == 0 and daemon.profile.is_not_live(finished)
        assert daemon.stats.snapshots.get("error", 0) == 0
        sim.faults.new_session(finished)  # a hub message for it: the hold is lifted at once
        await until(lambda: state.event_status(str(finished)) == "live", timeout=10, what="hold lifted")
        assert snapshots(finished) == 1
        daemon.stop()
        assert await asyncio.wait_for(task, 10) == 0


def test_extra_slots_and_unexpected_values_are_counted_in_metrics() -> None:
    def sample(name: str, type_name: str) -> float:
        text = generate_latest(build_registry(DaemonCollector(RelayStats(), []))).decode()
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == name and s.labels == {"type": type_name}:
                    return float(s.value)
        return 0.0

    extra = "event_consumer_contract_extra_slots_total"
    unexpected = "event_consumer_contract_unexpected_values_total"
    before = sample(extra, "SessionStatePatch"), sample(unexpected, "TimeOnly")
    contract.arguments_from_msgpack("ReceiveSessionPatch", [[None] * 40])
    contract.arguments_from_msgpack("ReceiveCarPatches", [[[None] * 43 + [-5]]])
    assert sample(extra, "SessionStatePatch") == before[0] + 1
    assert sample(unexpected, "TimeOnly") == before[1] + 1


async def test_the_token_goes_in_the_authorization_header_by_default(tmp_path: Path) -> None:
    sim_cfg = SimConfig(events=1, hub=sim_settings(require_auth=True), autostart=False)
    async with Simulator(sim_cfg) as sim:
        for transport, query_tokens in (("default", 0), ("both", 1)):
            extra = {} if transport == "default" else {"hub": {"token_transport": transport}}
            cfg = daemon_config(sim, tmp_path / f"{transport}.jsonl", **extra)
            assert cfg.hub.token_transport == ("header" if transport == "default" else transport)
            before = sim.hub.server.stats.query_tokens
            daemon, task = await start_daemon(cfg)  # require_auth: connected means the token was read
            assert sim.hub.server.stats.query_tokens - before == query_tokens
            daemon.stop()
            assert await asyncio.wait_for(task, 10) == 0
