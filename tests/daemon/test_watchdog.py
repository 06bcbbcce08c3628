"""Issue 10 item 11: a systemd watchdog that can fail.

WATCHDOG=1 is withheld while the event loop lags, while a sink has had lines waiting longer than
`[service] sink_stall_seconds` with no write completing, and while the hub has been disconnected longer
than `[service] watchdog_disconnected_seconds`; each is tested by stalling it for real (a real Daemon
against our HubServer on loopback, pings on a real datagram socket) and then letting it recover.

Absence of pings can only be observed over a window: the windows below are ten ping intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog

from consumer.config import Config, parse_config
from consumer.daemon import Daemon
from consumer.sim.hubhost import HubServer
from consumer.sinks import SinkWorker
from consumer.systemd import Notifier

from .helpers import until

INTERVAL = 0.05  # WATCHDOG_USEC = 100 ms: a ping every 50 ms
WINDOW = 10 * INTERVAL


class TimedNotifier(Notifier):
    """A real notifier that also records when each WATCHDOG=1 went out."""

    def __init__(self, address: str) -> None:
        super().__init__(address, watchdog_usec=int(2 * INTERVAL * 1_000_000))
        self.pings: list[float] = []

    def watchdog(self) -> bool:
        ok = super().watchdog()
        if ok:
            self.pings.append(time.monotonic())
        return ok


@pytest.fixture
async def notify_path(tmp_path: Path) -> AsyncIterator[str]:
    """systemd's end: a datagram socket, read continuously (a full queue would refuse the pings)."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)

    def drain() -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                sock.recv(4096)

    loop = asyncio.get_running_loop()
    loop.add_reader(sock.fileno(), drain)
    yield path
    loop.remove_reader(sock.fileno())
    sock.close()


class GatedSink:
    name = "gated"
    sync_interval: float | None = None

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def open(self) -> None: ...

    async def write(self, lines: Sequence[bytes]) -> None:
        self.entered.set()
        await self.gate.wait()

    async def flush(self) -> None: ...

    async def reopen(self) -> None: ...

    async def close(self) -> None: ...


def config(url: str, **service: Any) -> Config:
    data: dict[str, Any] = {
        "auth": {"grant": "none"},
        "hub": {
            "url": url,
            "name": "test",
            "protocol": "json",
            "keepalive_interval_seconds": 0.2,
            "server_timeout_seconds": 2.0,
            "reconnect_max_delay_seconds": 0.2,
        },
        "sinks": [{"type": "stdout"}],  # replaced by the workers the tests pass
        "service": {"ready": "started", "shutdown_grace_seconds": 1.0, **service},
    }
    return parse_config(data, source="<test>")


async def pings_resume(n: TimedNotifier) -> None:
    before = len(n.pings)
    await until(lambda: len(n.pings) > before + 1, 10, "WATCHDOG=1 again")


async def no_ping_for_a_window(n: TimedNotifier) -> None:
    before = len(n.pings)
    await asyncio.sleep(WINDOW)  # an observation window, not a synchronisation
    assert len(n.pings) == before, "WATCHDOG=1 sent while unhealthy"


async def test_watchdog_withheld_while_a_sink_makes_no_progress(notify_path: str) -> None:
    server = HubServer("/hub", keepalive_interval=0.2, client_timeout=30.0)
    async with server.serve() as url:
        sink = GatedSink()
        worker = SinkWorker(sink)
        notifier = TimedNotifier(notify_path)
        daemon = Daemon(config(url, sink_stall_seconds=0.3), env={}, notifier=notifier, workers=[worker])
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(daemon.run())
            try:
                await asyncio.wait_for(sink.entered.wait(), 10)  # the `connected` marker: stuck
                await until(lambda: len(notifier.pings) >= 2, 10, "pings while the stall is young")
                await until(
                    lambda: any(e["event"] == "daemon.unhealthy" for e in logs),
                    10,
                    "the stall to be noticed",
                )
                stalled_at = time.monotonic()
                assert worker.depth > 0 and worker.stalled_seconds() > 0.3
                await no_ping_for_a_window(notifier)
                assert not [t for t in notifier.pings if t > stalled_at]
                sink.gate.set()  # the sink moves again
                await pings_resume(notifier)
            finally:
                daemon.stop()
                assert await asyncio.wait_for(task, 10) == 0
    reasons = [e["reason"] for e in logs if e["event"] == "daemon.unhealthy"]
    assert reasons and reasons[0].startswith("sink gated: no write returned")
    assert any(e["event"] == "daemon.healthy_again" for e in logs)


async def test_watchdog_withheld_while_the_hub_stays_disconnected(notify_path: str) -> None:
    server = HubServer("/hub", keepalive_interval=0.2, client_timeout=30.0)
    async with server.serve() as url:
        sink = GatedSink()
        sink.gate.set()
        notifier = TimedNotifier(notify_path)
        daemon = Daemon(
            config(url, watchdog_disconnected_seconds=0.3),
            env={},
            notifier=notifier,
            workers=[SinkWorker(sink)],
        )
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(daemon.run())
            try:
                await until(lambda: daemon.stats.connection_state == "connected", 10, "connected")
                await until(lambda: len(notifier.pings) >= 2, 10, "pings while connected")
                server.refuse_upgrades(503, 60)  # the hub goes away and stays away
                assert server.drop_all() == 1
                await until(
                    lambda: any(e["event"] == "daemon.unhealthy" for e in logs),
                    10,
                    "the long disconnect to be noticed",
                )
                down_since = daemon.stats.state_since
                await no_ping_for_a_window(notifier)
                # allowed: pings within the grace (plus one interval for a ping already due)
                assert not [t for t in notifier.pings if t > down_since + 0.3 + INTERVAL]
                server.accept_upgrades()  # the hub is back
                await until(lambda: daemon.stats.connection_state == "connected", 10, "reconnected")
                await pings_resume(notifier)
            finally:
                daemon.stop()
                assert await asyncio.wait_for(task, 10) == 0
    reasons = [e["reason"] for e in logs if e["event"] == "daemon.unhealthy"]
    assert reasons and reasons[0].startswith("hub reconnecting for more than 0.3 s")


async def test_watchdog_withheld_while_the_event_loop_is_blocked(notify_path: str) -> None:
    notifier = TimedNotifier(notify_path)
    task = asyncio.create_task(notifier.run_watchdog(lambda: True))
    try:
        await until(lambda: len(notifier.pings) >= 2, 10, "pings from a responsive loop")
        time.sleep(6 * INTERVAL)  # something blocks the event loop (deliberately, in the test)
        unblocked = time.monotonic()
        await pings_resume(notifier)
        after = [t for t in notifier.pings if t >= unblocked]
        # the ping due while the loop was blocked was skipped: the next one waited a full interval
        assert after[0] - unblocked >= 0.8 * INTERVAL
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        notifier.close()


async def test_a_failing_sink_is_not_a_stalled_sink(tmp_path: Path) -> None:
    """ENOSPC: the writes return (and fail); the worker retries and logs. Not hung, so the watchdog
    keeps going: a restart would not free the disk and would lose the retry buffer."""
    from sinks.test_sink_hardening import ShortDisk

    from consumer.sinks import FileSink

    w = SinkWorker(
        FileSink(tmp_path / "out.jsonl", writer=ShortDisk(free=0)), retry_initial=0.01, retry_max=0.05
    )
    await w.start()
    w.offer(b'{"seq": 0}')
    await until(lambda: w.stats.errors >= 5, 10, "failed attempts")
    started = time.monotonic()
    await until(lambda: time.monotonic() - started > 0.3 and w.stats.errors >= 10, 10, "more attempts")
    assert w.depth == 1 and w.failing
    assert w.stalled_seconds() < 0.3  # never longer than a backoff step
    await w.close(grace=0.1)


async def test_a_hung_write_is_a_stalled_sink() -> None:
    sink = GatedSink()
    w = SinkWorker(sink)
    await w.start()
    assert w.stalled_seconds() == 0.0  # nothing waiting
    w.offer(b"x")
    await asyncio.wait_for(sink.entered.wait(), 10)
    started = time.monotonic()
    await until(lambda: time.monotonic() - started > 0.2, 10, "time to pass")
    assert w.stalled_seconds() >= 0.2
    sink.gate.set()
    await w.wait_idle()
    assert w.stalled_seconds() == 0.0
    await w.close(grace=1)
