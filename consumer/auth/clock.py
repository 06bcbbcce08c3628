"""Injectable time: a monotonic clock for scheduling, a wall clock for HTTP dates, and sleep.

The token factory never calls `time` or `asyncio.sleep` directly, so tests inject a fake clock and
never sleep for real.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (schedules, freshness, rate floor)."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the epoch (only for HTTP dates and displayed expiry)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: time.monotonic, time.time and asyncio.sleep."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK: Clock = SystemClock()
