"""event-consumer as a benchmark client: the real `Daemon` (relay -> file sink) in its own process.

`python bench/clients/ec_client.py URL COUNT PROTOCOL OUT` — OUT `-` uses the stdout sink (the harness
points stdout at /dev/null and takes the result from $BENCH_RESULT). The daemon is
configured exactly as `event-consumer run` would configure it from a TOML file (`parse_config`), with
`[[hub.on_connect]] BenchStream(COUNT, 0, false)` as its subscription. The measurement window ends when
the relay has counted COUNT car-patch invocations and every sink worker is idle (all lines written).

The window's start and the relay count are observed by a 2 ms poll of the relay's public counters
(`daemon.stats.relayed`): the daemon exposes no per-message callback that would not add work to the
hot path; the poll costs about 500 wake-ups/s.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import TARGET, Window, emit

from consumer.config import parse_config
from consumer.daemon import Daemon
from consumer.logs import setup_logging

POLL = 0.002


def build_config(url: str, count: int, protocol: str, out: str, *, rate: float = 0) -> dict[str, Any]:
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
        "sinks": [{"type": "stdout"} if out == "-" else {"type": "file", "path": out}],
        "logging": {"level": "WARNING", "format": "json"},
        "service": {"ready": "started"},
    }


async def run(url: str, count: int, protocol: str, out: str) -> dict[str, Any]:
    cfg = parse_config(build_config(url, count, protocol, out), source="<bench>")
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
    return result


def main() -> None:
    url, count_s, protocol, out = sys.argv[1:5]
    setup_logging("WARNING", fmt="json")
    emit(asyncio.run(run(url, int(count_s), protocol, out)))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
