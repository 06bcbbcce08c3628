"""event-consumer scale client: one process, one connection subscribed to N events, or N hub connections.

`python bench/clients/ec_scale.py events N URL COUNT OUTDIR` — one real `Daemon` whose
`[[hub.on_connect]]` calls are `SubscribeToEvent(1001..1000+N)` then `BenchEvents(COUNT, false)`: the
hub sends COUNT invocations round-robin over the N event groups (each payload's eventId rewritten).

`python bench/clients/ec_scale.py hubs N URL1,URL2,... COUNT OUTDIR` — the daemon takes one `[hub]` per
process, so N hubs in one process are N `Daemon` instances (each: its own token provider, HubConnection,
relay and file sink, exactly as `event-consumer run` wires them) on one asyncio loop, each to its own
hub server, each `BenchStream(COUNT / N, 0, false)`.

Window (as clients/common.py): first car-patch invocation relayed by any daemon -> all COUNT relayed and
every sink worker idle; CPU = this process's rusage over the window. Counts are observed by a 2 ms poll
of the daemons' public relay counters (no per-message callback on the hot path).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import TARGET, Window, emit
from ec_client import build_config

from consumer.config import parse_config
from consumer.daemon import Daemon
from consumer.logs import setup_logging

POLL = 0.002
FIRST_EVENT = 1001


async def run(mode: str, n: int, urls: list[str], count: int, outdir: Path) -> dict[str, Any]:
    configs: list[dict[str, Any]] = []
    if mode == "events":
        cfg = build_config(urls[0], count, "json", str(outdir / "events.jsonl"))
        calls = [{"method": "SubscribeToEvent", "arguments": [FIRST_EVENT + i]} for i in range(n)]
        cfg["hub"]["on_connect"] = [*calls, {"method": "BenchEvents", "arguments": [count, False]}]
        configs.append(cfg)
    else:
        per = count // n
        for i in range(n):
            cfg = build_config(urls[i], per, "json", str(outdir / f"hub{i}.jsonl"))
            cfg["hub"]["name"] = f"bench{i}"
            configs.append(cfg)
        count = per * n
    daemons = [Daemon(parse_config(c, source="<bench>"), env={}) for c in configs]
    runners = [asyncio.create_task(d.run()) for d in daemons]
    window = Window()

    def relayed() -> int:
        return sum(d.stats.relayed.get(TARGET, 0) for d in daemons)

    while (total := relayed()) < count:
        for r in runners:
            if r.done():
                raise RuntimeError(f"a daemon exited early: {r.exception()!r}")
        if total and not window.started:
            window.start(total)
        await asyncio.sleep(POLL)
    for d in daemons:
        for worker in d.workers:
            await worker.wait_idle()
    written = sum(w.stats.written for d in daemons for w in d.workers)
    result = window.result(relayed(), written=written, daemons=len(daemons))
    for d in daemons:
        d.stop()
    await asyncio.gather(*runners)
    return result


def main() -> None:
    mode, n_s, urls, count_s, outdir = sys.argv[1:6]
    if mode not in ("events", "hubs"):
        raise SystemExit(f"unknown mode {mode!r}")
    setup_logging("WARNING", fmt="json")
    emit(asyncio.run(run(mode, int(n_s), urls.split(","), int(count_s), Path(outdir))))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
