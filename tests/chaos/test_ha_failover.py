"""Hot-standby pair chaos (issue 14): two real daemons, the simulator's race, a real nats-server.

The leader is kill -9'd at random moments mid-race (a new daemon started each time as the new
standby), then a SIGTERM handover. Every invocation the simulator sent to the subscribed groups (its
send log) is counted in the stream: lost and duplicated, attributed to the failover whose window it
was sent in; takeover time = kill -> the new leader's `failover` marker. Quick form: 2 kills;
`--chaos-long` (make chaos): 10 kills. Then the leader's hub connection is closed (it reconnects at
once, but hands the lease over), then a SIGTERM handover.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import signal
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import nats
import pytest
from jetstream.natsserver import NatsServer  # tests/ is on sys.path (rootdir conftest)
from nats.js.api import AckPolicy, ConsumerConfig

from consumer.sim.hub import HubSettings
from consumer.sim.simulator import SimConfig, Simulator

pytestmark = pytest.mark.chaos

STREAM = "EVENTS"
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def daemon_toml(sim: Simulator, server: NatsServer, ttl: float) -> str:
    return f"""
[auth]
grant = "client_credentials"
token_url = "{sim.token_url}"
client_id = "{sim.client_id}"
client_secret_env = "HA_CLIENT_SECRET"

[hub]
url = "{sim.hub_url}"
keepalive_interval_seconds = 0.5
server_timeout_seconds = 3.0
reconnect_max_delay_seconds = 0.5

[redmist]
events = {json.dumps(sim.event_ids)}
snapshot_min_interval_seconds = 0.05

[nats]
servers = ["{server.url}"]

[ha]
enabled = true
lease_ttl_seconds = {ttl}

[[sinks]]
type = "nats"
[sinks.nats]
create_stream = true

[logging]
level = "INFO"
format = "json"

[service]
shutdown_grace_seconds = 5.0
"""


class Node:
    def __init__(self, proc: asyncio.subprocess.Process, name: str, log: Path) -> None:
        self.proc, self.name, self.log = proc, name, log


async def start_node(cfg: Path, sim: Simulator, tmp: Path, n: int) -> Node:
    name = f"node-{n}"
    log = tmp / f"{name}.log"
    env = {**os.environ, "HA_CLIENT_SECRET": sim.client_secret, "EVENT_CONSUMER__HA__NODE_ID": name}
    with log.open("wb") as f:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "consumer", "run", "--config", str(cfg), stdout=f, stderr=f, env=env
        )
    return Node(proc, name, log)


async def until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = cond()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def canon(target: str, args: Any) -> str:
    return target + json.dumps(args, sort_keys=True, separators=(",", ":"))


async def read_stream(js: Any) -> list[dict[str, Any]]:
    info = await js.stream_info(STREAM)
    sub = await js.pull_subscribe("", stream=STREAM, config=ConsumerConfig(ack_policy=AckPolicy.NONE))
    out: list[dict[str, Any]] = []
    try:
        while len(out) < info.state.messages:
            for m in await sub.fetch(min(1000, info.state.messages - len(out)), timeout=10):
                out.append(json.loads(m.data))
    finally:
        await sub.unsubscribe()
    return out


def stamp(received_at: str) -> float:
    return dt.datetime.strptime(received_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


async def test_leader_killed_repeatedly_and_sigterm_handover(tmp_path: Path, chaos_long: bool) -> None:
    kills = 10 if chaos_long else 2
    ttl = 5.0 if chaos_long else 2.0  # the default lease TTL in the long form
    rng = random.Random()
    server = NatsServer(tmp_path / "js")
    await server.start()
    settings = HubSettings(
        keepalive_interval=0.5,
        client_timeout=5.0,
        tick_interval=0.05,
        speed=120.0,
        snapshot_window_token=0.01,
        global_rate_token=1000.0,
        global_burst=1000.0,
    )
    sim = Simulator(SimConfig(hub=settings))
    sent: list[tuple[float, str, int]] = []  # (time, content, event)
    sending = True
    original = sim.hub.send

    def logged(group: str, target: str, json_args: list[Any]) -> int:
        if not sending:
            return 0
        n = original(group, target, json_args)
        if n and group.startswith("evt") and group.endswith("-sub"):
            sent.append((time.time(), canon(target, json.loads(json.dumps(json_args))), int(group[3:-4])))
        return n

    sim.hub.send = logged  # type: ignore[method-assign]
    await sim.start()
    cfg = tmp_path / "daemon.toml"
    cfg.write_text(daemon_toml(sim, server, ttl))
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    nodes: dict[str, Node] = {}
    counter = 0

    def groups_full() -> bool:
        return all(len(sim.hub.server.group_members(f"evt{e}-sub")) >= 2 for e in sim.event_ids)

    async def lease_holder() -> str | None:
        try:
            kv = await js.key_value("event_consumer_ha")
            entry = await kv.get("redmist")
        except Exception:
            return None
        return json.loads(entry.value)["node"] if entry.value else None

    async def failover_by(node: str) -> dict[str, Any] | None:
        try:
            m = await js.get_last_msg(STREAM, "redmist.none.failover")
        except Exception:
            return None
        rec = json.loads(m.data)
        return rec if rec["arguments"][0]["node"] == node else None

    async def wait_failover(node: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        async def taken() -> bool:
            rec = await failover_by(node)
            if rec:
                found.append(rec)
            return bool(rec)

        await until(taken, 30, f"{node} to take over")
        return found[-1]

    def members() -> set[str]:
        return set().union(*(sim.hub.server.group_members(f"evt{e}-sub") for e in sim.event_ids))

    conn_ids: dict[str, str] = {}

    async def add_node(wait: bool = True) -> Node:
        nonlocal counter
        before = members()
        node = await start_node(cfg, sim, tmp_path, counter)
        counter += 1
        nodes[node.name] = node
        if wait:
            await until(lambda: bool(members() - before) and groups_full(), 60, f"{node.name} subscribed")
            conn_ids[node.name] = next(iter(members() - before))
        return node

    failovers: list[dict[str, Any]] = []
    try:
        before = members()
        first = await add_node(wait=False)
        await until(lambda: failover_by(first.name), 60, "the first leader's failover marker")
        conn_ids[first.name] = next(iter(members() - before))
        await add_node()
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(0.5, 2.5))  # a random moment mid-race (chaos timing)
            leader = await lease_holder()
            assert leader is not None
            standby = next(n for n in nodes if n != leader and nodes[n].proc.returncode is None)
            t_kill = time.time()
            nodes[leader].proc.send_signal(signal.SIGKILL)
            await nodes[leader].proc.wait()
            marker = await wait_failover(standby)
            failovers.append(
                {
                    "kind": "kill -9",
                    "t": t_kill,
                    "node": standby,
                    "takeover": stamp(marker["received_at"]) - t_kill,
                }
            )
            await add_node()
        # the leader's hub connection closed (allowReconnect): it hands over at once, even though it
        # reconnects within milliseconds; what the hub sent meanwhile reached only the standby
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        leader = await lease_holder()
        assert leader is not None
        standby = next(n for n in nodes if n != leader and nodes[n].proc.returncode is None)
        before = members() - {conn_ids[leader]}
        t_blip = time.time()
        await sim.hub.server.close_connection(conn_ids[leader], error="blip", allow_reconnect=True)
        marker = await wait_failover(standby)
        failovers.append(
            {
                "kind": "hub blip",
                "t": t_blip,
                "node": standby,
                "takeover": stamp(marker["received_at"]) - t_blip,
            }
        )
        await until(lambda: bool(members() - before) and groups_full(), 60, f"{leader} resubscribed")
        conn_ids[leader] = next(iter(members() - before))
        # planned handover: SIGTERM to the leader
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        leader = await lease_holder()
        assert leader is not None
        standby = next(n for n in nodes if n != leader and nodes[n].proc.returncode is None)
        t_term = time.time()
        nodes[leader].proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(nodes[leader].proc.wait(), 20) == 0
        marker = await wait_failover(standby)
        failovers.append(
            {
                "kind": "SIGTERM",
                "t": t_term,
                "node": standby,
                "takeover": stamp(marker["received_at"]) - t_term,
            }
        )
        await asyncio.sleep(1.0)  # some more race under the new leader
        sending = False
        last_sent = {ev: c for _, c, ev in sent}

        async def caught_up() -> bool:
            for ev, content in last_sent.items():
                try:
                    m = await js.get_last_msg(STREAM, f"redmist.{ev}.*")
                except Exception:
                    return False
                rec = json.loads(m.data)
                if rec["kind"] != "invocation" or canon(rec["target"], rec["arguments"]) != content:
                    return False
            return True

        await until(caught_up, 30, "the stream to hold the last sent invocations")
        for name, node in nodes.items():  # standbys first, the leader last
            if name != standby and node.proc.returncode is None:
                node.proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(node.proc.wait(), 20)
        nodes[standby].proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(nodes[standby].proc.wait(), 20) == 0
        records = await read_stream(js)
    finally:
        for node in nodes.values():
            if node.proc.returncode is None:
                node.proc.kill()
                await node.proc.wait()
        await nc.close()
        await sim.close()
        await server.kill()

    got = Counter(canon(r["target"], r["arguments"]) for r in records if r["kind"] == "invocation")
    want = Counter(c for _, c, _ in sent)
    first_send = {c: t for t, c, _ in reversed(sent)}
    gaps = [r for r in records if r["kind"] == "ha" and r["target"] == "gap"]
    bounds = [f["t"] for f in failovers] + [float("inf")]
    for i, f in enumerate(failovers):
        window = (bounds[i], bounds[i + 1])
        f["lost"] = sum(max(0, want[c] - got[c]) for c in want if window[0] <= first_send[c] < window[1])
        f["dup"] = sum(
            max(0, got[c] - want[c])
            for c in got
            if c in first_send and window[0] <= first_send[c] < window[1]
        )
        f["gap"] = any(g["arguments"][0].get("node") == f["node"] for g in gaps)
    lost_total = sum(max(0, want[c] - got[c]) for c in want)
    dup_total = sum(max(0, got[c] - want[c]) for c in got)
    unknown = sum(n for c, n in got.items() if c not in want)
    print(f"\nHA failovers (lease TTL {ttl:.1f} s):")
    for f in failovers:
        print(
            f"  {f['kind']:8} -> {f['node']}: takeover {f['takeover']:.2f} s, "
            f"lost {f['lost']}, dup {f['dup']}, gap {f['gap']}"
        )
    print(f"  sent {sum(want.values())}, in stream {sum(got.values())}, lost {lost_total}, dup {dup_total}")
    print(f"  median takeover {statistics.median(f['takeover'] for f in failovers):.2f} s")
    if chaos_long:
        doc = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "lease_ttl_seconds": ttl,
            "sent": sum(want.values()),
            "in_stream": sum(got.values()),
            "lost": lost_total,
            "dup": dup_total,
            "failovers": [{k: v for k, v in f.items() if k != "t"} for f in failovers],
        }
        out = RESULTS / f"ha-chaos-{dt.datetime.now(dt.UTC):%Y-%m-%d}.json"
        out.write_text(json.dumps(doc, indent=2) + "\n")
    assert unknown == 0
    assert dup_total == 0
    for f in failovers:
        assert f["takeover"] <= ttl + 1.0, f
        if not f["gap"]:
            assert f["lost"] == 0, f
    handover = failovers[-1]
    assert handover["lost"] == 0 and handover["dup"] == 0 and not handover["gap"]
