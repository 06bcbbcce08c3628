"""RedMist's human view of relayed records: flag names, and one short line per record for the stdout
sink's `pretty` mode (`StdoutSink(formatter=human_line)`): for car patches the car numbers with their
positions (`#42 P3`), for session patches the flag and time to go, for snapshots cars and flag.
"""

from __future__ import annotations

from typing import Any

import msgspec

from consumer.redmist import contract
from consumer.sinks.stdout import plain_line

__all__ = ["FLAGS", "flag_name", "human_line"]

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
_FLAG_NAMES = {v: k for k, v in contract.CONTRACT.enums["Flags"].items()}


def flag_name(flag: Any) -> str | None:
    """The contract's name of a `Flags` value (`Green`), None for anything else."""
    return _FLAG_NAMES.get(flag) if isinstance(flag, int) else None


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
    """One record as a short human-readable line (falls back to `plain_line` / the JSON)."""
    try:
        rec = msgspec.json.decode(line)
        ts = str(rec.get("received_at", ""))[11:23]
        kind, target = rec.get("kind"), rec.get("target")
        ev = rec.get("event_id")
        head = f"{ts} {target}" + (f" ev={ev}" if ev is not None else "")
        args = rec.get("arguments") or []
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
    except (msgspec.DecodeError, AttributeError, TypeError, IndexError, KeyError):
        pass
    return plain_line(line)
