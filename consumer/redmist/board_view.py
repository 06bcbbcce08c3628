"""The terminal leaderboard of `event-consumer demo`: top N cars per event, flag, time to go, redrawn
in place (cursor home, each line cleared to its end, the rest of the screen cleared) on a TTY.

`render()` is pure (state in, lines out; visible width never above the terminal's); `TerminalBoard`
redraws at most `fps` times a second, only when the board, the hub state or the terminal size changed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from consumer.redmist.view import flag_name

if TYPE_CHECKING:
    from consumer.web.board import BoardSource

__all__ = ["TerminalBoard", "render"]

# ANSI background per RedMist flag (Flags enum): green, yellow, red, white, checkered, black, ...
_FLAG_SGR = {1: "42;30", 2: "43;30", 3: "41;97", 4: "47;30", 5: "107;30", 6: "40;97", 12: "43;30"}
CSI = "\x1b["


def _lap(t: Any) -> str:
    text = str(t or "")
    if text.startswith("00:"):
        text = text[3:]
    return text.removeprefix("0") if len(text) > 4 and text[0] == "0" and text[1] != ":" else text


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def render(
    states: list[tuple[str, dict[str, Any] | None]],
    *,
    width: int,
    height: int,
    title: str,
    hub: str,
    top: int | None = None,
    color: bool = True,
) -> list[str]:
    """The screen as lines (at most `height`, each at most `width` visible characters)."""
    # (text, a token to colour, its SGR)
    lines: list[tuple[str, str | None, str]] = [(_fit(f"{title} · hub {hub}", width), None, "")]
    shown = [s for s in states if s[1] is not None] or states
    per_event = max(1, (height - 1) // max(1, len(shown)) - 3)
    if top is not None:
        per_event = min(per_event, top)
    for event_id, state in shown:
        if state is None:
            lines.append((_fit(f"event {event_id}: waiting for the board…", width), None, ""))
            continue
        flag = state.get("currentFlag")
        name = flag_name(flag) or "—"
        cars = [r for r in state.get("carPositions") or () if isinstance(r, dict)]
        laps = max((int(r.get("llp") or 0) for r in cars), default=0)
        ttg = state.get("timeToGo") or ""
        parts = [  # what matters most first: a narrow terminal cuts the end
            f"[{name}]",
            f"to go {ttg}" if ttg and ttg != "00:00:00" else "",
            f"race {state.get('runningRaceTime') or '—'}",
            f"lap {laps}" if laps else "",
            str(state.get("eventName") or f"event {event_id}"),
            str(state.get("sessionName") or ""),
        ]
        header = _fit(" · ".join(p for p in parts if p), width)
        sgr = _FLAG_SGR.get(flag) if isinstance(flag, int) else None
        token = f"[{name}]"
        lines.append((header, token if color and sgr and token in header else None, sgr or ""))
        columns = f"{'P':>3} {'+/-':>4} {'#':<5} {'driver':<22} {'last lap':>12} {'gap':>8} {'best':>9}"
        lines.append((_fit(columns, width), None, ""))
        ranked = sorted(cars, key=lambda r: int(r.get("ovp") or 0) if int(r.get("ovp") or 0) > 0 else 10**9)
        for r in ranked[:per_event]:
            gained = r.get("opg")
            gain = (
                ""
                if not isinstance(gained, int) or gained in (0, -999)
                else (f"▲{gained}" if gained > 0 else f"▼{-gained}")
            )
            pit = " PIT" if r.get("ip") or r.get("enp") else ""
            who = str(r.get("dn") or "")[:22]
            last = f"L{r.get('llp') or 0} {_lap(r.get('ltm'))}" if r.get("llp") else ""
            row = (
                f"{r.get('ovp') or '':>3} {gain:>4} {('#' + str(r.get('n') or '')):<5} {who:<22} "
                f"{last:>12} {r.get('og') or ''!s:>8} {_lap(r.get('bt')):>9}{pit}"
            )
            lines.append((_fit(row, width), None, ""))
        lines.append(("", None, ""))
    out = []
    for text, mark, code in lines[:height]:
        out.append(text.replace(mark, f"{CSI}{code}m{mark}{CSI}0m", 1) if mark else text)
    return out


class TerminalBoard:
    def __init__(
        self,
        source: Callable[[], BoardSource | None],
        events: list[str],
        *,
        title: str,
        hub: Callable[[], str],
        out: TextIO,
        top: int | None = None,
        fps: float = 4.0,
    ) -> None:
        self.source = source
        self.events = events
        self.title = title
        self.hub = hub
        self.out = out
        self.top = top
        self.interval = 1.0 / fps
        self.frames = 0

    def _size(self) -> tuple[int, int]:
        try:
            size = os.get_terminal_size(self.out.fileno())
        except (OSError, ValueError):
            size = shutil.get_terminal_size()
        return size.columns, size.lines

    def draw(self) -> None:
        width, height = self._size()
        src = self.source()
        states = [(e, src.event_state(e) if src is not None else None) for e in self.events]
        lines = render(states, width=width, height=height, title=self.title, hub=self.hub(), top=self.top)
        body = "".join(f"{line}{CSI}K\n" for line in lines[:-1]) + (lines[-1] + f"{CSI}K" if lines else "")
        self.out.write(f"{CSI}H{body}{CSI}J")
        self.out.flush()
        self.frames += 1

    async def run(self) -> None:
        """Redraw when something changed; the loop's sleep is the frame rate, not synchronisation."""
        self.out.write(f"{CSI}?25l{CSI}2J")
        last: tuple[Any, ...] | None = None
        try:
            while True:
                src = self.source()
                key = (getattr(src, "version", None), self.hub(), self._size())
                if key != last:
                    last = key
                    self.draw()
                await asyncio.sleep(self.interval)
        finally:
            self.out.write(f"{CSI}?25h\n")
            self.out.flush()
