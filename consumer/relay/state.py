"""Optional live state: the merged session per event ("the board now"), written atomically on change.

Merge rules (RedMist's): a snapshot (SessionState, car rows with the short JSON names) replaces the
event's state; a session patch sets its non-null fields (a present list replaces the whole list); a
car patch (camelCase names) updates the row with the same car `number`, non-null fields only, mapped
to the row's short names through the contract's MessagePack keys; `ReceiveReset` clears everything
until the next snapshot.

The file (`[redmist] state_path`) is `{"updated_at": ..., "events": {"<id>": SessionState}}`, written
to a temp file in the same directory and renamed over the target (readers never see half a file), at
most every `min_interval` seconds while changes keep coming.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from consumer.logs import get_logger
from consumer.relay import contract
from consumer.relay.envelope import Clock

log = get_logger("consumer.relay.state")


def _patch_to_row_names() -> dict[str, str]:
    rows = {f.key: f.json_name for f in contract.CONTRACT.types["CarPosition"].fields}
    return {
        f.json_name: rows[f.key] for f in contract.CONTRACT.types["CarPositionPatch"].fields if f.key in rows
    }


class LiveState:
    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        min_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.min_interval = min_interval
        self._clock = clock
        self._names = _patch_to_row_names()
        self.sessions: dict[str, dict[str, Any]] = {}
        self.cars: dict[str, dict[str, dict[str, Any]]] = {}
        self.version = 0
        self.written_version = 0
        self._changed = asyncio.Event()
        self._stamp = Clock()
        # -- read API for the board server (h13; minimal, to be reconciled with h12's) --
        self._epochs: dict[str, int] = {}
        self._last_message: dict[str, float] = {}
        self._bumped = asyncio.Event()

    def _touch(self, key: str | None = None) -> None:
        self.version += 1
        self._changed.set()
        if key is not None:
            self._last_message[key] = self._clock()
        bumped, self._bumped = self._bumped, asyncio.Event()
        bumped.set()

    def _new_epoch(self, key: str) -> None:
        self._epochs[key] = self._epochs.get(key, 0) + 1

    # -- read API (h13-board; minimal versions of the names h12-redmist provides) --------------

    def events(self) -> list[str]:
        """Event ids with any state, sorted."""
        return sorted(set(self.sessions) | set(self.cars), key=lambda k: (len(k), k))

    def event_state(self, event_id: int | str) -> dict[str, Any] | None:
        """The merged SessionState of one event with its car rows, or None without any state."""
        key = str(event_id)
        if key not in self.sessions and key not in self.cars:
            return None
        session = dict(self.sessions.get(key, {}))
        session["carPositions"] = list(self.cars.get(key, {}).values())
        return session

    def epoch(self, event_id: int | str) -> int:
        """Bumped when the event's board starts over (ReceiveReset, a new session)."""
        return self._epochs.get(str(event_id), 0)

    def event_status(self, event_id: int | str) -> str:
        session = self.sessions.get(str(event_id))
        if not session or "isLive" not in session:
            return "unknown"
        return "live" if session["isLive"] else "not_live"

    def last_message_at(self, event_id: int | str) -> float | None:
        """When (monotonic clock) the last message for this event was merged."""
        return self._last_message.get(str(event_id))

    async def wait_changed(self, since_version: int) -> int:
        """Wait until `version` differs from `since_version`; return the new version."""
        while self.version == since_version:
            await self._bumped.wait()
        return self.version

    # -- merge (called from relay watchers; synchronous and cheap) -----------------------------

    def on_snapshot(self, state: dict[str, Any], event_id: int | str | None) -> None:
        key = str(event_id if event_id is not None else state.get("eventId"))
        session = {k: v for k, v in state.items() if k != "carPositions"}
        old = self.sessions.get(key)
        if old is None or old.get("sessionId") != session.get("sessionId"):
            self._new_epoch(key)
        self.sessions[key] = session
        rows = state.get("carPositions") or []
        self.cars[key] = {str(r.get("n")): dict(r) for r in rows if isinstance(r, dict)}
        self._touch(key)

    def on_session_patch(self, args: list[Any], event_id: int | str | None) -> None:
        if not args or not isinstance(args[0], dict):
            return
        patch = args[0]
        key = str(event_id if event_id is not None else patch.get("eventId"))
        session = self.sessions.setdefault(key, {})
        sid = patch.get("sessionId")
        if sid is not None and "sessionId" in session and session["sessionId"] != sid:
            self._new_epoch(key)
        for name, value in patch.items():
            if value is None:
                continue
            if name == "carPositions" and isinstance(value, list):
                self.cars[key] = {str(r.get("n")): dict(r) for r in value if isinstance(r, dict)}
                continue
            session[name] = value
        self._touch(key)

    def on_car_patches(self, args: list[Any], event_id: int | str | None) -> None:
        if not args or not isinstance(args[0], list):
            return
        names = self._names
        key = None
        for patch in args[0]:
            if not isinstance(patch, dict) or patch.get("number") is None:
                continue
            key = str(event_id if event_id is not None else patch.get("eventId"))
            cars = self.cars.setdefault(key, {})
            row = cars.setdefault(str(patch["number"]), {})
            for name, value in patch.items():
                if value is not None:
                    row[names.get(name) or str(name)] = value
        self._touch(key)

    def reset(self) -> None:
        for key in set(self.sessions) | set(self.cars):
            self._new_epoch(key)
        self.sessions.clear()
        self.cars.clear()
        self._touch()

    def board(self) -> dict[str, Any]:
        events: dict[str, Any] = {}
        for key in sorted(set(self.sessions) | set(self.cars)):
            session = dict(self.sessions.get(key, {}))
            session["carPositions"] = list(self.cars.get(key, {}).values())
            events[key] = session
        return {"updated_at": self._stamp.now(), "events": events}

    # -- output --------------------------------------------------------------------------------

    def write_now(self) -> None:
        """Write the board atomically (blocking; run it in a thread)."""
        if self.path is None:
            return
        version = self.version
        data = msgspec.json.encode(self.board())
        directory = self.path.parent
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o640)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.written_version = version

    async def run(self) -> None:
        """Rewrite the file after changes, at most every `min_interval` seconds; final write on cancel."""
        if self.path is None:
            return
        try:
            while True:
                await self._changed.wait()
                self._changed.clear()
                try:
                    await asyncio.to_thread(self.write_now)
                except OSError as err:
                    log.error("state file write failed", path=str(self.path), error=str(err))
                await asyncio.sleep(self.min_interval)  # rate limit, not synchronisation
        finally:
            if self.version != self.written_version:
                with contextlib.suppress(OSError):
                    self.write_now()
