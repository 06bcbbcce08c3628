"""Scale: one event-consumer process subscribed to 1, 10, 100 events over one connection, and to 1, 4,
16 hubs (one connection each): throughput and CPU per message.

A hub process with max(hubs) independent HubServers (`bench/hub.py --hubs N`) serves both. Events:
one connection subscribes `SubscribeToEvent` x N, then `BenchEvents(count)` sends round-robin over the
N groups (eventId rewritten per event; JSON). Hubs: the daemon takes one `[hub]` per process, so the
client runs N real `Daemon` instances on one asyncio loop in one process (clients/ec_scale.py), one per
hub server, count / N messages each. Same window and CPU accounting as the throughput section; JSON,
file sinks. The cost curve should be flat per message (linear in total).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from harness import HERE, PY, Hub, run_client, summarise

MAX_FAILURES = 2


def run_one(hub: Hub, mode: str, n: int, count: int, tmp: Path) -> dict[str, Any]:
    outdir = tmp / f"scale-{mode}-{n}"
    outdir.mkdir(exist_ok=True)
    urls = hub.urls[:n] if mode == "hubs" else hub.urls[:1]
    cmd = [PY, str(HERE / "clients" / "ec_scale.py"), mode, str(n), ",".join(urls), str(count), str(outdir)]
    hub.drain()
    t0 = time.perf_counter()
    result = run_client(cmd, tmp / "scale.result", 60 + count / 1000)
    shutil.rmtree(outdir, ignore_errors=True)
    if "error" not in result:
        result["wall_seconds"] = time.perf_counter() - t0
        streams = hub.drain()
        if streams:
            result["hub_streams"] = len(streams)
    return result


def run(
    *,
    count: int,
    runs: int,
    events: tuple[int, ...],
    hubs: tuple[int, ...],
    tmp: Path,
    log: Any = print,
) -> dict[str, Any]:
    keys = [("events", n) for n in events] + [("hubs", n) for n in hubs]
    raw: dict[tuple[str, int], list[dict[str, Any]]] = {k: [] for k in keys}
    errors: dict[tuple[str, int], str] = {}  # a cell is given up after MAX_FAILURES failed runs
    failures: dict[tuple[str, int], int] = {}
    hub = Hub(hubs=max(hubs))
    try:
        for i in range(runs):
            for key, done in raw.items():
                if failures.get(key, 0) >= MAX_FAILURES:
                    continue
                res = run_one(hub, key[0], key[1], count, tmp)
                if "error" in res:
                    errors[key] = res["error"]
                    failures[key] = failures.get(key, 0) + 1
                    log(f"  scale {key[0]:<6} {key[1]:>3} run {i + 1}: FAILED {res['error']}")
                    continue
                done.append(res)
                log(
                    f"  scale {key[0]:<6} {key[1]:>3} run {i + 1}: {res['msgs_per_s']:>9,.0f} msgs/s "
                    f"{res['cpu_s_per_100k']:>6.2f} CPU-s/100k"
                )
    finally:
        hub.close()
    cells = []
    for (mode, n), results in raw.items():
        cell: dict[str, Any] = {"mode": mode, "n": n, "runs": len(results)}
        if (mode, n) in errors:
            cell["error"] = errors[(mode, n)]
            cell["failed_runs"] = failures[(mode, n)]
        for metric in ("msgs_per_s", "cpu_s_per_100k", "max_rss_kib"):
            cell[metric] = summarise([r[metric] for r in results if r.get(metric) is not None])
        cell["raw"] = results
        cells.append(cell)
    return {
        "messages_per_run": count,
        "runs_per_cell": runs,
        "method": (
            "events: one real Daemon, one connection, SubscribeToEvent x N then BenchEvents round-robin over "
            "the N groups; hubs: N real Daemon instances on one loop in one process (the daemon has one "
            "[hub] per process), one per hub server, count/N messages each. JSON, file sinks; window = "
            "first relayed -> all relayed and sinks idle; CPU = the client process's rusage in the window."
        ),
        "cells": cells,
    }
