"""Shared helpers for the daemon's end-to-end tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from consumer.sim.hub import HubSettings


async def until(cond: Callable[[], bool | Awaitable[bool]], timeout: float = 60.0, what: str = "") -> None:
    """Poll a condition (nothing to await for it) with a deadline.

    The deadline is a bound for a loaded 2-core CI machine (a daemon subprocess start can take seconds),
    not a synchronisation delay: a passing condition returns at the next 20 ms poll.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = cond()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.02)


def sim_settings(**overrides: Any) -> HubSettings:
    base: dict[str, Any] = {
        "keepalive_interval": 0.3,
        "client_timeout": 5.0,
        "tick_interval": 0.05,
        "speed": 300.0,
        "snapshot_window_token": 0.01,
        "snapshot_bucket_size": 1000.0,
        "snapshot_bucket_rate": 1000.0,
        "global_rate_token": 1000.0,
        "global_burst": 1000.0,
    }
    base.update(overrides)
    return HubSettings(**base)


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    return [json.loads(line) for line in complete.splitlines()]
