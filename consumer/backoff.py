"""The one backoff: capped exponential delays with jitter, for every retry loop in the daemon.

    backoff = Backoff(base=1.0, cap=30.0)          # full jitter: uniform in [0, c]
    delay = backoff.delay(failures)                # failures = 1, 2, 3, ... (0: no wait)
    await asyncio.sleep(delay)

Attempt `n` (1-based: the number of failures so far) waits uniform in `[floor * c, c]` where
`c = min(cap, base * 2**(n-1))`. `floor = 0` is "full jitter" (the default: retries from many clients
spread over the whole window); a positive floor ("equal jitter" at 0.5) also bounds the retry *rate*:
at the cap there are at least `floor * cap` seconds between attempts. The cap is the recovery bound:
once the far side is back, the next attempt comes within `cap` seconds whatever the outage length.

Injectable for tests: `uniform(lo, hi)` (default `random.uniform`; a seeded `random.Random().uniform`
makes delays reproducible) and `clock()` (default `time.monotonic`, used by `deadline()`).

Users: the SignalR client's `DaemonRetryPolicy` (floor 0.5, cap 5 s: the daemon's reconnects), the
token provider (consumer.auth.oauth), sink workers (consumer.sinks.base), resubscribes
(consumer.relay.subscriptions), snapshot retries (consumer.redmist.profile), the HA lease and the KV
board (consumer.ha, consumer.kvboard).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = ["Backoff"]

_MAX_EXPONENT = 62  # 2**62 * any sane base is far beyond any cap: no float overflow


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 1.0
    cap: float = 30.0
    floor: float = 0.0
    uniform: Callable[[float, float], float] = field(default=random.uniform, compare=False, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)

    def ceiling(self, attempt: int) -> float:
        """The window's upper end for attempt `attempt` (1-based); 0 for attempt <= 0."""
        if attempt <= 0:
            return 0.0
        return min(self.cap, self.base * float(2 ** min(attempt - 1, _MAX_EXPONENT)))

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (1-based), jittered, never above `cap`."""
        ceiling = self.ceiling(attempt)
        if ceiling <= 0:
            return 0.0
        low = ceiling * min(1.0, max(0.0, self.floor))
        return min(self.cap, max(0.0, self.uniform(low, ceiling)))

    def deadline(self, attempt: int) -> float:
        """`clock()` + `delay(attempt)`: when retry number `attempt` is due."""
        return self.clock() + self.delay(attempt)

    def delays(self) -> Iterator[float]:
        """Delays for attempts 1, 2, 3, ... forever (a generator for `for delay in ...` loops)."""
        attempt = 0
        while True:
            attempt += 1
            yield self.delay(attempt)
