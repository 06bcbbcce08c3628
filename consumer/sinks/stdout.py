"""JSON lines on stdout; with `pretty` on a TTY, a compact human view instead.

The human view is one line per record: time, target, event, and for car patches the car numbers with
their positions (`#42 P3`), for session patches the flag and time to go. It is for people watching a
terminal; anything consuming stdout programmatically gets the JSON lines (pretty is ignored when
stdout is not a TTY).

The real stdout is written with `os.write` on file descriptor 1 from the sink's own daemon thread, not
through `sys.stdout.buffer`: a reader that stops reading blocks only that thread (never the event loop,
never a buffer lock the interpreter needs at exit), and the process still exits at the end of its
shutdown grace; what the thread was writing is counted as dropped at shutdown.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import Any, BinaryIO

import msgspec

from consumer.sinks.threads import SinkThread

FLAGS = {
    0: "unknown",
    1: "green",
    2: "yellow",
    3: "red",
    4: "white",
    5: "checkered",
    6: "black",
    7: "purple35",
    8: "purple60",
    9: "blue",
    10: "meatball",
    11: "debris",
    12: "waving-yellow",
}
_MAX_CARS = 8


def _car(p: Any) -> str:
    if not isinstance(p, dict):
        return "?"
    num = p.get("number", p.get("n", "?"))
    pos = p.get("overallPosition", p.get("ovp"))
    out = f"#{num}"
    if pos is not None:
        out += f" P{pos}"
    lap = p.get("lastLapCompleted", p.get("llp"))
    if lap is not None:
        out += f" L{lap}"
    if p.get("isInPit") or p.get("isEnteredPit"):
        out += " pit"
    return out


def human_line(line: bytes) -> str:
    """One record as a short human-readable line (falls back to the JSON on anything unexpected)."""
    try:
        rec = msgspec.json.decode(line)
        ts = str(rec.get("received_at", ""))[11:23]
        kind, target = rec.get("kind"), rec.get("target")
        ev = rec.get("event_id")
        head = f"{ts} {target}" + (f" ev={ev}" if ev is not None else "")
        args = rec.get("arguments") or []
        if kind == "connection":
            return f"{ts} -- {target}" + (f": {args[0]}" if args else "")
        if kind == "snapshot":
            state = args[0] if args and isinstance(args[0], dict) else {}
            cars = state.get("carPositions") or []
            return f"{head} snapshot: {len(cars)} cars, flag {FLAGS.get(state.get('currentFlag', -1), '?')}"
        if target == "ReceiveCarPatches" and args and isinstance(args[0], list):
            patches = args[0]
            shown = ", ".join(_car(p) for p in patches[:_MAX_CARS])
            more = f" (+{len(patches) - _MAX_CARS})" if len(patches) > _MAX_CARS else ""
            return f"{head} {shown}{more}"
        if target == "ReceiveSessionPatch" and args and isinstance(args[0], dict):
            s = args[0]
            parts = []
            if s.get("currentFlag") is not None:
                parts.append(f"flag {FLAGS.get(s['currentFlag'], s['currentFlag'])}")
            if s.get("timeToGo"):
                parts.append(f"to go {s['timeToGo']}")
            if s.get("runningRaceTime"):
                parts.append(f"race {s['runningRaceTime']}")
            return f"{head} {' '.join(parts)}".rstrip()
        return f"{head} {msgspec.json.encode(args).decode()[:120]}"
    except (msgspec.DecodeError, AttributeError, TypeError, IndexError, KeyError):
        return line.decode("utf-8", "replace")


class StdoutSink:
    sync_interval: float | None = None

    def __init__(
        self, *, pretty: bool = False, stream: BinaryIO | None = None, name: str = "stdout", fd: int = 1
    ) -> None:
        """`stream`: write to this binary stream instead of file descriptor `fd` (tests)."""
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
            data = "".join(human_line(line) + "\n" for line in lines).encode()
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
