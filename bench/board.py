"""Board fan-out benchmark (issue 13): N concurrent SSE clients on one daemon following one replayed
event at 60x speed. Reports the daemon's CPU (cores), p50/p99/max delay from the hub's send of a lap
change to its arrival at the clients, and the daemon's RSS.

    python bench/board.py [--clients 1000] [--seconds 60] [--speed 60] [--procs 2]

Three kinds of processes: the simulator (`board.py sim`: records when each car's lap change is sent),
the daemon (`event-consumer run`, HTTP board on loopback), and the load generators (`board.py clients`:
raw asyncio sockets, each client parses its SSE stream; frames are matched to lap changes by their
ids, decoded once per process). Times are CLOCK_MONOTONIC, shared by every process on Linux.
Results: bench/results/board-<UTC date>-<clients>.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
EXE = str(Path(sys.executable).with_name("event-consumer"))


# -- the simulator process ---------------------------------------------------------------------------


async def run_sim(speed: float, out: str) -> None:
    from consumer.sim.hub import HubSettings
    from consumer.sim.simulator import SimConfig, Simulator

    sent: list[tuple[str, int, float]] = []
    config = SimConfig(
        replays=["390-13"],
        events=1,
        hub=HubSettings(speed=speed, tick_interval=0.05, global_rate_token=1000.0, global_burst=1000.0),
    )
    async with Simulator(config) as sim:
        publish = sim.hub.publish

        def timed(event: Any, update: Any) -> None:
            now = time.monotonic()
            for p in update.car_patches:
                if "lastLapCompleted" in p:
                    sent.append((str(p["number"]), int(p["lastLapCompleted"]), now))
            publish(event, update)

        sim.hub.publish = timed  # type: ignore[method-assign]
        print(json.dumps({**sim.info(), "event_ids": sim.event_ids}), flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
    Path(out).write_text(json.dumps(sent))


# -- the load generator --------------------------------------------------------------------------------


async def run_clients(url: str, n: int, out: str, ready_file: str) -> None:
    import msgspec

    host, port = url.removeprefix("http://").split("/")[0].split(":")
    path = "/" + url.removeprefix("http://").split("/", 1)[1]
    arrivals: list[dict[str, float]] = [{} for _ in range(n)]  # per client: frame id -> arrival
    frames: dict[str, list[tuple[str, int]]] = {}  # frame id -> lap changes it carries
    connected = 0
    decoder = msgspec.json.Decoder()

    async def client(i: int) -> None:
        nonlocal connected
        reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 20)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        connected += 1
        mine = arrivals[i]
        buf = b""
        while True:
            data = await reader.read(1 << 16)
            if not data:
                return
            now = time.monotonic()
            buf += data
            # chunked framing: chunks hold whole SSE frames; find frames by their blank-line end
            while True:
                end = buf.find(b"\n\n")
                if end < 0:
                    break
                frame, buf = buf[:end], buf[end + 2 :]
                if b"event: delta" not in frame and b"event: board" not in frame:
                    continue
                fid = frame.split(b"id: ", 1)[1].split(b"\n", 1)[0].decode()
                mine[fid] = now
                if fid not in frames:
                    body = decoder.decode(frame.split(b"data: ", 1)[1].split(b"\r\n", 1)[0])
                    cars = body.get("cars") or {}
                    frames[fid] = [(n_, int(r["llp"])) for n_, r in cars.items() if "llp" in r]

    tasks = [asyncio.create_task(client(i)) for i in range(n)]
    while connected < n:
        await asyncio.sleep(0.05)
        if any(t.done() for t in tasks):
            for t in tasks:
                if t.done() and t.exception():
                    raise t.exception()  # type: ignore[misc]
    Path(ready_file).write_text("ready")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for t in tasks:
        t.cancel()
    dropped = sum(1 for t in tasks if t.done() and not t.cancelled())
    Path(out).write_text(json.dumps({"arrivals": arrivals, "frames": frames, "ended_early": dropped}))


# -- orchestration ---------------------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss(pid: int) -> tuple[float, float]:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("role", nargs="?", default="bench", choices=("bench", "sim", "clients"))
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--speed", type=float, default=60.0)
    ap.add_argument("--url", default="")
    ap.add_argument("--out", default="")
    ap.add_argument("--ready", default="")
    args = ap.parse_args()
    if args.role == "sim":
        asyncio.run(run_sim(args.speed, args.out))
        return 0
    if args.role == "clients":
        asyncio.run(run_clients(args.url, args.clients, args.out, args.ready))
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="board-bench-"))
    sim = subprocess.Popen(
        [PY, __file__, "sim", "--speed", str(args.speed), "--out", str(tmp / "sent.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    assert sim.stdout is not None
    while True:  # the simulator logs to stdout too; its info line is the JSON one
        line = sim.stdout.readline()
        assert line, "simulator did not start"
        if line.startswith("{") and "hub_url" in line:
            info = json.loads(line)
            break
    port = free_port()
    cfg = tmp / "daemon.toml"
    cfg.write_text(f"""
[auth]
grant = "client_credentials"
token_url = "{info["token_url"]}"
client_id = "{info["client_id"]}"
client_secret_env = "BENCH_SECRET"
[hub]
url = "{info["hub_url"]}"
protocol = "messagepack"
[redmist]
events = {json.dumps(info["event_ids"])}
[[sinks]]
type = "stdout"
[http]
enabled = true
port = {port}
board_max_clients = {args.clients + 10}
[logging]
level = "WARNING"
""")
    daemon = subprocess.Popen(
        [EXE, "run", "--config", str(cfg)],
        env={"PATH": os.environ.get("PATH", ""), "BENCH_SECRET": info["client_secret"]},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    eid = info["event_ids"][0]
    url = f"http://127.0.0.1:{port}/v1/events/{eid}/stream"
    gens: list[subprocess.Popen[bytes]] = []
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:  # the daemon's board is up (a start-up wait, not a measurement)
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(f"http://127.0.0.1:{port}/v1/events/{eid}/board", timeout=2)
                if r.status_code == 200:
                    break
            assert time.monotonic() < deadline, "daemon board did not come up"
            time.sleep(0.2)
        per = [args.clients // args.procs + (i < args.clients % args.procs) for i in range(args.procs)]
        for i, n in enumerate(per):
            gens.append(
                subprocess.Popen(
                    [
                        PY,
                        __file__,
                        "clients",
                        "--clients",
                        str(n),
                        "--url",
                        url,
                        "--out",
                        str(tmp / f"clients-{i}.json"),
                        "--ready",
                        str(tmp / f"ready-{i}"),
                    ],
                    cwd=ROOT,
                )
            )
        deadline = time.monotonic() + 120
        while not all((tmp / f"ready-{i}").exists() for i in range(len(per))):
            assert time.monotonic() < deadline, "clients did not connect"
            assert all(g.poll() is None for g in gens), "a load generator died"
            time.sleep(0.2)
        # measurement window
        t0, cpu0 = time.monotonic(), proc_cpu(daemon.pid)
        rss_samples = []
        while time.monotonic() - t0 < args.seconds:
            time.sleep(1.0)
            rss_samples.append(proc_rss(daemon.pid)[0])
        t1, cpu1 = time.monotonic(), proc_cpu(daemon.pid)
        rss, hwm = proc_rss(daemon.pid)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        for g in gens:
            g.send_signal(signal.SIGTERM)
        for g in gens:
            g.wait(60)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        sim.send_signal(signal.SIGTERM)
        sim.wait(30)
    sent: dict[tuple[str, int], float] = {}
    for number, lap, at in json.loads((tmp / "sent.json").read_text()):
        sent.setdefault((number, lap), at)
    delays: list[float] = []
    missing = 0
    for i in range(len(per)):
        data = json.loads((tmp / f"clients-{i}.json").read_text())
        frames = {fid: [tuple(x) for x in laps] for fid, laps in data["frames"].items()}
        for arrivals in data["arrivals"]:
            for fid, at in arrivals.items():
                if not t0 <= at <= t1:
                    continue
                for key in frames.get(fid, []):
                    s = sent.get((str(key[0]), int(key[1])))
                    if s is None:
                        missing += 1
                    else:
                        delays.append((at - s) * 1000)
    dropped = [
        line for line in metrics.splitlines() if line.startswith("event_consumer_board_clients_dropped")
    ]
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
        "clients": args.clients,
        "speed": args.speed,
        "seconds": round(t1 - t0, 1),
        "daemon_cpu_cores": round((cpu1 - cpu0) / (t1 - t0), 3),
        "delay_ms": {
            "samples": len(delays),
            "p50": round(statistics.median(delays), 1) if delays else None,
            "p99": round(pct(delays, 0.99), 1) if delays else None,
            "max": round(max(delays), 1) if delays else None,
        },
        "rss_mb": {
            "end": round(rss, 1),
            "max_sampled": round(max(rss_samples), 1),
            "peak_hwm": round(hwm, 1),
        },
        "unmatched_lap_changes": missing,
        "dropped": dropped,
    }
    results = HERE / "results" / f"board-{dt.datetime.now(dt.UTC):%Y-%m-%d}-{args.clients}.json"
    results.write_text(json.dumps(result, indent=2) + "\n")
    d = result["delay_ms"]
    print(json.dumps(result, indent=2))
    print()
    head = ["clients", "replay speed", "window", "daemon CPU", "delay p50", "delay p99", "delay max"]
    print("| " + " | ".join([*head, "daemon RSS (peak)"]) + " |")
    print("|---|---|---|---|---|---|---|---|")
    rss_peak = result["rss_mb"]["peak_hwm"]
    cells = [
        str(args.clients),
        f"{args.speed:g}x",
        f"{result['seconds']} s",
        f"{result['daemon_cpu_cores']:.2f} core",
        f"{d['p50']} ms",
        f"{d['p99']} ms",
        f"{d['max']} ms",
        f"{rss_peak} MB",
    ]
    print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
