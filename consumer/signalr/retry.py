"""Reconnect retry policies for the SignalR client (`consumer.signalr.connection`).

A policy answers one question: after `previous_retry_count` failed attempts, `elapsed` seconds since
the connection was lost (or since the first start attempt), and the error that caused the last
failure, how many seconds to wait before the next attempt — or `None` to give up.

Presets:
- `DaemonRetryPolicy()` (the default): 0 s, then exponential backoff with jitter: uniform in
  [jitter_floor * c, c] where c = min(cap, base * 2**(n-1)) ("equal jitter" with the default floor
  0.5), capped at 5 s; never gives up. The cap is the recovery bound: once the hub is back, the
  next attempt comes within `cap` seconds whatever the outage length. The floor is the rate bound:
  at the cap there are at least `cap * jitter_floor` (2.5 s) between attempts, so a hub that fails
  or drops every connection at once sees at most ~26 attempts a minute (full jitter, floor 0,
  averages 24 a minute at a 5 s cap but exceeds 30 in a few percent of minutes). The delays come from
  the shared `consumer.backoff.Backoff` (floor = `jitter_floor`).
- `OFFICIAL` (`FixedDelaysRetryPolicy((0, 2, 10, 30))`): the @microsoft/signalr
  `withAutomaticReconnect()` default — four attempts, then stop.
- `NEVER` (`NeverRetryPolicy()`): no automatic reconnect.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from consumer.backoff import Backoff


class RetryPolicy(Protocol):
    def next_delay(
        self, previous_retry_count: int, elapsed: float, reason: BaseException | None
    ) -> float | None: ...


@dataclass(frozen=True, slots=True)
class DaemonRetryPolicy:
    """0 s first, then jittered exponential backoff in [jitter_floor * c, c], c capped at `cap`, forever."""

    first_delay: float = 0.0
    base: float = 1.0
    cap: float = 5.0
    jitter_floor: float = 0.5
    uniform: Callable[[float, float], float] = field(default=random.uniform, compare=False, repr=False)

    def next_delay(self, previous_retry_count: int, elapsed: float, reason: BaseException | None) -> float:
        if previous_retry_count <= 0:
            return self.first_delay
        return Backoff(self.base, self.cap, self.jitter_floor, self.uniform).delay(previous_retry_count)


@dataclass(frozen=True, slots=True)
class FixedDelaysRetryPolicy:
    """Delays taken from a list by attempt number; `None` (give up) once the list is exhausted."""

    delays: Sequence[float]

    def next_delay(
        self, previous_retry_count: int, elapsed: float, reason: BaseException | None
    ) -> float | None:
        if 0 <= previous_retry_count < len(self.delays):
            return float(self.delays[previous_retry_count])
        return None


@dataclass(frozen=True, slots=True)
class NeverRetryPolicy:
    """Never reconnect automatically."""

    def next_delay(
        self, previous_retry_count: int, elapsed: float, reason: BaseException | None
    ) -> float | None:
        return None


OFFICIAL = FixedDelaysRetryPolicy((0.0, 2.0, 10.0, 30.0))
NEVER = NeverRetryPolicy()


def retry_policy(name: str) -> RetryPolicy:
    """A preset by name: `daemon`, `official` or `never` (for configuration files)."""
    presets: dict[str, RetryPolicy] = {"daemon": DaemonRetryPolicy(), "official": OFFICIAL, "never": NEVER}
    try:
        return presets[name]
    except KeyError:
        raise ValueError(f"unknown retry policy {name!r}; expected one of {sorted(presets)}") from None
