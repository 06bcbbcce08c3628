"""End to end: the daemon (token factory → HubConnection → relay → file sink) against the simulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from consumer.config import Config, parse_config
from consumer.daemon import Daemon
from consumer.sim.simulator import SimConfig, Simulator

from .helpers import records, sim_settings, until


def daemon_config(sim: Simulator, out: Path, *, protocol: str = "json", **extra: Any) -> Config:
    data: dict[str, Any] = {
        "auth": {
            "grant": "client_credentials",
            "token_url": sim.token_url,
            "client_id": sim.client_id,
            "client_secret": sim.client_secret,
        },
        "hub": {
            "url": sim.hub_url,
            "name": "redmist",
            "protocol": protocol,
            "keepalive_interval_seconds": 0.3,
            "server_timeout_seconds": 1.5,
            "handshake_timeout_seconds": 2.0,
            "reconnect_max_delay_seconds": 0.3,
        },
        "redmist": {"events": sim.event_ids, "snapshot_min_interval_seconds": 0.02},
        "sinks": [{"type": "file", "path": str(out), "fsync": "never"}],
        "service": {"shutdown_grace_seconds": 5.0, "subscribe_retry_initial_seconds": 0.05},
    }
    for section, values in extra.items():
        data.setdefault(section, {}).update(values)
    return parse_config(data, source="<test>")


async def start_daemon(cfg: Config) -> tuple[Daemon, asyncio.Task[int]]:
    daemon = Daemon(cfg, env={})
    task = asyncio.create_task(daemon.run())
    await until(lambda: daemon.stats.connection_state == "connected" or task.done(), what="connected")
    assert not task.done(), task.exception() if task.done() else None
    return daemon, task


async def test_live_patches_snapshots_and_clean_stop(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    async with Simulator(SimConfig(events=2, hub=sim_settings())) as sim:
        daemon, task = await start_daemon(daemon_config(sim, out))
        await until(
            lambda: sum(r["target"] == "ReceiveCarPatches" for r in records(out)) >= 5, what="car patches"
        )
        daemon.stop()
        assert await asyncio.wait_for(task, 10) == 0
    recs = records(out)
    assert out.read_bytes().endswith(b"\n")
    assert recs[0]["kind"] == "connection" and recs[0]["target"] == "connected"
    assert recs[-1]["kind"] == "connection" and recs[-1]["target"] == "closed"
    snaps = [r for r in recs if r["kind"] == "snapshot"]
    assert sorted(r["event_id"] for r in snaps) == sorted(sim.event_ids)
    assert all(r["arguments"][0]["carPositions"] for r in snaps)
    patch = next(r for r in recs if r["target"] == "ReceiveCarPatches")
    assert patch["event_id"] in sim.event_ids and "number" in patch["arguments"][0][0]
    seqs = [r["seq"] for r in recs]
    assert seqs == sorted(set(seqs))
    # the file holds every invocation the relay was handed
    assert sum(r["kind"] == "invocation" for r in recs) == daemon.stats.total_received()


FAULTS: list[tuple[str, Callable[[Simulator], Awaitable[Any] | Any]]] = [
    ("drop_all", lambda sim: sim.faults.drop_all()),
    ("close_all", lambda sim: sim.faults.close_all(allow_reconnect=True)),
    ("restart", lambda sim: sim.faults.restart(down_seconds=0.2)),
    ("expire_tokens", lambda sim: sim.faults.expire_tokens()),
    ("half_open", lambda sim: sim.faults.half_open(seconds=2.5)),
    ("refuse_503", lambda sim: (sim.faults.refuse_upgrades(503, 0.5), sim.faults.drop_all())),
    ("drop_all", lambda sim: sim.faults.drop_all()),
    ("malformed", lambda sim: sim.faults.malformed()),
    ("close_all", lambda sim: sim.faults.close_all(allow_reconnect=True)),
    ("refuse_401", lambda sim: (sim.faults.refuse_upgrades(401, 0.3), sim.faults.drop_all())),
]


async def test_ten_reconnect_faults_each_followed_by_resubscribe_and_snapshot(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    async with Simulator(SimConfig(events=2, hub=sim_settings())) as sim:
        daemon, task = await start_daemon(daemon_config(sim, out))
        sub = daemon.subscriber
        assert sub is not None
        for i, (name, fault) in enumerate(FAULTS):
            rounds = sub.rounds_completed
            await until(lambda: sub.rounds_completed >= 1, what="first subscription round")
            await until(
                lambda want=2 * (i + 1): sum(r["kind"] == "snapshot" for r in records(out)) >= want,
                what=f"snapshots before fault {i} ({name})",
            )
            result = fault(sim)
            if asyncio.iscoroutine(result):
                await result
            await until(
                lambda rounds=rounds: (
                    sub.rounds_completed > rounds and daemon.stats.connection_state == "connected"
                ),
                timeout=30,
                what=f"resubscribe after fault {i} ({name})",
            )
        await until(lambda: sum(r["kind"] == "snapshot" for r in records(out)) >= 22, what="last snapshots")
        daemon.stop()
        assert await asyncio.wait_for(task, 10) == 0
    recs = records(out)
    assert out.read_bytes().endswith(b"\n")
    seqs = [r["seq"] for r in recs]
    assert len(seqs) == len(set(seqs)) and seqs == sorted(seqs)
    markers = [r["target"] for r in recs if r["kind"] == "connection"]
    assert markers[0] == "connected" and markers[-1] == "closed"
    assert markers.count("reconnecting") >= 10
    assert markers.count("reconnected") == markers.count("reconnecting")
    # every reconnect is followed (before the next gap) by a snapshot of every event
    segments: list[list[dict[str, Any]]] = []
    for r in recs:
        if r["kind"] == "connection" and r["target"] == "reconnected":
            segments.append([])
        elif segments:
            segments[-1].append(r)
    assert len(segments) >= 10
    for seg in segments:
        before_gap = []
        for r in seg:
            if r["kind"] == "connection":
                break
            before_gap.append(r)
        assert sorted(r["event_id"] for r in before_gap if r["kind"] == "snapshot") == sorted(sim.event_ids)


async def test_json_and_messagepack_protocols_give_identical_output(tmp_path: Path) -> None:
    outs = {p: tmp_path / f"{p}.jsonl" for p in ("json", "messagepack")}
    sim_cfg = SimConfig(events=2, hub=sim_settings(), autostart=False)
    async with Simulator(sim_cfg) as sim:
        started = [await start_daemon(daemon_config(sim, outs[p], protocol=p)) for p in outs]
        for daemon, _ in started:
            sub = daemon.subscriber
            assert sub is not None
            await until(lambda sub=sub: sub.rounds_completed >= 1, what="subscribed")
        for ev in sim.event_ids:
            await until(lambda ev=ev: len(sim.hub.server.group_members(f"evt{ev}-sub")) == 2, what="groups")
        for _ in range(40):
            sim.hub.step(120.0)  # two race minutes per step: laps, positions, flags
        sim.hub.reset_event(sim.event_ids[0])
        sim.hub.step(120.0)

        def invocations(p: str) -> list[dict[str, Any]]:
            return [
                {k: v for k, v in r.items() if k not in ("received_at", "seq")}
                for r in records(outs[p])
                if r["kind"] == "invocation"
            ]

        sent = sim.hub.stats["session_patches"] + sim.hub.stats["car_patch_batches"] + 1
        await until(lambda: all(len(invocations(p)) >= sent for p in outs), what="all broadcasts relayed")
        for daemon, task in started:
            daemon.stop()
            assert await asyncio.wait_for(task, 10) == 0
    via_json, via_msgpack = invocations("json"), invocations("messagepack")
    assert len(via_json) == sent
    assert via_json == via_msgpack
    assert {r["target"] for r in via_json} >= {"ReceiveCarPatches", "ReceiveSessionPatch", "ReceiveReset"}


@pytest.mark.parametrize("burst", [20_000])
async def test_stop_during_burst_loses_nothing_handed_to_the_relay(tmp_path: Path, burst: int) -> None:
    out = tmp_path / "out.jsonl"
    async with Simulator(SimConfig(events=1, hub=sim_settings(), autostart=False)) as sim:
        daemon, task = await start_daemon(daemon_config(sim, out))
        ev = sim.event_ids[0]
        await until(lambda: len(sim.hub.server.group_members(f"evt{ev}-sub")) == 1, what="subscribed")
        patch = [[{"eventId": str(ev), "sessionId": "1", "number": "42", "overallPosition": 1}]]
        for i in range(burst):
            sim.hub.server.send_to_group(f"evt{ev}-sub", "ReceiveCarPatches", arguments=patch)
            if i % 500 == 0:
                await asyncio.sleep(0)
        await until(lambda: daemon.stats.total_received() > burst // 4, what="burst flowing")
        daemon.stop()  # SIGTERM's handler does exactly this
        assert await asyncio.wait_for(task, 15) == 0
    data = out.read_bytes()
    assert data.endswith(b"\n")
    recs = [json.loads(line) for line in data.splitlines()]  # every line parses: nothing torn
    invocations = sum(r["kind"] == "invocation" for r in recs)
    assert invocations == daemon.stats.total_received()
    assert invocations > burst // 4
