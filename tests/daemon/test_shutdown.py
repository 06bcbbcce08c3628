"""The daemon's shutdown budget: a stalled sink (and a hub that stops answering) cannot push the exit
past `shutdown_grace_seconds`.

A real Daemon (HubConnection → relay → SinkWorker) against our own HubServer on loopback, which floods
the daemon with invocations as its subscription call. The sink accepts one batch and never finishes
writing it, so the sink queue, the relay and the connection's dispatch queue all back up: the
connection's drain can never finish and must end by its own deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest
import structlog

from consumer.config import Config, parse_config
from consumer.daemon import CLOSE_TIMEOUT_MAX, Daemon, shutdown_budget
from consumer.signalr.connection import ConnectionState, HubConnection
from consumer.sim.hubhost import HubCallContext, HubServer
from consumer.sinks import SinkWorker

from .helpers import until

GRACE = 2.0
# run() returns after the grace's deadline by the time the last bookkeeping takes (closing the
# stalled sink, the final log line); on a loaded 2-core machine that stays well under this.
SLACK = 0.5


class StalledSink:
    """A sink that takes one batch and never finishes writing it (a hung NFS mount, a full pipe)."""

    name = "stalled"
    sync_interval: float | None = None

    def __init__(self) -> None:
        self.writing = asyncio.Event()
        self.closed = False

    async def open(self) -> None:
        pass

    async def write(self, lines: Sequence[bytes]) -> None:
        self.writing.set()
        await asyncio.Event().wait()  # never set: only cancellation ends this write

    async def flush(self) -> None:
        pass

    async def reopen(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True


class RecordingWorker(SinkWorker):
    """A real SinkWorker that records the grace (drain + flush/close) the daemon gives its close()."""

    close_graces: list[float | None]

    async def close(self, grace: float | None = None, *, close_timeout: float = 2.0) -> None:
        self.close_graces.append(None if grace is None else grace + close_timeout)
        await super().close(grace, close_timeout=close_timeout)


class RecordingConnection(HubConnection):
    """A real HubConnection that records the drain timeout the daemon passes to stop()."""

    drain_timeouts: list[float | None]

    async def stop(self, drain_timeout: float | None = None) -> None:
        self.drain_timeouts.append(drain_timeout)
        await super().stop(drain_timeout)


def build_hub() -> HubServer:
    server = HubServer("/hub", keepalive_interval=0.2, client_timeout=30.0, outbound_queue_size=100_000)

    @server.method("Flood")
    async def flood(ctx: HubCallContext, n: int) -> None:
        for i in range(n):
            ctx.server.send_to_connection(ctx.connection_id, "Item", i)

    return server


def config(url: str) -> Config:
    data: dict[str, Any] = {
        "auth": {"grant": "none"},
        "hub": {
            "url": url,
            "name": "test",
            "protocol": "json",
            "keepalive_interval_seconds": 0.2,
            "server_timeout_seconds": 30.0,
            "on_connect": [{"method": "Flood", "arguments": [20_000]}],
        },
        "sinks": [{"type": "stdout"}],  # replaced by the workers the test passes
        "service": {"ready": "started", "shutdown_grace_seconds": GRACE},
    }
    return parse_config(data, source="<test>")


def test_budget_splits_the_grace() -> None:
    for grace in (0.1, 0.5, 2.0, 3.0, 10.0, 60.0, 600.0):
        budget = shutdown_budget(grace)
        assert budget.connection == pytest.approx(max(0.1, grace / 2))
        assert 0 < budget.close_timeout <= CLOSE_TIMEOUT_MAX
        assert budget.drain > 0
        # drain + Close + WebSocket close + the closed marker fit in the connection's share, with a margin
        parts = budget.drain + 2 * budget.close_timeout + budget.closed_marker
        assert parts < budget.connection
    ten = shutdown_budget(10.0)
    assert (ten.connection, ten.drain, ten.close_timeout, ten.closed_marker) == pytest.approx(
        (5.0, 2.0, 1.0, 0.5)
    )


async def shutdown_with_stalled_sink(half_open_hub: bool) -> None:
    server = build_hub()
    async with server.serve() as url:
        sink = StalledSink()
        worker = RecordingWorker(sink, queue_size=10)
        worker.close_graces = []
        drain_timeouts: list[float | None] = []

        def factory(*args: Any, **kwargs: Any) -> HubConnection:
            conn = RecordingConnection(*args, **kwargs)
            conn.drain_timeouts = drain_timeouts
            return conn

        daemon = Daemon(config(url), env={}, connection_factory=factory, workers=[worker])
        task = asyncio.create_task(daemon.run())
        await until(lambda: daemon.connection is not None or task.done(), what="connection built")
        conn = daemon.connection
        assert conn is not None
        await asyncio.wait_for(sink.writing.wait(), 10)
        # the backlog: decoded by the connection, stuck behind the stalled sink
        await until(lambda: conn.stats.invocations_decoded - conn.stats.invocations_dispatched > 100)
        if half_open_hub:
            assert server.half_open() == 1  # the hub will not answer the close handshake

        with structlog.testing.capture_logs() as logs:
            started = time.monotonic()
            daemon.stop()
            assert await asyncio.wait_for(task, GRACE + 10) == 0
            elapsed = time.monotonic() - started
        if half_open_hub:
            server.end_half_open()

        budget = shutdown_budget(GRACE)
        assert elapsed < GRACE + SLACK
        assert drain_timeouts == [budget.drain]
        events = [entry["event"] for entry in logs]
        assert "daemon.hub_close_timeout" not in events  # the drain ended on its own
        assert "signalr.drain_incomplete" in events
        # the sinks got at least the other half of the grace
        assert len(worker.close_graces) == 1
        assert worker.close_graces[0] is not None and worker.close_graces[0] >= GRACE / 2 - 0.1
        assert sink.closed
        stats = conn.stats
        assert conn.state is ConnectionState.DISCONNECTED
        assert stats.invocations_abandoned > 0
        assert stats.invocations_decoded == stats.invocations_dispatched + stats.invocations_abandoned
        assert worker.stats.dropped["shutdown"] > 0  # what the stalled sink never wrote is counted


async def test_stalled_sink_shutdown_exits_within_the_grace() -> None:
    await shutdown_with_stalled_sink(half_open_hub=False)


async def test_stalled_sink_and_silent_hub_shutdown_exits_within_the_grace() -> None:
    await shutdown_with_stalled_sink(half_open_hub=True)
