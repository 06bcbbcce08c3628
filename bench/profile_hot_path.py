"""Profile event-consumer's hot path: `python bench/profile_hot_path.py [json|messagepack] [COUNT] [HUB]
[ORDER]` (HUB: `hub.py`, the default, or `wirehub.py`, the side-by-side section's RedMist-shaped
frames; ORDER: a pstats sort key, default `tottime`).

Starts the bench hub, runs the real Daemon (ec_client.run: relay -> file sink) in this process under
cProfile (the standard library's deterministic profiler; py-spy is not needed) and prints the top
functions by own time. Deterministic profiling inflates per-call overhead, so use it for where the time
goes, not for absolute rates.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "clients"))

from ec_client import run  # noqa: E402
from run import Hub  # noqa: E402

from consumer.logs import setup_logging  # noqa: E402


def main() -> None:
    protocol = sys.argv[1] if len(sys.argv) > 1 else "json"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
    setup_logging("WARNING", fmt="json")
    hub = Hub(script=sys.argv[3]) if len(sys.argv) > 3 else Hub()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            profiler = cProfile.Profile()
            profiler.enable()
            result = asyncio.run(run(hub.url, count, protocol, str(Path(tmp) / "out.jsonl")))
            profiler.disable()
    finally:
        hub.close()
    print(f"{protocol}: {result['msgs_per_s']:,.0f} msgs/s under the profiler")
    buf = io.StringIO()
    order = sys.argv[4] if len(sys.argv) > 4 else "tottime"
    pstats.Stats(profiler, stream=buf).sort_stats(order).print_stats(25)
    print(buf.getvalue())


if __name__ == "__main__":
    main()
