"""The client's lifecycle loop on its own: `Health` (healthy before reset, flapping) with an injected
clock, and `Supervisor` driving a scripted `Link` (the seam `HubConnection` implements; the real
connection is covered end to end by the other client tests)."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from consumer.signalr.connection import ClientStats
from consumer.signalr.errors import ConnectionLostError, HubConnectionError
from consumer.signalr.retry import FixedDelaysRetryPolicy, NeverRetryPolicy
from consumer.signalr.supervisor import FLAPPING_AFTER, Ended, Health, Supervisor


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_short_lived_connections_flap_and_a_healthy_one_ends_it() -> None:
    clock = Clock()
    stats = ClientStats()
    health = Health(10.0, stats, clock=clock)
    with structlog.testing.capture_logs() as logs:
        for _ in range(FLAPPING_AFTER):
            health.opened()
            clock.now += 1.0  # lost after 1 s: short-lived
            health.lost(ConnectionLostError("gone"))
        assert health.short_streak == FLAPPING_AFTER
        assert stats.short_lived_connections == FLAPPING_AFTER
        assert health.flapping(connected=False)
        health.opened()
        assert health.flapping(connected=True)  # up, but not yet for healthy_after
        clock.now += 10.0
        assert not health.flapping(connected=True)
        health.lost(None)  # a healthy connection was lost: the streak restarts
    assert health.short_streak == 0
    assert not health.flapping(connected=False)
    events = [entry["event"] for entry in logs]
    assert events == ["signalr.flapping", "signalr.flapping_ended"]


def test_flapping_warning_is_rate_bounded_with_the_count_since_the_last() -> None:
    clock = Clock()
    health = Health(10.0, ClientStats(), clock=clock)
    with structlog.testing.capture_logs() as logs:
        for _ in range(FLAPPING_AFTER + 4):  # 5 flapping losses within a few seconds
            health.opened()
            clock.now += 0.5
            health.lost(None)
        clock.now += 60.0
        health.opened()
        clock.now += 0.5
        health.lost(None)
    warnings = [entry for entry in logs if entry["event"] == "signalr.flapping"]
    assert [w["since_last_warning"] for w in warnings] == [1, 5]


class ScriptedLink:
    """A Link whose connect attempts and transport endings follow a script; records the calls."""

    def __init__(self, connects: list[BaseException | None], transports: list[Ended]) -> None:
        self.connects = connects
        self.transports = transports
        self.calls: list[str] = []
        self.stopping = False
        self.log_url = "wss://hub.example/hub"

    def can_resume(self) -> bool:
        return False

    async def connect_once(self) -> None:
        self.calls.append("connect")
        error = self.connects.pop(0)
        if error is not None:
            raise error

    async def run_transport(self) -> Ended:
        self.calls.append("transport")
        return self.transports.pop(0)

    async def resume(self) -> bool:  # pragma: no cover - can_resume() is False
        raise AssertionError("no resume without a detached core")

    def mark_connected(self) -> None:
        self.calls.append("connected")

    async def reconnecting(self, reason: BaseException | None) -> None:
        self.calls.append("reconnecting")

    async def reconnected(self) -> None:
        self.calls.append("reconnected")

    def fail_pending(self, error: ConnectionLostError) -> None:
        self.calls.append("fail_pending")

    async def shut_down(self, error: BaseException | None) -> None:
        self.calls.append(f"shut_down:{type(error).__name__ if error else None}")

    async def fire_closed(self, error: BaseException | None) -> None:
        self.calls.append("fire_closed")

    def closed(self) -> None:
        self.calls.append("closed")


async def test_initial_start_retried_then_reconnect_then_close_without_reconnect() -> None:
    link = ScriptedLink(
        connects=[OSError("refused"), None, None],
        transports=[
            Ended(ConnectionLostError("dropped"), allow_reconnect=True, resumable=False),
            Ended(None, allow_reconnect=False, resumable=False),
        ],
    )
    health = Health(10.0, ClientStats())
    supervisor = Supervisor(link, FixedDelaysRetryPolicy((0.0, 0.0)), health, retry_initial_start=True)
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    await supervisor.run(started)
    assert started.result() is None
    assert link.calls == [
        "connect",  # refused, retried by the policy
        "connect",
        "connected",
        "transport",  # dropped: pending calls fail, then a reconnect
        "fail_pending",
        "reconnecting",
        "connect",
        "reconnected",
        "transport",  # Close without reconnect
        "shut_down:None",
        "fire_closed",
        "closed",
    ]


async def test_failed_initial_start_without_retry_fails_start_and_skips_on_closed() -> None:
    link = ScriptedLink(connects=[OSError("refused")], transports=[])
    supervisor = Supervisor(link, NeverRetryPolicy(), Health(10.0, ClientStats()), retry_initial_start=False)
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    await supervisor.run(started)
    with pytest.raises(OSError, match="refused"):
        started.result()
    assert link.calls == ["connect", "shut_down:OSError", "closed"]


async def test_policy_giving_up_closes_with_the_last_error() -> None:
    link = ScriptedLink(
        connects=[None, HubConnectionError("still down")],
        transports=[Ended(ConnectionLostError("dropped"), allow_reconnect=True, resumable=False)],
    )
    supervisor = Supervisor(
        link, FixedDelaysRetryPolicy((0.0, 0.0)), Health(10.0, ClientStats()), retry_initial_start=True
    )
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    await supervisor.run(started)
    assert link.calls[-3:] == ["shut_down:HubConnectionError", "fire_closed", "closed"]
