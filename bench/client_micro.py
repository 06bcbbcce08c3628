"""Micro-benchmark of the SignalR client's receive path: `python bench/client_micro.py [--count N]`.

The hub is the benchmark hub process (bench/hub.py: our `HubServer` flooding pre-encoded RedMist
`ReceiveCarPatches` frames, 1-4 KB per invocation, up to 64 KB per WebSocket frame, as fast as the
client reads). In this process, one client at a time, for each protocol:

- `bare`: a bare `websockets` recv loop doing only the parse any SignalR client must do: split the
  frame into records (0x1E for JSON, VarInt length prefixes for MessagePack) and decode each record's
  envelope with msgspec into a Struct whose arguments stay `msgspec.Raw` (no dispatch, no handler).
- `hubconnection`: `HubConnection(raw_arguments=True, skip_negotiation=True)` with a no-op async
  `on_raw` handler (it only counts): receive loop, protocol reader, hand-off to the dispatcher task,
  handler call.

Each run measures the window from the first invocation the client saw to the COUNT-th: msgs/s and
CPU-s per 100k invocations (this process's rusage, user + system; the hub's CPU is its own
process's). `--repeats` runs per client (default 3), interleaved; the median is reported, plus
`ratio` = hubconnection msgs/s / bare msgs/s and `cpu_ratio` = hubconnection CPU / bare CPU per
message. The two cores are shared by the hub and this client, so compare runs made in one sitting on
one machine. `--out FILE` writes the figures as JSON.

Measured here (2 shared cores, Python 3.11, 100k invocations, median of 3), before → after the
per-frame hand-off (the "before" run imported the previous `consumer` package via PYTHONPATH):

    protocol     client          msgs/s              CPU-s/100k
    json         bare            158,945 / 169,800   0.447 / 0.441
    json         hubconnection   108,125 → 136,670   0.924 → 0.708
    json         ratio           0.68 → 0.80         (CPU 2.07 → 1.60 x bare)
    messagepack  bare            146,671 / 144,742   0.681 / 0.687
    messagepack  hubconnection    92,776 → 110,697   1.077 → 0.900
    messagepack  ratio           0.63 → 0.76         (CPU 1.58 → 1.31 x bare)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Hub  # noqa: E402

from consumer.logs import setup_logging  # noqa: E402
from consumer.signalr.connection import HubConnection  # noqa: E402

TARGET = "ReceiveCarPatches"


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Window:
    """From the first invocation seen to the last one counted."""

    def __init__(self) -> None:
        self.t0 = 0.0
        self.cpu0 = 0.0
        self.first = 0

    def start(self, seen: int) -> None:
        self.t0 = time.perf_counter()
        self.cpu0 = cpu_seconds()
        self.first = seen

    def result(self, total: int) -> dict[str, float]:
        seconds = time.perf_counter() - self.t0
        cpu = cpu_seconds() - self.cpu0
        n = total - self.first
        return {"messages": n, "msgs_per_s": n / seconds, "cpu_s_per_100k": cpu / n * 100_000}


# --- bare websockets loop -------------------------------------------------------------------------


class _JsonEnvelope(msgspec.Struct):
    type: int
    target: str | None = None
    arguments: msgspec.Raw = msgspec.Raw()
    invocationId: str | None = None


class _MsgPackEnvelope(msgspec.Struct, array_like=True):
    type: int
    headers: dict[str, str] | None = None
    invocation_id: str | None = None
    target: str | int | None = None  # a Completion's result kind sits here
    arguments: msgspec.Raw = msgspec.Raw()
    stream_ids: list[str] | None = None


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


async def run_bare(url: str, count: int, protocol: str) -> dict[str, float]:
    import websockets

    ws_url = "ws" + url[4:] if url.startswith("http") else url
    window = Window()
    n = 0
    async with websockets.connect(ws_url, max_size=None, compression=None) as ws:
        await ws.send(f'{{"protocol":"{protocol}","version":1}}\x1e')
        await ws.recv()  # the handshake response
        if protocol == "json":
            call = msgspec.json.encode(
                {"type": 1, "invocationId": "0", "target": "BenchStream", "arguments": [count, 0, False]}
            )
            await ws.send(call.decode() + "\x1e")
            decode_json = msgspec.json.Decoder(_JsonEnvelope).decode
            while n < count:
                frame = await ws.recv(decode=False)
                view = memoryview(frame)
                start = 0
                end = len(frame)
                while start < end:
                    idx = frame.find(b"\x1e", start)
                    msg = decode_json(view[start:idx])
                    start = idx + 1
                    if msg.type == 1 and msg.target == TARGET:
                        if n == 0:
                            window.start(0)
                        n += 1
        else:
            body = msgspec.msgpack.encode([1, {}, "0", "BenchStream", [count, 0, False]])
            await ws.send(_varint(len(body)) + body)
            decode_mp = msgspec.msgpack.Decoder(_MsgPackEnvelope).decode
            while n < count:
                frame = await ws.recv(decode=False)
                view = memoryview(frame)
                pos = 0
                end = len(frame)
                while pos < end:
                    size = shift = 0
                    while True:
                        b = frame[pos]
                        pos += 1
                        size |= (b & 0x7F) << shift
                        shift += 7
                        if not b & 0x80:
                            break
                    msg = decode_mp(view[pos : pos + size])
                    pos += size
                    if msg.type == 1 and msg.target == TARGET:
                        if n == 0:
                            window.start(0)
                        n += 1
        result = window.result(n)
    return result


# --- HubConnection --------------------------------------------------------------------------------


async def run_hubconnection(url: str, count: int, protocol: str) -> dict[str, float]:
    window = Window()
    done = asyncio.Event()
    n = 0

    async def on_raw(target: str, raw: Any) -> None:
        nonlocal n
        if n == 0:
            window.start(0)
        n += 1
        if n == count:
            done.set()

    conn = HubConnection(
        url,
        protocol=protocol,
        skip_negotiation=True,
        raw_arguments=True,
        max_message_size=16 * 1024 * 1024,
        keepalive_interval=300.0,
        server_timeout=600.0,
    )
    conn.on_raw(on_raw)
    await conn.start()
    try:
        await conn.invoke("BenchStream", count, 0, False)
        await asyncio.wait_for(done.wait(), 600)
        result = window.result(n)
    finally:
        await conn.stop(drain_timeout=0.0)
    return result


RUNNERS = {"bare": run_bare, "hubconnection": run_hubconnection}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000, help="invocations per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--protocols", default="json,messagepack")
    parser.add_argument("--label", default="", help="stored in the JSON (e.g. before/after)")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    setup_logging("WARNING", fmt="json")
    protocols = [p for p in args.protocols.split(",") if p]
    runs: dict[str, dict[str, list[dict[str, float]]]] = {p: {k: [] for k in RUNNERS} for p in protocols}
    hub = Hub()
    try:
        for protocol in protocols:
            for _ in range(args.repeats):
                for kind, runner in RUNNERS.items():
                    runs[protocol][kind].append(asyncio.run(runner(hub.url, args.count, protocol)))
                    hub.drain()
    finally:
        hub.close()
    figures: dict[str, Any] = {}
    for protocol in protocols:
        row: dict[str, Any] = {}
        for kind in RUNNERS:
            values = runs[protocol][kind]
            row[kind] = {
                "msgs_per_s": statistics.median(v["msgs_per_s"] for v in values),
                "cpu_s_per_100k": statistics.median(v["cpu_s_per_100k"] for v in values),
                "runs": values,
            }
        row["ratio"] = row["hubconnection"]["msgs_per_s"] / row["bare"]["msgs_per_s"]
        row["cpu_ratio"] = row["hubconnection"]["cpu_s_per_100k"] / row["bare"]["cpu_s_per_100k"]
        figures[protocol] = row
    print(f"{'protocol':<12} {'client':<14} {'msgs/s':>10} {'CPU-s/100k':>11}")
    for protocol, row in figures.items():
        for kind in RUNNERS:
            fig = row[kind]
            print(f"{protocol:<12} {kind:<14} {fig['msgs_per_s']:>10,.0f} {fig['cpu_s_per_100k']:>11.3f}")
        print(f"{protocol:<12} {'ratio':<14} {row['ratio']:>10.2f} {row['cpu_ratio']:>11.2f}")
    if args.out is not None:
        meta = {
            "label": args.label,
            "count": args.count,
            "repeats": args.repeats,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        args.out.write_text(json.dumps({"meta": meta, "figures": figures}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
