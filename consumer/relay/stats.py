"""Plain counters the relay updates on its hot path; the metrics collector reads them at scrape time.

Incrementing a dict entry costs a fraction of a prometheus-client labelled counter, so the hot path
never touches prometheus objects. Labels are hub targets, reconnect reasons and sink names only — never
payload values, URLs or credentials. Target labels are bounded: known targets by name, every other
target as `other` (`OTHER_TARGET`; the relay decides, see consumer.relay.relay).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

CONNECTION_STATES = ("disconnected", "connecting", "connected", "reconnecting", "closed")
OTHER_TARGET = "other"  # the counter key / metric label of every target the daemon does not know


class RelayStats:
    __slots__ = (
        "buffer_usage",
        "clock",
        "connected_once",
        "connection_state",
        "last_message",
        "received",
        "reconnects",
        "relayed",
        "snapshots",
        "started",
        "state_since",
        "subscribe_failures",
    )

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.received: dict[str, int] = {}
        self.relayed: dict[str, int] = {}
        self.reconnects: dict[str, int] = {}
        self.snapshots: dict[str, int] = {}  # by outcome: ok, rate_limited, error, coalesced
        self.subscribe_failures = 0
        self.last_message: float | None = None
        self.connection_state = "disconnected"
        self.started = clock()
        self.state_since = self.started
        self.connected_once = False
        # The hub connection's `buffer_usage()` (a consumer.signalr.connection.BufferUsage), once built.
        self.buffer_usage: Callable[[], Any] | None = None

    def set_state(self, state: str) -> None:
        if state != self.connection_state:
            self.connection_state = state
            self.state_since = self.clock()
            if state == "connected":
                self.connected_once = True

    def count_reconnect(self, reason: str) -> None:
        self.reconnects[reason] = self.reconnects.get(reason, 0) + 1

    def count_snapshot(self, outcome: str) -> None:
        self.snapshots[outcome] = self.snapshots.get(outcome, 0) + 1

    def seconds_since_last_message(self) -> float | None:
        return None if self.last_message is None else self.clock() - self.last_message

    def total_received(self) -> int:
        return sum(self.received.values())
