"""Race sources for the simulator: a replay engine for `redmist-replay/laps@2` and a synthetic generator.

`RaceEngine` is pure (no asyncio, no clock): `advance_to(race_ms)` processes every lap crossing, pit
entry/exit and flag change up to that race time and returns one `Update` with contract-shaped patches
in RedMist's JSON form (`CarPositionPatch` camelCase names, `SessionStatePatch` camelCase): each car
patch carries `eventId`, `sessionId` (strings), `number` and only the fields that changed since the
last update. `snapshot()` is the full `SessionState` (car rows with `CarPosition`'s short names).
The hub drives engines against a clock at a speed factor; tests drive them as fast as possible.

`synthetic_replay(seed, ...)` builds a replay-shaped race (any number of cars) so several events and
load tests use the same engine.

Size (about 715 lines, just over the 700 guideline): one pure engine whose lap, pit, flag and gap
rules read one another's state, and the generator of its input.

As the real hub: `lastUpdated` is always null (RedMist never assigns it); `gpsHealth` /
`gpsSourceHealth` (timing-common 1.17.0) carry values only when the replay has telemetry data
(`"hasTelemetrySource": true` and per car `"gh": [[lap, health 0-5], ...]`, which synthetic races
have); the recorded replays have none, so they are null there. `new_session()` starts the next
session of the event (new `sessionId`, no ReceiveReset: that is how RedMist changes sessions).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from consumer.redmist.contract import CONTRACT, format_datetime

REPLAY_FORMAT = "redmist-replay/laps@2"
PACKAGED_REPLAYS = ("244-6", "390-13")

FLAG_GREEN, FLAG_YELLOW, FLAG_RED, FLAG_CHECKERED = 1, 2, 3, 5

# CarPositionPatch name -> CarPosition (snapshot row) name, by MessagePack key.
_PATCH_TO_ROW: dict[str, str] = {
    p.json_name: r.json_name
    for p, r in zip(
        CONTRACT.type("CarPositionPatch").fields, CONTRACT.type("CarPosition").fields, strict=True
    )
}


class ReplayError(ValueError):
    """The replay file is not a `redmist-replay/laps@2` document."""


def load_replay(source: str | Path) -> dict[str, Any]:
    """A packaged replay by name (`244-6`) or a path to a replay file."""
    name = str(source)
    if name in PACKAGED_REPLAYS:
        text = resources.files("consumer.sim").joinpath("replays", f"{name}.json").read_text(encoding="utf-8")
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as err:
            raise ReplayError(f"cannot read replay {name}: {err.strerror}") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ReplayError(f"replay {name} is not JSON: {err}") from err
    validate_replay(data, name)
    return data  # type: ignore[no-any-return]


def validate_replay(data: Any, name: str = "<replay>") -> None:
    if not isinstance(data, dict) or data.get("format") != REPLAY_FORMAT:
        raise ReplayError(f"{name}: not a {REPLAY_FORMAT} document")
    for key in ("eventId", "sessionId", "durationMs", "cars", "flags", "entries"):
        if key not in data:
            raise ReplayError(f"{name}: missing {key!r}")


def format_lap_time(ms: int) -> str:
    """RedMist's lap/total time form `HH:MM:SS.fff`."""
    ms = max(0, int(ms))
    seconds, millis = divmod(ms, 1000)
    hours, rem = divmod(seconds, 3600)
    minutes, secs = divmod(rem, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def format_clock(ms: int) -> str:
    """`HH:MM:SS` (time to go, running race time, local time of day)."""
    seconds = max(0, int(ms)) // 1000
    hours, rem = divmod(seconds, 3600)
    minutes, secs = divmod(rem, 60)
    return f"{hours % 100:02d}:{minutes:02d}:{secs:02d}"


def format_time_of_day_ticks(ms: int) -> str:
    """TimeOnly JSON form `HH:MM:SS.fffffff` for a time of day in ms."""
    ms = int(ms) % 86_400_000
    seconds, millis = divmod(ms, 1000)
    hours, rem = divmod(seconds, 3600)
    minutes, secs = divmod(rem, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis * 10_000:07d}"


def _gap(ahead: _Car, car: _Car) -> str:
    laps = ahead.laps - car.laps
    if laps > 0:
        return "1 lap" if laps == 1 else f"{laps} laps"
    return f"{max(0, car.elapsed - ahead.elapsed) / 1000:.3f}"


@dataclass(slots=True)
class Update:
    """What one advance produced: car patches (at most one per car) and an optional session patch."""

    race_ms: int
    car_patches: list[dict[str, Any]] = field(default_factory=list)
    session_patch: dict[str, Any] | None = None
    flag_changed: bool = False


@dataclass(slots=True)
class _Car:
    number: str
    klass: str
    start_order: int
    laps: int = 0
    elapsed: int = 0  # race ms at the last line crossing
    last_lap_ms: int = 0
    best_ms: int = 0
    best_lap: int = 0
    pit_stops: int = 0
    last_pitted: int | None = None
    lap_included_pit: bool = False
    in_pit: bool = False
    entered_pit: bool = False
    exited_pit: bool = False
    pit_entry_ms: int | None = None
    pit_duration_ms: int | None = None
    laps_led: int = 0
    start_position: int = 0
    class_start_position: int = 0
    track_flag: int = 0
    lap_start_tod_ms: int | None = None
    gps_health: int | None = None


class RaceEngine:
    """One event's session, replayed from a `redmist-replay/laps@2` document."""

    def __init__(
        self,
        replay: dict[str, Any],
        *,
        event_id: int | None = None,
        session_start: dt.datetime | None = None,
        is_simulation: bool = True,
    ) -> None:
        validate_replay(replay)
        self.replay = replay
        self.event_id = int(event_id if event_id is not None else replay["eventId"])
        self.session_id = int(replay["sessionId"])
        self.event_name = str(replay.get("eventName", f"Event {self.event_id}"))
        self.session_name = str(replay.get("sessionName", "Race"))
        self.track_name = str(replay.get("trackName", ""))
        self.organization_name = str(replay.get("organizationName", ""))
        self.duration_ms = int(replay["durationMs"])
        self.local_start_ms = int(replay.get("localStartMs", 0))
        self.is_simulation = is_simulation
        start = session_start or dt.datetime.now(dt.UTC)
        self.session_start = start.replace(microsecond=start.microsecond // 1000 * 1000)
        self.entries = {str(e["no"]): e for e in replay.get("entries", [])}
        self.has_telemetry = bool(replay.get("hasTelemetrySource", False))
        self.sessions_played = 1
        self._base_session_name = self.session_name
        self._build_timeline()
        self.reset()

    def new_session(self, session_start: dt.datetime | None = None) -> None:
        """The event's next session (RedMist: a new `sessionId`, and no ReceiveReset is sent)."""
        self.sessions_played += 1
        self.session_id += 1
        self.session_name = f"{self._base_session_name} (session {self.sessions_played})"
        start = session_start or dt.datetime.now(dt.UTC)
        self.session_start = start.replace(microsecond=start.microsecond // 1000 * 1000)
        self.reset()

    # --- timeline ------------------------------------------------------------------------------------

    def _build_timeline(self) -> None:
        events: list[tuple[int, int, str, Any]] = []
        seq = 0
        for flag in self.replay.get("flags", []):
            events.append((int(flag["startMs"]), seq, "flag", int(flag["f"])))
            seq += 1
        self.final_laps: dict[str, int] = {}
        self.best_laps: dict[str, int] = {}
        self._gps: dict[str, dict[int, int]] = {}
        for car in self.replay["cars"]:
            number = str(car["n"])
            if self.has_telemetry and car.get("gh"):
                self._gps[number] = {int(lap): int(h) for lap, h in car["gh"]}
            reclass = {int(lap): str(k) for lap, k in car.get("cc", [])}
            laps = car.get("laps", [])
            for lap in laps:
                lap_no, lap_ms, elapsed, flag, pit = (int(v) for v in lap[:5])
                if pit:
                    entry = elapsed - lap_ms + lap_ms // 2
                    events.append((entry, seq, "pit_in", (number, lap_ms)))
                    events.append((entry + max(1, (lap_ms * 2) // 5), seq + 1, "pit_out", number))
                    seq += 2
                events.append((elapsed, seq, "lap", (number, lap_no, lap_ms, flag, pit, reclass.get(lap_no))))
                seq += 1
            if laps:
                self.final_laps[number] = int(laps[-1][0])
                self.best_laps[number] = min(int(lap[1]) for lap in laps)
        events.sort(key=lambda e: (e[0], e[1]))
        self._timeline = events

    def reset(self) -> None:
        """Back to the start of the session (the hub sends ReceiveReset after this)."""
        self._next = 0
        self.race_ms = 0
        self.flag = 0
        self.flag_durations: list[dict[str, Any]] = []
        self.number_of_yellows = 0
        self.lead_changes = 0
        self._leader: str | None = None
        self._flag_time = {FLAG_GREEN: 0, FLAG_YELLOW: 0, FLAG_RED: 0}
        self._flag_since = 0
        self.green_laps = 0
        self.yellow_laps = 0
        first_crossing: dict[str, int] = {}
        for t, _, kind, payload in self._timeline:
            if kind == "lap" and payload[0] not in first_crossing:
                first_crossing[payload[0]] = t
        cars = []
        for i, car in enumerate(self.replay["cars"]):
            number = str(car["n"])
            entry = self.entries.get(number, {})
            cars.append(_Car(number=number, klass=str(car.get("c") or entry.get("c", "")), start_order=i))
            if number in self._gps:
                cars[-1].gps_health = self._gps[number].get(0)
        cars.sort(key=lambda c: (first_crossing.get(c.number, 1 << 62), c.start_order))
        class_count: dict[str, int] = {}
        for pos, car in enumerate(cars, start=1):
            car.start_order = pos
            car.start_position = pos
            class_count[car.klass] = class_count.get(car.klass, 0) + 1
            car.class_start_position = class_count[car.klass]
        self._cars = {c.number: c for c in cars}
        self._sent_cars: dict[str, dict[str, Any]] = {n: self._car_state(n, {}) for n in self._cars}
        self._positions(update_leader=False)
        self._sent_cars = {n: self._car_state(n, self._ranks) for n in self._cars}
        self._sent_session = self._session_fields()

    def session_started(self) -> Update:
        """The session patch that announces a new session (its id, name, start, entries, fields)."""
        patch: dict[str, Any] = {
            "eventId": self.event_id,
            "sessionId": self.session_id,
            "sessionName": self.session_name,
            "sessionStartTime": format_datetime(self.session_start),
            "eventEntries": self._entry_rows(),
        }
        patch.update(self._sent_session)
        return Update(race_ms=self.race_ms, session_patch=patch)

    def _entry_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "no": str(e["no"]),
                "nm": str(e.get("nm", "")),
                "t": str(e.get("t", "")),
                "c": str(e.get("c", "")),
            }
            for e in self.entries.values()
        ]

    @property
    def finished(self) -> bool:
        return self._next >= len(self._timeline) and self.race_ms >= self.duration_ms

    @property
    def first_lap_ms(self) -> int:
        """Race time of the first line crossing (the replay is idle before it)."""
        return next((t for t, _, kind, _ in self._timeline if kind == "lap"), 0)

    @property
    def end_ms(self) -> int:
        last = self._timeline[-1][0] if self._timeline else 0
        return max(self.duration_ms, last)

    # --- advancing -----------------------------------------------------------------------------------

    def advance_to(self, race_ms: int) -> Update:
        race_ms = min(max(self.race_ms, int(race_ms)), self.end_ms)
        update = Update(race_ms=race_ms)
        touched_flag = False
        while self._next < len(self._timeline) and self._timeline[self._next][0] <= race_ms:
            t, _, kind, payload = self._timeline[self._next]
            self._next += 1
            if kind == "flag":
                touched_flag |= self._on_flag(t, payload)
            elif kind == "lap":
                self._on_lap(t, payload)
            elif kind == "pit_in":
                car = self._cars[payload[0]]
                car.in_pit, car.entered_pit, car.exited_pit = True, True, False
                car.pit_entry_ms = t
                car.pit_duration_ms = None
            elif kind == "pit_out":
                car = self._cars[payload]
                car.in_pit, car.exited_pit = False, True
                if car.pit_entry_ms is not None:
                    car.pit_duration_ms = t - car.pit_entry_ms
        self.race_ms = race_ms
        self._positions(update_leader=True)
        for number in self._cars:
            state = self._car_state(number, self._ranks)
            sent = self._sent_cars[number]
            changed = {k: v for k, v in state.items() if sent.get(k) != v}
            if changed:
                sent.update(changed)
                patch = {"eventId": str(self.event_id), "sessionId": str(self.session_id), "number": number}
                patch.update(changed)
                update.car_patches.append(patch)
        session = self._session_fields()
        changed_s = {k: v for k, v in session.items() if self._sent_session.get(k) != v}
        if changed_s:
            self._sent_session.update(changed_s)
            patch_s: dict[str, Any] = {"eventId": self.event_id, "sessionId": self.session_id}
            patch_s.update(changed_s)
            update.session_patch = patch_s
        update.flag_changed = touched_flag
        return update

    def _on_flag(self, t: int, flag: int) -> bool:
        if flag == self.flag:
            return False
        if self.flag in self._flag_time:
            self._flag_time[self.flag] += t - self._flag_since
        if self.flag_durations:
            self.flag_durations[-1]["e"] = self._wall(t)
        if flag == FLAG_YELLOW:
            self.number_of_yellows += 1
        self.flag = flag
        self._flag_since = t
        self.flag_durations.append({"f": flag, "s": self._wall(t), "e": None})
        return True

    def _on_lap(self, t: int, lap: tuple[str, int, int, int, int, str | None]) -> None:
        number, lap_no, lap_ms, flag, pit, klass = lap
        car = self._cars[number]
        car.laps = lap_no
        car.elapsed = t
        car.last_lap_ms = lap_ms
        if lap_ms > 0 and (car.best_ms == 0 or lap_ms < car.best_ms):
            car.best_ms, car.best_lap = lap_ms, lap_no
        car.lap_included_pit = bool(pit)
        if pit:
            car.pit_stops += 1
            car.last_pitted = lap_no
        else:
            car.entered_pit = car.exited_pit = False
        car.track_flag = flag
        car.lap_start_tod_ms = self.local_start_ms + t
        health = self._gps.get(number, {}).get(lap_no)
        if health is not None:
            car.gps_health = health
        if klass is not None:
            car.klass = klass
        leader = max(self._cars.values(), key=lambda c: (c.laps, -c.elapsed))
        if leader.number == number:
            car.laps_led += 1
            if flag == FLAG_GREEN:
                self.green_laps += 1
            elif flag == FLAG_YELLOW:
                self.yellow_laps += 1

    def _positions(self, *, update_leader: bool) -> None:
        order = sorted(
            self._cars.values(), key=lambda c: (-c.laps, c.elapsed if c.laps else 0, c.start_order)
        )
        ranks: dict[str, dict[str, Any]] = {}
        class_ahead: dict[str, _Car] = {}
        class_leader: dict[str, _Car] = {}
        class_pos: dict[str, int] = {}
        best_overall = min((c.best_ms for c in order if c.best_ms), default=0)
        best_class: dict[str, int] = {}
        for c in order:
            if c.best_ms and (c.klass not in best_class or c.best_ms < best_class[c.klass]):
                best_class[c.klass] = c.best_ms
        leader = order[0] if order else None
        for pos, c in enumerate(order, start=1):
            ahead = order[pos - 2] if pos > 1 else None
            class_pos[c.klass] = class_pos.get(c.klass, 0) + 1
            started = c.laps > 0
            r: dict[str, Any] = {
                "overallPosition": pos,
                "classPosition": class_pos[c.klass],
                "overallGap": _gap(ahead, c) if ahead is not None and started else "",
                "overallDifference": _gap(leader, c) if leader is not None and pos > 1 and started else "",
                "inClassGap": _gap(class_ahead[c.klass], c) if c.klass in class_ahead and started else "",
                "inClassDifference": _gap(class_leader[c.klass], c)
                if c.klass in class_leader and started
                else "",
                "isBestTime": bool(c.best_ms) and c.best_ms == best_overall,
                "isBestTimeClass": bool(c.best_ms) and c.best_ms == best_class.get(c.klass),
            }
            class_leader.setdefault(c.klass, c)
            class_ahead[c.klass] = c
            ranks[c.number] = r
        if update_leader and leader is not None and leader.laps > 0 and leader.number != self._leader:
            if self._leader is not None:
                self.lead_changes += 1
            self._leader = leader.number
        self._ranks = ranks

    # --- state views ---------------------------------------------------------------------------------

    def _wall(self, race_ms: int) -> str:
        return format_datetime(self.session_start + dt.timedelta(milliseconds=race_ms))

    def _car_state(self, number: str, ranks: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The car's current values in CarPositionPatch names (only fields the simulator drives)."""
        c = self._cars[number]
        entry = self.entries.get(number, {})
        rank = ranks.get(number, {})
        pos = rank.get("overallPosition", c.start_position)
        cpos = rank.get("classPosition", c.class_start_position)
        state: dict[str, Any] = {
            "class": c.klass,
            "driverName": str(entry.get("nm", "")),
            "lastLapCompleted": c.laps,
            "lastLapTime": format_lap_time(c.last_lap_ms) if c.laps else "",
            "totalTime": format_lap_time(c.elapsed) if c.laps else "",
            "bestTime": format_lap_time(c.best_ms) if c.best_ms else "",
            "bestLap": c.best_lap,
            "projectedLapTimeMs": c.last_lap_ms,
            "overallStartingPosition": c.start_position,
            "inClassStartingPosition": c.class_start_position,
            "overallPositionsGained": c.start_position - pos,
            "inClassPositionsGained": c.class_start_position - cpos,
            "pitStopCount": c.pit_stops,
            "lastLapPitted": c.last_pitted,
            "lapIncludedPit": c.lap_included_pit,
            "isInPit": c.in_pit,
            "isEnteredPit": c.entered_pit,
            "isExitedPit": c.exited_pit,
            "pitEntryTime": self._wall(c.pit_entry_ms) if c.pit_entry_ms is not None else None,
            "pitDurationMs": c.pit_duration_ms,
            "lapsLedOverall": c.laps_led,
            "trackFlag": c.track_flag,
            "lapStartTime": format_time_of_day_ticks(c.lap_start_tod_ms)
            if c.lap_start_tod_ms is not None
            else None,
            "gpsHealth": c.gps_health,
        }
        state.update(rank)
        return state

    def _session_fields(self) -> dict[str, Any]:
        t = self.race_ms
        flag_time = dict(self._flag_time)
        if self.flag in flag_time:
            flag_time[self.flag] += t - self._flag_since
        return {
            "timeToGo": format_clock(self.duration_ms - t),
            "runningRaceTime": format_clock(t),
            "localTimeOfDay": format_clock(self.local_start_ms + t),
            "currentFlag": self.flag,
            "flagDurations": [dict(f) for f in self.flag_durations],
            "greenTimeMs": flag_time[FLAG_GREEN],
            "yellowTimeMs": flag_time[FLAG_YELLOW],
            "redTimeMs": flag_time[FLAG_RED],
            "greenLaps": self.green_laps,
            "yellowLaps": self.yellow_laps,
            "numberOfYellows": self.number_of_yellows,
            "leadChanges": self.lead_changes,
            "isLive": not self.finished,
            "hasTelemetrySource": self.has_telemetry,
            "gpsSourceHealth": self._gps_source_health(),
        }

    def _gps_source_health(self) -> int | None:
        """The event's GPS source health: the median of the cars' (null without telemetry)."""
        if not self.has_telemetry:
            return None
        values = sorted(c.gps_health for c in self._cars.values() if c.gps_health is not None)
        return values[len(values) // 2] if values else None

    def car_row(self, number: str) -> dict[str, Any]:
        """A full `CarPosition` (snapshot row, short JSON names) for one car."""
        row = dict(_ROW_DEFAULTS)
        patch_names = self._car_state(number, self._ranks)
        patch_names.update(
            {"eventId": str(self.event_id), "sessionId": str(self.session_id), "number": number}
        )
        for name, value in patch_names.items():
            short = _PATCH_TO_ROW[name]
            if value is None and short in _ROW_NON_NULL:
                continue
            row[short] = value
        return row

    def snapshot(self) -> dict[str, Any]:
        """The full `SessionState` in RedMist's JSON form (what GetCurrentSessionStateJson returns)."""
        state = dict(_SESSION_DEFAULTS)
        state.update(self._session_fields())
        classes = sorted({c.klass for c in self._cars.values()})
        order = sorted(self._cars, key=lambda n: self._ranks[n]["overallPosition"])
        state.update(
            {
                "eventId": self.event_id,
                "eventName": self.event_name,
                "sessionId": self.session_id,
                "sessionName": self.session_name,
                "sessionStartTime": format_datetime(self.session_start),
                "sessionEndTime": None,
                "isLive": not self.finished,
                "isSimulation": self.is_simulation,
                "eventEntries": self._entry_rows(),
                "carPositions": [self.car_row(n) for n in order],
                "classColors": dict(self.replay.get("classColors", {c: "#ff888888" for c in classes})),
                "classOrder": dict(
                    self.replay.get("classOrder", {c: str(i + 1) for i, c in enumerate(classes)})
                ),
                "lastUpdated": None,  # never assigned by RedMist's backend
            }
        )
        return state

    def summary(self, *, is_private: bool = False) -> dict[str, Any]:
        """This event as an `EventListSummary` (LoadLiveEvents row)."""
        return {
            "eid": self.event_id,
            "oid": 1,
            "on": self.organization_name,
            "en": self.event_name,
            "ed": self.session_start.strftime("%Y-%m-%d"),
            "l": not self.finished,
            "t": self.track_name,
            "s": None,
            "sim": self.is_simulation,
            "arch": False,
            "hasResults": False,
            "priv": is_private,
            "hn": False,
        }

    def in_car(self, number: str) -> dict[str, Any] | None:
        """An `InCarPayload` for one car: its positions and the cars around it."""
        if number not in self._cars:
            return None
        order = sorted(self._cars, key=lambda n: self._ranks[n]["overallPosition"])
        i = order.index(number)
        neighbours = [order[j] if 0 <= j < len(order) else None for j in (i - 1, i + 1)]
        cars: list[dict[str, Any] | None] = []
        for n in [number, *neighbours]:
            if n is None:
                cars.append(None)
                continue
            c = self._cars[n]
            entry = self.entries.get(n, {})
            cars.append(
                {
                    "n": n,
                    "c": c.klass,
                    "t": str(entry.get("nm", "")),
                    "l": format_lap_time(c.last_lap_ms)[3:] if c.laps else "",
                    "gl": str(c.start_position - self._ranks[n]["overallPosition"]),
                    "g": self._ranks[n]["overallGap"],
                    "ct": str(entry.get("t", "")),
                    "d": str(entry.get("nm", "")),
                    "id": 0,
                    "i": "",
                }
            )
        rank = self._ranks[number]
        return {
            "n": number,
            "p": str(rank["classPosition"]),
            "o": str(rank["overallPosition"]),
            "f": self.flag,
            "c": cars,
        }


def _default_for(type_expr: str, nullable: bool) -> Any:
    if nullable:
        return None
    t = type_expr
    if t.startswith(("List<", "Dictionary<")) or t.endswith("[]"):
        return {} if t.startswith("Dictionary<") else []
    return {
        "int": 0,
        "uint": 0,
        "ushort": 0,
        "double": 0.0,
        "bool": False,
        "string": "",
        "Flags": 0,
        "TimeOnly": "00:00:00.0000000",
        "DateTime": "0001-01-01T00:00:00Z",
    }.get(t)


_ROW_DEFAULTS: dict[str, Any] = {
    f.json_name: _default_for(f.type, f.nullable) for f in CONTRACT.type("CarPosition").fields
}
_ROW_DEFAULTS["opg"] = _ROW_DEFAULTS["cpg"] = -999  # "not available", as RedMist defaults them
_ROW_NON_NULL = {f.json_name for f in CONTRACT.type("CarPosition").fields if not f.nullable}
_SESSION_DEFAULTS: dict[str, Any] = {
    f.json_name: _default_for(f.type, f.nullable) for f in CONTRACT.type("SessionState").fields
}


# --- synthetic races ---------------------------------------------------------------------------------

_CLASSES = ("A", "B", "C")


def synthetic_replay(
    seed: int,
    *,
    event_id: int = 1000,
    cars: int = 20,
    duration_ms: int = 3_600_000,
    base_lap_ms: int = 90_000,
    name: str | None = None,
) -> dict[str, Any]:
    """A seeded, replay-shaped race (same format as the recordings) for any number of cars."""
    rng = random.Random(seed)
    entries = []
    car_docs = []
    flags: list[dict[str, Any]] = []
    # flag periods: green with a few yellows, checkered at the end
    t, flag = 0, FLAG_GREEN
    while t < duration_ms:
        length = (
            rng.randint(duration_ms // 12, duration_ms // 4)
            if flag == FLAG_GREEN
            else rng.randint(60_000, 300_000)
        )
        end = min(duration_ms, t + length)
        flags.append({"f": flag, "startMs": t, "endMs": end})
        t = end + 1
        flag = FLAG_YELLOW if flag == FLAG_GREEN else FLAG_GREEN
    flags.append({"f": FLAG_CHECKERED, "startMs": duration_ms, "endMs": None})

    def flag_at(ms: int) -> int:
        for f in flags:
            if f["startMs"] <= ms and (f["endMs"] is None or ms <= f["endMs"]):
                return int(f["f"])
        return FLAG_GREEN

    for i in range(cars):
        number = str(rng.randint(1, 999)) if i >= 999 else str(i + 1)
        klass = f"SIM {_CLASSES[i % len(_CLASSES)]}"
        entries.append(
            {
                "no": number,
                "nm": f"Team {i + 1}",
                "t": rng.choice(("Miata", "E36", "Civic", "Mustang")),
                "c": klass,
            }
        )
        pace = base_lap_ms * rng.uniform(0.95, 1.12)
        laps = []
        elapsed, lap_no = 0, 0
        next_pit = rng.randint(25, 45)
        while True:
            lap_no += 1
            lap_ms = int(rng.gauss(pace, pace * 0.015))
            pit = 0
            if flag_at(elapsed) == FLAG_YELLOW:
                lap_ms = int(lap_ms * 1.35)
            if lap_no == next_pit:
                pit, lap_ms = 1, lap_ms + rng.randint(60_000, 240_000)
                next_pit += rng.randint(25, 45)
            if elapsed + lap_ms > duration_ms + base_lap_ms:
                break
            elapsed += lap_ms
            laps.append([lap_no, lap_ms, elapsed, flag_at(elapsed), pit])
            if elapsed >= duration_ms:
                break
        gps = random.Random(seed * 1_000_003 + i)  # its own stream: the laps stay as they were
        health = gps.randint(3, 5)
        gh = [[0, health]]
        for lap in range(5, len(laps) + 1, 5):  # the in-car device's signal changes now and then
            if gps.random() < 0.3:
                health = max(0, min(5, health + gps.choice((-2, -1, 1, 2))))
                gh.append([lap, health])
        car_docs.append({"n": number, "c": klass, "laps": laps, "gh": gh})
    return {
        "format": REPLAY_FORMAT,
        "eventId": event_id,
        "eventName": name or f"Synthetic Event {event_id}",
        "sessionId": 1,
        "sessionName": "Sim Race",
        "trackName": "Simulator Raceway",
        "organizationName": "event-consumer",
        "durationMs": duration_ms,
        "localStartMs": 9 * 3_600_000,
        "classColors": {
            f"SIM {c}": color
            for c, color in zip(_CLASSES, ("#ffff7679", "#ffffb05b", "#ff69fffc"), strict=True)
        },
        "classOrder": {f"SIM {c}": str(i + 1) for i, c in enumerate(_CLASSES)},
        "hasTelemetrySource": True,
        "entries": entries,
        "flags": flags,
        "cars": car_docs,
    }
