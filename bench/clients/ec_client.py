"""event-consumer as a benchmark client: the real `Daemon` (relay -> file sink) in its own process.

`python bench/clients/ec_client.py URL COUNT PROTOCOL OUT [RATE [FSYNC]]` — OUT `-` uses the stdout sink
(the harness points stdout at /dev/null and takes the result from $BENCH_RESULT). The daemon is
configured exactly as `event-consumer run` would configure it from a TOML file (`parse_config`), with
`[[hub.on_connect]] BenchStream(COUNT, RATE, false)` as its subscription. The measurement window ends
when the relay has counted COUNT car-patch invocations and every sink worker is idle (all lines
written).

FSYNC (`never` / `interval` / `always`) sets the file sink's `fsync`; without it the configuration
default applies (`interval`, 1 s).

Latency mode (RATE > 0, JSON, file sink): the hub stamps each payload with `{"sentAtNs":
time.time_ns()}` as it queues it. The file sink is wrapped (`TimedSink`, same `SinkWorker` settings as
`build_worker`): when the wrapped `FileSink.write(batch)` returns (the batch's `os.write` calls are
done: the lines are in the file), it takes `time.time_ns()` once and records `write - sentAtNs` for
every line of the batch (`latencies_ms`). After the run the file is read back and, per line,
`received_at` (the envelope's timestamp, taken when the daemon received the invocation) - `sentAtNs`
gives `received_latencies_ms`, a lower bound that excludes the relay queue and the write. Both clocks
are this machine's CLOCK_REALTIME.

The window's start and the relay count are observed by a 2 ms poll of the relay's public counters
(`daemon.stats.relayed`): the daemon exposes no per-message callback that would not add work to the hot
path; the poll costs about 500 wake-ups/s.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import TARGET, Window, emit

from consumer.config import SinkConfig, parse_config
from consumer.daemon import Daemon
from consumer.logs import setup_logging
from consumer.sinks import Sink, SinkWorker, build_worker

POLL = 0.002


def build_config(
    url: str, count: int, protocol: str, out: str, *, rate: float = 0, fsync: str | None = None
) -> dict[str, Any]:
    sink: dict[str, Any] = {"type": "stdout"} if out == "-" else {"type": "file", "path": out}
    if fsync and out != "-":
        sink["fsync"] = fsync
    return {
        "auth": {"grant": "none"},
        "hub": {
            "url": url,
            "name": "bench",
            "protocol": protocol,
            "skip_negotiation": True,
            "allow_insecure_http": True,
            "on_connect": [{"method": "BenchStream", "arguments": [count, rate, False]}],
            "max_message_bytes": 16 * 1024 * 1024,
        },
        "sinks": [sink],
        "logging": {"level": "WARNING", "format": "json"},
        "service": {"ready": "started"},
    }


class TimedSink:
    """A `Sink` that delegates to another and records write-completion latency per stamped line."""

    def __init__(self, inner: Sink) -> None:
        self.inner = inner
        self.name = inner.name
        self.sync_interval = inner.sync_interval
        self.latencies_ms: list[float] = []

    async def open(self) -> None:
        await self.inner.open()

    async def write(self, lines: Sequence[bytes]) -> None:
        await self.inner.write(lines)
        now = time.time_ns()
        record = self.latencies_ms.append
        for line in lines:
            i = line.rfind(STAMP)
            if i >= 0:
                j = i + len(STAMP)
                k = j
                while line[k : k + 1].isdigit():
                    k += 1
                record((now - int(line[j:k])) / 1e6)

    async def flush(self) -> None:
        await self.inner.flush()

    async def reopen(self) -> None:
        await self.inner.reopen()

    async def close(self) -> None:
        await self.inner.close()


STAMP = b'"sentAtNs":'


def timed_worker(cfg: SinkConfig) -> tuple[SinkWorker, TimedSink]:
    """`build_worker(cfg)`'s worker with its sink wrapped in a `TimedSink`."""
    plain = build_worker(cfg)
    timed = TimedSink(plain.sink)
    worker = SinkWorker(
        timed,
        queue_size=cfg.queue_size,
        overflow=cfg.overflow,
        max_pending=cfg.max_buffered,
        include=cfg.include,
        exclude=cfg.exclude,
    )
    return worker, timed


def received_latencies_ms(path: str) -> list[float]:
    """Per stamped line of the sink file: envelope `received_at` - `sentAtNs` (ms)."""
    out: list[float] = []
    with open(path, "rb") as f:
        for line in f:
            i = line.rfind(STAMP)
            if i < 0:
                continue
            rec = msgspec.json.decode(line)
            received = dt.datetime.fromisoformat(rec["received_at"].replace("Z", "+00:00"))
            sent_ns = rec["arguments"][1]["sentAtNs"]
            out.append(received.timestamp() * 1e3 - sent_ns / 1e6)
    return out


async def run(
    url: str, count: int, protocol: str, out: str, rate: float = 0.0, fsync: str | None = None
) -> dict[str, Any]:
    cfg = parse_config(build_config(url, count, protocol, out, rate=rate, fsync=fsync), source="<bench>")
    timed: TimedSink | None = None
    if rate > 0 and out != "-":
        worker, timed = timed_worker(cfg.sinks[0])
        daemon = Daemon(cfg, env={}, workers=[worker])
    else:
        daemon = Daemon(cfg, env={})
    runner = asyncio.create_task(daemon.run())
    window = Window()
    relayed = daemon.stats.relayed
    while relayed.get(TARGET, 0) < count:
        if runner.done():
            raise RuntimeError(f"daemon exited early: {runner.exception()!r}")
        n = relayed.get(TARGET, 0)
        if n and not window.started:
            window.start(n)
        await asyncio.sleep(POLL)
    for worker in daemon.workers:
        await worker.wait_idle()
    result = window.result(relayed.get(TARGET, 0), written=sum(w.stats.written for w in daemon.workers))
    daemon.stop()
    await runner
    if timed is not None:
        result["latencies_ms"] = timed.latencies_ms
        result["received_latencies_ms"] = received_latencies_ms(out)
    return result


def main() -> None:
    url, count_s, protocol, out = sys.argv[1:5]
    rate = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    fsync = sys.argv[6] if len(sys.argv) > 6 else None
    setup_logging("WARNING", fmt="json")
    emit(asyncio.run(run(url, int(count_s), protocol, out, rate, fsync)))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
