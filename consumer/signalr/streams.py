"""Server-to-client streams of the SignalR client (`HubConnection.stream`): the StreamInvocation is
sent on first iteration; `aclose()`, leaving `async with`, or cancelling the consuming task sends
CancelInvocation. Items are buffered up to `stream_buffer_size` (the receive loop waits past that).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from consumer.logs import get_logger
from consumer.signalr import protocol as proto
from consumer.signalr.state import ConnectionState

if TYPE_CHECKING:
    from consumer.signalr.calls import Calls

__all__ = ["END", "HubStream", "StreamHost"]

log = get_logger("consumer.signalr.connection")  # the client's log events keep their logger name

_WAKE = object()
END = object()  # the terminal of a stream that completed without error


class StreamHost(Protocol):
    """What a stream needs from its connection."""

    @property
    def state(self) -> ConnectionState: ...

    @property
    def calls(self) -> Calls: ...

    def _require_connected(self) -> None: ...

    async def _send_message(self, message: proto.HubMessage) -> None: ...

    def _spawn(self, coro: Awaitable[Any]) -> None: ...


class HubStream(AsyncIterator[Any]):
    """A server-to-client stream. Iterate it; `aclose()` (or `async with`) cancels it on the server."""

    def __init__(self, connection: StreamHost, target: str, args: tuple[Any, ...], buffer: int) -> None:
        self._connection = connection
        self._target = target
        self._args = args
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=buffer)
        self._terminal: Any = None  # END or an exception
        self._invocation_id: str | None = None
        self._finished = False

    @property
    def invocation_id(self) -> str | None:
        return self._invocation_id

    def __aiter__(self) -> HubStream:
        return self

    async def __anext__(self) -> Any:
        if self._finished:
            raise StopAsyncIteration
        if self._invocation_id is None:
            await self._start()
        while True:
            if not self._queue.empty():
                item = self._queue.get_nowait()
            elif self._terminal is not None:
                return self._finish()
            else:
                try:
                    item = await self._queue.get()
                except asyncio.CancelledError:
                    self._cancel_in_background()
                    raise
            if item is not _WAKE:
                return item

    async def _start(self) -> None:
        host = self._connection
        host._require_connected()
        calls = host.calls
        invocation_id = calls.next_id()
        self._invocation_id = invocation_id
        calls.streams[invocation_id] = self
        try:
            await host._send_message(
                proto.StreamInvocation(
                    invocation_id=invocation_id, target=self._target, arguments=list(self._args)
                )
            )
        except BaseException:
            calls.streams.pop(invocation_id, None)
            self._finished = True
            raise

    async def _send_cancel(self, invocation_id: str) -> None:
        if self._connection.state != ConnectionState.CONNECTED:
            return
        try:
            await self._connection._send_message(proto.CancelInvocation(invocation_id=invocation_id))
        except Exception as exc:  # the connection is going away; nothing to cancel any more
            log.debug("signalr.cancel_not_sent", invocation_id=invocation_id, error=repr(exc))

    def _finish(self) -> Any:
        self._finished = True
        self._connection.calls.streams.pop(self._invocation_id or "", None)
        terminal = self._terminal
        if terminal is END:
            raise StopAsyncIteration
        raise terminal

    # called by the connection's receive loop
    async def _put(self, item: Any) -> None:
        if not self._finished:
            await self._queue.put(item)

    def _complete(self, terminal: Any) -> None:
        if self._terminal is None:
            self._terminal = terminal
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(_WAKE)

    def _cancel_in_background(self) -> None:
        if self._finished or self._invocation_id is None:
            return
        self._finished = True
        self._connection.calls.streams.pop(self._invocation_id, None)
        self._connection._spawn(self._send_cancel(self._invocation_id))

    async def aclose(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self._invocation_id is not None:
            self._connection.calls.streams.pop(self._invocation_id, None)
            if self._terminal is None:
                await self._send_cancel(self._invocation_id)

    async def __aenter__(self) -> HubStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
