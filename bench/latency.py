"""Latency: the hub's send timestamp -> the line in the sink file, at fixed send rates.

The hub's paced mode (`BenchStream(count, rate, false)`, JSON) sends `count` car-patch invocations at
`rate` msgs/s, each with a second argument `{"sentAtNs": time.time_ns()}` taken as the hub queues it
(so the hub's own outbound queue is part of the measured path). Per message:

- event-consumer (`clients/ec_client.py`, the real Daemon, file sink): `write` = the moment the file
  sink's batch `os.write` calls returned (an instrumented `Sink` wrapper around the FileSink, one
  `time.time_ns()` per batch) - sentAtNs; `received` = the envelope's `received_at` - sentAtNs (lower
  bound: excludes the relay queue and the write). Two configurations: `fsync = "never"` (the same work
  as the Node client, which never fsyncs: the cell the target compares) and the default
  `fsync = "interval"` (1 s; the fsync runs beside the writes, so lines no longer queue behind it).
- `@microsoft/signalr` on Node (`clients/node_client.mjs`): `write` = the WriteStream's write callback
  (the line's fs.write completed) - sentAtNs; `handled` = the handler handed the line to the stream.

Same machine, same clock (CLOCK_REALTIME; Node: performance.timeOrigin + performance.now()). The first
WARMUP_S seconds of each run (connection warm-up, Node's JIT) are dropped. Per run: p50/p99/p99.9/max
(nearest rank) over the remaining messages; per cell: median (min-max) over the runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from harness import (
    BASELINE_CLIENT,
    HERE,
    PY,
    Hub,
    baseline_label,
    baseline_tree,
    client_tree,
    compare,
    percentile,
    run_client,
    summarise,
)

WARMUP_S = 0.5
CLIENTS = ("event-consumer", "event-consumer-fsync", "node-signalr")
RATES = (1000, 5000)
QUANTILES = {"p50": 50.0, "p99": 99.0, "p99_9": 99.9}
MAX_FAILURES = 2


def command(client: str, url: str, count: int, rate: int, out: Path) -> list[str]:
    if client.startswith("event-consumer"):
        fsync = "interval" if client == "event-consumer-fsync" else "never"
        ec = str(client_tree(client) / "bench" / "clients" / "ec_client.py")
        return [PY, ec, url, str(count), "json", str(out), str(rate), fsync]
    return ["node", str(HERE / "clients" / "node_client.mjs"), url, str(count), "json", str(out), str(rate)]


def stats_of(samples: list[float], skip: int) -> dict[str, float] | None:
    values = sorted(samples[skip:])
    if not values:
        return None
    out = {name: percentile(values, q) for name, q in QUANTILES.items()}
    out["max"] = values[-1]
    out["n"] = len(values)
    return out


def run_one(hub: Hub, client: str, rate: int, seconds: float, tmp: Path) -> dict[str, Any]:
    count = int(rate * seconds)
    out = tmp / f"lat-{client}-{rate}.jsonl"
    hub.drain()
    t0 = time.perf_counter()
    result = run_client(
        command(client, hub.url, count, rate, out), tmp / "lat.result", seconds + 60, client_tree(client)
    )
    out.unlink(missing_ok=True)
    if "error" in result:
        return result
    stream = hub.next(5)
    skip = int(rate * WARMUP_S)
    row: dict[str, Any] = {
        "messages": result["messages"],
        "wall_seconds": time.perf_counter() - t0,
        "cpu_s_per_100k": result.get("cpu_s_per_100k"),
        "write": stats_of(result.get("latencies_ms", []), skip),
    }
    secondary = "received_latencies_ms" if client.startswith("event-consumer") else "handled_latencies_ms"
    row["secondary"] = stats_of(result.get(secondary, []), skip)
    if stream is not None and stream.get("enqueue_seconds"):
        row["hub_send_rate"] = stream["count"] / stream["enqueue_seconds"]
    if row["write"] is None or row["write"]["n"] < count - skip:
        row["error"] = f"only {row['write'] and row['write']['n']} latency samples of {count - skip}"
    return row


def run(
    hub: Hub,
    *,
    seconds: float,
    runs: int,
    tmp: Path,
    log: Any = print,
    clients: tuple[str, ...] = CLIENTS,
) -> dict[str, Any]:
    if baseline_tree() is not None and BASELINE_CLIENT not in clients:
        clients = (*clients, BASELINE_CLIENT)  # fsync never, like `event-consumer`
    raw: dict[tuple[str, int], list[dict[str, Any]]] = {(c, r): [] for r in RATES for c in clients}
    errors: dict[tuple[str, int], str] = {}  # a cell is given up after MAX_FAILURES failed runs
    failures: dict[tuple[str, int], int] = {}
    for i in range(runs):
        for key, done in raw.items():
            if failures.get(key, 0) >= MAX_FAILURES:
                continue
            res = run_one(hub, key[0], key[1], seconds, tmp)
            if "error" in res:
                errors[key] = res["error"]
                failures[key] = failures.get(key, 0) + 1
                log(f"  latency {key[0]:<16} {key[1]:>5}/s run {i + 1}: FAILED {res['error']}")
                continue
            done.append(res)
            w = res["write"]
            log(
                f"  latency {key[0]:<16} {key[1]:>5}/s run {i + 1}: p50 {w['p50']:.2f} ms  "
                f"p99 {w['p99']:.2f} ms  p99.9 {w['p99_9']:.2f} ms  "
                f"(hub {res.get('hub_send_rate', 0):,.0f}/s)"
            )
    cells = []
    for (client, rate), results in raw.items():
        cell: dict[str, Any] = {"client": client, "rate": rate, "runs": len(results)}
        if (client, rate) in errors:
            cell["error"] = errors[(client, rate)]
            cell["failed_runs"] = failures[(client, rate)]
        for kind in ("write", "secondary"):
            cell[kind] = {
                q: summarise([r[kind][q] for r in results if r.get(kind)]) for q in (*QUANTILES, "max")
            }
        cell["hub_send_rate"] = summarise([r["hub_send_rate"] for r in results if r.get("hub_send_rate")])
        cell["raw"] = results
        cells.append(cell)

    def p99(client: str, rate: int) -> float | None:
        for c in cells:
            if c["client"] == client and c["rate"] == rate and c["write"]["p99"]:
                return float(c["write"]["p99"]["median"])
        return None

    targets = {}
    for rate in RATES:
        for client in ("event-consumer", "event-consumer-fsync"):
            ec, node = p99(client, rate), p99("node-signalr", rate)
            if ec is not None and node is not None:
                key = str(rate) if client == "event-consumer" else f"{rate}-fsync"
                targets[key] = {"ec_p99_ms": ec, "node_p99_ms": node, "met": ec <= node, "client": client}
    vs_baseline = {}
    if BASELINE_CLIENT in clients:
        by_key = {(c["client"], c["rate"]): c for c in cells}
        for rate in RATES:
            ours, base = by_key.get(("event-consumer", rate)), by_key.get((BASELINE_CLIENT, rate))
            if ours and base:
                vs_baseline[f"p99_{rate}"] = compare(
                    [r["write"]["p99"] for r in ours["raw"]],
                    [r["write"]["p99"] for r in base["raw"]],
                    lower_is_better=True,
                )
    return {
        **({"baseline": baseline_label(), "vs_baseline": vs_baseline} if vs_baseline else {}),
        "seconds_per_run": seconds,
        "runs_per_cell": runs,
        "warmup_seconds": WARMUP_S,
        "method": (
            "Hub paced mode stamps sentAtNs (time.time_ns) as it queues each JSON invocation. "
            "write: event-consumer = FileSink.write(batch) returned (instrumented Sink wrapper, one "
            "time_ns per batch; fsync never, and the default fsync interval 1 s); Node = WriteStream "
            "write callback (Node never fsyncs). secondary: event-consumer = envelope "
            "received_at (lower bound); Node = line handed to the WriteStream. Same clock; first "
            f"{WARMUP_S} s of each run dropped; nearest-rank percentiles per run, median (min-max) of runs."
        ),
        "cells": cells,
        "target_p99_le_node": targets,
    }
