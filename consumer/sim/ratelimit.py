"""Small per-key rate limiters for the simulator (IdP and REST); answers carry a Retry-After."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]

_MAX_KEYS = 10_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved, per key. `acquire` -> 0 or seconds to wait."""

    def __init__(self, rate: float, burst: float | None = None, *, clock: Clock = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, key: str) -> float:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _MAX_KEYS:
                self._buckets.clear()
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate


class FixedWindow:
    """At most `limit` calls per `window` seconds per key (ASP.NET's fixed-window limiter, no queue)."""

    def __init__(self, limit: int, window: float, *, clock: Clock = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}

    def acquire(self, key: str) -> float:
        now = self._clock()
        start, count = self._windows.get(key, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        if count >= self.limit:
            return start + self.window - now
        if len(self._windows) >= _MAX_KEYS:
            self._windows.clear()
        self._windows[key] = (start, count + 1)
        return 0.0


def retry_after_header(wait: float) -> str:
    """Retry-After in whole seconds (HTTP allows only integers), never 0 for a refusal."""
    return str(max(1, math.ceil(wait)))
