"""consumer.backoff.Backoff: the one capped, jittered exponential backoff every retry loop uses."""

from __future__ import annotations

import itertools
import random

from consumer.backoff import Backoff
from consumer.signalr.retry import DaemonRetryPolicy


def upper(lo: float, hi: float) -> float:
    return hi


def lower(lo: float, hi: float) -> float:
    return lo


def test_ceilings_double_from_base_up_to_the_cap() -> None:
    b = Backoff(base=0.5, cap=3.0, uniform=upper)
    assert [b.delay(n) for n in range(0, 7)] == [0.0, 0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert b.delay(10_000) == 3.0  # no overflow however long the outage


def test_full_jitter_by_default_and_a_floor_when_asked() -> None:
    assert Backoff(base=1.0, cap=8.0, uniform=lower).delay(4) == 0.0
    assert Backoff(base=1.0, cap=8.0, floor=0.5, uniform=lower).delay(4) == 4.0
    rng = random.Random(7)
    full = Backoff(base=1.0, cap=8.0, uniform=rng.uniform)
    seen = [full.delay(n) for n in range(1, 2000)]
    assert all(0.0 <= d <= 8.0 for d in seen)
    assert min(seen) < 0.5  # full jitter reaches down to 0
    equal = Backoff(base=1.0, cap=8.0, floor=0.5, uniform=rng.uniform)
    assert all(4.0 <= equal.delay(n) <= 8.0 for n in range(4, 2000))


def test_seeded_uniform_makes_delays_reproducible() -> None:
    a = Backoff(uniform=random.Random(1).uniform)
    b = Backoff(uniform=random.Random(1).uniform)
    assert list(itertools.islice(a.delays(), 20)) == list(itertools.islice(b.delays(), 20))


def test_deadline_uses_the_injected_clock() -> None:
    b = Backoff(base=2.0, cap=10.0, uniform=upper, clock=lambda: 100.0)
    assert b.deadline(1) == 102.0
    assert b.deadline(3) == 108.0


def test_the_daemon_reconnect_policy_is_the_shared_backoff_in_cap_half_to_cap() -> None:
    # h10's recovery/rate bounds: 0 s first, then [c/2, c] with c capped at 5 s
    policy = DaemonRetryPolicy(uniform=lower)
    shared = Backoff(base=1.0, cap=5.0, floor=0.5, uniform=lower)
    assert policy.next_delay(0, 0.0, None) == 0.0
    assert [policy.next_delay(n, 0.0, None) for n in range(1, 8)] == [shared.delay(n) for n in range(1, 8)]
    assert policy.next_delay(50, 0.0, None) == 2.5
