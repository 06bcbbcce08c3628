"""Hot-path fast paths outside the contract: the relay's MessagePack forms, the event id peek, the sink
worker's batch hand-over (deque swap) and the sinks' single-copy batch join."""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from consumer.redmist import PAYLOADS, contract
from consumer.redmist.payloads import peek_json_event_id
from consumer.relay.envelope import Clock, EnvelopeEncoder
from consumer.relay.relay import Relay
from consumer.sinks import FileSink, PartialWrite, SinkWorker, StdoutSink

CAR = "ReceiveCarPatches"


class GatedSink:
    """Records every batch; `write` waits for `gate` so lines can pile up while a write is in flight."""

    sync_interval: float | None = None

    def __init__(self) -> None:
        self.name = "gated"
        self.batches: list[list[bytes]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.writing = asyncio.Event()
        self.fail_next: OSError | PartialWrite | None = None

    async def open(self) -> None: ...

    async def write(self, lines: Sequence[bytes]) -> None:
        self.writing.set()
        await self.gate.wait()
        if self.fail_next is not None:
            err, self.fail_next = self.fail_next, None
            if isinstance(err, PartialWrite):
                self.batches.append(list(lines[: err.done]))
            raise err
        self.batches.append(list(lines))

    async def flush(self) -> None: ...

    async def reopen(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def lines(self) -> list[bytes]:
        return [line for batch in self.batches for line in batch]


def strip(line: bytes) -> dict[str, Any]:
    rec: dict[str, Any] = msgspec.json.decode(line)
    del rec["received_at"]
    return rec


# -- relay -------------------------------------------------------------------------------------------


async def test_messagepack_lines_are_the_same_with_and_without_a_watcher() -> None:
    """A watcher switches the relay to the dict form; the envelope bytes must not change."""
    when = dt.datetime(2026, 8, 22, 19, 0, 0, tzinfo=dt.UTC)  # a MessagePack timestamp on the wire
    arr: list[Any] = [None] * 70
    arr[0], arr[1], arr[2], arr[4], arr[43], arr[55], arr[69] = "1187", "14", "42", "GT", 123, when, "x"
    arr[41] = [["42", "S1", 1, 2, 3]]
    raw = msgspec.Raw(msgspec.msgpack.encode([[arr, None]]))
    lines: dict[str, list[bytes]] = {}
    seen: list[tuple[list[Any], Any]] = []
    for mode in ("plain", "watched"):
        sink = GatedSink()
        worker = SinkWorker(sink)
        await worker.start()
        relay = Relay([worker], hub="h", profile=PAYLOADS, protocol="messagepack")
        if mode == "watched":
            relay.watch(CAR, lambda args, ev: seen.append((args, ev)))
        await relay.on_raw(CAR, raw)
        await worker.close(grace=5)
        lines[mode] = sink.lines
    (plain,), (watched,) = lines["plain"], lines["watched"]
    assert plain.split(b'"seq"', 1)[1] == watched.split(b'"seq"', 1)[1]
    rec = strip(plain)
    assert rec["event_id"] == 1187
    patch = rec["arguments"][0][0]
    assert patch["class"] == "GT" and patch["lapStartTime"] == "00:00:00.0000123"
    assert patch["pitEntryTime"] == "2026-08-22T19:00:00Z"
    assert patch["completedSections"] == [
        {"number": "42", "sectionId": "S1", "elapsedTimeMs": 1, "lastSectionTimeMs": 2, "lastLap": 3}
    ]
    assert rec["arguments"][0][1] is None
    ((args, ev),) = seen
    assert ev == 1187 and isinstance(args[0][0], dict) and args[0][0]["number"] == "42"
    assert args == contract.arguments_from_msgpack(CAR, msgspec.msgpack.decode(raw))


async def test_messagepack_unknown_target_passes_arguments_through() -> None:
    sink = GatedSink()
    worker = SinkWorker(sink)
    await worker.start()
    relay = Relay([worker], hub="h", profile=PAYLOADS, protocol="messagepack")
    await relay.on_raw("Other", msgspec.Raw(msgspec.msgpack.encode([[1, "a"], {"eventId": 9}])))
    await worker.close(grace=5)
    (line,) = sink.lines
    rec = strip(line)
    assert rec["arguments"] == [[1, "a"], {"eventId": 9}] and "event_id" not in rec


# -- event id peek -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'[[{"eventId":"1187","number":"42"}]]', 1187),
        (b'[{"eventId": 1187,"sessionId":14}]', 1187),
        (b'[{"eventId":-3}]', -3),
        (b'[{"eventId":"abc"}]', "abc"),
        ('[{"eventId":"\u0661\u0662"}]'.encode(), 12),  # non-ASCII digits: as str.isdigit/int read them
        ('[{"eventId":"\u00e9v"}]'.encode(), "\u00e9v"),
        (b'[{"eventId":null}]', None),
        (b"[[]]", None),
        (b'[{"eventId":"a\\"b"}]', None),  # an escaped quote is not peeked (the full parse would be needed)
    ],
)
def test_peek_json_event_id(raw: bytes, expected: object) -> None:
    assert peek_json_event_id(raw) == expected
    assert peek_json_event_id(msgspec.Raw(raw)) == expected
    assert peek_json_event_id(memoryview(raw)) == expected


def test_peek_only_looks_at_the_first_bytes() -> None:
    raw = b'[{"x":"' + b"a" * 600 + b'","eventId":5}]'
    assert peek_json_event_id(raw) is None
    assert peek_json_event_id(raw, limit=len(raw)) == 5


def test_envelope_splices_raw_arguments_and_keeps_key_order() -> None:
    enc = EnvelopeEncoder("h\u00e9", clock=Clock(lambda: 1_787_427_792_402_117_000))
    raw = msgspec.Raw(b'[[{"eventId":"7"}]]')
    line = enc.invocation(CAR, raw, peek_json_event_id(raw))
    assert (
        line
        == (
            '{"received_at":"2026-08-22T19:43:12.402117Z","seq":1,"hub":"h\u00e9","kind":"invocation",'
            '"target":"ReceiveCarPatches","event_id":7,"arguments":[[{"eventId":"7"}]]}'
        ).encode()
    )
    assert re.search(rb'"seq":2,', enc.invocation(CAR, raw, "x"))


# -- sink worker batch hand-over ---------------------------------------------------------------------


async def test_lines_offered_during_a_write_form_the_next_batch_in_order() -> None:
    sink = GatedSink()
    worker = SinkWorker(sink, max_batch=4)
    await worker.start()
    assert worker.offer(b"1")
    sink.gate.clear()
    await asyncio.wait_for(sink.writing.wait(), 5)  # batch [1] is in flight
    for i in range(2, 9):
        assert worker.offer(str(i).encode())
    assert worker.depth == 8  # 1 in flight (pending) + 7 queued
    sink.gate.set()
    await asyncio.wait_for(worker.wait_idle(), 5)
    await worker.close(grace=5)
    assert sink.lines == [str(i).encode() for i in range(1, 9)]
    assert [len(b) for b in sink.batches] == [1, 4, 3]  # max_batch respected after the swap path
    assert worker.stats.written == 8 and worker.depth == 0


async def test_partial_write_after_the_swap_retries_only_the_unstored_lines() -> None:
    sink = GatedSink()
    worker = SinkWorker(sink, retry_initial=0.001, retry_max=0.001)
    sink.gate.clear()
    sink.fail_next = PartialWrite(2, OSError(errno.ENOSPC, "No space left on device"))
    for i in range(5):
        worker.offer(str(i).encode())
    await worker.start()
    sink.gate.set()
    await asyncio.wait_for(worker.wait_idle(), 5)
    await worker.close(grace=5)
    assert sink.lines == [str(i).encode() for i in range(5)]  # nothing lost, nothing duplicated
    assert worker.stats.written == 5 and worker.stats.errors == 1


async def test_drop_oldest_still_bounds_the_queue_while_a_batch_is_in_flight() -> None:
    sink = GatedSink()
    worker = SinkWorker(sink, queue_size=3, overflow="drop_oldest")
    await worker.start()
    sink.gate.clear()
    worker.offer(b"a")
    await asyncio.wait_for(sink.writing.wait(), 5)
    for line in (b"b", b"c", b"d", b"e"):
        assert worker.offer(line)
    assert worker.stats.dropped["overflow"] == 1  # b dropped: the queue holds c, d, e
    sink.gate.set()
    await asyncio.wait_for(worker.wait_idle(), 5)
    await worker.close(grace=5)
    assert sink.lines == [b"a", b"c", b"d", b"e"]


# -- sinks' batch join -------------------------------------------------------------------------------


async def test_file_and_stdout_sinks_write_each_line_with_one_newline(tmp_path: Path) -> None:
    lines = [b'{"a":1}', b"", b'{"b":"\xc3\xa9"}']
    sink = FileSink(tmp_path / "out.jsonl", fsync="never")
    await sink.open()
    await sink.write(lines)
    await sink.write([b"last"])
    await sink.close()
    assert (tmp_path / "out.jsonl").read_bytes() == b'{"a":1}\n\n{"b":"\xc3\xa9"}\nlast\n'
    buf = io.BytesIO()
    out = StdoutSink(stream=buf)
    await out.open()
    await out.write(lines)
    assert buf.getvalue() == b'{"a":1}\n\n{"b":"\xc3\xa9"}\n'
