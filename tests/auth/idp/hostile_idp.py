"""A hostile token endpoint on 127.0.0.1 (a separate process): the fault shapes no real IdP produces.

argv[1]: JSON {"mode": ..., "bytes": N, "interval": s}. Prints {"ready": url}, then per connection one
line {"token": {"conn": i, "sent": body bytes written, "client_closed": bool, "seconds": duration}} when
it ends (the line shape of the Node IdPs, so authtest_helpers.NodeIdP runs it with sys.executable).

modes:
  trickle   200 OK with Content-Length N, then one body byte every `interval` seconds
  chunked   200 OK, chunked, N body bytes as fast as the client takes them (no length declared)
  declared  200 OK with Content-Length N, then N body bytes as fast as the client takes them
  gzip      200 OK, Content-Encoding: gzip, chunked: the gzip of N zero bytes (a compression bomb)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
import time
import zlib

CHUNK = 64 * 1024


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)


def _gzip_stream(total: int) -> list[bytes]:
    comp = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(1024 * 1024)
    out = []
    left = total
    while left > 0:
        n = min(left, len(zeros))
        out.append(comp.compress(zeros[:n]))
        left -= n
    out.append(comp.flush())
    return [c for c in out if c]


async def main() -> None:
    opts = json.loads(sys.argv[1])
    mode = opts["mode"]
    total = int(opts.get("bytes", 300 * 1024 * 1024))
    interval = float(opts.get("interval", 1.0))
    counter = itertools.count(1)
    gz = _gzip_stream(total) if mode == "gzip" else []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = next(counter)
        start = time.monotonic()
        sent = 0
        client_closed = False
        try:
            await _read_request(reader)
            headers = ["HTTP/1.1 200 OK", "Content-Type: application/json", "Connection: close"]
            if mode in ("trickle", "declared"):
                headers.append(f"Content-Length: {total}")
            else:
                headers.append("Transfer-Encoding: chunked")
            if mode == "gzip":
                headers.append("Content-Encoding: gzip")
            writer.write(("\r\n".join(headers) + "\r\n\r\n").encode())
            await writer.drain()
            eof = asyncio.ensure_future(reader.read(1))  # b"" once the client closes its side
            if mode == "trickle":
                body = b'{"access_token": "' + b"x" * max(0, total - 20)
                for i in range(total):
                    if eof.done():
                        break
                    writer.write(body[i : i + 1] if i < len(body) else b"}")
                    await writer.drain()
                    sent += 1
                    await asyncio.wait([eof], timeout=interval)
            else:
                chunks = gz if mode == "gzip" else None
                block = b"{" + b"a" * (CHUNK - 1)
                left = total
                index = 0
                while not eof.done():
                    if chunks is not None:
                        if index >= len(chunks):
                            break
                        data = chunks[index]
                        index += 1
                    else:
                        if left <= 0:
                            break
                        data = block[: min(left, CHUNK)]
                        left -= len(data)
                    writer.write(
                        f"{len(data):x}\r\n".encode() + data + b"\r\n" if mode != "declared" else data
                    )
                    await writer.drain()
                    sent += len(data)
                if mode != "declared" and not eof.done():
                    writer.write(b"0\r\n\r\n")
                    await writer.drain()
            if not eof.done():
                await asyncio.wait([eof], timeout=30)
            client_closed = eof.done() and not eof.cancelled() and eof.result() == b""
            eof.cancel()
        except (ConnectionError, asyncio.IncompleteReadError):
            client_closed = True
        finally:
            line = {"conn": conn, "sent": sent, "client_closed": client_closed}
            line["seconds"] = round(time.monotonic() - start, 3)
            sys.stdout.write(json.dumps({"token": line}) + "\n")
            sys.stdout.flush()
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(json.dumps({"ready": f"http://127.0.0.1:{port}"}) + "\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
