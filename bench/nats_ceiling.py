"""nats-server alone: how many envelope lines a second it stores in a file-backed JetStream stream (issue 14).

    python bench/nats_ceiling.py                  # 100k lines x 3 runs per variant
    python bench/nats_ceiling.py --pin            # nats-server on CPU 1, the publisher on CPU 0
    python bench/nats_ceiling.py --variants full,none --runs 1

The ceiling the NATS sink cannot beat, measured without the sink: the same 100k envelope lines the
relay writes (RedMist-sized `ReceiveCarPatches`, bench/payloads.py, 2.7 KB on average), turned into
protocol commands *before* the clock starts, then written to a plain socket by a minimal publisher
(one `sendall` per ~256 KiB, no client library, no per-line work) while a reader thread counts the
acks. Flow control as in the sink: an ack is asked for the last line of every run of `--ack-every`
lines and at most `--window` lines are unacked. Per run: lines/s (first byte sent to last ack) and
nats-server CPU seconds per 100k lines (from /proc), how busy it was (CPU seconds per second) and how
long its threads waited runnable for a core (schedstat); the stream's message count is checked after
every run (every line stored, none twice).

Variants (one stream each, purged between runs; runs interleaved):
- `full`: the sink's headers (`Nats-Msg-Id` = BLAKE2b-128 hex, `Event-Consumer-Seq`, `Content-Type`)
- `msgid`: `Nats-Msg-Id` only; `none`: no headers (plain PUB, no dedupe): what each header costs
- `full-window10s`: `full` with a 10 s duplicate window instead of the sink's default 120 s (fewer
  ids kept by the server)
- `full-memory`: `full` into a memory-backed stream (what the file store costs; not what we ship)
- `full-async`: `full` into a file-backed stream with `persist_mode = async` (nats-server >= 2.12: the
  ack is sent before the message is written; not what we ship: a killed server may lose acked lines)
- `full-gogc400`: `full` with the server started under GOGC=400 (Go garbage collector runs less often)

Results: bench/results/nats-ceiling-<UTC date>[-pinned].json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from nats_sink import proc_cpu, runq_wait, start_server  # noqa: E402
from payloads import TARGET, build_pool  # noqa: E402

from consumer.redmist import PAYLOADS  # noqa: E402
from consumer.relay.relay import Relay  # noqa: E402
from consumer.sinks import FileSink, SinkWorker  # noqa: E402

VARIANTS = ("full", "msgid", "none", "full-window10s", "full-memory", "full-async", "full-gogc400")
CHUNK = 256 * 1024
INBOX = b"_INBOX.ceiling."


async def envelope_lines(n: int, path: Path) -> list[bytes]:
    """The relay's envelope lines for `n` bench payloads (as the file sink writes them)."""
    pool = build_pool()
    worker = SinkWorker(FileSink(path, fsync="never"))
    await worker.start()
    relay = Relay([worker], hub="bench", protocol="json", profile=PAYLOADS)
    for i in range(n):
        await relay.on_raw(TARGET, pool[i % len(pool)].json_args)
    await worker.close(grace=60)
    lines = path.read_bytes().splitlines()
    path.unlink()
    return lines


def commands(lines: list[bytes], variant: str, ack_every: int) -> list[bytes]:
    """One protocol command per line; a reply subject (ack) on the last line of every run."""
    out = []
    for i, line in enumerate(lines):
        event = json.loads(line[: line.find(b',"arguments":')] + b"}")
        subject = b"bench.%s.%s" % (str(event["event_id"]).encode(), TARGET.encode())
        if i % ack_every == ack_every - 1 or i == len(lines) - 1:
            subject += b" " + INBOX + b"%d" % i
        mid = hashlib.blake2b(line, digest_size=16).hexdigest().encode()
        if variant.startswith("full"):
            hdr = (
                b"NATS/1.0\r\nNats-Msg-Id: %s\r\nEvent-Consumer-Seq: %d\r\n"
                b"Content-Type: application/json\r\n\r\n" % (mid, event["seq"])
            )
        elif variant == "msgid":
            hdr = b"NATS/1.0\r\nNats-Msg-Id: %s\r\n\r\n" % mid
        else:
            out.append(b"PUB %s %d\r\n%s\r\n" % (subject, len(line), line))
            continue
        out.append(b"HPUB %s %d %d\r\n%s%s\r\n" % (subject, len(hdr), len(hdr) + len(line), hdr, line))
    return out


class Acks:
    """Reads the socket on a thread: counts ack messages (the highest acked line index), answers PINGs."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.acked = -1
        self.errors = 0
        self.cond = threading.Condition()
        self.send_lock = threading.Lock()  # a PONG must not land inside a chunk being sent
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        buf = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:  # closed by the publisher after the last ack
                return
            if not data:
                return
            buf += data
            while True:
                end = buf.find(b"\r\n")
                if end < 0:
                    break
                head = buf[:end].split()
                if head[0] in (b"MSG", b"HMSG"):
                    size = int(head[-1])
                    if len(buf) < end + 2 + size + 2:
                        break
                    body = buf[end + 2 : end + 2 + size]
                    buf = buf[end + 2 + size + 2 :]
                    index = int(head[1][len(INBOX) :])
                    with self.cond:
                        if b'"error"' in body or head[0] == b"HMSG":
                            self.errors += 1
                        self.acked = max(self.acked, index)
                        self.cond.notify_all()
                    continue
                buf = buf[end + 2 :]
                if head[0] == b"PING":
                    with self.send_lock:
                        self.sock.sendall(b"PONG\r\n")
                elif head[0] == b"-ERR":
                    raise RuntimeError(b" ".join(head).decode())

    def wait(self, index: int) -> None:
        with self.cond:
            while self.acked < index:
                self.cond.wait()


def publish(url: str, cmds: list[bytes], window: int) -> float:
    """Send every command (at most `window` lines unacked); seconds until the last ack."""
    host, port = url.removeprefix("nats://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.recv(65536)  # INFO
    sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n')
    sock.sendall(b"SUB " + INBOX + b"* 1\r\n")
    acks = Acks(sock)
    chunks: list[tuple[int, bytes]] = []  # (index of the chunk's last line, bytes)
    part: list[bytes] = []
    size = 0
    for i, cmd in enumerate(cmds):
        part.append(cmd)
        size += len(cmd)
        if size >= CHUNK or i == len(cmds) - 1:
            chunks.append((i, b"".join(part)))
            part, size = [], 0
    t0 = time.perf_counter()
    for last, data in chunks:
        acks.wait(last - window)
        with acks.send_lock:
            sock.sendall(data)
    acks.wait(len(cmds) - 1)
    wall = time.perf_counter() - t0
    sock.shutdown(socket.SHUT_RDWR)
    acks.thread.join()
    sock.close()
    if acks.errors:
        raise RuntimeError(f"{acks.errors} error acks")
    return wall


async def prepare_stream(url: str, variant: str) -> None:
    import nats
    import nats.js.api
    import nats.js.errors

    nc = await nats.connect(url)
    js = nc.jetstream()
    storage = nats.js.api.StorageType.MEMORY if variant.endswith("memory") else nats.js.api.StorageType.FILE
    window = 10.0 if variant.endswith("window10s") else 120.0
    persist = nats.js.api.PersistMode.ASYNC if variant.endswith("async") else None
    config = nats.js.api.StreamConfig(
        name="EVENTS", subjects=["bench.*.*"], duplicate_window=window, storage=storage, persist_mode=persist
    )
    with contextlib.suppress(nats.js.errors.NotFoundError):  # not there yet
        await js.delete_stream("EVENTS")
    await js.add_stream(config)
    await nc.close()


async def stored(url: str) -> int:
    import nats

    nc = await nats.connect(url)
    info = await nc.jetstream().stream_info("EVENTS")
    await nc.close()
    return int(info.state.messages)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ack-every", type=int, default=64)
    parser.add_argument("--window", type=int, default=4096, help="lines unacked at most")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--store", type=Path, default=None, help="parent dir of the servers' stores")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--pin", action="store_true", help="nats-server on CPU 1, the publisher on CPU 0")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variants: {sorted(unknown)}")
    load = os.getloadavg()
    if args.pin:
        os.sched_setaffinity(0, {0})
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(dir=args.store) as tmp:
        lines = asyncio.run(envelope_lines(args.messages, Path(tmp) / "lines.jsonl"))
        mean_bytes = sum(map(len, lines)) / len(lines)
        cmds = {v: commands(lines, v, args.ack_every) for v in variants}
        servers: dict[str, Any] = {}
        try:
            for v in variants:
                env = {**os.environ, "GOGC": "400"} if v.endswith("gogc400") else None
                servers[v] = start_server(Path(tmp) / f"js-{v}", 1 if args.pin else None, env=env)
            for _ in range(args.runs):
                for v in variants:
                    proc, url = servers[v]
                    asyncio.run(prepare_stream(url, v))
                    s0, q0 = proc_cpu(proc.pid), runq_wait(proc.pid)
                    wall = publish(url, cmds[v], args.window)
                    server, waited = proc_cpu(proc.pid) - s0, runq_wait(proc.pid) - q0
                    n = asyncio.run(stored(url))
                    if n != len(lines):
                        raise RuntimeError(f"{v}: the stream holds {n} messages, not {len(lines)}")
                    per = 100_000 / len(lines)
                    results[v].append(
                        {
                            "msgs_per_s": len(lines) / wall,
                            "server_cpu_per_100k": server * per,
                            "server_cores": server / wall,  # CPU seconds per second
                            "server_runq_wait": waited / wall,  # runnable, waiting for a core
                        }
                    )
        finally:
            for proc, _url in servers.values():
                proc.terminate()
                proc.wait()
    summary: dict[str, Any] = {}
    for v, runs in results.items():
        summary[v] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        summary[v]["runs"] = runs
    doc = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "messages": args.messages,
        "mean_line_bytes": round(mean_bytes),
        "runs": args.runs,
        "ack_every": args.ack_every,
        "window": args.window,
        "pinned": args.pin,
        "load_average_at_start": load,
        "load_average_at_end": os.getloadavg(),
        "variants": summary,
    }
    out = args.out or HERE / "results" / f"nats-ceiling-{doc['date']}{'-pinned' if args.pin else ''}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(
        f"| variant | lines/s (median of {args.runs}) | CPU s / 100k (nats-server) | cores busy "
        "| waiting for a core |"
    )
    print("|---|---:|---:|---:|---:|")
    for v in variants:
        s = summary[v]
        print(
            f"| {v} | {s['msgs_per_s']:,.0f} | {s['server_cpu_per_100k']:.2f} | {s['server_cores']:.2f} "
            f"| {s['server_runq_wait']:.2f} |"
        )
    print(f"\n{args.messages:,} lines of {mean_bytes:,.0f} B on average, {doc['machine']}")


if __name__ == "__main__":
    main()
