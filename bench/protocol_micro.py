"""Micro-benchmark of the protocol reader: `python bench/protocol_micro.py [--repeats N] [--out FILE]`.

µs per message for `reader.feed` of `consumer.signalr.protocol` on real RedMist-shaped frames
(bench/payloads.py: `ReceiveCarPatches` invocations of 10-60 real car patches, 1-4 KB of JSON each),
against a bare msgspec parse of the same bytes:

- `feed`: `protocol.reader().feed(frame)` for every frame (what HubConnection's receive loop does).
- `bare`: the minimum any SignalR client must do with those bytes: split the frame into records
  (0x1E for JSON; VarInt length prefixes for MessagePack) and decode each record with one msgspec
  Decoder into an envelope Struct (arguments as `msgspec.Raw` when raw, else `list[Any]`). No
  validation, no message objects, no error handling: the floor `feed` is compared with.

Cells: protocol (json, messagepack) x raw_arguments (on: the relay's hot path; off) x frame shape
(`64k`: records packed into frames of up to 64 KB, as bench/hub.py sends them; `1`: one record per
frame). Each cell is timed `--repeats` times over the whole pool (default 512 payloads, each sent
`--rounds` times); the minimum is reported (least disturbed by the other processes on the machine).
`ratio` = feed / bare.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from payloads import TARGET, build_pool  # noqa: E402

from consumer.signalr import protocol as p  # noqa: E402

FRAME_BYTES = 64 * 1024


class _JsonEnvelopeRaw(msgspec.Struct):
    type: int
    target: str | None = None
    arguments: msgspec.Raw = msgspec.Raw()
    invocationId: str | None = None
    headers: dict[str, str] | None = None
    streamIds: list[str] | None = None


class _JsonEnvelope(msgspec.Struct):
    type: int
    target: str | None = None
    arguments: list[Any] = []
    invocationId: str | None = None
    headers: dict[str, str] | None = None
    streamIds: list[str] | None = None


class _MsgPackEnvelopeRaw(msgspec.Struct, array_like=True):
    type: int
    headers: dict[str, str] | None = None
    invocation_id: str | None = None
    target: str | None = None
    arguments: msgspec.Raw = msgspec.Raw()
    stream_ids: list[str] | None = None


class _MsgPackEnvelope(msgspec.Struct, array_like=True):
    type: int
    headers: dict[str, str] | None = None
    invocation_id: str | None = None
    target: str | None = None
    arguments: list[Any] = []
    stream_ids: list[str] | None = None


def bare_json(raw: bool) -> Callable[[bytes], int]:
    decode = msgspec.json.Decoder(_JsonEnvelopeRaw if raw else _JsonEnvelope).decode

    def parse(frame: bytes) -> int:
        view = memoryview(frame)
        start = 0
        end = len(frame)
        n = 0
        while start < end:
            idx = frame.find(b"\x1e", start)
            decode(view[start:idx])
            start = idx + 1
            n += 1
        return n

    return parse


def bare_msgpack(raw: bool) -> Callable[[bytes], int]:
    decode = msgspec.msgpack.Decoder(_MsgPackEnvelopeRaw if raw else _MsgPackEnvelope).decode

    def parse(frame: bytes) -> int:
        view = memoryview(frame)
        pos = 0
        end = len(frame)
        n = 0
        while pos < end:
            size = shift = 0
            while True:
                b = frame[pos]
                pos += 1
                size |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            decode(view[pos : pos + size])
            pos += size
            n += 1
        return n

    return parse


def frames_of(records: list[bytes], shape: str) -> list[bytes]:
    if shape == "1":
        return list(records)
    frames: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for record in records:
        if current and size + len(record) > FRAME_BYTES:
            frames.append(b"".join(current))
            current, size = [], 0
        current.append(record)
        size += len(record)
    if current:
        frames.append(b"".join(current))
    return frames


def time_feed(
    protocol: p.JsonHubProtocol | p.MessagePackHubProtocol, frames: list[bytes]
) -> tuple[float, int]:
    reader = protocol.reader(max_message_size=16 * 1024 * 1024)
    feed = reader.feed
    n = 0
    t0 = time.perf_counter()
    for frame in frames:
        n += len(feed(frame))
    return time.perf_counter() - t0, n


def time_bare(parse: Callable[[bytes], int], frames: list[bytes]) -> tuple[float, int]:
    n = 0
    t0 = time.perf_counter()
    for frame in frames:
        n += parse(frame)
    return time.perf_counter() - t0, n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=4, help="times each payload occurs in the stream")
    parser.add_argument("--pool", type=int, default=512)
    parser.add_argument("--label", default="")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    pool = build_pool(args.pool)
    figures: dict[str, Any] = {}
    print(f"{'protocol':<12} {'raw':<4} {'frame':<6} {'feed µs':>8} {'bare µs':>8} {'ratio':>6}")
    for name in ("json", "messagepack"):
        for raw in (True, False):
            protocol = p.get_protocol(name, raw_arguments=raw)
            records = [
                protocol.encode(
                    p.Invocation(target=TARGET, arguments=x.json_args if name == "json" else x.msgpack_args)
                )
                for x in pool
            ] * args.rounds
            bare = bare_json(raw) if name == "json" else bare_msgpack(raw)
            for shape in ("64k", "1"):
                frames = frames_of(records, shape)
                # Sanity: both sides see every record, and feed yields Invocations of the target.
                check = protocol.reader(max_message_size=16 * 1024 * 1024).feed(frames[0])
                assert check and all(type(m) is p.Invocation and m.target == TARGET for m in check)
                feed_s: list[float] = []
                bare_s: list[float] = []
                for _ in range(args.repeats):
                    seconds, n_feed = time_feed(protocol, frames)
                    feed_s.append(seconds)
                    seconds, n_bare = time_bare(bare, frames)
                    bare_s.append(seconds)
                    assert n_feed == n_bare == len(records), (n_feed, n_bare, len(records))
                feed_us = min(feed_s) / len(records) * 1e6
                bare_us = min(bare_s) / len(records) * 1e6
                key = f"{name}/raw={'on' if raw else 'off'}/frame={shape}"
                figures[key] = {"feed_us": feed_us, "bare_us": bare_us, "ratio": feed_us / bare_us}
                print(
                    f"{name:<12} {'on' if raw else 'off':<4} {shape:<6} "
                    f"{feed_us:>8.2f} {bare_us:>8.2f} {feed_us / bare_us:>6.2f}"
                )
    if args.out is not None:
        meta = {
            "label": args.label,
            "repeats": args.repeats,
            "messages": len(pool) * args.rounds,
            "python": platform.python_version(),
            "msgspec": msgspec.__version__,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        args.out.write_text(json.dumps({"meta": meta, "figures": figures}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
