"""An independent benchmark hub: pre-built WebSocket frames written straight to the socket.

Not the project's `HubServer`: plain blocking sockets, one thread per connection, so that the hub
costs next to nothing per message and the clients, not the hub, are the bottleneck (the bare
`websockets` recv loop in the side-by-side section shows its ceiling). Run as its own process
(`python bench/wirehub.py`); it prints one JSON line `{"url": ..., "pool": ...}` when ready, then one
line per finished stream (`count`, `protocol`, `flush_seconds`: first frame handed to the kernel ->
last frame and the `BenchDone` sentinel handed to it; `t_start`: the first send, `time.perf_counter()`,
i.e. CLOCK_MONOTONIC, which other processes on the machine read on the same scale).

What it speaks, as ASP.NET Core SignalR does:
- `POST {path}/negotiate` (v0/v1, WebSockets transport) and the WebSocket upgrade (with or without
  negotiation), the handshake (`{"protocol": "json"|"messagepack", "version": 1}` -> `{}`).
- A client invocation `BenchStream(count, ...)` (JSON or MessagePack; with an invocation id it is
  completed first) starts the stream: `count` `ReceiveCarPatches` invocations, one WebSocket frame
  each, cycling through a pool of distinct payloads (bench/payloads.py `build_full_pool`: 12 cars,
  JSON with every patch key present and unset ones null, MessagePack with full-length integer-keyed
  arrays), then one `BenchDone(count)` invocation (a sentinel the real daemon writes to its file).
- Frames are pre-built per protocol and pre-joined into blocks of `BLOCK` frames, so sending is one
  `sendall` per block. Pings and anything else the client sends are read and ignored; a close frame is
  answered.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from payloads import TARGET, build_full_pool, describe_full

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
BLOCK = 16
PATH = "/hub"
_print_lock = threading.Lock()


def emit(obj: dict[str, Any]) -> None:
    with _print_lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def ws_frame(payload: bytes, binary: bool) -> bytes:
    """One unmasked (server -> client) final frame."""
    head = bytes([0x82 if binary else 0x81])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def invocation(protocol: str, target: str, args_raw: bytes) -> bytes:
    """A SignalR invocation message (no invocation id) as ASP.NET Core writes it, framed for the wire."""
    if protocol == "json":
        body = b'{"type":1,"target":"%s","arguments":%s}\x1e' % (target.encode(), args_raw)
        return ws_frame(body, binary=False)
    msg = msgspec.msgpack.encode([1, {}, None, target, msgspec.Raw(args_raw), []])
    return ws_frame(varint(len(msg)) + msg, binary=True)


class Frames:
    """Per protocol: the payload frames pre-joined into blocks, plus single frames for the remainder."""

    def __init__(self, pool_size: int) -> None:
        pool = build_full_pool(pool_size)
        self.describe = describe_full(pool)
        self.single: dict[str, list[bytes]] = {}
        self.blocks: dict[str, list[bytes]] = {}
        for protocol in ("json", "messagepack"):
            frames = [
                invocation(protocol, TARGET, p.json_args if protocol == "json" else p.msgpack_args)
                for p in pool
            ]
            self.single[protocol] = frames
            m = len(frames)
            self.blocks[protocol] = [
                b"".join(frames[(b * BLOCK + j) % m] for j in range(BLOCK)) for b in range(max(1, m // BLOCK))
            ]
        self.describe["json_frame_bytes_mean"] = round(
            sum(map(len, self.single["json"])) / len(self.single["json"])
        )
        self.describe["msgpack_frame_bytes_mean"] = round(
            sum(map(len, self.single["messagepack"])) / len(self.single["messagepack"])
        )


class Conn:
    """One client connection (blocking socket, own thread)."""

    def __init__(self, sock: socket.socket, frames: Frames) -> None:
        self.sock = sock
        self.frames = frames
        self.buf = b""
        self.protocol = "json"

    # -- reading -------------------------------------------------------------------------------

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise EOFError
        self.buf += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_http(self) -> tuple[str, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        body = self._take(int(headers.get("content-length", "0") or 0))
        return lines[0], headers, body

    def read_message(self) -> tuple[int, bytes]:
        """One client WebSocket message (opcode, unmasked payload); continuation frames joined."""
        data = b""
        first_op = 0
        while True:
            b0, b1 = self._take(2)
            op = b0 & 0x0F
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._take(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._take(8))[0]
            mask = self._take(4) if b1 & 0x80 else b"\0\0\0\0"
            raw = self._take(n)
            key = int.from_bytes((mask * (n // 4 + 1))[:n], "big") if n else 0
            payload = (int.from_bytes(raw, "big") ^ key).to_bytes(n, "big") if n else b""
            if op >= 8:  # control frame, never fragmented
                return op, payload
            if op:
                first_op = op
            data += payload
            if b0 & 0x80:
                return first_op, data

    # -- protocol ------------------------------------------------------------------------------

    def serve(self) -> None:
        request, headers, _ = self.read_http()
        method, target, _ = request.split(" ", 2)
        if method == "POST" and target.split("?")[0].endswith("/negotiate"):
            version = 1 if "negotiateVersion=1" in target else 0
            body: dict[str, Any] = {"negotiateVersion": version, "connectionId": "bench-conn"}
            if version:
                body["connectionToken"] = "bench-token"
            body["availableTransports"] = [{"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}]
            data = json.dumps(body).encode()
            self.sock.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(data), data)
            )
            return
        if headers.get("upgrade", "").lower() != "websocket":
            self.sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest())
        self.sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        pending = b""
        while b"\x1e" not in pending:
            _, payload = self.read_message()
            pending += payload
        handshake, _, rest = pending.partition(b"\x1e")
        self.protocol = json.loads(handshake)["protocol"]
        binary = self.protocol == "messagepack"
        self.sock.sendall(ws_frame(b"{}\x1e", binary))
        count = self._await_bench_call(rest)
        self.stream(count)
        self.drain()

    def _await_bench_call(self, pending: bytes) -> int:
        """Read client messages until `BenchStream(count, ...)`; completes it when it has an id."""
        while True:
            for msg in self._split(pending):
                if msg.get("type") == 1 and str(msg.get("target")).lower() == "benchstream":
                    if msg.get("invocationId") is not None:
                        self.sock.sendall(self._completion(str(msg["invocationId"])))
                    return int(msg["arguments"][0])
            op, pending = self.read_message()
            if op == 8:
                raise EOFError

    def _split(self, data: bytes) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not data:
            return out
        if self.protocol == "json":
            for rec in data.split(b"\x1e"):
                if rec.strip():
                    out.append(json.loads(rec))
            return out
        pos = 0
        while pos < len(data):
            size = shift = 0
            while True:
                b = data[pos]
                pos += 1
                size |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            arr = msgspec.msgpack.decode(data[pos : pos + size])
            pos += size
            if arr and arr[0] == 1:
                out.append({"type": 1, "invocationId": arr[2], "target": arr[3], "arguments": arr[4]})
            else:
                out.append({"type": arr[0] if arr else None})
        return out

    def _completion(self, invocation_id: str) -> bytes:
        if self.protocol == "json":
            return ws_frame(b'{"type":3,"invocationId":%s}\x1e' % json.dumps(invocation_id).encode(), False)
        msg = msgspec.msgpack.encode([3, {}, invocation_id, 2])  # result kind 2: void
        return ws_frame(varint(len(msg)) + msg, True)

    def stream(self, count: int) -> None:
        blocks = self.frames.blocks[self.protocol]
        single = self.frames.single[self.protocol]
        sendall = self.sock.sendall
        t0 = time.perf_counter()
        sent = 0
        i = 0
        while count - sent >= BLOCK:
            sendall(blocks[i % len(blocks)])
            sent += BLOCK
            i += 1
        while sent < count:
            sendall(single[sent % len(single)])
            sent += 1
        done = msgspec.json.encode([count]) if self.protocol == "json" else msgspec.msgpack.encode([count])
        sendall(invocation(self.protocol, "BenchDone", done))
        emit(
            {
                "stream": id(self),
                "protocol": self.protocol,
                "count": count,
                "t_start": t0,  # time.perf_counter(): CLOCK_MONOTONIC, comparable across processes
                "flush_seconds": time.perf_counter() - t0,
            }
        )

    def drain(self) -> None:
        """Read (and ignore) what the client still sends until it closes."""
        while True:
            op, _ = self.read_message()
            if op == 8:
                self.sock.sendall(b"\x88\x02\x03\xe8")
                return


def handle(sock: socket.socket, frames: Frames) -> None:
    try:
        with sock:
            Conn(sock, frames).serve()
    except (EOFError, OSError, ValueError, KeyError):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pool", type=int, default=256, help="distinct payloads")
    args = parser.parse_args()
    frames = Frames(args.pool)
    server = socket.create_server(("127.0.0.1", 0), backlog=64)
    port = server.getsockname()[1]
    signal.signal(signal.SIGTERM, lambda *_: (server.close(), sys.exit(0)))
    emit({"url": f"http://127.0.0.1:{port}{PATH}", "pool": frames.describe})
    while True:
        try:
            sock, _ = server.accept()
        except OSError:
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=handle, args=(sock, frames), daemon=True).start()


if __name__ == "__main__":
    main()
