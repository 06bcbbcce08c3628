"""Benchmark peers in Python, one per process: `python bench/clients/peers.py KIND URL COUNT PROTOCOL OUT`.

KIND:
- `pysignalr`, `signalrcore`: the PyPI SignalR clients; the handler writes one JSON line per message
  (`{"target": ..., "arguments": [...]}`, encoded with msgspec, the fastest encoder we have) to OUT
  through a buffered file.
- `raw`: the ceiling: a bare `websockets` recv loop. JSON: each 0x1E record that is an invocation is
  written as is as the line (no parse). MessagePack: VarInt framing, msgspec decode, JSON line.
- `bare`: a bare `websockets` recv loop that parses nothing and writes nothing: it counts the
  invocation records in each received message (JSON: 0x1E separators; MessagePack: a walk over the
  VarInt length prefixes) and stops after COUNT. OUT is ignored. The side-by-side section's ceiling.
- `pysignalr-decode`: pysignalr with a handler that only counts (decode only, no output; OUT ignored).
- `floor`: the least a Python client can do for event-consumer's faithful output (issue 15's floor): a
  bare `websockets` recv loop; MessagePack: VarInt framing and ONE typed msgspec decode of the whole
  invocation straight into consumer.redmist.fastpack's array-like Structs (no separate envelope
  pass, time values converted by its dec_hook), class switch to the named Structs, the project's
  `EnvelopeEncoder` line; JSON: the envelope decoded with raw arguments spliced into the line. Lines
  are joined and written with one `os.write` per 4 MiB to OUT (the same bytes per line as the
  daemon's, seq and time aside). No dispatch, no queues, no sink thread, no error handling.
- `null`: the hub's own send rate: a hand-rolled WebSocket reader on a plain asyncio socket that skips
  frame payloads unread and stops at the hub's close frame (nothing parsed, nothing written).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import TARGET, Window, emit


def _enc_hook(obj: Any) -> Any:
    """MessagePack timestamps (DateTime) and other extension values as text in the JSON line."""
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return str(obj)


_json = msgspec.json.Encoder(enc_hook=_enc_hook)


def _ws_url(url: str) -> str:
    return "ws" + url[4:] if url.startswith("http") else url


def _handshake(protocol: str) -> bytes:
    return b'{"protocol":"%s","version":1}\x1e' % protocol.encode()


def _bench_call(protocol: str, count: int, close_when_done: bool = False) -> bytes:
    if protocol == "json":
        return (
            _json.encode({"type": 1, "target": "BenchStream", "arguments": [count, 0, close_when_done]})
            + b"\x1e"
        )
    body = msgspec.msgpack.encode([1, {}, None, "BenchStream", [count, 0, close_when_done]])
    return _varint(len(body)) + body


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


# --- raw websockets loop --------------------------------------------------------------------------


async def run_raw(url: str, count: int, protocol: str, out: str) -> dict[str, Any]:
    import websockets

    window = Window()
    n = 0
    with open(out, "wb", buffering=1 << 16) as f:
        write = f.write
        async with websockets.connect(_ws_url(url), max_size=None, compression=None) as ws:
            await ws.send(_handshake(protocol).decode())
            await ws.recv()  # handshake response
            call = _bench_call(protocol, count)
            await ws.send(call.decode() if protocol == "json" else call)
            if protocol == "json":
                while n < count:
                    frame = await ws.recv(decode=False)
                    for rec in frame.split(b"\x1e"):
                        if rec.startswith(b'{"type":1,'):
                            window.start(n)
                            write(rec)
                            write(b"\n")
                            n += 1
            else:
                decode = msgspec.msgpack.decode
                while n < count:
                    frame = await ws.recv()
                    view = memoryview(frame)
                    pos = 0
                    while pos < len(view):
                        size = shift = 0
                        while True:
                            b = view[pos]
                            pos += 1
                            size |= (b & 0x7F) << shift
                            shift += 7
                            if not b & 0x80:
                                break
                        msg = decode(view[pos : pos + size])
                        pos += size
                        if msg[0] == 1:
                            window.start(n)
                            write(_json.encode({"target": msg[3], "arguments": msg[4]}))
                            write(b"\n")
                            n += 1
            f.flush()
            result = window.result(n)
    return result


async def run_bare(url: str, count: int, protocol: str) -> dict[str, Any]:
    import websockets

    window = Window()
    n = 0
    async with websockets.connect(_ws_url(url), max_size=None, compression=None) as ws:
        await ws.send(_handshake(protocol).decode())
        await ws.recv()  # handshake response
        call = _bench_call(protocol, count)
        await ws.send(call.decode() if protocol == "json" else call)
        while n < count:
            frame = await ws.recv(decode=False)
            if n == 0:
                window.start(0)
            if protocol == "json":
                n += frame.count(b"\x1e")
                continue
            pos, end = 0, len(frame)
            while pos < end:
                size = shift = 0
                while True:
                    b = frame[pos]
                    pos += 1
                    size |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                pos += size
                n += 1
        result = window.result(n)
    return result


# --- the floor -------------------------------------------------------------------------------------


class _JsonRecord(msgspec.Struct):
    type: int
    target: str = ""
    arguments: msgspec.Raw = msgspec.Raw(b"[]")


class Floor:
    """The floor client's per-record work (kept apart from the socket loop so a test can pin its lines
    to the daemon's): `line(record)` is the envelope line of one SignalR record, or None when the
    record is not a `ReceiveCarPatches` invocation."""

    def __init__(self, protocol: str, encoder: Any = None) -> None:
        from consumer.redmist import fastpack
        from consumer.redmist.payloads import event_id_of, peek_json_event_id
        from consumer.relay.envelope import EnvelopeEncoder

        self.invocation = (encoder or EnvelopeEncoder("bench")).invocation
        self.event_id_of = event_id_of
        self.peek = peek_json_event_id
        pack = fastpack.FASTPACK
        # MessagePack: one typed decode of the whole invocation (no separate envelope pass)
        self.whole = msgspec.msgpack.Decoder(
            tuple[int, dict[str, str], None, str, pack.decoders[TARGET].type, list[str]],
            dec_hook=fastpack._dec_hook,
        )
        self.rename = pack._rename
        self.json_record = msgspec.json.Decoder(_JsonRecord).decode
        self.line = self.json_line if protocol == "json" else self.msgpack_line

    def json_line(self, record: Any) -> bytes | None:
        m = self.json_record(record)
        if m.type != 1 or m.target != TARGET:
            return None
        return self.invocation(TARGET, m.arguments, self.peek(m.arguments))  # type: ignore[no-any-return]

    def msgpack_line(self, record: Any) -> bytes | None:
        try:
            msg = self.whole.decode(record)
        except msgspec.ValidationError:
            return None  # not a ReceiveCarPatches invocation (the completion, a ping)
        if msg[0] != 1 or msg[3] != TARGET:
            return None
        args = list(msg[4])
        for a in args:
            if a is not None:
                self.rename(a)
        return self.invocation(TARGET, args, self.event_id_of(args))  # type: ignore[no-any-return]


async def run_floor(url: str, count: int, protocol: str, out: str) -> dict[str, Any]:
    import websockets

    floor = Floor(protocol)
    line_of = floor.line
    window = Window()
    n = 0
    pending: list[bytes] = []
    size = 0
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    async with websockets.connect(_ws_url(url), max_size=None, compression=None) as ws:
        await ws.send(_handshake(protocol).decode())
        await ws.recv()  # handshake response
        call = _bench_call(protocol, count)
        await ws.send(call.decode() if protocol == "json" else call)
        while n < count:
            frame = await ws.recv(decode=False)
            if protocol == "json":
                records: list[Any] = frame.split(b"\x1e")[:-1]
            else:
                records = []
                view = memoryview(frame)
                pos, end = 0, len(frame)
                while pos < end:
                    length = shift = 0
                    while True:
                        b = view[pos]
                        pos += 1
                        length |= (b & 0x7F) << shift
                        shift += 7
                        if not b & 0x80:
                            break
                    records.append(view[pos : pos + length])
                    pos += length
            for record in records:
                line = line_of(record)
                if line is None:
                    continue
                window.start(n)
                pending.append(line)
                size += len(line)
                n += 1
            if size >= 4 << 20 or n >= count:
                os.write(fd, b"\n".join([*pending, b""]))
                pending.clear()
                size = 0
        result = window.result(n)
    os.close(fd)
    return result


# --- null reader ------------------------------------------------------------------------------------


def _masked_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


async def run_null(url: str, count: int, protocol: str) -> dict[str, Any]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    opcode = 1 if protocol == "json" else 2
    writer.write(_masked_frame(1, _handshake(protocol)))
    writer.write(_masked_frame(opcode, _bench_call(protocol, count, close_when_done=True)))
    await writer.drain()
    window = Window()
    total = 0
    frames = 0
    while True:
        head = await reader.readexactly(2)
        op = head[0] & 0x0F
        n = head[1] & 0x7F
        if n == 126:
            n = struct.unpack("!H", await reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await reader.readexactly(8))[0]
        if op == 8:
            await reader.readexactly(n)
            writer.write(_masked_frame(8, b"\x03\xe8"))
            await writer.drain()
            break
        remaining = n
        while remaining:
            chunk = await reader.read(min(remaining, 1 << 20))
            if not chunk:
                raise ConnectionError("hub closed the socket")
            remaining -= len(chunk)
        if n > 512:  # the first payload frame (not the handshake response or the completion)
            window.start(0)
        frames += 1
        total += n
    result = window.result(count, bytes=total, frames=frames)
    writer.close()
    return result


# --- pysignalr -------------------------------------------------------------------------------------


async def run_pysignalr(url: str, count: int, protocol: str, out: str | None) -> dict[str, Any]:
    """`out` None: decode only (the handler counts; nothing is encoded or written)."""
    from pysignalr.client import SignalRClient

    kwargs: dict[str, Any] = {}
    if protocol == "messagepack":
        from pysignalr.protocol.messagepack import MessagepackProtocol

        kwargs["protocol"] = MessagepackProtocol()
    client = SignalRClient(url, **kwargs)
    window = Window()
    done = asyncio.Event()
    n = 0
    f = open(out if out is not None else os.devnull, "wb", buffering=1 << 16)  # noqa: SIM115 - closed below
    write = f.write
    encode = _json.encode

    async def on_patches(args: Any) -> None:
        nonlocal n
        window.start(n)
        write(encode({"target": TARGET, "arguments": args}))
        write(b"\n")
        n += 1
        if n == count:
            f.flush()
            done.set()

    async def on_patches_decode_only(args: Any) -> None:
        nonlocal n
        window.start(n)
        n += 1
        if n == count:
            done.set()

    async def on_open() -> None:
        await client.send("BenchStream", [count, 0, False])

    client.on(TARGET, on_patches if out is not None else on_patches_decode_only)
    client.on_open(on_open)
    task = asyncio.create_task(client.run())
    waiter = asyncio.create_task(done.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if not done.is_set():
        raise RuntimeError(f"pysignalr stopped after {n} messages: {task.exception()!r}")
    result = window.result(n)
    f.close()
    task.cancel()
    return result


# --- signalrcore (threaded) -----------------------------------------------------------------------


def run_signalrcore(url: str, count: int, protocol: str, out: str) -> dict[str, Any]:
    from signalrcore.hub_connection_builder import HubConnectionBuilder

    builder = HubConnectionBuilder().with_url(url, options={"skip_negotiation": False})
    if protocol == "messagepack":
        from signalrcore.protocol.messagepack_protocol import MessagePackHubProtocol

        builder = builder.with_hub_protocol(MessagePackHubProtocol())
    connection = builder.configure_logging(int(os.environ.get("BENCH_PEER_LOG", logging.CRITICAL))).build()
    window = Window()
    done = threading.Event()
    opened = threading.Event()
    state = {"n": 0}
    f = open(out, "wb", buffering=1 << 16)  # noqa: SIM115 - closed below
    write = f.write
    encode = _json.encode

    def on_patches(args: Any) -> None:
        n = state["n"]
        window.start(n)
        write(encode({"target": TARGET, "arguments": args}))
        write(b"\n")
        n += 1
        state["n"] = n
        if n == count:
            f.flush()
            done.set()

    connection.on(TARGET, on_patches)
    connection.on_open(opened.set)
    connection.start()
    if not opened.wait(30):
        raise RuntimeError("signalrcore did not connect")
    connection.send("BenchStream", [count, 0, False])
    deadline = time.monotonic() + 600
    while not done.wait(1.0):
        if time.monotonic() > deadline:
            raise RuntimeError(f"signalrcore stalled at {state['n']} messages")
    result = window.result(state["n"])
    f.close()
    return result


def main() -> None:
    kind, url, count_s, protocol, out = sys.argv[1:6]
    count = int(count_s)
    if kind == "raw":
        result = asyncio.run(run_raw(url, count, protocol, out))
    elif kind == "null":
        result = asyncio.run(run_null(url, count, protocol))
    elif kind == "pysignalr":
        result = asyncio.run(run_pysignalr(url, count, protocol, out))
    elif kind == "pysignalr-decode":
        result = asyncio.run(run_pysignalr(url, count, protocol, None))
    elif kind == "bare":
        result = asyncio.run(run_bare(url, count, protocol))
    elif kind == "floor":
        result = asyncio.run(run_floor(url, count, protocol, out))
    elif kind == "signalrcore":
        result = run_signalrcore(url, count, protocol, out)
    else:
        raise SystemExit(f"unknown client kind {kind!r}")
    emit(result)
    sys.stdout.flush()
    os._exit(0)  # skip the peers' own teardown (reconnect timers, threads): the result is out


if __name__ == "__main__":
    main()
