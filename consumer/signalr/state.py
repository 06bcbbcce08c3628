"""What a `HubConnection` reports about itself: its state, its counters (`ClientStats`) and its
buffers (`BufferUsage`). Plain data, shared by the connection, the supervisor, the receive path and
the dispatcher."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["BufferUsage", "ClientStats", "ConnectionState"]


class ConnectionState(enum.StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    DISCONNECTING = "disconnecting"


@dataclass(slots=True)
class ClientStats:
    """Counters of one HubConnection (cumulative over start/stop cycles).

    Once the connection is closed, `invocations_decoded == invocations_dispatched +
    invocations_abandoned`; `invocations_abandoned` only grows when a drain deadline expired (a
    handler too slow for `drain_timeout`) or `stop()` itself was cancelled.
    """

    invocations_decoded: int = 0  # server→client invocations decoded from the socket (replays excluded)
    invocations_dispatched: int = 0  # ... whose dispatch finished (handled, failed or unhandled)
    invocations_abandoned: int = 0  # ... decoded but never dispatched because a drain was cut short
    connections_opened: int = 0  # handshakes completed (first connect and every reconnect)
    short_lived_connections: int = 0  # ... lost before they had stayed up `healthy_after` seconds


@dataclass(frozen=True, slots=True)
class BufferUsage:
    """What the connection holds in memory now, and its limits (for `/metrics`).

    `dispatch_*`: invocations decoded and not yet dispatched (wire bytes of their frames);
    `replay_*`: the stateful-reconnect buffer of sent, not yet acknowledged messages (0 without one).
    """

    dispatch_bytes: int
    dispatch_invocations: int
    dispatch_limit_bytes: int
    dispatch_limit_invocations: int
    replay_bytes: int
    replay_limit_bytes: int
