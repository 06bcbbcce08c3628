"""Where the daemon's RSS drift comes from: `python bench/memory_trace.py [CHECKPOINTS...]` (issue 15 item 4).

The memory section (bench/memory.py) shows RSS growing between 100k and 1M messages. This runs the
same configuration (the real `Daemon`: JSON protocol, bench hub as fast as it reads, a file sink at
/dev/null, `[http]` metrics on) in this process under `tracemalloc` and, at each checkpoint (relayed
messages; default 100,000 300,000 600,000), records VmRSS, the bytes tracemalloc sees as live, the
interpreter's allocated block count, and the allocation sites whose live bytes grew most since the
previous checkpoint (`Snapshot.compare_to(..., "lineno")`). Prints a JSON document; `--out FILE` also
writes it. tracemalloc slows the daemon several times: use it for where memory goes, not for rates.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tracemalloc
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Hub  # noqa: E402

from consumer.config import parse_config  # noqa: E402
from consumer.daemon import Daemon  # noqa: E402
from consumer.logs import setup_logging  # noqa: E402

TARGET = "ReceiveCarPatches"


def vm(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def config(url: str, total: int) -> dict[str, Any]:
    return {
        "auth": {"grant": "none"},
        "hub": {
            "url": url,
            "name": "bench",
            "protocol": "json",
            "skip_negotiation": True,
            "allow_insecure_http": True,
            "on_connect": [{"method": "BenchStream", "arguments": [total, 0, False]}],
            "max_message_bytes": 16 * 1024 * 1024,
        },
        "sinks": [{"type": "file", "path": "/dev/null", "fsync": "never"}],
        "http": {"enabled": True, "port": 0},
        "logging": {"level": "WARNING", "format": "json"},
    }


async def trace(url: str, checkpoints: list[int], top: int) -> dict[str, Any]:
    total = checkpoints[-1]
    daemon = Daemon(parse_config(config(url, total), source="<bench>"), env={})
    runner = asyncio.create_task(daemon.run())
    relayed = daemon.stats.relayed
    out: list[dict[str, Any]] = []
    previous: tracemalloc.Snapshot | None = None
    for cp in checkpoints:
        while relayed.get(TARGET, 0) < cp:
            if runner.done():
                raise RuntimeError(f"daemon exited early: {runner.exception()!r}")
            await asyncio.sleep(0.05)
        gc.collect()
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen *>")]
        )
        traced, _ = tracemalloc.get_traced_memory()
        row: dict[str, Any] = {
            "messages": relayed.get(TARGET, 0),
            "vm_rss_kib": vm("VmRSS"),
            "traced_kib": traced // 1024,
            "allocated_blocks": sys.getallocatedblocks(),
            "gc_objects": len(gc.get_objects()),
        }
        if previous is not None:
            row["grew"] = [
                {
                    "site": str(s.traceback[0]),
                    "size_diff_kib": round(s.size_diff / 1024, 1),
                    "count_diff": s.count_diff,
                }
                for s in snap.compare_to(previous, "lineno")[:top]
                if s.size_diff > 0
            ]
        out.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "grew"}), flush=True)
        previous = snap
    daemon.stop()
    await runner
    return {"checkpoints": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoints", nargs="*", type=int, default=[100_000, 300_000, 600_000])
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    setup_logging("WARNING", fmt="json")
    hub = Hub()
    try:
        tracemalloc.start(1)
        doc = asyncio.run(trace(hub.url, sorted(args.checkpoints), args.top))
    finally:
        hub.close()
    text = json.dumps(doc, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
