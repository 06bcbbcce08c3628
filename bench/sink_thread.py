"""Does the file sink's worker thread pay? `python bench/sink_thread.py [COUNT] [ROUNDS]` (issue 15 item 2).

The shipped `FileSink` runs each batch's `os.write` calls in a worker thread (`asyncio.to_thread`), so
the write syscalls (which release the GIL) overlap the event loop's parsing of the next frames on the
second core. This compares it with the same sink writing inline on the event loop's thread
(`InlineFileSink`: `write` calls the same `_write_batch` directly), and (`SINK_VARIANTS=thread,chunked`)
with the threaded sink's joined writes capped at 1 MiB (`ChunkedFileSink`). Each variant is the real `Daemon`
in its own process (bench/clients/ec_client.py's configuration, fsync never) against
bench/wirehub.py's RedMist-shaped 12-car frames, faithful output, both protocols; rounds interleave
the variants. Prints msgs/s and CPU-s per run and writes nothing else.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CHUNK = 1 << 20
VARIANTS = tuple(os.environ.get("SINK_VARIANTS", "thread,inline").split(","))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "clients"))


def child(url: str, count: int, protocol: str, out: str, variant: str) -> None:
    from common import TARGET, Window, emit
    from ec_client import build_config

    from consumer.config import parse_config
    from consumer.daemon import Daemon
    from consumer.logs import setup_logging
    from consumer.sinks import FileSink, SinkWorker

    class InlineFileSink(FileSink):
        async def write(self, lines: Sequence[bytes]) -> None:
            self._write_batch(lines)

    class ChunkedFileSink(FileSink):
        """The threaded sink with each joined write capped at CHUNK bytes (a batch of up to 4,096
        18 KB lines is otherwise one ~75 MB join: a fresh mapping, faulted in, per batch)."""

        def _chunks(self, lines: Sequence[bytes]) -> list[Sequence[bytes]]:
            out: list[Sequence[bytes]] = []
            for chunk in super()._chunks(lines):
                start = size = 0
                for i, line in enumerate(chunk):
                    if i > start and size + len(line) + 1 > CHUNK:
                        out.append(chunk[start:i])
                        start, size = i, 0
                    size += len(line) + 1
                out.append(chunk[start:])
            return out

    async def run() -> dict[str, Any]:
        cfg = parse_config(build_config(url, count, protocol, out, fsync="never"), source="<bench>")
        sc = cfg.sinks[0]
        assert sc.path is not None
        cls = {"inline": InlineFileSink, "chunked": ChunkedFileSink}.get(variant, FileSink)
        sink = cls(sc.path, fsync="never")
        worker = SinkWorker(sink, queue_size=sc.queue_size, overflow=sc.overflow, max_pending=sc.max_buffered)
        daemon = Daemon(cfg, env={}, workers=[worker])
        runner = asyncio.create_task(daemon.run())
        window = Window()
        relayed = daemon.stats.relayed
        while relayed.get(TARGET, 0) < count:
            if runner.done():
                raise RuntimeError(f"daemon exited early: {runner.exception()!r}")
            if relayed.get(TARGET, 0) and not window.started:
                window.start(relayed.get(TARGET, 0))
            await asyncio.sleep(0.002)
        await worker.wait_idle()
        result = window.result(relayed.get(TARGET, 0))
        daemon.stop()
        await runner
        return result

    setup_logging("WARNING", fmt="json")
    emit(asyncio.run(run()))
    sys.stdout.flush()
    os._exit(0)


def main() -> None:
    from harness import Hub, run_client

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    hub = Hub(script="wirehub.py")
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(rounds):
                for protocol in ("messagepack", "json"):
                    for variant in VARIANTS:
                        out = str(Path(tmp) / "out.jsonl")
                        cmd = [
                            sys.executable,
                            __file__,
                            "--child",
                            hub.url,
                            str(count),
                            protocol,
                            out,
                            variant,
                        ]
                        r = run_client(cmd, Path(tmp) / "r.json", timeout=max(60.0, count / 300))
                        Path(out).unlink(missing_ok=True)
                        hub.drain()
                        results.setdefault((protocol, variant), []).append(r)
                        if "error" in r:
                            print(f"{protocol:12} {variant:7} round {i + 1}: FAILED {r['error']}", flush=True)
                            continue
                        print(
                            f"{protocol:12} {variant:7} round {i + 1}: {r['msgs_per_s']:>8,.0f} msgs/s "
                            f"{r['cpu_seconds']:6.2f} CPU-s",
                            flush=True,
                        )
    finally:
        hub.close()
    summary = {
        f"{p}/{v}": {
            "msgs_per_s_median": statistics.median(x["msgs_per_s"] for x in rs if "error" not in x),
            "cpu_seconds_median": statistics.median(x["cpu_seconds"] for x in rs if "error" not in x),
        }
        for (p, v), rs in results.items()
        if any("error" not in x for x in rs)
    }
    print(json.dumps({"count": count, "rounds": rounds, "summary": summary}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6])
    else:
        main()
