"""Server-to-client streams of the SignalR client (`HubConnection.stream`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from consumer.signalr.connection import HubConnection

__all__ = ["HubStream"]


_WAKE = object()
_END = object()


class HubStream(AsyncIterator[Any]):
    """A server-to-client stream. Iterate it; `aclose()` (or `async with`) cancels it on the server."""

    def __init__(self, connection: HubConnection, target: str, args: tuple[Any, ...], buffer: int) -> None:
        self._connection = connection
        self._target = target
        self._args = args
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=buffer)
        self._terminal: Any = None  # _END or an exception
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
            await self._connection._start_stream(self)
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

    def _finish(self) -> Any:
        self._finished = True
        self._connection._streams.pop(self._invocation_id or "", None)
        terminal = self._terminal
        if terminal is _END:
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
        self._connection._streams.pop(self._invocation_id, None)
        self._connection._spawn(self._connection._send_cancel(self._invocation_id))

    async def aclose(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self._invocation_id is not None:
            self._connection._streams.pop(self._invocation_id, None)
            if self._terminal is None:
                await self._connection._send_cancel(self._invocation_id)

    async def __aenter__(self) -> HubStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
