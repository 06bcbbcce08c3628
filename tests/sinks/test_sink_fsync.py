"""The file sink's interval fsync runs beside writes, never races an fd close, and loses no accounting.

Every test synchronises on gates (threading.Event in the injected fsync, which runs in a worker thread)
and on counted events; nothing waits for time to pass.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from consumer.sinks import FileSink, SinkWorker

GATE_TIMEOUT = 10.0  # a gate never released fails the test instead of hanging a thread


def lines(n: int, start: int = 0) -> list[bytes]:
    return [json.dumps({"seq": i, "pad": "x" * 40}).encode() for i in range(start, start + n)]


def read_seqs(*paths: Path) -> list[int]:
    out: list[int] = []
    for p in paths:
        data = p.read_bytes()
        assert data == b"" or data.endswith(b"\n"), f"{p} ends with a torn line"
        out.extend(json.loads(line)["seq"] for line in data.splitlines())
    return out


async def wait_thread_event(ev: threading.Event) -> None:
    assert await asyncio.to_thread(ev.wait, GATE_TIMEOUT), "gate not reached"


class GatedFsync:
    """An fsync that blocks its first `gated` calls until `release` is set; logs into `events`."""

    def __init__(self, events: list[tuple[str, int]], gated: int = 1) -> None:
        self.events = events
        self.gated = gated
        self.calls: list[int] = []  # fds
        self.entered = threading.Event()
        self.release = threading.Event()
        self.second = threading.Event()

    def __call__(self, fd: int) -> None:
        os.fstat(fd)  # EBADF if the descriptor was closed under us
        self.calls.append(fd)
        n = len(self.calls)
        self.events.append(("fsync-start", fd))
        if n >= 2:
            self.second.set()
        if n <= self.gated:
            self.entered.set()
            if not self.release.wait(GATE_TIMEOUT):
                raise AssertionError("fsync gate never released")
        os.fsync(fd)
        self.events.append(("fsync-end", fd))


class SpyLock:
    """Wraps the sink's fd lock and counts acquisition attempts (so a test knows who is waiting)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.cond = threading.Condition()
        self.attempts = 0

    def __enter__(self) -> bool:
        with self.cond:
            self.attempts += 1
            self.cond.notify_all()
        return bool(self.inner.__enter__())

    def __exit__(self, *exc: object) -> None:
        self.inner.__exit__(*exc)

    async def wait_attempts(self, n: int) -> None:
        def wait() -> bool:
            with self.cond:
                return self.cond.wait_for(lambda: self.attempts >= n, GATE_TIMEOUT)

        assert await asyncio.to_thread(wait), f"only {self.attempts} lock attempts"


class CountingSink(FileSink):
    """Counts `flush()` calls and how many ran at once."""

    flushes = 0
    in_flight = 0
    max_in_flight = 0

    async def flush(self) -> None:
        self.flushes += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await super().flush()
        finally:
            self.in_flight -= 1


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """fsync start/end and every os.close, in the order they happened."""
    log: list[tuple[str, int]] = []
    real_close = os.close

    def close(fd: int) -> None:
        log.append(("close", fd))
        real_close(fd)

    monkeypatch.setattr(os, "close", close)
    return log


async def test_batches_keep_landing_while_an_interval_fsync_is_blocked(
    tmp_path: Path, events: list[tuple[str, int]]
) -> None:
    path = tmp_path / "out.jsonl"
    fsync = GatedFsync(events)
    sink = FileSink(path, fsync="interval", fsync_interval=0.0, syncer=fsync)
    w = SinkWorker(sink)
    await w.start()
    for line in lines(10):
        w.offer(line)
    await wait_thread_event(fsync.entered)  # the interval fsync is in flight and stuck
    for batch in range(5):  # several separate batches, each written while the fsync waits
        for line in lines(10, start=10 + 10 * batch):
            w.offer(line)
        async with asyncio.timeout(GATE_TIMEOUT):
            await w.wait_idle()
    assert read_seqs(path) == list(range(60))
    assert len(fsync.calls) == 1  # one flush in flight at most: no second fsync queued up
    assert sink.synced_generation < sink.written_generation
    fsync.release.set()
    await w.close(grace=5)
    assert sink.synced_generation == sink.written_generation
    assert read_seqs(path) == list(range(60))


async def test_at_most_one_interval_flush_in_flight(tmp_path: Path, events: list[tuple[str, int]]) -> None:
    fsync = GatedFsync(events)
    sink = CountingSink(tmp_path / "o.jsonl", fsync="interval", fsync_interval=0.0, syncer=fsync)
    w = SinkWorker(sink, max_batch=3)
    await w.start()
    w.offer(b"{}")
    await wait_thread_event(fsync.entered)
    for line in lines(30):  # ten batches of three, each due for a flush (interval 0)
        w.offer(line)
    async with asyncio.timeout(GATE_TIMEOUT):
        await w.wait_idle()
    assert sink.flushes == 1
    fsync.release.set()
    await w.close(grace=5)
    assert sink.max_in_flight == 1
    assert sink.synced_generation == sink.written_generation


async def test_write_during_fsync_is_synced_by_the_next_flush_not_the_running_one(
    tmp_path: Path, events: list[tuple[str, int]]
) -> None:
    fsync = GatedFsync(events)
    sink = FileSink(tmp_path / "o.jsonl", fsync="interval", syncer=fsync)
    await sink.open()
    await sink.write(lines(2))
    assert (sink.written_generation, sink.synced_generation) == (1, 0)
    flush = asyncio.create_task(sink.flush())
    await wait_thread_event(fsync.entered)
    await sink.write(lines(2, start=2))  # completes while the fsync is blocked
    assert (sink.written_generation, sink.synced_generation) == (2, 0)
    fsync.release.set()
    await flush
    assert sink.synced_generation == 1  # the running fsync started at generation 1: only that counts
    await sink.flush()
    assert (len(fsync.calls), sink.synced_generation) == (2, 2)
    await sink.flush()  # nothing new: no fsync
    assert len(fsync.calls) == 2
    await sink.write(lines(1, start=4))
    await sink.close()  # close syncs what is left
    assert (len(fsync.calls), sink.written_generation, sink.synced_generation) == (3, 3, 3)


async def test_worker_syncs_a_write_from_during_the_fsync_at_the_next_interval(
    tmp_path: Path, events: list[tuple[str, int]]
) -> None:
    fsync = GatedFsync(events)
    sink = FileSink(tmp_path / "o.jsonl", fsync="interval", fsync_interval=0.001, syncer=fsync)
    w = SinkWorker(sink)
    await w.start()
    w.offer(b'{"a":1}')
    await wait_thread_event(fsync.entered)
    w.offer(b'{"a":2}')
    async with asyncio.timeout(GATE_TIMEOUT):
        await w.wait_idle()
    written = sink.written_generation
    fsync.release.set()
    await wait_thread_event(fsync.second)  # the worker's own next interval flush, before any close
    await w.close(grace=5)
    assert sink.synced_generation == sink.written_generation == written == 2


@pytest.mark.parametrize("op", ["rotate", "reopen", "close"])
async def test_fd_close_waits_for_the_fsync_in_flight(
    tmp_path: Path, events: list[tuple[str, int]], op: str
) -> None:
    path = tmp_path / "out.jsonl"
    fsync = GatedFsync(events)
    spy = SpyLock(threading.Lock())
    sink = FileSink(path, fsync="interval", rotate_bytes=300, keep=3, syncer=fsync, fd_lock=spy)
    await sink.open()
    await sink.write(lines(4))  # 248 bytes: the next line takes it past 300, so it rotates first
    assert path.stat().st_size == 248
    before = spy.attempts
    flush = asyncio.create_task(sink.flush())
    await wait_thread_event(fsync.entered)
    (fd,) = fsync.calls
    ino = os.fstat(fd).st_ino
    if op == "rotate":
        task = asyncio.create_task(sink.write(lines(3, start=4)))
    elif op == "reopen":
        task = asyncio.create_task(sink.reopen())
    else:
        task = asyncio.create_task(sink.close())
    await spy.wait_attempts(before + 2)  # the flush holds the lock; the closing call is waiting for it
    assert not task.done()
    assert ("close", fd) not in events
    assert os.fstat(fd).st_ino == ino == path.stat().st_ino  # still open, not renamed away
    fsync.release.set()
    async with asyncio.timeout(GATE_TIMEOUT):
        await flush
        await task
    # The fd's fsync finished before the fd was closed, and no fsync ever ran on a closed fd.
    mine = [e for e in events if e[1] == fd]
    assert mine[:3] == [("fsync-start", fd), ("fsync-end", fd), ("close", fd)]
    assert sink.synced_generation == 1
    if op == "rotate":
        assert read_seqs(Path(f"{path}.1")) == [0, 1, 2, 3]
        assert read_seqs(path) == [4, 5, 6]
    await sink.close()
    assert sink.synced_generation == sink.written_generation


async def test_worker_close_waits_for_the_interval_fsync_then_syncs_the_rest(
    tmp_path: Path, events: list[tuple[str, int]]
) -> None:
    path = tmp_path / "out.jsonl"
    fsync = GatedFsync(events)
    sink = CountingSink(path, fsync="interval", fsync_interval=0.0, syncer=fsync)
    w = SinkWorker(sink)
    await w.start()
    w.offer(b'{"seq":0}')
    await wait_thread_event(fsync.entered)
    (fd,) = fsync.calls
    w.offer(b'{"seq":1}')
    async with asyncio.timeout(GATE_TIMEOUT):
        await w.wait_idle()
    closing = asyncio.create_task(w.close(grace=5))
    fsync.release.set()
    async with asyncio.timeout(GATE_TIMEOUT):
        await closing
    assert events == [
        ("fsync-start", fd),
        ("fsync-end", fd),
        ("fsync-start", fd),  # close's own flush: the line written during the first fsync
        ("fsync-end", fd),
        ("close", fd),
    ]
    assert sink.max_in_flight == 1  # close's flush did not start beside the interval one
    assert sink.synced_generation == sink.written_generation == 2
    assert read_seqs(path) == [0, 1]


async def test_reopen_waits_for_the_interval_fsync_and_syncs_the_old_file(
    tmp_path: Path, events: list[tuple[str, int]]
) -> None:
    path = tmp_path / "out.jsonl"
    fsync = GatedFsync(events)
    sink = CountingSink(path, fsync="interval", fsync_interval=0.0, syncer=fsync)
    w = SinkWorker(sink)
    await w.start()
    w.offer(b'{"seq":0}')
    await wait_thread_event(fsync.entered)
    (fd,) = fsync.calls
    w.offer(b'{"seq":1}')
    async with asyncio.timeout(GATE_TIMEOUT):
        await w.wait_idle()
    path.rename(tmp_path / "old.jsonl")  # logrotate, then SIGHUP
    w.request_reopen()
    w.offer(b'{"seq":2}')
    fsync.release.set()
    async with asyncio.timeout(GATE_TIMEOUT):
        await w.wait_idle()
    await w.close(grace=5)
    old = [e for e in events if e[1] == fd]  # the new file may get the same fd number: a prefix
    assert old[:5] == [
        ("fsync-start", fd),
        ("fsync-end", fd),
        ("fsync-start", fd),  # the forced sync before the reopen covers seq 1
        ("fsync-end", fd),
        ("close", fd),
    ]
    assert sink.max_in_flight == 1  # the forced sync waited for the interval one
    assert read_seqs(tmp_path / "old.jsonl") == [0, 1]
    assert read_seqs(path) == [2]
    assert sink.synced_generation == sink.written_generation


async def test_fsync_always_still_syncs_each_batch_before_write_returns(
    tmp_path: Path, events: list[tuple[str, int]]
) -> None:
    fsync = GatedFsync(events, gated=0)
    sink = FileSink(tmp_path / "o.jsonl", fsync="always", syncer=fsync)
    assert sink.sync_interval is None  # the worker never interval-flushes it
    await sink.open()
    for i in range(3):
        await sink.write(lines(2, start=2 * i))
        assert len(fsync.calls) == i + 1
        assert sink.synced_generation == sink.written_generation == i + 1
    await sink.close()
    assert len(fsync.calls) == 3  # nothing left for close to sync
