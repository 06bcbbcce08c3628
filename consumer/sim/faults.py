"""Fault injection for the simulator: the hub host's fault hooks (a mixin of `HubServer`) and the
`Faults` API the simulator exposes (`sim.faults.<name>(...)`, `POST /admin/faults/<name>`).

The hub host's protocol behaviour lives in `consumer.signalr.core` and its transport in
`consumer.sim.hubhost`; everything here only breaks things on purpose: freezing transports
(half-open), refusing upgrades, flapping, malformed or oversized messages, dropped connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from aiohttp import web

from consumer.signalr import protocol as p

if TYPE_CHECKING:
    from consumer.sim.hubhost import ServerStats, _Connection
    from consumer.sim.simulator import Simulator

__all__ = ["FAULT_NAMES", "Faults", "HubFaults"]


class HubFaults:
    """The hub host's fault hooks. Mixed into `HubServer`, whose state they use."""

    _by_token: dict[str, _Connection]
    _refuse: tuple[int, float] | None
    _flap: tuple[str, float] | None
    stats: ServerStats

    def _targets(self, connection_id: str | None) -> list[_Connection]:
        raise NotImplementedError

    def drop_all(self) -> int:
        """Abort every transport at the TCP level (no Close message, no WebSocket close frame). Stateful
        connections keep their logical connection for the reconnect window."""
        count = 0
        for conn in list(self._by_token.values()):
            if conn.transport is not None:
                conn.transport.abort()
                count += 1
        return count

    def half_open(self) -> int:
        """Freeze every live transport: stop reading (TCP too), stop writing and pinging; keep TCP open."""
        count = 0
        for conn in self._by_token.values():
            t = conn.transport
            if t is not None and not t.frozen:
                t.frozen = True
                t.thawed.clear()
                if t.request.transport is not None:
                    t.request.transport.pause_reading()
                count += 1
        return count

    def end_half_open(self) -> None:
        for conn in self._by_token.values():
            t = conn.transport
            if t is not None and t.frozen:
                t.frozen = False
                if t.request.transport is not None:
                    t.request.transport.resume_reading()
                t.thawed.set()
                conn.rearm()

    def refuse_upgrades(self, status: int, duration: float) -> None:
        """Answer WebSocket upgrades with `status` (401 or 503) for `duration` s; negotiate still works."""
        self._refuse = (status, time.monotonic() + duration)

    def accept_upgrades(self) -> None:
        self._refuse = None

    FLAP_MODES = ("close", "malformed", "invalid_utf8")

    def flap(self, mode: str, duration: float) -> None:
        """For `duration` s, end every new connection right after its handshake: `close` sends
        Close(allowReconnect=true), `malformed` an unparseable message, `invalid_utf8` a text frame
        that is not UTF-8 (binary protocols get the malformed message instead)."""
        if mode not in self.FLAP_MODES:
            raise ValueError(f"mode must be one of {', '.join(self.FLAP_MODES)}")
        self._flap = (mode, time.monotonic() + duration)

    async def _flap_now(self, conn: _Connection) -> None:
        if self._flap is None:
            return
        mode, until = self._flap
        if time.monotonic() >= until:
            self._flap = None
            return
        if mode == "close":
            await conn.close(error="Server is flapping.", allow_reconnect=True)
        elif mode == "invalid_utf8" and conn.protocol is not None and conn.protocol.name == "json":
            conn.enqueue(b'{"type":1,"target":"Flap","arguments":["\xff\xfe"]}\x1e', trackable=False)
        else:
            self.send_malformed(conn.id)

    def send_malformed(self, connection_id: str | None = None) -> int:
        """Send bytes the connection's protocol cannot parse (bypassing sequence tracking)."""
        count = 0
        for conn in self._targets(connection_id):
            assert conn.protocol is not None
            bad = b'{"type":1,"target":\x1e' if conn.protocol.name == "json" else b"\x05\xc1\xc1\xc1\xc1\xc1"
            count += conn.enqueue(bad, trackable=False)
        return count

    def send_oversized(self, size: int, target: str = "Oversized", connection_id: str | None = None) -> int:
        """Send one invocation whose single string argument is `size` bytes long."""
        count = 0
        for conn in self._targets(connection_id):
            count += conn.send(p.Invocation(target=target, arguments=["x" * size]))
        return count

    def _check_refusal(self) -> None:
        if self._refuse is None:
            return
        status, deadline = self._refuse
        if time.monotonic() >= deadline:
            self._refuse = None
            return
        self.stats.rejected_upgrades += 1
        if status == 401:
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        retry = str(max(1, int(deadline - time.monotonic() + 0.999)))
        raise web.HTTPServiceUnavailable(headers={"Retry-After": retry})


class Faults:
    """Fault injection over the hub server's hooks and the IdP."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self._half_open_task: asyncio.Task[None] | None = None

    def drop_all(self) -> int:
        """Abort every WebSocket at the TCP level (no Close message)."""
        return self._sim.hub.server.drop_all()

    async def close_all(self, allow_reconnect: bool = True) -> int:
        """Send Close (with allowReconnect) to every connection and close it."""
        return await self._sim.hub.server.close_all(
            error="Server closed the connection.", allow_reconnect=allow_reconnect
        )

    def half_open(self, seconds: float | None = None) -> int:
        """Stop reading and pinging on every connection (TCP stays open); optionally end after `seconds`."""
        count = self._sim.hub.server.half_open()
        if seconds is not None:
            if self._half_open_task is not None:
                self._half_open_task.cancel()
            self._half_open_task = asyncio.get_running_loop().create_task(self._end_half_open_later(seconds))
        return count

    async def _end_half_open_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.end_half_open()

    def end_half_open(self) -> int:
        self._sim.hub.server.end_half_open()
        return 0

    def refuse_upgrades(self, status: int = 503, seconds: float = 5.0) -> int:
        if status not in (401, 503):
            raise ValueError("status must be 401 or 503")
        self._sim.hub.server.refuse_upgrades(status, seconds)
        return 0

    async def expire_tokens(self) -> int:
        """Every token issued so far becomes invalid; authenticated connections are closed as expired."""
        self._sim.idp.expire_all_tokens()
        server = self._sim.hub.server
        closed = 0
        for cid in server.connection_ids:
            with contextlib.suppress(Exception):
                if server.principal_of(cid) is not None:
                    await server.close_connection(
                        cid, error=server.token_expired_message, allow_reconnect=True
                    )
                    closed += 1
        return closed

    def idp_fail(self, status: int = 503, seconds: float = 5.0) -> int:
        self._sim.idp.fail_for(status, seconds)
        return 0

    def idp_slow(self, delay: float = 2.0, seconds: float = 10.0) -> int:
        self._sim.idp.slow_for(delay, seconds)
        return 0

    def malformed(self) -> int:
        return self._sim.hub.server.send_malformed()

    def flap(self, mode: str = "close", seconds: float = 10.0) -> int:
        self._sim.hub.server.flap(mode, seconds)
        return 0

    def oversized(self, size: int = 2 * 1024 * 1024) -> int:
        return self._sim.hub.server.send_oversized(size)

    async def restart(self, down_seconds: float = 0.0) -> int:
        """Restart on the same port: drop every connection, stop listening, listen again."""
        dropped = self._sim.hub.server.drop_all()
        await self._sim.site.stop_listening()
        if down_seconds > 0:
            await asyncio.sleep(down_seconds)
        await self._sim.site.restart()
        return dropped

    def reset_event(self, event_id: int) -> int:
        self._sim.hub.reset_event(int(event_id))
        return 1

    def new_session(self, event_id: int) -> int:
        """RedMist's session change: a new sessionId in the patches and no ReceiveReset."""
        self._sim.hub.new_session(int(event_id))
        return 1

    def clear(self) -> int:
        self._sim.idp.clear_faults()
        self._sim.hub.server.accept_upgrades()
        self._sim.hub.server.end_half_open()
        self._sim.hub.server.flap("close", 0.0)  # a zero-length flap window ends one in progress
        return 0


FAULT_NAMES = (
    "drop_all",
    "close_all",
    "half_open",
    "end_half_open",
    "refuse_upgrades",
    "expire_tokens",
    "idp_fail",
    "idp_slow",
    "malformed",
    "oversized",
    "flap",
    "restart",
    "reset_event",
    "new_session",
    "clear",
)
