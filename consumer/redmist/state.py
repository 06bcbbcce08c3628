"""The live state: the merged session per event ("the board now"), kept right the way RedMist's own UI
keeps it, optionally written atomically to a file on change.

Merge rules (RedMist's):
- a snapshot (SessionState, car rows with the short JSON names) replaces the event's state;
- a session patch sets its non-null fields (a present list replaces the whole list);
- a car patch (camelCase names) updates the row with the same car `number`, non-null fields only,
  mapped to the row's short names through the contract's MessagePack keys (slots beyond the contract,
  `key<n>`, keep their generic name);
- `ReceiveReset` clears every event until the next snapshot.

Keeping the board right (RedMist's UI does the same):
- **a new `sessionId` is a reset**: RedMist starts a new session with a new `sessionId` and no
  `ReceiveReset`. A session or car patch whose `sessionId` differs from the event's current one drops
  the event's rows and session fields (its `epoch` goes up) and asks for a snapshot
  (`on_resync(event_id)`, wired to the RedMist profile's snapshot scheduler);
- **rows only for entered cars**: once the event's `eventEntries` are known (a snapshot or a session
  patch carrying a non-empty list), a full entry list removes the rows of cars not in it, and car
  patches for numbers not in it are counted (`unknown_car_patches`) and skipped here. The relayed
  lines are not affected: they carry every patch as received. An empty entry list means "not known"
  (rows are then kept for every car patched);
- `event_status` is what the profile learned from the snapshot endpoint: "live", "not_live" (a 404:
  no timing processor for the event) or "unknown".

Bounded whatever the hub sends (event ids, car numbers and field names come from the hub): with
`events` given (the daemon passes `[redmist] events`), messages for any other event are counted
(`foreign_event_messages`) and kept out of the board; an event holds at most `max_cars` rows and a row
at most `max_fields` fields — what does not fit is counted (`over_limit`) and skipped here, never in the
relayed lines.

Read API (the board HTTP API, SSE and the NATS KV board read this): `events()`, `event_state(id)`,
`epoch(id)`, `event_status(id)`, `last_message_at(id)`, `await wait_changed(version)`, `version`,
`board()`. Event ids are strings (the file's keys).

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
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import msgspec

from consumer.logs import get_logger
from consumer.redmist import contract
from consumer.relay.envelope import Clock
from consumer.versioned import Versioned

__all__ = ["LiveState"]

log = get_logger(__name__)


def _patch_to_row_names() -> dict[str, str]:
    rows = {f.key: f.json_name for f in contract.CONTRACT.types["CarPosition"].fields}
    return {
        f.json_name: rows[f.key] for f in contract.CONTRACT.types["CarPositionPatch"].fields if f.key in rows
    }


def _key(event_id: int | str | None, fallback: Any) -> str:
    return str(event_id if event_id is not None else fallback)


def _entry_numbers(entries: Any) -> set[str] | None:
    """The car numbers of a full entry list; None when it tells nothing (absent, empty, malformed)."""
    if not isinstance(entries, list) or not entries:
        return None
    numbers = {str(e.get("no")) for e in entries if isinstance(e, dict) and e.get("no") is not None}
    return numbers or None


class LiveState(Versioned):
    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        min_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        events: Collection[int | str] | None = None,
        max_cars: int = 1000,
        max_fields: int = 256,
    ) -> None:
        super().__init__()
        self.path = Path(path) if path is not None else None
        self._followed = frozenset(str(e) for e in events) if events is not None else None
        self.max_cars = max_cars
        self.max_fields = max_fields
        self.foreign_event_messages = 0  # messages for events not followed (kept out of the board)
        self.over_limit = 0  # car rows / fields beyond max_cars / max_fields (skipped here)
        self.min_interval = min_interval
        self._clock = clock
        self._names = _patch_to_row_names()
        self.sessions: dict[str, dict[str, Any]] = {}
        self.cars: dict[str, dict[str, dict[str, Any]]] = {}
        self.entries: dict[str, set[str]] = {}  # events whose entry list is known
        self._session_ids: dict[str, str] = {}
        self._epochs: dict[str, int] = {}
        self._status: dict[str, str] = {}
        self._last_message: dict[str, float] = {}
        self.unknown_car_patches = 0  # car patches skipped because the car is not entered
        self.session_changes = 0
        # Called with the event id when the board needs a fresh snapshot (a new session).
        self.on_resync: Callable[[str], None] | None = None
        self.written_version = 0
        self._changed = asyncio.Event()
        self._stamp = Clock()

    def _touch(self) -> None:
        super()._touch()
        self._changed.set()

    # -- read API ------------------------------------------------------------------------------

    def events(self) -> list[str]:
        """The ids of the events that have state (a snapshot or patches), sorted."""
        return sorted(set(self.sessions) | set(self.cars))

    def event_state(self, event_id: str) -> dict[str, Any] | None:
        """The merged SessionState of one event (car rows in `carPositions`, short names), as
        `board()["events"][event_id]`; None when the event has no state."""
        key = str(event_id)
        if key not in self.sessions and key not in self.cars:
            return None
        session = dict(self.sessions.get(key, {}))
        session["carPositions"] = list(self.cars.get(key, {}).values())
        return session

    def epoch(self, event_id: str) -> int:
        """Goes up every time the event's board is reset (ReceiveReset, a new session); 0 at first."""
        return self._epochs.get(str(event_id), 0)

    def event_status(self, event_id: str) -> str:
        """ "live" (a snapshot was served), "not_live" (the snapshot endpoint answers 404 and the
        profile holds its polling) or "unknown"."""
        return self._status.get(str(event_id), "unknown")

    def last_message_at(self, event_id: str) -> float | None:
        """Monotonic time of the last hub message (session or car patch) for the event."""
        return self._last_message.get(str(event_id))

    def board(self) -> dict[str, Any]:
        events: dict[str, Any] = {}
        for key in self.events():
            events[key] = self.event_state(key)
        return {"updated_at": self._stamp.now(), "events": events}

    # -- status (set by the RedMist profile) -----------------------------------------------------

    def set_status(self, event_id: int | str, status: str) -> None:
        key = str(event_id)
        if self._status.get(key) != status:
            self._status[key] = status
            self._touch()

    # -- merge (called from relay watchers; synchronous and cheap) -----------------------------

    def _reset_event(self, key: str) -> None:
        self.sessions.pop(key, None)
        self.cars.pop(key, None)
        self.entries.pop(key, None)
        self._session_ids.pop(key, None)
        self._epochs[key] = self._epochs.get(key, 0) + 1

    def _check_session(self, key: str, session_id: Any) -> None:
        """A sessionId different from the event's current one: a new session (no ReceiveReset)."""
        if session_id is None:
            return
        sid = str(session_id)
        current = self._session_ids.get(key)
        if current is None:
            self._session_ids[key] = sid
            return
        if sid == current:
            return
        self.session_changes += 1
        log.info("redmist.new_session", event_id=key, session_id=sid)
        self._reset_event(key)
        self._session_ids[key] = sid
        if self.on_resync is not None:
            self.on_resync(key)

    def _foreign(self, key: str) -> bool:
        if self._followed is None or key in self._followed:
            return False
        self.foreign_event_messages += 1
        return True

    def _set_entries(self, key: str, entries: Any) -> None:
        numbers = _entry_numbers(entries)
        if numbers is None:
            return
        self.entries[key] = numbers
        cars = self.cars.get(key)
        if cars:
            for number in [n for n in cars if n not in numbers]:
                del cars[number]

    def _rows(self, key: str, rows: Any) -> dict[str, dict[str, Any]]:
        entered = self.entries.get(key)
        out: dict[str, dict[str, Any]] = {}
        for r in rows if isinstance(rows, list) else ():
            if isinstance(r, dict):
                number = str(r.get("n"))
                if entered is not None and number not in entered:
                    continue
                if len(out) >= self.max_cars or len(r) > self.max_fields:
                    self.over_limit += 1
                    continue
                out[number] = dict(r)
        return out

    def on_snapshot(self, state: dict[str, Any], event_id: int | str | None) -> None:
        key = _key(event_id, state.get("eventId"))
        if self._foreign(key):
            return
        sid = state.get("sessionId")
        current = self._session_ids.get(key)
        if sid is not None and current is not None and str(sid) != current:
            self.session_changes += 1
            self._reset_event(key)  # the snapshot itself is the new session's baseline
        self.entries.pop(key, None)
        if sid is not None:
            self._session_ids[key] = str(sid)
        self.sessions[key] = {
            k: v for i, (k, v) in enumerate(state.items()) if k != "carPositions" and i < self.max_fields
        }
        self._set_entries(key, state.get("eventEntries"))
        self.cars[key] = self._rows(key, state.get("carPositions"))
        self._status[key] = "live"
        self._touch()

    def on_session_patch(self, args: list[Any], event_id: int | str | None) -> None:
        if not args or not isinstance(args[0], dict):
            return
        patch = args[0]
        key = _key(event_id, patch.get("eventId"))
        if self._foreign(key):
            return
        self._last_message[key] = self._clock()
        self._check_session(key, patch.get("sessionId"))
        session = self.sessions.setdefault(key, {})
        for name, value in patch.items():
            if value is None:
                continue
            if name == "carPositions":
                continue  # applied after the entry list (which may arrive in the same patch)
            if name not in session and len(session) >= self.max_fields:
                self.over_limit += 1
                continue
            session[name] = value
        if patch.get("eventEntries") is not None:
            self._set_entries(key, patch["eventEntries"])
        if isinstance(patch.get("carPositions"), list):
            self.cars[key] = self._rows(key, patch["carPositions"])
        self._touch()

    def on_car_patches(self, args: list[Any], event_id: int | str | None) -> None:
        if not args or not isinstance(args[0], list):
            return
        names = self._names
        now = self._clock()
        for patch in args[0]:
            if not isinstance(patch, dict) or patch.get("number") is None:
                continue
            key = _key(event_id, patch.get("eventId"))
            if self._foreign(key):
                continue
            self._last_message[key] = now
            self._check_session(key, patch.get("sessionId"))
            number = str(patch["number"])
            entered = self.entries.get(key)
            if entered is not None and number not in entered:
                self.unknown_car_patches += 1
                continue
            cars = self.cars.setdefault(key, {})
            row = cars.get(number)
            if row is None:
                if len(cars) >= self.max_cars:
                    self.over_limit += 1
                    continue
                row = cars[number] = {}
            for name, value in patch.items():
                if value is None:
                    continue
                field = names.get(name) or str(name)
                if field not in row and len(row) >= self.max_fields:
                    self.over_limit += 1
                    continue
                row[field] = value
        self._touch()

    def reset(self) -> None:
        """ReceiveReset: every event's board is cleared until its next snapshot."""
        for key in self.events():
            self._epochs[key] = self._epochs.get(key, 0) + 1
        self.sessions.clear()
        self.cars.clear()
        self.entries.clear()
        self._session_ids.clear()
        self._touch()

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
                    log.error("redmist.state_write_failed", path=str(self.path), error=str(err))
                await asyncio.sleep(self.min_interval)  # rate limit, not synchronisation
        finally:
            if self.version != self.written_version:
                with contextlib.suppress(OSError):
                    self.write_now()
