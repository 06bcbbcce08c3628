"""JSON lines on stdout; with `pretty` on a TTY, a compact human view instead.

The human view is one line per record: time, target, event, the arguments cut short (`plain_line`), or
a hub profile's own view given as `formatter`. It is for people watching a terminal; anything consuming
stdout programmatically gets the JSON lines (pretty is ignored when stdout is not a TTY).

The real stdout is written with `os.write` on file descriptor 1 from the sink's own daemon thread, not
through `sys.stdout.buffer`: a reader that stops reading blocks only that thread (never the event loop,
never a buffer lock the interpreter needs at exit), and the process still exits at the end of its
shutdown grace; what the thread was writing is counted as dropped at shutdown.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Sequence
from typing import BinaryIO

import msgspec

from consumer.sinks.threads import SinkThread

__all__ = ["StdoutSink", "plain_line"]

Formatter = Callable[[bytes], str]


def plain_line(line: bytes) -> str:
    """One record as a short line with no hub knowledge: time, target, event id, the arguments cut
    short (falls back to the JSON on anything unexpected). A hub profile may give a richer one."""
    try:
        rec = msgspec.json.decode(line)
        ts = str(rec.get("received_at", ""))[11:23]
        target = rec.get("target")
        ev = rec.get("event_id")
        args = rec.get("arguments") or []
        if rec.get("kind") == "connection":
            return f"{ts} -- {target}" + (f": {args[0]}" if args else "")
        head = f"{ts} {target}" + (f" ev={ev}" if ev is not None else "")
        return f"{head} {msgspec.json.encode(args).decode()[:120]}"
    except (msgspec.DecodeError, AttributeError, TypeError, IndexError, KeyError):
        return line.decode("utf-8", "replace")


class StdoutSink:
    sync_interval: float | None = None

    def __init__(
        self,
        *,
        pretty: bool = False,
        stream: BinaryIO | None = None,
        name: str = "stdout",
        fd: int = 1,
        formatter: Formatter | None = None,
    ) -> None:
        """`stream`: write to this binary stream instead of file descriptor `fd` (tests); `formatter`:
        the human view of one record with `pretty` on a TTY (default `plain_line`)."""
        self.formatter = formatter or plain_line
        self.name = name
        self._stream = stream
        self._fd = fd
        isatty = getattr(stream, "isatty", lambda: False) if stream is not None else lambda: os.isatty(fd)
        self.pretty = pretty and bool(isatty())
        self._io = SinkThread(f"sink:{name}")

    async def open(self) -> None:
        return None

    async def write(self, lines: Sequence[bytes]) -> None:
        await self._io.run(self._write, lines)

    def _write(self, lines: Sequence[bytes]) -> None:
        if self.pretty:
            data = "".join(self.formatter(line) + "\n" for line in lines).encode()
        else:
            data = b"\n".join([*lines, b""])  # one copy: the lines, each with its newline
        if self._stream is not None:
            self._stream.write(data)
            self._stream.flush()
            return
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            if n <= 0:
                raise OSError(errno.EIO, "write returned 0")
            view = view[n:]

    async def flush(self) -> None:
        if self._stream is not None:
            await self._io.run(self._stream.flush)

    async def reopen(self) -> None:
        return None

    async def close(self) -> None:
        try:
            await self.flush()
        finally:
            self._io.stop()
