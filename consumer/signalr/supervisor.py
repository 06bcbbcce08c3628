"""The SignalR client's lifecycle outside the connection: connect (retrying the initial start with
the policy when asked), run transports, and on each loss decide between a stateful resume, a
reconnect under the retry policy (`consumer.signalr.retry`) and closing; then shut down.

- `Health`: the healthy-before-reset rule and the flapping detector (below).
- `Supervisor.run(started)` is the loop. It drives a `Link` (the `HubConnection`): one small typed
  interface for what only the driver can do (open a transport, run it until it ends, resume, fail
  pending calls, queue the reconnecting/reconnected callbacks, drain and close, fire on_closed).
  The supervisor holds no socket, core or queue.
- Automatic reconnect with a `RetryPolicy` (default `DaemonRetryPolicy`: never gives up). With
  `retry_initial_start=True` (default) a failed first start is retried with the same policy.
  Close(allowReconnect=false) stops; Close(allowReconnect=true) or transport loss reconnects.
- Healthy before reset: a connection counts as healthy once it has stayed up `healthy_after`
  seconds (default 10). Only the loss of a healthy connection restarts the policy at retry 0 (0 s
  with the default policy); a connection lost sooner counts as one more failed attempt, so a hub
  that accepts the handshake and then closes or breaks every connection gets the same backoff as
  one that refuses them (no hot loop). Three short-lived connections in a row are "flapping": a
  `signalr.flapping` warning (at most one a minute, with the count since the last one), `flapping`
  and `stats.short_lived_connections` for metrics; `signalr.flapping_ended` once a connection is
  healthy again. Time, not data, is the criterion: a hub that delivers a few messages and then drops
  every connection is flapping just the same.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from consumer.errors import ConfigError, CredentialsRejected, describe_error
from consumer.logs import get_logger
from consumer.signalr.errors import ConnectionLostError, HubConnectionError
from consumer.signalr.retry import RetryPolicy

if TYPE_CHECKING:
    from consumer.signalr.state import ClientStats

__all__ = [
    "FLAPPING_AFTER",
    "FLAPPING_LOG_INTERVAL",
    "Ended",
    "Health",
    "Link",
    "Supervisor",
    "describe_reason",
]

log = get_logger("consumer.signalr.connection")  # the client's log events keep their logger name

FLAPPING_AFTER = 3  # consecutive short-lived connections
FLAPPING_LOG_INTERVAL = 60.0  # seconds between two `signalr.flapping` warnings


@dataclass(slots=True)
class Ended:
    """Why a transport ended: the error, whether reconnecting is allowed, and whether to try a resume."""

    error: BaseException | None
    allow_reconnect: bool
    resumable: bool


class Link(Protocol):
    """What the supervisor needs from the connection it supervises."""

    @property
    def stopping(self) -> bool:
        """stop() was called: no further attempt, no reconnect."""
        ...

    @property
    def log_url(self) -> str:
        """The hub URL, redacted for logs."""
        ...

    def can_resume(self) -> bool:
        """The last transport ended with a stateful connection kept for a resume."""
        ...

    async def connect_once(self) -> None:
        """One attempt: negotiate, WebSocket, handshake. Raises on failure."""

    async def run_transport(self) -> Ended:
        """Receive on the current transport until it ends."""
        ...

    async def resume(self) -> bool:
        """One stateful resume attempt on a new WebSocket."""
        ...

    def mark_connected(self) -> None:
        """The first start succeeded (state `connected`)."""

    async def reconnecting(self, reason: BaseException | None) -> None:
        """State `reconnecting`; queue the on_reconnecting callbacks."""

    async def reconnected(self) -> None:
        """State `connected`; queue the on_reconnected callbacks."""

    def fail_pending(self, error: ConnectionLostError) -> None:
        """Fail pending invocations and streams (the logical connection is gone)."""

    async def shut_down(self, error: BaseException | None) -> None:
        """Drain, Close, close the WebSocket; state `disconnected`."""

    async def fire_closed(self, error: BaseException | None) -> None:
        """Run the on_closed callbacks."""

    def closed(self) -> None:
        """Closed for good (wake `wait_closed()`)."""


class Health:
    """Healthy before reset, and flapping (see the module docstring). Times come from `clock`."""

    __slots__ = (
        "_clock",
        "_flap_logged_at",
        "_flap_unlogged",
        "_stats",
        "connected_at",
        "healthy_after",
        "short_streak",
    )

    def __init__(
        self, healthy_after: float, stats: ClientStats, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.healthy_after = healthy_after
        self._stats = stats
        self._clock = clock
        self.connected_at: float | None = None  # when the last connection opened (a handshake answer)
        self.short_streak = 0  # consecutive connections lost before they were healthy
        self._flap_logged_at: float | None = None
        self._flap_unlogged = 0

    def reset(self) -> None:
        """A new start()."""
        self.short_streak = 0
        self.connected_at = None

    def opened(self) -> None:
        """A connection opened (the hub answered the handshake, or a resume succeeded)."""
        self.connected_at = self._clock()

    def flapping(self, connected: bool) -> bool:
        """`FLAPPING_AFTER` or more connections in a row were lost before `healthy_after` seconds,
        and the current one (if `connected`) has not yet stayed up that long."""
        if self.short_streak < FLAPPING_AFTER:
            return False
        at = self.connected_at
        if connected and at is not None:
            return self._clock() - at < self.healthy_after
        return True

    def lost(self, error: BaseException | None) -> None:
        """Healthy or short-lived? Count the streak and warn (rate-bounded) while flapping."""
        now = self._clock()
        at = self.connected_at
        lived = now - at if at is not None else 0.0
        if lived >= self.healthy_after:
            if self.short_streak >= FLAPPING_AFTER:
                log.info("signalr.flapping_ended", short_lived=self.short_streak, lived=round(lived, 3))
            self.short_streak = 0
            self._flap_unlogged = 0
            return
        self.short_streak += 1
        self._stats.short_lived_connections += 1
        if self.short_streak < FLAPPING_AFTER:
            return
        self._flap_unlogged += 1
        last = self._flap_logged_at
        if last is None or now - last >= FLAPPING_LOG_INTERVAL:
            log.warning(
                "signalr.flapping",
                consecutive_short_lived=self.short_streak,
                since_last_warning=self._flap_unlogged,
                lived=round(lived, 3),
                healthy_after=self.healthy_after,
                error=describe_reason(error),
            )
            self._flap_logged_at = now
            self._flap_unlogged = 0


class Supervisor:
    """Runs one start()..closed cycle of a `Link` under a retry policy."""

    def __init__(self, link: Link, policy: RetryPolicy, health: Health, *, retry_initial_start: bool) -> None:
        self._link = link
        self._policy = policy
        self._health = health
        self._retry_initial_start = retry_initial_start
        self._give_up_error: BaseException | None = None

    async def run(self, started: asyncio.Future[None]) -> None:
        """Connect, resolve `started` (with the error when the start fails), supervise, shut down."""
        link = self._link
        close_error: BaseException | None = None
        connected_once = False
        self._give_up_error = None
        try:
            await self._connect(None, initial=True)
            connected_once = True
            link.mark_connected()
            started.set_result(None)
            close_error = await self._supervise()
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            if not started.done():
                started.set_exception(HubConnectionError("The connection was stopped during start."))
        except BaseException as exc:
            close_error = exc
            if not started.done():
                started.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            await link.shut_down(close_error)
        if connected_once:
            await link.fire_closed(close_error)
        link.closed()

    async def _supervise(self) -> BaseException | None:
        """Run transports until stopped, closed by the hub or given up; returns the close error."""
        link = self._link
        health = self._health
        while True:
            ended = await link.run_transport()
            if link.stopping:
                return None
            if not ended.allow_reconnect:
                log.warning("signalr.closed_by_server", error=describe_reason(ended.error), reconnect=False)
                return ended.error
            health.lost(ended.error)
            if link.can_resume():
                if health.short_streak:  # a resume that drops at once must not spin either
                    delay = self._next_delay(health.short_streak, 0.0, ended.error)
                    if delay is None:
                        return ended.error
                    await asyncio.sleep(delay)
                if await link.resume():
                    health.opened()
                    continue
            link.fail_pending(
                ConnectionLostError(
                    f"connection lost: {describe_reason(ended.error) or 'closed by the server'}"
                )
            )
            if await self._connect(ended.error, initial=False, failures=health.short_streak):
                await link.reconnected()
                continue
            return self._give_up_error or ended.error

    async def _connect(self, reason: BaseException | None, *, initial: bool, failures: int = 0) -> bool:
        """Attempt until connected (True) or the policy gives up (False, or raises on initial start).

        `failures`: short-lived connections lost in a row before this call; they count as failed
        attempts, so the policy's delays continue from there instead of starting at retry 0."""
        link = self._link
        started_at = time.monotonic()
        attempts = failures
        last: BaseException | None = reason
        delay: float | None = 0.0 if initial else self._next_delay(attempts, 0.0, reason)
        if delay is None:
            return False
        if not initial:
            log.warning("signalr.reconnecting", reason=describe_reason(reason), url=link.log_url)
            await link.reconnecting(reason)
            if link.stopping:
                return False
        while delay is not None:
            if delay > 0:
                log.info(
                    "signalr.retry_scheduled",
                    attempt=attempts + 1,
                    delay=round(delay, 3),
                    reason=describe_reason(last),
                    initial_start=initial,
                )
                await asyncio.sleep(delay)
            if link.stopping:
                return False
            try:
                await link.connect_once()
                return True
            except (ConfigError, CredentialsRejected):
                raise  # permanent: retrying cannot help
            except Exception as exc:  # every other failure is retried by the policy
                attempts += 1
                last = exc
                log.warning(
                    "signalr.connect_failed",
                    attempt=attempts,
                    error=describe_reason(exc),
                    initial_start=initial,
                )
                if initial and not self._retry_initial_start:
                    raise
                delay = self._next_delay(attempts, time.monotonic() - started_at, exc)
        log.error("signalr.retries_exhausted", attempts=attempts, error=describe_reason(last))
        if initial and last is not None:
            raise last
        self._give_up_error = last
        return False

    def _next_delay(self, count: int, elapsed: float, reason: BaseException | None) -> float | None:
        try:
            delay = self._policy.next_delay(count, elapsed, reason)
        except Exception as exc:
            log.error("signalr.retry_policy_failed", error=describe_reason(exc))
            return None
        return None if delay is None else max(0.0, float(delay))


def describe_reason(error: BaseException | None) -> str | None:
    """`describe_error` for an optional error (None: none to describe)."""
    return describe_error(error) if error is not None else None
