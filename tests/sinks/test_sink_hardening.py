"""Issue 10 items 3 and 5 (sink part): crash-safe file sink, progress on a nearly full disk, bounded
failure logging, queues bounded in bytes.

The disk-full shape (a write that stores part of its data, then ENOSPC) comes from an injected writer:
no peer produces it on demand without a root-mounted tmpfs.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import time
from pathlib import Path

import pytest
import structlog
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumer.observability import DaemonCollector, build_registry
from consumer.relay.stats import RelayStats
from consumer.sinks import FileSink, SinkWorker

from .test_sinks import GatedSink, lines, read_seqs


async def test_torn_tail_is_repaired_on_open_and_logged(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    fragment = b'{"seq": 2, "pad": "xx'  # a SIGKILL in the middle of a write
    path.write_bytes(b"".join(line + b"\n" for line in lines(2)) + fragment)
    w = SinkWorker(FileSink(path))
    with structlog.testing.capture_logs() as logs:
        await w.start()
        for line in lines(3, start=2):
            w.offer(line)
        await w.close(grace=5)
    assert read_seqs(path) == [0, 1, 2, 3, 4]  # every line parses: the fragment is gone
    repaired = [e for e in logs if e["event"] == "sink.torn_tail_repaired"]
    assert len(repaired) == 1
    assert repaired[0]["bytes_dropped"] == len(fragment)


async def test_torn_tail_without_any_newline_and_longer_than_a_read_chunk(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"x" * 200_000)  # one torn line, larger than the backwards-read chunk
    w = SinkWorker(FileSink(path))
    await w.start()
    w.offer(lines(1)[0])
    await w.close(grace=5)
    assert read_seqs(path) == [0]


async def test_a_complete_file_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines(3)))
    with structlog.testing.capture_logs() as logs:
        w = SinkWorker(FileSink(path))
        await w.start()
        await w.close(grace=5)
    assert read_seqs(path) == [0, 1, 2]
    assert not any(e["event"] == "sink.torn_tail_repaired" for e in logs)


async def test_deleted_file_is_detected_and_reopened(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    w = SinkWorker(FileSink(path))
    await w.start()
    with structlog.testing.capture_logs() as logs:
        for line in lines(10):
            w.offer(line)
        await w.wait_idle()
        path.unlink()  # an operator (or a bad cleanup job) deletes the live file
        for line in lines(10, start=10):
            w.offer(line)
        await w.wait_idle()
    await w.close(grace=5)
    assert read_seqs(path) == list(range(10, 20))  # nothing went into the unlinked inode
    reopened = [e for e in logs if e["event"] == "sink.file_replaced"]
    assert [e["reason"] for e in reopened] == ["unlinked"]


async def test_replaced_file_is_detected_and_reopened(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    w = SinkWorker(FileSink(path))
    await w.start()
    for line in lines(5):
        w.offer(line)
    await w.wait_idle()
    path.rename(tmp_path / "old.jsonl")  # logrotate without the SIGHUP ...
    path.write_bytes(b"")  # ... and `create`: another inode at PATH
    with structlog.testing.capture_logs() as logs:
        for line in lines(5, start=5):
            w.offer(line)
        await w.wait_idle()
    await w.close(grace=5)
    assert read_seqs(tmp_path / "old.jsonl") == list(range(5))
    assert read_seqs(path) == list(range(5, 10))
    assert [e["reason"] for e in logs if e["event"] == "sink.file_replaced"] == ["replaced"]


async def test_vanished_directory_is_recreated_when_allowed(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "out.jsonl"
    w = SinkWorker(FileSink(path, create_dirs=True))
    await w.start()  # creates the missing directory at start too
    for line in lines(5):
        w.offer(line)
    await w.wait_idle()
    shutil.rmtree(path.parent)
    with structlog.testing.capture_logs() as logs:
        for line in lines(5, start=5):
            w.offer(line)
        await w.wait_idle()
    await w.close(grace=5)
    assert read_seqs(path) == list(range(5, 10))
    events = [e["event"] for e in logs]
    assert "sink.file_replaced" in events
    assert "sink.dir_created" in events
    assert [e["reason"] for e in logs if "reason" in e] == ["directory_missing"]


async def test_vanished_directory_not_recreated_keeps_records_until_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "out.jsonl"
    path.parent.mkdir()
    w = SinkWorker(FileSink(path), retry_initial=0.01, retry_max=0.05)
    await w.start()
    shutil.rmtree(path.parent)
    with structlog.testing.capture_logs() as logs:
        for line in lines(5):
            w.offer(line)
        async with asyncio.timeout(10):
            while not w.failing:
                await asyncio.sleep(0.01)  # the writer task's first attempt fails with ENOENT
        assert w.depth == 5  # kept, not lost
        path.parent.mkdir()  # the operator restores the directory
        async with asyncio.timeout(10):
            await w.wait_idle()
    await w.close(grace=5)
    assert read_seqs(path) == list(range(5))
    failed = [e for e in logs if e["event"] == "sink.write_failed"]
    assert failed and "ENOENT" in failed[0]["error"]


class ShortDisk:
    """A disk with `free` bytes left: a write stores what fits, then fails with ENOSPC."""

    def __init__(self, free: int) -> None:
        self.free = free

    def __call__(self, fd: int, data: memoryview) -> int:
        if self.free <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = os.write(fd, data[: self.free])
        self.free -= n
        return n


async def test_short_space_writes_the_whole_lines_that_fit(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    batch = lines(100, pad=200)
    size = len(batch[0]) + 1
    disk = ShortDisk(free=int(size * 30.5))  # room for 30 lines and half of the 31st
    w = SinkWorker(FileSink(path, writer=disk), retry_initial=0.01, retry_max=0.02)
    await w.start()
    for line in batch:
        w.offer(line)
    async with asyncio.timeout(10):
        while w.stats.written < 30:
            await asyncio.sleep(0.01)  # progress while the disk is still full
    assert read_seqs(path) == list(range(30))  # whole lines only: the half line was cut away
    assert w.failing
    disk.free = 10**9  # space returns
    async with asyncio.timeout(10):
        await w.wait_idle()
    await w.close(grace=5)
    assert read_seqs(path) == list(range(100))  # the rest once, in order
    assert w.stats.written == 100


async def test_failing_sink_keeps_logging_at_a_bounded_rate(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    interval = 0.1
    w = SinkWorker(
        FileSink(path, writer=ShortDisk(free=0)),
        retry_initial=0.005,
        retry_max=0.01,
        failing_log_interval=interval,
    )
    await w.start()
    with structlog.testing.capture_logs() as logs:
        started = time.monotonic()
        w.offer(lines(1)[0])
        async with asyncio.timeout(10):
            while sum(e["event"] == "sink.still_failing" for e in logs) < 3:
                await asyncio.sleep(0.01)
        elapsed = time.monotonic() - started
    await w.close(grace=0.1)
    still = [e for e in logs if e["event"] == "sink.still_failing"]
    assert w.stats.errors > 2 * len(still)  # many failed attempts, far fewer lines
    assert len(still) <= elapsed / interval + 1
    assert all(e["buffered"] == 1 and "ENOSPC" in e["error"] for e in still)
    assert sum(e["event"] == "sink.write_failed" for e in logs) == 1


async def test_queue_is_bounded_in_bytes_drop_oldest() -> None:
    sink = GatedSink()
    w = SinkWorker(sink, queue_size=10_000, overflow="drop_oldest", max_queue_bytes=10_000, max_batch=1)
    await w.start()
    w.offer(b"first")
    await sink.entered.wait()  # in flight; the queue is empty
    big = [bytes([65 + i % 26]) * 1000 for i in range(100)]
    for line in big:
        assert w.offer(line)
    assert w.queued_bytes <= 10_000
    assert w.depth_bytes <= 10_000 + len(b"first")
    assert w.stats.dropped["overflow"] == 90
    sink.gate.set()
    await w.close(grace=5)
    assert sink.written == [b"first", *big[90:]]


async def test_queue_is_bounded_in_bytes_block() -> None:
    sink = GatedSink()
    w = SinkWorker(sink, queue_size=10_000, overflow="block", max_queue_bytes=5_000, max_batch=1)
    await w.start()
    w.offer(b"x")
    await sink.entered.wait()
    for _ in range(5):
        assert w.offer(b"y" * 1000)
    assert not w.offer(b"z" * 1000)  # 5,000 bytes queued: the producer must wait
    producer = asyncio.create_task(w.put(b"z" * 1000))
    await asyncio.sleep(0)
    assert not producer.done()
    sink.gate.set()
    async with asyncio.timeout(5):
        await producer
    await w.close(grace=5)
    assert sink.written == [b"x", *[b"y" * 1000] * 5, b"z" * 1000]


async def test_a_line_larger_than_the_byte_bound_still_goes_through() -> None:
    sink = GatedSink()
    sink.gate.set()
    w = SinkWorker(sink, max_queue_bytes=100, max_batch_bytes=100)
    await w.start()
    assert w.offer(b"q" * 1000)
    await w.close(grace=5)
    assert sink.written == [b"q" * 1000]


async def test_retry_buffer_is_bounded_in_bytes(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    w = SinkWorker(
        FileSink(path, writer=ShortDisk(free=0)),
        max_buffered_bytes=20_000,
        max_batch_bytes=2_000,
        retry_initial=0.01,
    )
    await w.start()
    batch = lines(200, pad=1000)  # ~1 KB each, 200 KB in all
    for line in batch:
        await w.put(line)
    async with asyncio.timeout(5):
        while w.stats.dropped["sink_error"] + w.depth < 200 or w.queued_lines():
            await asyncio.sleep(0.01)
    assert w.depth_bytes <= 20_000
    assert w.stats.dropped["sink_error"] + w.depth == 200
    await w.close(grace=0.1)


def test_batches_are_bounded_in_bytes() -> None:
    w = SinkWorker(GatedSink(), max_batch=4096, max_batch_bytes=10_000)
    for _ in range(50):
        w.offer(b"b" * 1000)
    batch = w.take_batch()
    assert len(batch) == 10
    assert w.depth == 50  # taken into the retry buffer, not yet written


async def test_queue_bytes_in_metrics() -> None:
    w = SinkWorker(GatedSink())
    for _ in range(3):
        w.offer(b"m" * 100)
    text = generate_latest(build_registry(DaemonCollector(RelayStats(), [w]))).decode()
    samples = {
        (s.name, s.labels.get("sink")): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert samples[("event_consumer_sink_queue_bytes", "gated")] == 300.0


@pytest.mark.parametrize("key", ["max_queue_bytes", "max_buffered_bytes"])
def test_byte_bounds_from_config(key: str, tmp_path: Path) -> None:
    from consumer.config import load_config
    from consumer.errors import ConfigError
    from consumer.sinks import build_worker

    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(f'[auth]\ngrant = "none"\n[hub]\nurl = "https://h/x"\n[[sinks]]\n{key} = 12345\n')
    worker = build_worker(load_config(cfg_path).sinks[0])
    assert getattr(worker, key) == 12345
    cfg_path.write_text(f'[auth]\ngrant = "none"\n[hub]\nurl = "https://h/x"\n[[sinks]]\n{key} = 0\n')
    with pytest.raises(ConfigError) as err:
        load_config(cfg_path)
    assert f"sinks.0.{key}" in str(err.value) and "c.toml" in str(err.value)


async def test_unreadable_file_is_opened_without_the_tail_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def write_only(path: str, flags: int, *args: int) -> int:  # as for a mode 0200 file (root reads all)
        if flags & (os.O_WRONLY | os.O_RDWR) == 0:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", write_only)
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"seq": 0}\n')
    with structlog.testing.capture_logs() as logs:
        w = SinkWorker(FileSink(path))
        await w.start()  # not a configuration error: the sink appends as before
        w.offer(lines(1, start=1)[0])
        await w.close(grace=5)
    monkeypatch.undo()
    assert read_seqs(path) == [0, 1]
    assert any(e["event"] == "sink.torn_tail_unreadable" for e in logs)
