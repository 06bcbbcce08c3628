"""Fixtures for the simulator tests: a fast simulator on a random loopback port."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from consumer.sim.hub import HubSettings
from consumer.sim.simulator import SimConfig, Simulator

HERE = Path(__file__).resolve().parent
PRIVATE_EVENT = 390
ACCESS_CODE = "dawg-1234"


def fast_settings(**overrides: Any) -> HubSettings:
    values: dict[str, Any] = {
        "speed": 600.0,
        "tick_interval": 0.05,
        "keepalive_interval": 1.0,
        "client_timeout": 10.0,
        "handshake_timeout": 5.0,
        "control_log_interval": 0.5,
        "snapshot_window_anonymous": 3.0,
        "snapshot_window_token": 0.9,
    }
    values.update(overrides)
    return HubSettings(**values)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    config = SimConfig(
        hub=fast_settings(),
        private_events={PRIVATE_EVENT: ACCESS_CODE},
        token_lifetime=60,
        idp_rate_limit=500,
    )
    async with Simulator(config) as s:
        yield s


@pytest.fixture
def until() -> Callable[[Callable[[], bool], float], Awaitable[None]]:
    """Poll a condition (nothing to await on) with a timeout."""

    async def wait(condition: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.02)

    return wait


async def run_node(
    node: str, script: str, config: dict[str, Any], timeout: float = 40.0
) -> list[dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        node,
        str(HERE / script),
        json.dumps(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(HERE),
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert proc.returncode == 0, (proc.returncode, lines[-5:], err.decode()[-2000:])
    return lines
