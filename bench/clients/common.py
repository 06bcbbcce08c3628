"""Shared by the benchmark clients: the measurement window and the one-line JSON result.

Every client measures the same window: from the first `ReceiveCarPatches` it handled to the moment
the last one's line is written (its file flushed). CPU is the process's own rusage (user + system,
all threads) over that window, so interpreter start-up and imports are not counted.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any

TARGET = "ReceiveCarPatches"


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def max_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class Window:
    def __init__(self) -> None:
        self.t0 = 0.0
        self.cpu0 = 0.0
        self.first_count = 0
        self.started = False

    def start(self, count_so_far: int) -> None:
        if not self.started:
            self.started = True
            self.t0 = time.perf_counter()
            self.cpu0 = cpu_seconds()
            self.first_count = count_so_far

    def result(self, total: int, **extra: Any) -> dict[str, Any]:
        seconds = time.perf_counter() - self.t0
        cpu = cpu_seconds() - self.cpu0
        messages = total - self.first_count
        return {
            "messages": messages,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "msgs_per_s": messages / seconds if seconds > 0 else None,
            "cpu_s_per_100k": cpu / messages * 100_000 if messages > 0 else None,
            "max_rss_kib": max_rss_kib(),
            **extra,
        }


def emit(result: dict[str, Any]) -> None:
    """The result line goes to $BENCH_RESULT (a file path) when set, else to stdout."""
    line = json.dumps(result) + "\n"
    path = os.environ.get("BENCH_RESULT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
    else:
        sys.stdout.write(line)
        sys.stdout.flush()
