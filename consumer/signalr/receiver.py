"""One transport's receive path for the SignalR client: read frames from the WebSocket (only the
wait on the socket is timed: the server timeout), check text frames are UTF-8, feed the sans-I/O
core, and hand its events over: invocations to the dispatch queue as one batch per frame (the hot
case costs one list comprehension and one put), everything else (stream items, Completions, Close,
protocol violations) to the connection's `other` handler, in arrival order. A cancelled hand-over
(stop() came) keeps the decoded invocations in `leftover` for the final drain.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from consumer.signalr import protocol as proto
from consumer.signalr.core import HubCore
from consumer.signalr.dispatch import Batch, DispatchQueue
from consumer.signalr.errors import ConnectionLostError, InvalidTextFrameError, ServerTimeoutError
from consumer.signalr.supervisor import Ended

if TYPE_CHECKING:
    from consumer.signalr.state import ClientStats

__all__ = ["OtherHandler", "Receiver", "check_utf8"]

OtherHandler = Callable[[Any], Awaitable[Ended | None]]

_INVOCATION = proto.Invocation


class Receiver:
    """Receives on one WebSocket until the transport ends; `run()` returns why (`Ended`)."""

    __slots__ = (
        "_acked",
        "_core",
        "_leftover",
        "_other",
        "_queue",
        "_server_timeout",
        "_text",
        "_timer_wake",
        "_ws",
        "stats",
    )

    def __init__(
        self,
        ws: ClientConnection,
        core: HubCore,
        queue: DispatchQueue,
        stats: ClientStats,
        *,
        leftover: deque[Batch],
        other: OtherHandler,
        text: bool,
        server_timeout: float,
        acked: asyncio.Event,
        timer_wake: asyncio.Event,
    ) -> None:
        self._ws = ws
        self._core = core
        self._queue = queue
        self.stats = stats
        self._leftover = leftover
        self._other = other
        self._text = text
        self._server_timeout = server_timeout
        self._acked = acked  # set when Acks may have made room in the replay buffer
        self._timer_wake = timer_wake  # set when an Ack of ours may be due earlier

    async def run(self, early: list[Any]) -> Ended:
        """`early`: messages that arrived right behind the handshake response."""
        ended = await self.handle(early) if early else None
        if ended is None:
            ended = await self._loop()
        return ended

    async def _loop(self) -> Ended:
        """Only the wait on the socket is timed (a driver rule, not the core's): a receive loop held
        back by a full dispatch queue is not a silent server. One watchdog timer per transport, not
        one `asyncio.timeout` per message (that costs a timer handle, a heap push and a cancel per
        frame): `_waiting_since` says when the pending `recv()` started (None while not waiting); the
        watchdog wakes when the wait can first have lasted `server_timeout`, re-arms itself for the
        current wait, and cancels the task when it has (then this loop reports the server timeout,
        exactly as `asyncio.timeout` did: an outer cancellation still propagates)."""
        core = self._core
        recv = self._ws.recv
        receive_data = core.receive_data
        events_received = core.events_received
        loop = asyncio.get_running_loop()
        clock = loop.time
        server_timeout = self._server_timeout
        handle = self.handle
        text = self._text
        stateful = core.stateful
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        watchdog = _Watchdog(task, server_timeout, clock)
        watchdog.arm(loop)
        try:
            while True:
                watchdog.waiting_since = clock()
                try:
                    data = await recv(decode=False)
                except ConnectionClosed as exc:
                    return Ended(
                        ConnectionLostError(f"WebSocket closed ({exc})"), allow_reconnect=True, resumable=True
                    )
                except asyncio.CancelledError:
                    if watchdog.fired and task.uncancel() <= cancelling:
                        return Ended(
                            ServerTimeoutError(
                                f"Server timeout elapsed without receiving a message from the server "
                                f"({server_timeout} s)."
                            ),
                            allow_reconnect=True,
                            resumable=False,
                        )
                    raise
                watchdog.waiting_since = None
                if text and not data.isascii():
                    try:
                        check_utf8(data)
                    except proto.ProtocolError as exc:
                        return Ended(exc, allow_reconnect=True, resumable=False)
                receive_data(data, clock())
                events = events_received()
                if stateful:
                    self._acked.set()  # Acks may have made room in the replay buffer
                    self._timer_wake.set()  # an Ack of ours may be due earlier than the timer sleeps
                if events:
                    ended = await handle(events, len(data))
                    if ended is not None:
                        return ended
        finally:
            watchdog.disarm()

    async def handle(self, messages: list[Any], nbytes: int = 0) -> Ended | None:
        """One frame's messages (`nbytes` on the wire). Its invocations go to the dispatcher as one
        batch; the hot case (no stateful buffer, nothing but invocations) costs one list
        comprehension and one put."""
        batch = cast(Batch, [m for m in messages if m.__class__ is _INVOCATION])
        if len(batch) == len(messages):
            self.stats.invocations_decoded += len(batch)
            queue = self._queue
            if not queue.put_nowait(batch, nbytes):
                await self._hand_over(queue, batch, messages, len(messages), nbytes)
            return None
        return await self._handle_mixed(messages, nbytes)

    async def _hand_over(
        self,
        queue: DispatchQueue,
        batch: Batch,
        messages: list[Any],
        resume_at: int,
        nbytes: int = 0,
    ) -> None:
        """Wait for room for `batch` (already counted as decoded). Cancelled (stop() came): nothing
        was queued, so the batch and the invocations of `messages[resume_at:]` are kept for the
        final drain, in order."""
        try:
            await queue.put(batch, nbytes)
        except asyncio.CancelledError:
            self._leftover.append(batch)
            self._keep_rest(messages, resume_at)
            raise

    def _keep_rest(self, messages: list[Any], resume_at: int) -> None:
        rest: Batch = []
        for message in messages[resume_at:]:
            if isinstance(message, proto.Invocation):
                rest.append(message)
        if rest:
            self.stats.invocations_decoded += len(rest)
            self._leftover.append(rest)

    async def _handle_mixed(self, messages: list[Any], nbytes: int = 0) -> Ended | None:
        """The general case: non-invocation messages and the core's events (the core already did the
        stateful numbering, dedupe, Acks and Sequence). Invocations collected so far are handed over
        before any message whose effect a handler could observe (StreamItem, Completion, Close), so
        the order of effects is the arrival order. Each batch is charged its share of the frame's
        `nbytes` (by message count)."""
        queue = self._queue
        per_message = nbytes // len(messages) if messages else 0
        batch: Batch = []
        for index, message in enumerate(messages):
            if isinstance(message, proto.Invocation):
                batch.append(message)
                continue
            if batch:
                self.stats.invocations_decoded += len(batch)
                cost = per_message * len(batch)
                if not queue.put_nowait(batch, cost):
                    await self._hand_over(queue, batch, messages, index + 1, cost)
                batch = []
            try:
                ended = await self._other(message)
            except asyncio.CancelledError:  # stop() while a stream consumer was slow
                self._keep_rest(messages, index + 1)
                raise
            if ended is not None:
                return ended
        if batch:
            self.stats.invocations_decoded += len(batch)
            cost = per_message * len(batch)
            if not queue.put_nowait(batch, cost):
                await self._hand_over(queue, batch, messages, len(messages), cost)
        return None


def check_utf8(data: bytes) -> None:
    """Raise InvalidTextFrameError unless `data` is valid UTF-8 (callers skip pure ASCII first)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidTextFrameError(
            f"invalid UTF-8 in a text frame at byte {exc.start} of {len(data)}"
        ) from None


class _Watchdog:
    """The receive loop's server timeout: one timer per transport (see `Receiver._loop`)."""

    __slots__ = ("_clock", "_handle", "_task", "_timeout", "fired", "waiting_since")

    def __init__(self, task: asyncio.Task[Any], timeout: float, clock: Callable[[], float]) -> None:
        self._task = task
        self._timeout = timeout
        self._clock = clock
        self._handle: asyncio.TimerHandle | None = None
        self.waiting_since: float | None = None
        self.fired = False

    def arm(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = loop.call_at(self._clock() + self._timeout, self._check, loop)

    def disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        now = self._clock()
        since = self.waiting_since
        if since is not None and now - since >= self._timeout:
            self._handle = None
            self.fired = True
            self._task.cancel()
            return
        # Not waiting: no wait that starts from now on can time out before now + timeout.
        due = (since if since is not None else now) + self._timeout
        self._handle = loop.call_at(due, self._check, loop)
