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
        self._epochs: dict[str, int] = {}
        self._change: asyncio.Future[None] | None = None  # wait_changed()'s waiters

    def _touch(self) -> None:
        self.version += 1
        self._changed.set()
        if self._change is not None and not self._change.done():
            self._change.set_result(None)
        self._change = None

    # -- readers (board API, KV board) ---------------------------------------------------------
    # Minimal forms of the reader API (lane h12-redmist owns the full one; the lead reconciles).

    def events(self) -> list[str]:
        """The event ids with a board, sorted."""
        return sorted(set(self.sessions) | set(self.cars))

    def event_state(self, event_id: int | str) -> dict[str, Any] | None:
        """The merged board of one event (SessionState with `carPositions`), or None."""
        key = str(event_id)
        if key not in self.sessions and key not in self.cars:
            return None
        session = dict(self.sessions.get(key, {}))
        session["carPositions"] = list(self.cars.get(key, {}).values())
        return session

    def epoch(self, event_id: int | str) -> int:
        """Bumped when the event's board is replaced (snapshot) or cleared (reset), not on patches."""
        return self._epochs.get(str(event_id), 0)

    async def wait_changed(self, version: int) -> int:
        """Until `self.version` differs from `version`; returns the current version."""
        while self.version == version:
            if self._change is None:
                self._change = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._change)
        return self.version

    # -- merge (called from relay watchers; synchronous and cheap) -----------------------------

    def on_snapshot(self, state: dict[str, Any], event_id: int | str | None) -> None:
        key = str(event_id if event_id is not None else state.get("eventId"))
        session = {k: v for k, v in state.items() if k != "carPositions"}
        self.sessions[key] = session
        rows = state.get("carPositions") or []
        self.cars[key] = {str(r.get("n")): dict(r) for r in rows if isinstance(r, dict)}
        self._epochs[key] = self._epochs.get(key, 0) + 1
        self._touch()

    def on_session_patch(self, args: list[Any], event_id: int | str | None) -> None:
        if not args or not isinstance(args[0], dict):
            return
        patch = args[0]
        key = str(event_id if event_id is not None else patch.get("eventId"))
        session = self.sessions.setdefault(key, {})
        for name, value in patch.items():
            if value is None:
                continue
            if name == "carPositions" and isinstance(value, list):
                self.cars[key] = {str(r.get("n")): dict(r) for r in value if isinstance(r, dict)}
                continue
            session[name] = value
        self._touch()

    def on_car_patches(self, args: list[Any], event_id: int | str | None) -> None:
        if not args or not isinstance(args[0], list):
            return
        names = self._names
        for patch in args[0]:
            if not isinstance(patch, dict) or patch.get("number") is None:
                continue
            key = str(event_id if event_id is not None else patch.get("eventId"))
            cars = self.cars.setdefault(key, {})
            row = cars.setdefault(str(patch["number"]), {})
            for name, value in patch.items():
                if value is not None:
                    row[names.get(name) or str(name)] = value
        self._touch()

    def reset(self) -> None:
        for key in self.events():
            self._epochs[key] = self._epochs.get(key, 0) + 1
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
