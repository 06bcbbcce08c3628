"""The client's receive loop -> dispatcher hand-off: a FIFO of whole frames' invocation batches and
connection-callback markers, bounded in invocations and in bytes."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from consumer.signalr import protocol as proto

__all__ = ["DEFAULT_MAX_DISPATCH_BYTES", "Batch", "DispatchQueue", "Notify", "Queued"]

DEFAULT_MAX_DISPATCH_BYTES = 16 * 1024 * 1024
Callback: TypeAlias = Callable[..., Any]


@dataclass(slots=True)
class Notify:
    """Connection callbacks queued behind the invocations decoded before them (dispatch order)."""

    callbacks: list[Callback]
    args: tuple[Any, ...]


Batch: TypeAlias = list[proto.Invocation]  # the invocations one frame brought, in order
Queued: TypeAlias = Batch | Notify


class DispatchQueue:
    """The receive loop → dispatcher FIFO. Items are whole batches (a frame's invocations) or
    `Notify` markers, so the hand-off costs one put/get per frame, not per message.

    Bounded in invocations and in bytes, not in items: `size` counts the invocations handed over and
    not yet finished by the dispatcher (queued ones and the batch it is working on; a `Notify`
    counts 1) until `task_done(item)`; `bytes` likewise counts the wire bytes given with each
    `put(item, nbytes)`. `put()` waits while `size >= limit` or `bytes >= byte_limit`, then adds
    the whole item: a batch is never split, so `size` stays under `limit + one batch` and `bytes`
    under `byte_limit + one frame`. A cancelled `put()` has added nothing. `join()` waits until
    every item put is done. One consumer: `task_done()` is called for the items taken, in order.
    """

    __slots__ = ("_byte_limit", "_idle", "_items", "_limit", "_ready", "_room", "_taken", "bytes", "size")

    def __init__(self, limit: int, byte_limit: int = DEFAULT_MAX_DISPATCH_BYTES) -> None:
        self._items: deque[tuple[Queued, int]] = deque()
        self._taken: deque[int] = deque()  # bytes of the items taken by get(), not yet task_done()
        self._limit = max(1, limit)
        self._byte_limit = max(1, byte_limit)
        self.size = 0
        self.bytes = 0
        self._ready = asyncio.Event()  # set while items are queued
        self._room = asyncio.Event()  # set while size < limit
        self._room.set()
        self._idle = asyncio.Event()  # set while size == 0 (everything put is done)
        self._idle.set()

    def __len__(self) -> int:
        """Items (batches and markers) queued, not yet taken by the dispatcher."""
        return len(self._items)

    def put_nowait(self, item: Queued, nbytes: int = 0) -> bool:
        """Add `item` (`nbytes` wire bytes) and return True, or return False (nothing added) when full."""
        if self.size >= self._limit or self.bytes >= self._byte_limit:
            return False
        self._items.append((item, nbytes))
        self.size += len(item) if item.__class__ is list else 1
        self.bytes += nbytes
        self._idle.clear()
        self._ready.set()
        if self.size >= self._limit or self.bytes >= self._byte_limit:
            self._room.clear()
        return True

    async def put(self, item: Queued, nbytes: int = 0) -> None:
        while not self.put_nowait(item, nbytes):
            await self._room.wait()

    async def get(self) -> Queued:
        items = self._items
        while not items:
            self._ready.clear()
            await self._ready.wait()
        item, nbytes = items.popleft()
        self._taken.append(nbytes)
        return item

    def task_done(self, item: Queued) -> None:
        """The dispatcher is done with `item` (taken by `get()`): its invocations stop counting."""
        self.size -= len(item) if item.__class__ is list else 1
        self.bytes -= self._taken.popleft() if self._taken else 0
        if self.size < self._limit and self.bytes < self._byte_limit:
            self._room.set()
        if self.size <= 0:
            self._idle.set()

    async def join(self) -> None:
        await self._idle.wait()
