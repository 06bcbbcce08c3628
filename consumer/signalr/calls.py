"""The client's calls in flight: invocation ids, the futures of pending `invoke()`s and the open
server→client streams, and what the hub answers them with (Completion, StreamItem). When the
logical connection is lost, `fail_all` fails every one of them, so nothing waits forever."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from consumer.signalr import protocol as proto
from consumer.signalr.errors import ConnectionLostError, HubError
from consumer.signalr.streams import END, HubStream

__all__ = ["Calls"]


class Calls:
    """Pending invocations and streams of one `HubConnection` (ids are unique per connection object)."""

    __slots__ = ("_ids", "pending", "streams")

    def __init__(self) -> None:
        self._ids = itertools.count()
        self.pending: dict[str, asyncio.Future[Any]] = {}
        self.streams: dict[str, HubStream] = {}

    def __len__(self) -> int:
        return len(self.pending) + len(self.streams)

    def next_id(self) -> str:
        return str(next(self._ids))

    def expect(self) -> tuple[str, asyncio.Future[Any]]:
        """A new invocation id and the future its Completion resolves (`forget(id)` when done)."""
        invocation_id = self.next_id()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[invocation_id] = future
        return invocation_id, future

    def forget(self, invocation_id: str, future: asyncio.Future[Any]) -> None:
        """The caller is done with the invocation (answered, or its send failed). A future that
        `fail_all` failed while the send was under way is marked retrieved (the send's own error
        is what the caller sees), so asyncio does not log "Future exception was never retrieved"."""
        self.pending.pop(invocation_id, None)
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()

    async def stream_item(self, message: proto.StreamItem) -> None:
        stream = self.streams.get(message.invocation_id)
        if stream is not None:
            await stream._put(message.item)

    def complete(self, message: proto.Completion) -> None:
        future = self.pending.pop(message.invocation_id, None)
        if future is not None:
            if not future.done():
                if message.error is not None:
                    future.set_exception(HubError(message.error))
                else:
                    future.set_result(message.result)
            return
        stream = self.streams.get(message.invocation_id)
        if stream is not None:
            stream._complete(HubError(message.error) if message.error is not None else END)

    def fail_all(self, error: ConnectionLostError) -> None:
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream._complete(error)
