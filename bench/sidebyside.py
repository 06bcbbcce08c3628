"""The side-by-side section (issue 15): every client against one independent hub, both protocols.

Hub: bench/wirehub.py, its own process, writes pre-built WebSocket frames straight to the socket
(RedMist-shaped `ReceiveCarPatches` of 12 cars: JSON with every patch key present and unset ones
null, MessagePack with full-length integer-keyed arrays). Clients, each its own process, started
once per run; runs interleaved (round 1 of every client, then round 2, ...):

- `bare`: a bare `websockets` recv loop that parses nothing (bench/clients/peers.py) — the ceiling;
  the hub's own send time per stream is recorded too (`hub_msgs_per_s`).
- `pysignalr-decode`: pysignalr, handler counts only (decode only, no output).
- `node-decode`: `@microsoft/signalr` on Node, handler counts only (bench/clients/node_client.mjs).
- `python-floor`: the least a Python process can do for event-consumer's faithful output
  (bench/clients/peers.py `floor`: recv, one typed decode of the whole invocation into fastpack's
  Structs, the envelope line, one os.write per 4 MiB; no dispatch, queues or sink thread): what is
  reachable in Python at all, measured like the peers.
- `event-consumer`: the real `event-consumer run --config <toml>` process (python -m consumer),
  file sink with `fsync = "never"`, faithful output (the default).
- `event-consumer-compact`: the same with `[redmist] patches = "compact"` (when the config knows it).
- `event-consumer-baseline` (only with `$SIDEBYSIDE_BASELINE` = a source tree of another commit, e.g.
  `git archive <commit> | tar -x -C DIR`): that tree's daemon, run from DIR (`python -m consumer` puts
  the working directory first on sys.path), same configuration: a before/after in the same run.

Window and CPU: the peers measure themselves (first message handled -> last; their own rusage, see
clients/common.py). The daemon is observed from outside (its file sink writes in batches, so the first
line's arrival in the file says little): the window starts at the hub's first send of the stream
(`t_start`, CLOCK_MONOTONIC, the same clock here) and ends when the harness, polling the sink file's
size every `POLL` s, finds the hub's `BenchDone` sentinel line (sent after the COUNTth frame) in it.
CPU = utime + stime of the process from /proc/<pid>/stat (all threads), sampled at every poll: the
end sample minus the last sample taken before `t_start` (the daemon is idle then, connected and
waiting). Both ends err against the daemon (window opens before its first message, closes up to one
poll late). msgs/s = COUNT / window.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import Hub, run_client, summarise

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
POLL = 0.005
CLIENTS = (
    "bare",
    "pysignalr-decode",
    "node-decode",
    "python-floor",
    "event-consumer",
    "event-consumer-compact",
)
PROTOCOLS = ("json", "messagepack")
_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)


def _proc_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def daemon_config(url: str, count: int, protocol: str, out: Path, compact: bool) -> str:
    lines = [
        "[auth]",
        'grant = "none"',
        "[hub]",
        f'url = "{url}"',
        'name = "bench"',
        f'protocol = "{protocol}"',
        "skip_negotiation = true",
        "allow_insecure_http = true",
        f"max_message_bytes = {16 * 1024 * 1024}",
        "[[hub.on_connect]]",
        'method = "BenchStream"',
        f"arguments = [{count}, 0, false]",
        "[[sinks]]",
        'type = "file"',
        f'path = "{out}"',
        'fsync = "never"',
        "[logging]",
        'level = "WARNING"',
    ]
    if compact:
        lines += ["[redmist]", 'patches = "compact"']
    return "\n".join(lines) + "\n"


def run_daemon(
    hub: Hub,
    count: int,
    protocol: str,
    tmp: Path,
    timeout: float,
    compact: bool = False,
    tree: Path = ROOT,
) -> dict[str, Any]:
    """One run of the real `event-consumer run` process; the window is observed from its sink file."""
    out = tmp / f"ec-{protocol}.jsonl"
    out.unlink(missing_ok=True)
    cfg = tmp / f"ec-{protocol}.toml"
    cfg.write_text(daemon_config(hub.url, count, protocol, out, compact))
    proc = subprocess.Popen(
        [PY, "-m", "consumer", "run", "--config", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=tree,
    )
    try:
        return _observe(proc, hub, out, count, timeout)
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        out.unlink(missing_ok=True)


def _observe(
    proc: subprocess.Popen[bytes], hub: Hub, out: Path, count: int, timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    fd = -1
    size = 0
    samples: list[tuple[float, float]] = []  # (perf_counter, process CPU) at every poll
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                tail = (err.strip().splitlines() or ["no output"])[-1]
                return {"error": f"exit {proc.returncode}: {tail[:300]}"}
            samples.append((time.perf_counter(), _proc_cpu(proc.pid)))
            if fd < 0:
                try:
                    fd = os.open(out, os.O_RDONLY)
                except FileNotFoundError:
                    time.sleep(POLL)
                    continue
            new = os.fstat(fd).st_size
            if new != size:
                size = new
                if b'"BenchDone"' in os.pread(fd, 4096, max(0, size - 4096)):
                    t_end, cpu_end = time.perf_counter(), _proc_cpu(proc.pid)
                    stream = hub.next(10)
                    if stream is None or "t_start" not in stream:
                        return {"error": "the hub reported no stream"}
                    t0 = stream["t_start"]
                    before = [c for t, c in samples if t <= t0]
                    cpu0 = before[-1] if before else samples[0][1]
                    seconds = t_end - t0
                    cpu = cpu_end - cpu0
                    return {
                        "messages": count,
                        "seconds": seconds,
                        "cpu_seconds": cpu,
                        "msgs_per_s": count / seconds,
                        "cpu_s_per_100k": cpu / count * 100_000,
                        "max_rss_kib": _proc_hwm_kib(proc.pid),
                        "output_bytes": size,
                        "hub_msgs_per_s": count / stream["flush_seconds"],
                    }
            time.sleep(POLL)
        return {"error": f"timed out after {timeout:.0f} s ({size} bytes written)"}
    finally:
        if fd >= 0:
            os.close(fd)


def client_command(name: str, url: str, count: int, protocol: str, out: str = "-") -> list[str]:
    if name in ("bare", "pysignalr-decode"):
        return [PY, str(HERE / "clients" / "peers.py"), name, url, str(count), protocol, "-"]
    if name == "python-floor":
        return [PY, str(HERE / "clients" / "peers.py"), "floor", url, str(count), protocol, out]
    if name == "node-decode":
        return ["node", str(HERE / "clients" / "node_client.mjs"), url, str(count), protocol, "-"]
    raise ValueError(name)


def compact_supported() -> bool:
    from consumer.config import RedMistConfig

    return "patches" in RedMistConfig.__struct_fields__


def run(
    *,
    tmp: Path,
    log: Callable[[str], None],
    count: int,
    runs: int,
    clients: tuple[str, ...] = CLIENTS,
    protocols: tuple[str, ...] = PROTOCOLS,
) -> dict[str, Any]:
    if not compact_supported():
        clients = tuple(c for c in clients if c != "event-consumer-compact")
    if os.environ.get("SIDEBYSIDE_BASELINE") and "event-consumer-baseline" not in clients:
        clients = (*clients, "event-consumer-baseline")
    timeout = max(30.0, count / 500.0)
    hub = Hub(script="wirehub.py")
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {(c, p): [] for c in clients for p in protocols}
    errors: dict[tuple[str, str], str] = {}
    try:
        for i in range(runs):
            for (client, protocol), results in cells.items():
                hub.drain()
                if client.startswith("event-consumer"):
                    baseline = client.endswith("baseline")
                    result = run_daemon(
                        hub,
                        count,
                        protocol,
                        tmp,
                        timeout,
                        compact=client.endswith("compact"),
                        tree=Path(os.environ["SIDEBYSIDE_BASELINE"]) if baseline else ROOT,
                    )
                else:
                    out = tmp / f"{client}-{protocol}.jsonl"
                    result = run_client(
                        client_command(client, hub.url, count, protocol, str(out)),
                        tmp / f"{client}-{protocol}.result",
                        timeout,
                    )
                    out.unlink(missing_ok=True)
                if "error" in result:
                    errors[(client, protocol)] = result["error"]
                    log(f"  {client:<24} {protocol:<12} run {i + 1}: FAILED {result['error']}")
                    continue
                stream = None if "hub_msgs_per_s" in result else hub.next(5)
                if stream is not None and stream.get("flush_seconds"):
                    result["hub_msgs_per_s"] = stream["count"] / stream["flush_seconds"]
                results.append(result)
                log(
                    f"  {client:<24} {protocol:<12} run {i + 1}: {result['msgs_per_s']:>10,.0f} msgs/s "
                    f"{result['cpu_seconds']:>6.2f} CPU-s"
                )
        pool = hub.pool
    finally:
        hub.close()

    table = []
    for (client, protocol), results in cells.items():
        row: dict[str, Any] = {"client": client, "protocol": protocol, "runs": len(results)}
        if (client, protocol) in errors:
            row["error"] = errors[(client, protocol)]
        for metric in ("msgs_per_s", "cpu_seconds", "cpu_s_per_100k", "hub_msgs_per_s", "max_rss_kib"):
            row[metric] = summarise([r[metric] for r in results if r.get(metric) is not None])
        row["raw"] = results
        table.append(row)

    def median(client: str, protocol: str, metric: str) -> float | None:
        for row in table:
            if row["client"] == client and row["protocol"] == protocol and row.get(metric):
                return float(row[metric]["median"])
        return None

    # Issue 15's acceptance ratios (event-consumer faithful -> file against the decode-only peers).
    targets = {
        "messagepack": (("pysignalr-decode", 1.0), ("node-decode", 2.0)),
        "json": (("pysignalr-decode", 1.5), ("node-decode", 1.3), ("bare", 0.35)),
    }
    ratios: dict[str, Any] = {}
    for protocol in protocols:
        ec = median("event-consumer", protocol, "msgs_per_s")
        entry: dict[str, Any] = {}
        for peer, target in targets[protocol]:
            other = median(peer, protocol, "msgs_per_s")
            if ec and other:
                entry[f"throughput_vs_{peer}"] = {
                    "ratio": ec / other,
                    "target": target,
                    "met": ec / other >= target,
                }
        ec_cpu = median("event-consumer", protocol, "cpu_s_per_100k")
        py_cpu = median("pysignalr-decode", protocol, "cpu_s_per_100k")
        if protocol == "messagepack" and ec_cpu and py_cpu:
            entry["cpu_vs_pysignalr-decode"] = {
                "ratio": ec_cpu / py_cpu,
                "target": 1.5,
                "met": ec_cpu / py_cpu <= 1.5,
            }
        ratios[protocol] = entry
    return {
        "messages_per_run": count,
        "runs_per_cell": runs,
        "payload": pool,
        "method": (
            "bench/wirehub.py (its own process, not the project's HubServer) writes pre-built WebSocket "
            "frames straight to a blocking socket, 16 frames per sendall; one ReceiveCarPatches "
            "invocation of 12 cars per frame. Peers decode only (no output); event-consumer is the real "
            "`event-consumer run` process writing a file sink with fsync never, observed from outside: "
            "window = the hub's first send -> the hub's BenchDone sentinel line found in the file "
            "(5 ms polls), CPU from /proc/<pid>/stat over it. Rounds interleave the clients."
        ),
        "cells": table,
        "ratios": ratios,
    }
