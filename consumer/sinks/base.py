"""The sink interface, the bounded line queue and the per-sink writer task.

A sink is small on purpose (a broker sink is one more file): it receives *batches* of complete JSON
lines (bytes, no trailing newline) and either stores the whole batch or raises. Everything else —
queueing, batching, overflow policy, retry with backoff, the bounded retry buffer, periodic sync,
reopen requests and graceful drain — lives in `SinkWorker`, shared by every sink.

Periodic sync runs *beside* the writes: when a sink's `sync_interval` elapses, the worker starts
`sink.flush()` as a background task and keeps writing (an fsync takes milliseconds; lines queued behind
it would wait that long). At most one flush is in flight; a reopen and `close()` first wait for it and
then flush again, so whatever was written while it ran is synced too. Sinks with a `sync_interval` must
therefore accept `flush()` running concurrently with `write()` (never with another flush, `reopen()` or
`close()`); sinks without one are only flushed between writes.

Hot path contract (the relay): `worker.offer(line)` never awaits; it returns False only when the queue
is full and the overflow policy is `block`, in which case the caller awaits `worker.put(line)`.
"""

from __future__ import annotations

import asyncio
import errno
import random
import time
from collections import deque
from collections.abc import Sequence
from typing import Literal, Protocol

from consumer.errors import describe_error
from consumer.logs import get_logger

log = get_logger("consumer.sinks")

Overflow = Literal["block", "drop_oldest"]


class PartialWrite(Exception):
    """The first `done` lines of the batch were stored, the rest were not (`cause` says why)."""

    def __init__(self, done: int, cause: OSError) -> None:
        super().__init__(f"{done} lines stored before: {cause}")
        self.done = done
        self.cause = cause


class Sink(Protocol):
    """Where complete JSON lines go.

    Calls are serialised by the worker, except that an interval `flush()` (only for a sink whose
    `sync_interval` is not None) may run while `write()` runs.
    """

    name: str
    # Seconds between `flush()` calls while there is unsynced data; None = the sink syncs itself.
    sync_interval: float | None

    async def open(self) -> None: ...

    async def write(self, lines: Sequence[bytes]) -> None:
        """Store every line (each followed by a newline) or raise OSError / PartialWrite.

        A line is never stored partially: on failure the sink removes any torn tail itself.
        """

    async def flush(self) -> None:
        """Make what was written before this call durable (fsync for files).

        With a `sync_interval`, this may run concurrently with `write()`: lines whose write completes
        during the flush need not be covered (the next flush or `close()` covers them).
        """

    async def reopen(self) -> None:
        """Reopen the destination (SIGHUP after logrotate's rename)."""

    async def close(self) -> None: ...


class SinkStats:
    """Plain counters read by the metrics collector at scrape time (no per-line metric calls)."""

    __slots__ = ("blocked", "dropped", "errors", "written")

    def __init__(self) -> None:
        self.written = 0
        self.blocked = 0  # times the producer had to wait (overflow = block)
        self.errors = 0  # failed write attempts
        self.dropped: dict[str, int] = {"overflow": 0, "sink_error": 0, "shutdown": 0}


def _describe(err: BaseException) -> str:
    if isinstance(err, PartialWrite):
        err = err.cause
    if isinstance(err, OSError) and err.errno is not None:
        name = errno.errorcode.get(err.errno, str(err.errno))
        return f"{name}: {err.strerror or err}"
    return describe_error(err)


class SinkWorker:
    """Bounded queue + writer task for one sink.

    - `queue_size` bounds the lines waiting to be written; `overflow` decides what happens when it is
      full: `block` makes the producer wait (counted in `stats.blocked`), `drop_oldest` discards the
      oldest queued line (counted in `stats.dropped["overflow"]`).
    - While the sink fails (ENOSPC, EIO, ...), the failed batch and newly queued lines are kept in a
      retry buffer of at most `max_pending` lines and retried with capped exponential backoff; beyond
      that the oldest are dropped (`stats.dropped["sink_error"]`). The producer is therefore never
      blocked for longer than the queue takes to move into the retry buffer.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        queue_size: int = 10_000,
        overflow: Overflow = "block",
        max_pending: int = 100_000,
        max_batch: int = 4096,
        retry_initial: float = 0.25,
        retry_max: float = 10.0,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
    ) -> None:
        if queue_size < 1 or max_pending < 1 or max_batch < 1:
            raise ValueError("queue_size, max_pending and max_batch must be >= 1")
        self.sink = sink
        self.name = sink.name
        self.queue_size = queue_size
        self.overflow = overflow
        self.max_pending = max(max_pending, max_batch)
        self.max_batch = max_batch
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.include = frozenset(include)
        self.exclude = frozenset(exclude)
        self.stats = SinkStats()
        self.failing = False
        self._queue: deque[bytes] = deque()
        self._pending: deque[bytes] = deque()
        self._items = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._idle = asyncio.Event()
        self._closing = asyncio.Event()
        self._reopen = False
        self._dirty_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._flush_task: asyncio.Task[None] | None = None  # the interval flush in flight, if any

    # -- hot path ------------------------------------------------------------------------------

    def accepts(self, target: str) -> bool:
        if self.include and target not in self.include:
            return False
        return target not in self.exclude

    def offer(self, line: bytes) -> bool:
        q = self._queue
        if len(q) >= self.queue_size:
            if self.overflow == "block":
                return False
            q.popleft()
            self.stats.dropped["overflow"] += 1
        q.append(line)
        self._items.set()
        return True

    async def put(self, line: bytes) -> None:
        """Queue a line, waiting for space when the policy is `block`."""
        if self.offer(line):
            return
        self.stats.blocked += 1
        while len(self._queue) >= self.queue_size:
            self._space.clear()
            await self._space.wait()
        self._queue.append(line)
        self._items.set()

    @property
    def depth(self) -> int:
        """Lines queued plus lines held for retry."""
        return len(self._queue) + len(self._pending)

    # -- lifecycle -----------------------------------------------------------------------------

    def request_reopen(self) -> None:
        self._reopen = True
        self._items.set()

    async def start(self) -> None:
        await self.sink.open()
        self._task = asyncio.create_task(self._run(), name=f"sink:{self.name}")

    async def close(self, grace: float | None = None, *, close_timeout: float = 2.0) -> None:
        """Stop accepting work, write what is queued (within `grace` seconds), flush, close the sink.

        Flush and close get `close_timeout` seconds more: a sink whose fsync or pipe write hangs (a dead
        NFS server, a stdout reader that stopped reading) must not hang the daemon's shutdown.
        """
        self._closing.set()
        self._items.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(grace):
                    await asyncio.shield(self._task)
            except TimeoutError:
                self._task.cancel()
                lost = self.depth
                self.stats.dropped["shutdown"] += lost
                log.error("sink drain timed out", sink=self.name, lost_records=lost)
                await asyncio.gather(self._task, return_exceptions=True)
        try:
            async with asyncio.timeout(close_timeout):
                await self._flush_settled()  # an interval flush still in flight finishes first
                try:
                    await self.sink.flush()
                except OSError as err:
                    log.error("sink flush failed at close", sink=self.name, error=_describe(err))
                await self.sink.close()
        except TimeoutError:
            log.error("sink flush/close timed out", sink=self.name, timeout_seconds=close_timeout)
            if self._flush_task is not None:
                self._flush_task.cancel()  # its thread may still block; the task must not outlive us

    async def wait_idle(self) -> None:
        """Until everything queued so far has been written (tests, `flush` on demand)."""
        while self.depth:
            self._idle.clear()
            await self._idle.wait()

    # -- writer task ---------------------------------------------------------------------------

    def _take(self) -> list[bytes]:
        """Move queued lines into the retry buffer (bounded) and return the next batch."""
        q, pend = self._queue, self._pending
        if not pend and not self.failing and len(q) <= self.max_batch:
            # The common case: the whole queue is the next batch. Swap the two deques (O(1)) instead
            # of moving line by line; `offer()` reads `self._queue` afresh on every call.
            self._queue, self._pending = pend, q
            self._space.set()
            return list(q)
        while q and (len(pend) < self.max_batch or self.failing):
            pend.append(q.popleft())
            if len(pend) > self.max_pending:
                pend.popleft()
                self.stats.dropped["sink_error"] += 1
        if len(q) < self.queue_size:
            self._space.set()
        n = min(len(pend), self.max_batch)
        return [pend[i] for i in range(n)]

    async def _run(self) -> None:
        delay = self.retry_initial
        while True:
            if self._reopen:
                self._reopen = False
                try:
                    await self._sync_if_dirty(force=True)
                    await self.sink.reopen()
                    log.info("sink reopened", sink=self.name)
                except OSError as err:
                    log.error("sink reopen failed", sink=self.name, error=_describe(err))
            batch = self._take()
            if not batch:
                self._idle.set()
                if self._closing.is_set() and not self._queue:
                    return
                await self._idle_wait()
                continue
            try:
                await self.sink.write(batch)
            except (OSError, PartialWrite) as err:
                done = err.done if isinstance(err, PartialWrite) else 0
                for _ in range(done):
                    self._pending.popleft()
                self.stats.written += done
                self.stats.errors += 1
                if not self.failing:
                    self.failing = True
                    log.error(
                        "sink write failed; keeping records and retrying",
                        sink=self.name,
                        error=_describe(err),
                        buffered=self.depth,
                        max_buffered=self.max_pending,
                    )
                await self._backoff(delay)
                delay = min(self.retry_max, delay * 2)
                continue
            pend = self._pending
            if len(batch) == len(pend):
                pend.clear()
            else:
                for _ in range(len(batch)):
                    pend.popleft()
            self.stats.written += len(batch)
            if self._dirty_since is None:
                self._dirty_since = time.monotonic()
            if self.failing:
                self.failing = False
                delay = self.retry_initial
                log.warning(
                    "sink recovered", sink=self.name, dropped_while_failing=self.stats.dropped["sink_error"]
                )
            await self._sync_if_dirty()

    async def _sync_if_dirty(self, force: bool = False) -> None:
        """Start an interval flush in the background when due; `force`: flush now and wait for it.

        Forced (before a reopen): an in-flight flush is awaited first, then everything written so far
        is flushed, so nothing written during the in-flight one is left unsynced.
        """
        interval = self.sink.sync_interval
        if interval is None:
            return
        if force:
            await self._flush_settled()
            if self._dirty_since is None:
                return
            self._dirty_since = None
            try:
                await self.sink.flush()
            except OSError as err:
                self._dirty_since = time.monotonic()
                log.error("sink sync failed", sink=self.name, error=_describe(err))
            return
        if self._dirty_since is None or self._flush_task is not None:
            return
        if time.monotonic() - self._dirty_since >= interval:
            # Lines written from here on dirty the sink again and get the next interval's flush.
            self._dirty_since = None
            task = asyncio.create_task(self._flush_in_background(), name=f"sink-flush:{self.name}")
            self._flush_task = task
            task.add_done_callback(self._flush_done)

    async def _flush_in_background(self) -> None:
        try:
            await self.sink.flush()
        except OSError as err:
            if self._dirty_since is None:
                self._dirty_since = time.monotonic()  # not synced: retry at the next interval
            log.error("sink sync failed", sink=self.name, error=_describe(err))

    def _flush_done(self, task: asyncio.Task[None]) -> None:
        if self._flush_task is task:
            self._flush_task = None
        if not task.cancelled() and (err := task.exception()) is not None:
            log.error("sink sync crashed", sink=self.name, error=_describe(err))
        self._items.set()  # wake the writer: the next interval's deadline may be due now

    async def _flush_settled(self) -> None:
        """Until the interval flush in flight (if any) has finished; its outcome is already logged."""
        task = self._flush_task
        if task is not None:
            await asyncio.wait({task})  # neither raises its outcome nor cancels it when we are cancelled

    async def _idle_wait(self) -> None:
        self._items.clear()
        if self._queue or self._reopen or self._closing.is_set():
            return
        timeout = None
        if self._dirty_since is not None and self.sink.sync_interval is not None and self._flush_task is None:
            timeout = max(0.0, self.sink.sync_interval - (time.monotonic() - self._dirty_since))
        try:
            async with asyncio.timeout(timeout):
                await self._items.wait()
        except TimeoutError:
            await self._sync_if_dirty()

    async def _backoff(self, delay: float) -> None:
        """Wait before retrying; keep moving queued lines into the bounded retry buffer meanwhile."""
        deadline = time.monotonic() + delay * (0.5 + random.random() / 2)
        while (left := deadline - time.monotonic()) > 0:
            self._take()
            if self._closing.is_set():
                left = min(left, 0.05)  # shutting down: retry promptly within the grace
            self._items.clear()
            try:
                async with asyncio.timeout(left):
                    await self._items.wait()
            except TimeoutError:
                break
        self._take()
