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

Memory is bounded in bytes as well as in lines: the queue holds at most `max_queue_bytes` (and
`queue_size` lines), the retry buffer `max_buffered_bytes` (and `max_pending` lines), a batch at most
`max_batch_bytes` (and `max_batch` lines; a single longer line is its own batch). A sink's memory is
therefore at most about `max_queue_bytes + max_buffered_bytes + max_batch_bytes` (the batch's joined
copy), whatever the line sizes. `depth_bytes` reports queue + retry buffer bytes (/metrics).

Progress: `stalled_seconds()` is how long lines have been waiting without any write call returning —
a write hanging in the kernel (a pipe nobody reads, a dead NFS server); the systemd watchdog withholds
WATCHDOG=1 past `[service] sink_stall_seconds`. A write that fails (ENOSPC, EIO) returns: the worker
keeps the lines and retries, which a restart would not improve (it would lose the retry buffer), so a
failing sink is reported by its logs and metrics, not by the watchdog. While a sink fails, the
first failure is logged at once and then a `sink still failing` line at most every
`failing_log_interval` seconds, until it recovers.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from typing import Literal, Protocol

from consumer.backoff import Backoff
from consumer.errors import describe_error
from consumer.logs import get_logger

log = get_logger(__name__)

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


MiB = 1024 * 1024
DEFAULT_QUEUE_BYTES = 16 * MiB
DEFAULT_BUFFERED_BYTES = 32 * MiB
DEFAULT_BATCH_BYTES = 4 * MiB
CLOSE_TIMEOUT = 2.0


class SinkWorker:
    """Bounded queue + writer task for one sink.

    - `queue_size` lines and `max_queue_bytes` bytes bound the lines waiting to be written; `overflow`
      decides what happens when it is full: `block` makes the producer wait (counted in
      `stats.blocked`), `drop_oldest` discards the oldest queued lines (`stats.dropped["overflow"]`).
    - While the sink fails (ENOSPC, EIO, ...), the failed batch and newly queued lines are kept in a
      retry buffer of at most `max_pending` lines and `max_buffered_bytes` bytes and retried with capped
      exponential backoff; beyond that the oldest are dropped (`stats.dropped["sink_error"]`). The
      producer is therefore never blocked for longer than the queue takes to move into the retry
      buffer.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        queue_size: int = 10_000,
        overflow: Overflow = "block",
        max_pending: int = 100_000,
        max_batch: int = 4096,
        max_queue_bytes: int = DEFAULT_QUEUE_BYTES,
        max_buffered_bytes: int = DEFAULT_BUFFERED_BYTES,
        max_batch_bytes: int = DEFAULT_BATCH_BYTES,
        retry_initial: float = 0.25,
        retry_max: float = 10.0,
        failing_log_interval: float = 30.0,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
    ) -> None:
        if min(queue_size, max_pending, max_batch, max_queue_bytes, max_buffered_bytes, max_batch_bytes) < 1:
            raise ValueError("queue and buffer sizes (lines and bytes) must be >= 1")
        self.sink = sink
        self.name = sink.name
        self.queue_size = queue_size
        self.overflow = overflow
        self.max_pending = max(max_pending, max_batch)
        self.max_batch = max_batch
        self.max_queue_bytes = max_queue_bytes
        self.max_buffered_bytes = max_buffered_bytes
        self.max_batch_bytes = min(max_batch_bytes, max_buffered_bytes)  # a batch is in the buffer
        self.failing_log_interval = failing_log_interval
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.include = frozenset(include)
        self.exclude = frozenset(exclude)
        self.stats = SinkStats()
        self.failing = False
        self._queue: deque[bytes] = deque()
        self._pending: deque[bytes] = deque()
        self._queue_bytes = 0
        self._pending_bytes = 0
        self._progress_at = time.monotonic()  # last write call returned, or last wake-up from idle
        self._failing_since = 0.0
        self._failing_logged = 0.0
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
        size = self._queue_bytes + len(line)
        if size > self.max_queue_bytes or len(q) >= self.queue_size:
            return self._offer_full(line)
        q.append(line)
        self._queue_bytes = size
        self._items.set()
        return True

    def _offer_full(self, line: bytes) -> bool:
        """`offer` when a bound is reached (a line longer than the byte bound is taken when alone)."""
        q = self._queue
        n = len(line)
        if q and self.overflow == "block":
            return False
        dropped = 0
        while q and (len(q) >= self.queue_size or self._queue_bytes + n > self.max_queue_bytes):
            self._queue_bytes -= len(q.popleft())
            dropped += 1
        self.stats.dropped["overflow"] += dropped
        q.append(line)
        self._queue_bytes += n
        self._items.set()
        return True

    def _full(self, n: int) -> bool:
        q = self._queue
        return len(q) >= self.queue_size or (bool(q) and self._queue_bytes + n > self.max_queue_bytes)

    async def put(self, line: bytes) -> None:
        """Queue a line, waiting for space when the policy is `block`."""
        if self.offer(line):
            return
        self.stats.blocked += 1
        n = len(line)
        while self._full(n):
            self._space.clear()
            await self._space.wait()
        self._queue.append(line)
        self._queue_bytes += n
        self._items.set()

    @property
    def depth(self) -> int:
        """Lines queued plus lines held for retry."""
        return len(self._queue) + len(self._pending)

    @property
    def depth_bytes(self) -> int:
        """Bytes of the lines queued plus those held for retry (the batch being written included)."""
        return self._queue_bytes + self._pending_bytes

    def stalled_seconds(self, now: float | None = None) -> float:
        """Seconds lines have waited with no write call returning (0 while nothing waits)."""
        if not self.depth:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - self._progress_at)

    # -- lifecycle -----------------------------------------------------------------------------

    def request_reopen(self) -> None:
        self._reopen = True
        self._items.set()

    async def start(self) -> None:
        await self.sink.open()
        self._task = asyncio.create_task(self._run(), name=f"sink:{self.name}")

    async def close(self, grace: float | None = None, *, close_timeout: float = CLOSE_TIMEOUT) -> None:
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
                await asyncio.gather(self._task, return_exceptions=True)
                lost = self.abandon()
                log.error("sink.drain_timeout", sink=self.name, lost_records=lost)
        try:
            async with asyncio.timeout(close_timeout):
                await self._flush_settled()  # an interval flush still in flight finishes first
                try:
                    await self.sink.flush()
                except OSError as err:
                    log.error(
                        "sink.close_flush_failed",
                        sink=self.name,
                        error=describe_error(err, errno_name=True),
                    )
                await self.sink.close()
        except TimeoutError:
            log.error("sink.close_timeout", sink=self.name, timeout_seconds=close_timeout)
            if self._flush_task is not None:
                self._flush_task.cancel()  # its thread may still block; the task must not outlive us

    def abandon(self) -> int:
        """Give up on everything not yet written (shutdown): count it as dropped, return how many."""
        lost = self.depth
        self.stats.dropped["shutdown"] += lost
        self._queue.clear()
        self._pending.clear()
        self._queue_bytes = self._pending_bytes = 0
        return lost

    async def wait_idle(self) -> None:
        """Until everything queued so far has been written (tests, `flush` on demand)."""
        while self.depth:
            self._idle.clear()
            await self._idle.wait()

    # -- writer task ---------------------------------------------------------------------------

    @property
    def queued_bytes(self) -> int:
        """Bytes of the lines queued (not yet taken into a batch / the retry buffer)."""
        return self._queue_bytes

    def queued_lines(self) -> list[bytes]:
        """A copy of the lines queued, oldest first (not those already taken into the retry buffer)."""
        return list(self._queue)

    def take_batch(self) -> list[bytes]:
        """Move queued lines into the retry buffer (bounded) and return the next batch."""
        q, pend = self._queue, self._pending
        if (
            not pend
            and not self.failing
            and len(q) <= self.max_batch
            and self._queue_bytes <= self.max_batch_bytes
        ):
            # The common case: the whole queue is the next batch. Swap the two deques (O(1)) instead
            # of moving line by line; `offer()` reads `self._queue` afresh on every call.
            self._queue, self._pending = pend, q
            self._queue_bytes, self._pending_bytes = 0, self._queue_bytes
            self._space.set()
            return list(q)
        dropped = 0
        while q and (
            self.failing or (len(pend) < self.max_batch and self._pending_bytes < self.max_batch_bytes)
        ):
            line = q.popleft()
            n = len(line)
            self._queue_bytes -= n
            pend.append(line)
            self._pending_bytes += n
            while len(pend) > self.max_pending or (
                self._pending_bytes > self.max_buffered_bytes and len(pend) > 1
            ):
                self._pending_bytes -= len(pend.popleft())
                dropped += 1
        self.stats.dropped["sink_error"] += dropped
        if len(q) < self.queue_size:
            self._space.set()
        batch: list[bytes] = []
        size = 0
        for line in pend:
            if batch and (len(batch) >= self.max_batch or size + len(line) > self.max_batch_bytes):
                break
            batch.append(line)
            size += len(line)
        return batch

    def _written(self, n: int) -> None:
        """The first `n` lines of the retry buffer were stored."""
        pend = self._pending
        n = min(n, len(pend))  # abandon() may have emptied it meanwhile
        if n == len(pend):
            pend.clear()
            self._pending_bytes = 0
        else:
            for _ in range(n):
                self._pending_bytes -= len(pend.popleft())
        self.stats.written += n
        if n:
            self._progress_at = time.monotonic()

    async def _run(self) -> None:
        # equal jitter: a failing sink is retried at most every retry_max / 2 seconds at the cap
        backoff = Backoff(self.retry_initial, self.retry_max, floor=0.5)
        failures = 0
        while True:
            if self._reopen:
                self._reopen = False
                try:
                    await self._sync_if_dirty(force=True)
                    await self.sink.reopen()
                    log.info("sink.reopened", sink=self.name)
                except OSError as err:
                    log.error(
                        "sink.reopen_failed", sink=self.name, error=describe_error(err, errno_name=True)
                    )
            batch = self.take_batch()
            if not batch:
                self._idle.set()
                if self._closing.is_set() and not self._queue:
                    return
                await self._idle_wait()
                self._progress_at = time.monotonic()  # lines that arrive now start a fresh wait
                continue
            try:
                await self.sink.write(batch)
            except (OSError, PartialWrite) as err:
                self._progress_at = time.monotonic()  # not hung: failing (kept and retried)
                self._written(err.done if isinstance(err, PartialWrite) else 0)
                self.stats.errors += 1
                self._log_failure(err)
                failures += 1
                await self._backoff(backoff.delay(failures))
                continue
            self._written(len(batch))
            if self._dirty_since is None:
                self._dirty_since = time.monotonic()
            if self.failing:
                self.failing = False
                failures = 0
                log.warning(
                    "sink.recovered",
                    sink=self.name,
                    dropped_while_failing=self.stats.dropped["sink_error"],
                    failed_seconds=round(time.monotonic() - self._failing_since, 3),
                )
            await self._sync_if_dirty()

    def _log_failure(self, err: BaseException) -> None:
        """The first failure at once, then at most one line per `failing_log_interval` while failing."""
        now = time.monotonic()
        cause = err.cause if isinstance(err, PartialWrite) else err
        if not self.failing:
            self.failing = True
            self._failing_since = self._failing_logged = now
            log.error(
                "sink.write_failed",
                sink=self.name,
                error=describe_error(cause, errno_name=True),
                buffered=self.depth,
                buffered_bytes=self.depth_bytes,
                max_buffered=self.max_pending,
                max_buffered_bytes=self.max_buffered_bytes,
            )
        elif now - self._failing_logged >= self.failing_log_interval:
            self._failing_logged = now
            log.error(
                "sink.still_failing",
                sink=self.name,
                error=describe_error(cause, errno_name=True),
                failing_seconds=round(now - self._failing_since, 3),
                written=self.stats.written,
                buffered=self.depth,
                buffered_bytes=self.depth_bytes,
                dropped=self.stats.dropped["sink_error"],
            )

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
                log.error("sink.sync_failed", sink=self.name, error=describe_error(err, errno_name=True))
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
            log.error("sink.sync_failed", sink=self.name, error=describe_error(err, errno_name=True))

    def _flush_done(self, task: asyncio.Task[None]) -> None:
        if self._flush_task is task:
            self._flush_task = None
        if not task.cancelled() and (err := task.exception()) is not None:
            log.error("sink.sync_crashed", sink=self.name, error=describe_error(err, errno_name=True))
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
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            self.take_batch()
            if self._closing.is_set():
                left = min(left, 0.05)  # shutting down: retry promptly within the grace
            self._items.clear()
            try:
                async with asyncio.timeout(left):
                    await self._items.wait()
            except TimeoutError:
                break
        self.take_batch()
