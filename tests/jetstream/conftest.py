from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .natsserver import NatsServer


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    server = NatsServer(tmp_path / "jetstream")
    await server.start()
    try:
        yield server
    finally:
        await server.kill()
