"""Per-stage budget of the MessagePack relay, in process: `python bench/msgpack_stages_micro.py [ROUNDS]`.

The side-by-side section's frames (bench/wirehub.py: `ReceiveCarPatches` of 12 cars, 69-slot
integer-keyed arrays, 256 distinct frames, each one WebSocket message holding one VarInt-framed
SignalR invocation). Every stage is run over the whole pool, interleaved round after round, and
reported as the best round in µs per message (no network: the WebSocket read is the bare loop's row
of the side-by-side table). Stages, in the order a message meets them:

- `timeout (before)`: `asyncio.timeout(...)` entered and left around an await that does not block:
  what the receive loop paid per message before its watchdog (it times only the wait on the socket).
- `watchdog`: what it pays now per message (a clock read and two attribute stores around the await).
- `core`: `HubCore.receive_data` + `events_received` (SignalR framing, the envelope decode with
  raw arguments, the Invocation).
- `handle + queue`: `Receiver.handle`'s hand-over to the `DispatchQueue` and the dispatcher's
  get/task_done, one frame per batch.
- `convert`: `consumer.redmist.fastpack.convert` (typed decode into Structs + class switch).
- `event id`: `event_id_of` on the converted arguments.
- `envelope`: `EnvelopeEncoder.invocation` (the ~18 KB line).
- `relay.on_raw`: the whole relay step (route, counters, convert, event id, envelope, offer) to a
  `SinkWorker` whose queue is emptied after every round.
- `sink join`: the file sink's per-batch join of 220 lines (4 MiB) (one copy of each line, under the GIL).
- `os.write`: writing those joined batches to a temporary file (the kernel's page-cache copy; the
  sink thread does it with the GIL released, so it overlaps the loop on a second core).
- `floor`: the least any Python client can do per message for this output: `fastpack`'s typed decode
  (+ class switch), `msgspec.json` encode of a spliced envelope (head + arguments + tail) and an
  `os.write` per 220 lines.

Absolute figures depend on the machine (2 cores shared here): compare stages within one run.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from payloads import TARGET, build_full_pool
from wirehub import invocation

from consumer.redmist import PAYLOADS, fastpack
from consumer.redmist.payloads import event_id_of
from consumer.relay.envelope import EnvelopeEncoder
from consumer.relay.relay import Relay
from consumer.signalr import protocol as proto
from consumer.signalr.core import HubCore, Role
from consumer.signalr.dispatch import DispatchQueue
from consumer.sinks import FileSink, SinkWorker

BATCH = 220  # lines of ~18 KB in one 4 MiB batch (the sink worker's max_batch_bytes)
TAIL = b'"target":"ReceiveCarPatches","event_id":1,"arguments":'


def ws_payload(frame: bytes) -> bytes:
    """The WebSocket message payload of one of wirehub's frames (strip the unmasked frame header)."""
    n = frame[1] & 0x7F
    return frame[2 + (2 if n == 126 else 8 if n == 127 else 0) :]


async def stages(rounds: int) -> dict[str, float]:
    pool = build_full_pool(256)
    payloads = [ws_payload(invocation("messagepack", TARGET, p.msgpack_args)) for p in pool]
    raws = [p.msgpack_args for p in pool]
    protocol = proto.get_protocol("messagepack", raw_arguments=True)
    core = HubCore(Role.CLIENT, 0.0, protocol=protocol)
    core.data_to_send()
    core.receive_data(b"{}\x1e", 0.0)
    core.events_received()
    invocations = []
    for p in payloads:
        core.receive_data(p, 0.0)
        invocations.append(core.events_received())
    converted = [fastpack.convert(TARGET, r) for r in raws]
    enc = EnvelopeEncoder("bench")
    lines = [enc.invocation(TARGET, a, event_id_of(a)) for a in converted]
    while len(lines) < BATCH:
        lines = lines + lines
    batch = lines[:BATCH]
    joined = b"\n".join([*batch, b""])

    worker = SinkWorker(FileSink("/dev/null", fsync="never"), queue_size=1_000_000)
    relay = Relay([worker], hub="bench", profile=PAYLOADS, protocol="messagepack")
    queue = DispatchQueue(1_000_000, 1 << 40)
    n = len(payloads)
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "out.jsonl")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    floor_enc = msgspec.json.Encoder(enc_hook=str)
    head = b'{"received_at":"2026-12-06T00:00:00.000000Z","seq":1,"hub":"bench","kind":"invocation",'
    decoder = fastpack.FASTPACK.decoders[TARGET]
    rename = fastpack.FASTPACK._rename

    async def t_timeout() -> None:
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        for _ in range(n):
            async with asyncio.timeout(30.0):
                await fut

    class Dog:
        __slots__ = ("waiting_since",)

    async def t_watchdog() -> None:
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        clock = asyncio.get_running_loop().time
        dog = Dog()
        for _ in range(n):
            dog.waiting_since = clock()
            await fut
            dog.waiting_since = None

    async def t_core() -> None:
        for p in payloads:
            core.receive_data(p, 1.0)
            core.events_received()

    async def t_queue() -> None:
        for batch_ in invocations:
            queue.put_nowait(batch_, 1250)
        for _ in range(n):
            item = await queue.get()
            queue.task_done(item)

    async def t_convert() -> None:
        for r in raws:
            fastpack.convert(TARGET, r)

    async def t_event_id() -> None:
        for a in converted:
            event_id_of(a)

    async def t_envelope() -> None:
        for a in converted:
            enc.invocation(TARGET, a, 1)

    async def t_relay() -> None:
        on_raw = relay.on_raw
        for r in raws:
            await on_raw(TARGET, msgspec.Raw(r))
        worker._queue.clear()
        worker._queue_bytes = 0

    async def t_join() -> None:
        for _ in range(max(1, n // BATCH)):
            b"\n".join([*batch, b""])

    async def t_write() -> None:
        for _ in range(max(1, n // BATCH)):
            os.write(fd, joined)
        os.ftruncate(fd, 0)

    async def t_floor() -> None:
        out: list[bytes] = []
        for r in raws:
            args = decoder.decode(r)
            for a in args:
                if a is not None:
                    rename(a)
            out.append(head + TAIL + floor_enc.encode(args) + b"}")
            if len(out) == BATCH:
                os.write(fd, b"\n".join([*out, b""]))
                out.clear()
        if out:
            os.write(fd, b"\n".join([*out, b""]))
        os.ftruncate(fd, 0)

    plan: dict[str, tuple[Callable[[], Any], float]] = {
        "timeout (before)": (t_timeout, n),
        "watchdog": (t_watchdog, n),
        "core": (t_core, n),
        "handle + queue": (t_queue, n),
        "convert": (t_convert, n),
        "event id": (t_event_id, n),
        "envelope": (t_envelope, n),
        "relay.on_raw": (t_relay, n),
        "sink join": (t_join, max(1, n // BATCH) * BATCH),
        "os.write": (t_write, max(1, n // BATCH) * BATCH),
        "floor": (t_floor, n),
    }
    best = dict.fromkeys(plan, float("inf"))
    try:
        for _ in range(rounds):
            for name, (fn, items) in plan.items():
                t0 = time.perf_counter()
                await fn()
                best[name] = min(best[name], (time.perf_counter() - t0) / items)
    finally:
        os.close(fd)
        os.unlink(path)
        os.rmdir(tmp)
    return best


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    best = asyncio.run(stages(rounds))
    for name, seconds in best.items():
        print(f"{name:16s} {seconds * 1e6:7.2f} µs/msg (best of {rounds} interleaved rounds)")


if __name__ == "__main__":
    main()
