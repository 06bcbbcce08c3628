from __future__ import annotations

import asyncio
import errno
import io
import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest
import structlog

from consumer.redmist.view import human_line
from consumer.sinks import FileSink, SinkWorker, StdoutSink
from consumer.sinks.stdout import plain_line


def lines(n: int, start: int = 0, pad: int = 20) -> list[bytes]:
    return [json.dumps({"seq": i, "pad": "x" * pad}).encode() for i in range(start, start + n)]


def read_seqs(*paths: Path) -> list[int]:
    out: list[int] = []
    for p in paths:
        data = p.read_bytes()
        assert data == b"" or data.endswith(b"\n"), f"{p} ends with a torn line"
        out.extend(json.loads(line)["seq"] for line in data.splitlines())
    return out


async def test_file_sink_writes_whole_lines_with_mode_0640(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    old = os.umask(0o077)  # the sink must set 0640 whatever the umask
    try:
        w = SinkWorker(FileSink(path, fsync="always"))
        await w.start()
    finally:
        os.umask(old)
    for line in lines(1000):
        assert w.offer(line)
    await w.close(grace=5)
    assert read_seqs(path) == list(range(1000))
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert w.stats.written == 1000


async def test_size_rotation_keeps_count_and_loses_nothing_recent(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    w = SinkWorker(FileSink(path, rotate_bytes=2000, keep=3, fsync="never"), max_batch=7)
    await w.start()
    for line in lines(400):
        await w.put(line)
    await w.close(grace=5)
    rotated = [Path(f"{path}.{i}") for i in (3, 2, 1)]
    assert all(p.exists() for p in rotated)
    assert not Path(f"{path}.4").exists()
    for p in [*rotated, path]:
        assert p.stat().st_size <= 2000
    seqs = read_seqs(*rotated, path)
    # The newest records form a contiguous tail ending at the last one; older files were deleted.
    assert seqs == list(range(seqs[0], 400))


async def test_daily_rotation_on_new_utc_date(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    now = [1_700_000_000.0]
    sink = FileSink(path, rotate_daily=True, clock=lambda: now[0], fsync="never")
    w = SinkWorker(sink)
    await w.start()
    for line in lines(5):
        w.offer(line)
    await w.wait_idle()
    now[0] += 86_400
    for line in lines(5, start=5):
        w.offer(line)
    await w.close(grace=5)
    assert read_seqs(Path(f"{path}.1")) == [0, 1, 2, 3, 4]
    assert read_seqs(path) == [5, 6, 7, 8, 9]


class FlakyWriter:
    """Writes `partial` bytes of the first call then raises `err` for `failures` calls."""

    def __init__(self, failures: int, err: int = errno.ENOSPC, partial: int = 0) -> None:
        self.failures = failures
        self.err = err
        self.partial = partial
        self.calls = 0

    def __call__(self, fd: int, data: memoryview) -> int:
        self.calls += 1
        if self.failures > 0:
            if self.partial and self.calls == 1:
                return os.write(fd, data[: self.partial])
            self.failures -= 1
            raise OSError(self.err, os.strerror(self.err))
        return os.write(fd, data)


async def test_enospc_keeps_records_and_retries_when_space_returns(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    writer = FlakyWriter(failures=3, partial=37)  # a torn line first, then ENOSPC
    w = SinkWorker(FileSink(path, writer=writer), retry_initial=0.01, retry_max=0.02)
    await w.start()
    with structlog.testing.capture_logs() as logs:
        for line in lines(50):
            w.offer(line)
        async with asyncio.timeout(10):
            await w.wait_idle()
    await w.close(grace=5)
    assert read_seqs(path) == list(range(50))  # everything, once, in order, no torn line
    assert w.stats.errors == 3
    assert w.stats.dropped["sink_error"] == 0
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1  # one clear error per failure streak
    assert "ENOSPC" in errors[0]["error"]
    assert any(e["event"] == "sink.recovered" for e in logs)


async def test_torn_tail_removed_even_when_truncate_fails_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.jsonl"
    real_truncate = os.ftruncate
    calls = {"n": 0}

    def flaky_truncate(fd: int, length: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.EIO, "I/O error")
        real_truncate(fd, length)

    monkeypatch.setattr(os, "ftruncate", flaky_truncate)
    writer = FlakyWriter(failures=1, err=errno.EIO, partial=11)
    w = SinkWorker(FileSink(path, writer=writer), retry_initial=0.01, retry_max=0.02)
    await w.start()
    for line in lines(3):
        w.offer(line)
    async with asyncio.timeout(10):
        await w.wait_idle()
    await w.close(grace=5)
    assert read_seqs(path) == [0, 1, 2]
    assert calls["n"] == 2  # failed once in the error path, succeeded before the retry


async def test_retry_buffer_is_bounded_and_drops_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    writer = FlakyWriter(failures=10**9)
    w = SinkWorker(
        FileSink(path, writer=writer), queue_size=10, max_pending=20, max_batch=5, retry_initial=0.01
    )
    await w.start()
    for line in lines(100):
        await w.put(line)  # never blocks for long: the worker moves lines into the bounded buffer
    async with asyncio.timeout(5):
        while w.stats.dropped["sink_error"] + w.depth < 100 or w.depth > 20:
            await asyncio.sleep(0.01)
    assert w.depth <= 20
    assert w.stats.dropped["sink_error"] >= 80
    writer.failures = 0  # space returns: the newest records kept are written
    async with asyncio.timeout(10):
        await w.wait_idle()
    await w.close(grace=5)
    seqs = read_seqs(path)
    assert seqs == list(range(100 - len(seqs), 100))
    assert len(seqs) + w.stats.dropped["sink_error"] == 100


async def test_sighup_reopen_after_logrotate_rename_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    w = SinkWorker(FileSink(path, fsync="interval", fsync_interval=0.05))
    await w.start()
    rotated = tmp_path / "out.jsonl.1"
    for i, line in enumerate(lines(3000)):
        w.offer(line)
        if i == 1500:
            await w.wait_idle()  # the first 1501 lines are in the old file
            path.rename(rotated)  # logrotate: rename, then signal
            w.request_reopen()
    await w.close(grace=5)
    old, new = read_seqs(rotated), read_seqs(path)
    assert old and new
    assert old + new == list(range(3000))


class GatedSink:
    """A sink whose writes wait on a gate: lets tests fill the queue deterministically."""

    sync_interval: float | None = None

    def __init__(self) -> None:
        self.name = "gated"
        self.gate = asyncio.Event()
        self.written: list[bytes] = []
        self.entered = asyncio.Event()

    async def open(self) -> None: ...

    async def write(self, batch: Sequence[bytes]) -> None:
        self.entered.set()
        await self.gate.wait()
        self.written.extend(batch)

    async def flush(self) -> None: ...

    async def reopen(self) -> None: ...

    async def close(self) -> None: ...


async def test_overflow_drop_oldest_is_counted() -> None:
    sink = GatedSink()
    w = SinkWorker(sink, queue_size=10, overflow="drop_oldest", max_batch=1)
    await w.start()
    w.offer(b"0")
    await sink.entered.wait()  # line 0 is in flight, the queue is empty
    for i in range(1, 31):
        assert w.offer(str(i).encode())
    assert w.stats.dropped["overflow"] == 20
    sink.gate.set()
    await w.close(grace=5)
    assert sink.written == [str(i).encode() for i in [0, *range(21, 31)]]


async def test_overflow_block_makes_producer_wait_without_loss() -> None:
    sink = GatedSink()
    w = SinkWorker(sink, queue_size=5, overflow="block", max_batch=2)
    await w.start()
    w.offer(b"0")
    await sink.entered.wait()
    for i in range(1, 6):
        assert w.offer(str(i).encode())
    assert not w.offer(b"6")  # full: the hot path learns it must await put()
    producer = asyncio.create_task(w.put(b"6"))
    await asyncio.sleep(0)
    assert not producer.done()
    assert w.stats.blocked == 1
    sink.gate.set()
    async with asyncio.timeout(5):
        await producer
    await w.close(grace=5)
    assert sink.written == [str(i).encode() for i in range(7)]
    assert w.stats.dropped["overflow"] == 0


async def test_close_timeout_counts_lost_records() -> None:
    sink = GatedSink()  # never opens its gate
    w = SinkWorker(sink, queue_size=100)
    await w.start()
    for i in range(10):
        w.offer(str(i).encode())
    await w.close(grace=0.2)
    assert w.stats.dropped["shutdown"] == 10


async def test_fsync_always_syncs_every_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    sink = FileSink(tmp_path / "o.jsonl", fsync="always")
    await sink.open()
    await sink.write(lines(2))
    await sink.write(lines(2))
    assert len(synced) == 2
    await sink.close()


async def test_stdout_sink_json_lines_and_pretty_view() -> None:
    buf = io.BytesIO()
    sink = StdoutSink(stream=buf)
    await sink.write([b'{"a":1}', b'{"a":2}'])
    assert buf.getvalue() == b'{"a":1}\n{"a":2}\n'
    rec = {
        "received_at": "2026-08-22T19:43:12.402117Z",
        "seq": 1,
        "hub": "redmist",
        "kind": "invocation",
        "target": "ReceiveCarPatches",
        "event_id": 1187,
        "arguments": [[{"number": "42", "overallPosition": 3}, {"number": "7X", "isInPit": True}]],
    }
    text = human_line(json.dumps(rec).encode())
    assert text == "19:43:12.402 ReceiveCarPatches ev=1187 #42 P3, #7X pit"
    assert human_line(b"not json") == "not json"


@pytest.mark.parametrize("policy", ["always", "interval"])
async def test_sink_on_dev_null_works_and_closes_cleanly(policy: str) -> None:
    # fsync(/dev/null) fails with EINVAL; the sink must keep writing and close without an error.
    sink = FileSink(Path(os.devnull), fsync=policy)  # type: ignore[arg-type]
    await sink.open()
    await sink.write(lines(3))
    await sink.flush()
    await sink.write(lines(2, start=3))
    await sink.close()


async def test_close_is_bounded_when_the_sinks_flush_hangs() -> None:
    class HangingFlush:
        name = "hang"
        sync_interval: float | None = None

        def __init__(self) -> None:
            self.lines: list[bytes] = []
            self.flush_started = asyncio.Event()

        async def open(self) -> None:
            return None

        async def write(self, batch: Sequence[bytes]) -> None:
            self.lines.extend(batch)

        async def flush(self) -> None:
            self.flush_started.set()
            await asyncio.Event().wait()  # an fsync on a dead NFS mount, say

        async def reopen(self) -> None:
            return None

        async def close(self) -> None:
            return None

    sink = HangingFlush()
    worker = SinkWorker(sink, queue_size=10)
    await worker.start()
    await worker.put(b"line")
    async with asyncio.timeout(5):  # the backstop: close itself must return well before
        await worker.close(grace=1.0, close_timeout=0.2)
    assert sink.flush_started.is_set()
    assert sink.lines == [b"line"]


class _TtyBuffer(io.BytesIO):
    def isatty(self) -> bool:
        return True


async def test_stdout_pretty_view_is_the_injected_formatter_or_the_plain_line() -> None:
    rec = {
        "received_at": "2026-08-22T19:43:12.402117Z",
        "kind": "invocation",
        "target": "ReceiveCarPatches",
        "event_id": 1187,
        "arguments": [[{"number": "42", "overallPosition": 3}]],
    }
    line = json.dumps(rec).encode()
    plain, rich = _TtyBuffer(), _TtyBuffer()
    await StdoutSink(pretty=True, stream=plain).write([line])
    await StdoutSink(pretty=True, stream=rich, formatter=human_line).write([line])
    assert (
        plain.getvalue().decode()
        == '19:43:12.402 ReceiveCarPatches ev=1187 [[{"number":"42","overallPosition":3}]]\n'
    )
    assert rich.getvalue().decode() == "19:43:12.402 ReceiveCarPatches ev=1187 #42 P3\n"
    assert plain_line(b"not json") == "not json"
