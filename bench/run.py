"""`make bench`: issue 7's measurements of event-consumer vs the official client and the Python peers.

    python bench/run.py              # quick (CI, `make bench`): every section, small counts
    python bench/run.py --full       # README figures: every section in one go (see MODES)
    python bench/run.py --smoke      # the test suite's smoke form: tiny, 1 run
    python bench/run.py --only latency,memory     # some sections; merged into the day's results file

Sections (each its own module; parameters per mode in MODES):
- throughput (this file): msgs/s and CPU per 100k for every client, JSON and MessagePack.
- latency (latency.py): hub send timestamp -> line in the sink file at 1k and 5k msgs/s, p50/p99/p99.9.
- reconnect, tokens (reconnect.py): gap after hub restarts; token requests per hour at 300 s tokens.
- memory (memory.py): RSS of the daemon process after N messages.
- scale (scale.py): 1/10/100 events on one connection, 1/4/16 hubs in one process.
- sidebyside (sidebyside.py, issue 15): an independent hub writing pre-built frames (bench/wirehub.py),
  RedMist-shaped 12-car frames, every peer decode-only and the real `event-consumer run` process
  writing a file, both protocols, faithful and compact output.

Throughput: one hub process (bench/hub.py: the project's HubServer, pre-encoded payloads) serves every
client; each client is its own process, started once per run; runs are interleaved across clients (run
1 of every client, then run 2, ...) so machine noise spreads over all of them. Per cell: median, min and
max of msgs/s and CPU-seconds per 100k messages over the measurement window (see clients/common.py),
plus the whole-process CPU (start-up included) from RUSAGE_CHILDREN. The `null` client measures the
hub's own send rate. Results: bench/results/<UTC date>[-quick|-smoke].json (throughput at the top level,
one key per other section, each with its own date/machine/versions), then the README tables are
re-rendered from the results files (bench/render.py) unless --no-readme.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from harness import (
    BASELINE_CLIENT,
    Hub,
    baseline_label,
    baseline_tree,
    children_cpu,
    client_tree,
    compare,
    summarise,
    tree_env,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable

# name -> (command builder, protocols it supports)
CLIENTS = (
    "null",
    "raw",
    "event-consumer",
    "event-consumer-devnull",
    "node-signalr",
    "pysignalr",
    "signalrcore",
    BASELINE_CLIENT,  # only with $BENCH_BASELINE (see harness.baseline_tree)
)
PROTOCOLS = ("json", "messagepack")


def client_command(name: str, url: str, count: int, protocol: str, out: str) -> list[str]:
    peers = str(HERE / "clients" / "peers.py")
    if name in ("null", "raw", "pysignalr", "signalrcore"):
        return [PY, peers, name, url, str(count), protocol, out]
    if name in ("event-consumer", BASELINE_CLIENT):
        ec = client_tree(name) / "bench" / "clients" / "ec_client.py"
        return [PY, str(ec), url, str(count), protocol, out]
    if name == "event-consumer-devnull":
        return [PY, str(HERE / "clients" / "ec_client.py"), url, str(count), protocol, "-"]
    if name == "node-signalr":
        return ["node", str(HERE / "clients" / "node_client.mjs"), url, str(count), protocol, out]
    raise ValueError(name)


def run_once(hub: Hub, name: str, protocol: str, count: int, timeout: float, tmp: Path) -> dict[str, Any]:
    out = str(tmp / f"{name}-{protocol}.jsonl")
    result_file = tmp / f"{name}-{protocol}.result"
    result_file.unlink(missing_ok=True)
    hub.drain()
    cpu_before = children_cpu()
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            client_command(name, hub.url, count, protocol, out),
            stdout=subprocess.DEVNULL,  # the stdout sink of event-consumer-devnull writes here
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
            cwd=client_tree(name),
            check=False,
            env={**tree_env(client_tree(name)), "BENCH_RESULT": str(result_file)},
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - started
    process_cpu = children_cpu() - cpu_before
    text = result_file.read_text() if result_file.exists() else ""
    lines = [x for x in text.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:300]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    result["process_cpu_seconds"] = process_cpu
    result["process_wall_seconds"] = wall
    stream = hub.next(5)
    if stream is not None:
        result["hub_flush_seconds"] = stream["flush_seconds"]
        result["hub_msgs_per_s"] = (
            stream["count"] / stream["flush_seconds"] if stream["flush_seconds"] else None
        )
    if name != "null" and name != "event-consumer-devnull":
        with open(out, "rb") as f:
            result["lines_in_file"] = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    with_path = Path(out)
    if with_path.exists():
        with_path.unlink()
    return result


def versions() -> dict[str, str]:
    out: dict[str, str] = {"python": platform.python_version()}
    for dist in ("msgspec", "websockets", "aiohttp", "pysignalr", "signalrcore"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    for pkg in ("@microsoft/signalr", "@microsoft/signalr-protocol-msgpack"):
        try:
            out[pkg] = json.loads((ROOT / "node_modules" / pkg / "package.json").read_text())["version"]
        except OSError:
            out[pkg] = "not installed"
    try:
        out["node"] = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out["node"] = "not installed"
    try:
        out["event-consumer"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out["event-consumer"] = "unknown"
    return out


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "load_avg_at_start": os.getloadavg(),
    }


def run_throughput(
    hub: Hub, clients: tuple[str, ...], protocols: tuple[str, ...], count: int, runs: int, tmp: Path
) -> dict[str, Any]:
    """The throughput section (issue 7 item 1); its keys sit at the top level of the results doc."""
    timeout = max(20.0, count / 1000.0)
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {(c, p): [] for c in clients for p in protocols}
    failed: dict[tuple[str, str], str] = {}
    for i in range(runs):
        for key in list(cells):
            if key in failed:
                continue
            result = run_once(hub, key[0], key[1], count, timeout, tmp)
            if "error" in result:
                failed[key] = result["error"]
                print(f"  {key[0]:<24} {key[1]:<12} run {i + 1}: FAILED {result['error']}", flush=True)
                continue
            cells[key].append(result)
            print(
                f"  {key[0]:<24} {key[1]:<12} run {i + 1}: {result['msgs_per_s']:>10,.0f} msgs/s "
                f"{result['cpu_s_per_100k']:>6.2f} CPU-s/100k",
                flush=True,
            )

    table = []
    for (client, protocol), results in cells.items():
        row: dict[str, Any] = {"client": client, "protocol": protocol, "runs": len(results)}
        if (client, protocol) in failed:
            row["error"] = failed[(client, protocol)]
        for metric in (
            "msgs_per_s",
            "cpu_s_per_100k",
            "process_cpu_seconds",
            "hub_msgs_per_s",
            "max_rss_kib",
        ):
            row[metric] = summarise([r[metric] for r in results if r.get(metric) is not None])
        row["raw"] = results
        table.append(row)

    def median_of(client: str, protocol: str, metric: str) -> float | None:
        for row in table:
            if row["client"] == client and row["protocol"] == protocol and row.get(metric):
                return float(row[metric]["median"])
        return None

    ratios: dict[str, Any] = {}
    for protocol in protocols:
        ec = median_of("event-consumer", protocol, "msgs_per_s")
        ec_cpu = median_of("event-consumer", protocol, "cpu_s_per_100k")
        entry: dict[str, Any] = {}
        for peer, target in (("pysignalr", 1.5), ("node-signalr", 3.0), ("raw", 0.9)):
            other = median_of(peer, protocol, "msgs_per_s")
            if ec and other:
                entry[f"throughput_vs_{peer}"] = {
                    "ratio": ec / other,
                    "target": target,
                    "met": ec / other >= target,
                }
        py_cpu = median_of("pysignalr", protocol, "cpu_s_per_100k")
        if ec_cpu and py_cpu:
            entry["cpu_vs_pysignalr"] = {
                "ratio": ec_cpu / py_cpu,
                "target": 0.6,
                "met": ec_cpu / py_cpu <= 0.6,
            }
        ratios[protocol] = entry

    vs_baseline: dict[str, Any] = {}
    for protocol in protocols if BASELINE_CLIENT in clients else ():
        for metric, lower in (("msgs_per_s", False), ("cpu_s_per_100k", True)):
            ours = next(
                (r for r in table if r["client"] == "event-consumer" and r["protocol"] == protocol), None
            )
            base = next(
                (r for r in table if r["client"] == BASELINE_CLIENT and r["protocol"] == protocol), None
            )
            if ours and base:
                vs_baseline[f"{metric}_{protocol}"] = compare(
                    [r[metric] for r in ours["raw"]], [r[metric] for r in base["raw"]], lower_is_better=lower
                )

    return {
        **({"baseline": baseline_label(), "vs_baseline": vs_baseline} if vs_baseline else {}),
        "messages_per_run": count,
        "runs_per_cell": runs,
        "payload": {"target": "ReceiveCarPatches", **hub.pool},
        "method": (
            "HubServer (consumer.sim.hubhost) in its own process sends pre-encoded payloads as fast as "
            "the client reads (<= 2 MiB queued-but-unwritten); it coalesces queued messages into WebSocket "
            "frames of up to 64 KiB. Each client is its own process and writes one JSON line per message "
            "to a file. "
            "Window: first message handled -> last line written; CPU = the client's rusage over that window."
        ),
        "cells": table,
        "ratios": ratios,
    }


SECTIONS = ("throughput", "latency", "reconnect", "tokens", "memory", "scale", "sidebyside")

# Per mode: the parameters of every section (see each section module's docstring).
MODES: dict[str, dict[str, Any]] = {
    "smoke": {
        "throughput": {"count": 300, "runs": 1},
        "latency": {"seconds": 0.8, "runs": 1},
        "reconnect": {"restarts": 1},
        "tokens": {"lifetime": 2.0, "lifetimes": 2},
        "memory": {"checkpoints": (2_000, 6_000)},
        "scale": {"count": 2_000, "runs": 1, "events": (1, 10), "hubs": (1, 4)},
        "sidebyside": {"count": 300, "runs": 1},
    },
    "quick": {
        "throughput": {"count": 5_000, "runs": 3},
        "latency": {"seconds": 3.0, "runs": 1},
        "reconnect": {"restarts": 3},
        "tokens": {"lifetime": 4.0, "lifetimes": 4},
        "memory": {"checkpoints": (20_000, 100_000)},
        "scale": {"count": 10_000, "runs": 1, "events": (1, 10, 100), "hubs": (1, 4, 16)},
        "sidebyside": {"count": 4_000, "runs": 1},
    },
    "full": {
        "throughput": {"count": 100_000, "runs": 5},
        "latency": {"seconds": 8.0, "runs": 5},
        "reconnect": {"restarts": 20},
        "tokens": {"lifetime": 5.0, "lifetimes": 12},
        "memory": {"checkpoints": (100_000, 1_000_000)},
        "scale": {"count": 100_000, "runs": 5, "events": (1, 10, 100), "hubs": (1, 4, 16)},
        "sidebyside": {"count": 40_000, "runs": 2},
    },
}


def log(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="README form (see MODES)")
    mode.add_argument("--smoke", action="store_true", help="test form: tiny counts, 1 run, JSON only")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    parser.add_argument("--count", type=int, help="throughput: messages per run (overrides the mode)")
    parser.add_argument("--runs", type=int, help="throughput: runs per cell (overrides the mode)")
    parser.add_argument(
        "--clients", help=f"throughput and latency: comma-separated subset of {','.join(CLIENTS)}"
    )
    parser.add_argument("--latency-runs", type=int, help="latency: runs per cell (overrides the mode)")
    parser.add_argument("--protocols", help="throughput: comma-separated subset of json,messagepack")
    parser.add_argument("--out", type=Path, help="results file (default bench/results/<date>[-mode].json)")
    parser.add_argument("--no-readme", action="store_true", help="do not re-render the README tables")
    args = parser.parse_args(argv)

    mode_name = "full" if args.full else "smoke" if args.smoke else "quick"
    params = MODES[mode_name]
    sections = tuple(args.only.split(",")) if args.only else SECTIONS
    if args.latency_runs:
        params = {**params, "latency": {**params["latency"], "runs": args.latency_runs}}
    count = args.count or params["throughput"]["count"]
    runs = args.runs or params["throughput"]["runs"]
    clients = tuple(args.clients.split(",")) if args.clients else CLIENTS
    if baseline_tree() is None:
        if BASELINE_CLIENT in clients and args.clients:
            parser.error(f"{BASELINE_CLIENT} needs $BENCH_BASELINE (a source tree of the baseline commit)")
        clients = tuple(c for c in clients if c != BASELINE_CLIENT)
    if args.smoke and not args.clients:
        clients = ("null", "raw", "event-consumer", "node-signalr")
    protocols = (
        tuple(args.protocols.split(",")) if args.protocols else (("json",) if args.smoke else PROTOCOLS)
    )
    unknown = (
        [c for c in clients if c not in CLIENTS]
        + [p for p in protocols if p not in PROTOCOLS]
        + [s for s in sections if s not in SECTIONS]
    )
    if unknown:
        parser.error(f"unknown client/protocol/section: {unknown}")
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    out_path = args.out or HERE / "results" / (
        f"{today}.json" if mode_name == "full" else f"{today}-{mode_name}.json"
    )

    # A run of some sections updates those in an existing file of the same name and keeps the rest.
    doc: dict[str, Any] = {}
    if args.only and out_path.exists():
        doc = json.loads(out_path.read_text())
        if doc.get("mode") != mode_name:
            doc = {}
    started = time.time()
    elapsed: dict[str, float] = dict(doc.get("section_seconds", {}))
    hub = Hub()
    try:
        with tempfile.TemporaryDirectory(prefix="ec-bench-") as tmp_name:
            tmp = Path(tmp_name)
            for section in sections:
                t0 = time.time()
                log(f"== {section} ({mode_name})")
                if section == "throughput":
                    doc.update(run_throughput(hub, clients, protocols, count, runs, tmp))
                elif section == "latency":
                    import latency

                    lat_clients = (
                        tuple(c for c in latency.CLIENTS if c in clients) if args.clients else latency.CLIENTS
                    )
                    doc["latency"] = latency.run(
                        hub, tmp=tmp, log=log, clients=lat_clients, **params["latency"]
                    )
                elif section == "reconnect":
                    import reconnect

                    doc["reconnect"] = reconnect.run_reconnect(tmp=tmp, log=log, **params["reconnect"])
                elif section == "tokens":
                    import reconnect

                    doc["tokens"] = reconnect.run_tokens(tmp=tmp, log=log, **params["tokens"])
                elif section == "memory":
                    import memory

                    doc["memory"] = memory.run(hub, tmp=tmp, log=log, **params["memory"])
                elif section == "scale":
                    import scale

                    doc["scale"] = scale.run(tmp=tmp, log=log, **params["scale"])
                elif section == "sidebyside":
                    import sidebyside

                    doc["sidebyside"] = sidebyside.run(tmp=tmp, log=log, **params["sidebyside"])
                elapsed[section] = round(time.time() - t0, 1)
    finally:
        hub.close()

    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": mode_name,
        "machine": machine(),
        "versions": versions(),
    }
    # Every section carries when/where/what it measured; the top level is the throughput run's
    # (or this run's, for a new file), so merging sections never re-dates another section's figures.
    for section in sections:
        if section != "throughput":
            doc[section].update(meta)
    if "throughput" in sections or "date" not in doc:
        doc.update(meta)
    doc["kind"] = "throughput"
    doc["elapsed_seconds"] = round(time.time() - started, 1)
    doc["section_seconds"] = elapsed
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out_path.relative_to(ROOT) if out_path.is_relative_to(ROOT) else out_path}")
    if not args.no_readme:
        subprocess.run(
            [PY, str(HERE / "render.py"), "--readme", str(ROOT / "README.md")], check=True, cwd=ROOT
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
