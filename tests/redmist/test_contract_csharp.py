"""An independent check of the MessagePack -> named JSON conversion for RedMist's four payload types.

The field tables below were transcribed from RedMist's C# sources, not from the contract file:
`RedMist.TimingCommon/Models/CarPosition.cs` and `SessionState.cs` at bgriggs/redmist-timing-common
2d51055 (`[MessagePack.Key(n)]`, `[JsonPropertyName]`, the C# property types), plus the two
timing-common 1.17.0 fields stated in RedMist's README (CarPosition.GpsHealth key 68, JSON `gh`;
SessionState.GpsSourceHealth key 35). Naming rules from the same sources: `CarPosition` uses its
`[JsonPropertyName]` (camelCase C# name where there is none, e.g. `lastLapPitted`); the generated
`CarPositionPatch` copies `[Key]` but not `[JsonPropertyName]`, so it is camelCase throughout;
`SessionState` and its patch are camelCase. Nested types: CompletedSection, EventEntry, FlagDuration,
Section, Announcement, VideoStatus, VideoDestination from their C# files at the same commit.

Each check runs a frame through real MessagePack bytes and compares the dict form and the encoded
Struct form with the expected JSON, key order included:
- typed frame: realistic values of each field's C# type (enums as ints, DateTime as the msgpack
  timestamp extension, TimeOnly as int64 ticks, nested types as arrays);
- marker frame: every slot a distinct value (`"v<key>"`), passed through as received, so that a field
  read from any other slot is caught even where the typed values cannot differ (booleans);
- a frame with more slots than the contract (a newer server): the extra slots are kept as `key<n>`.

`check_type(contract, name)` takes the contract as a parameter so that the same checks can be run
against a mutated copy of the contract file (see the resolution note of issue 12).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest

from consumer.redmist.contract import CONTRACT, Contract

# (MessagePack key, C# type, CarPosition JSON name, CarPositionPatch JSON name)
CAR_FIELDS: list[tuple[int, str, str, str]] = [
    (0, "string?", "eid", "eventId"),
    (1, "string?", "sid", "sessionId"),
    (2, "string?", "n", "number"),
    (3, "uint", "tp", "transponderId"),
    (4, "string?", "class", "class"),
    (5, "string?", "bt", "bestTime"),
    (6, "int", "bl", "bestLap"),
    (7, "bool", "ibt", "isBestTime"),
    (8, "bool", "btc", "isBestTimeClass"),
    (9, "string?", "cg", "inClassGap"),
    (10, "string?", "cd", "inClassDifference"),
    (11, "string?", "og", "overallGap"),
    (12, "string?", "od", "overallDifference"),
    (13, "string?", "ttm", "totalTime"),
    (14, "string?", "ltm", "lastLapTime"),
    (15, "int", "llp", "lastLapCompleted"),
    (16, "int?", "psc", "pitStopCount"),
    (17, "int?", "lastLapPitted", "lastLapPitted"),
    (18, "int?", "llo", "lapsLedOverall"),
    (19, "int?", "llic", "lapsLedInClass"),
    (20, "int", "ovp", "overallPosition"),
    (21, "int", "clp", "classPosition"),
    (22, "int", "osp", "overallStartingPosition"),
    (23, "int", "opg", "overallPositionsGained"),
    (24, "int", "icsp", "inClassStartingPosition"),
    (25, "int", "cpg", "inClassPositionsGained"),
    (26, "bool", "ompg", "isOverallMostPositionsGained"),
    (27, "bool", "cmpg", "isClassMostPositionsGained"),
    (28, "int", "pl", "penalityLaps"),
    (29, "int", "pw", "penalityWarnings"),
    (30, "int", "bf", "blackFlags"),
    (31, "bool", "enp", "isEnteredPit"),
    (32, "bool", "psf", "isPitStartFinish"),
    (33, "bool", "exp", "isExitedPit"),
    (34, "bool", "ip", "isInPit"),
    (35, "bool", "lip", "lapIncludedPit"),
    (36, "string", "ln", "lastLoopName"),
    (37, "bool", "st", "isStale"),
    (38, "Flags", "flg", "trackFlag"),
    (39, "Flags", "lflg", "localFlag"),
    (40, "bool?", "lhlf", "lapHadLocalFlag"),
    (41, "List<CompletedSection>", "csec", "completedSections"),
    (42, "int", "plt", "projectedLapTimeMs"),
    (43, "TimeOnly", "lstt", "lapStartTime"),
    (44, "string", "dn", "driverName"),
    (45, "string", "did", "driverId"),
    (46, "VideoStatus?", "vid", "inCarVideo"),
    (47, "double?", "lat", "latitude"),
    (48, "double?", "lon", "longitude"),
    (49, "string", "mcs", "currentStatus"),
    (50, "bool", "iw", "impactWarning"),
    (51, "bool", "faic", "inClassFastestAveragePace"),
    (52, "int?", "temp", "trackTempDegF"),
    (53, "int?", "precip", "trackPrecipitationPerc"),
    (54, "int?", "spd", "speedMph"),
    (55, "DateTime?", "pet", "pitEntryTime"),
    (56, "int?", "pdm", "pitDurationMs"),
    (57, "bool", "sv", "speedViolation"),
    (58, "bool", "pse", "pitSpeedEnforced"),
    (59, "int?", "fz", "flaggingZone"),
    (60, "string?", "ds", "driverSource"),
    (61, "bool", "hg", "hasGps"),
    (62, "string?", "cgft", "inClassGapByFastTime"),
    (63, "string?", "cdft", "inClassDifferenceByFastTime"),
    (64, "string?", "ogft", "overallGapByFastTime"),
    (65, "string?", "odft", "overallDifferenceByFastTime"),
    (66, "int?", "lapposp", "lapPositionPercent"),
    (67, "int?", "sb", "signalBars"),
    (68, "int?", "gh", "gpsHealth"),  # timing-common 1.17.0: CarPosition.GpsHealth
]
# (MessagePack key, C# type, JSON name of SessionState and of SessionStatePatch)
SESSION_FIELDS: list[tuple[int, str, str]] = [
    (0, "int", "eventId"),
    (1, "string", "eventName"),
    (2, "int", "sessionId"),
    (3, "string", "sessionName"),
    (4, "int", "lapsToGo"),
    (5, "string", "timeToGo"),
    (6, "string", "localTimeOfDay"),
    (7, "string", "runningRaceTime"),
    (8, "bool", "isPracticeQualifying"),
    (9, "DateTime", "sessionStartTime"),
    (10, "DateTime?", "sessionEndTime"),
    (11, "double", "localTimeZoneOffset"),
    (12, "bool", "isLive"),
    (13, "List<EventEntry>", "eventEntries"),
    (14, "List<CarPosition>", "carPositions"),
    (15, "Flags", "currentFlag"),
    (16, "List<FlagDuration>", "flagDurations"),
    (17, "int?", "greenTimeMs"),
    (18, "int?", "greenLaps"),
    (19, "int?", "yellowTimeMs"),
    (20, "int?", "yellowLaps"),
    (21, "int?", "numberOfYellows"),
    (22, "int?", "redTimeMs"),
    (23, "string?", "averageRaceSpeed"),
    (24, "int?", "leadChanges"),
    (25, "List<Section>", "sections"),
    (26, "Dictionary<string, string>", "classColors"),
    (27, "List<Announcement>", "announcements"),
    (28, "DateTime?", "lastUpdated"),
    (29, "Dictionary<string, string>", "classOrder"),
    (30, "bool", "isSimulation"),
    (31, "bool", "isArchived"),
    (32, "int?", "trackTempDegF"),
    (33, "int?", "trackPrecipitationPerc"),
    (34, "bool", "hasTelemetrySource"),
    (35, "int?", "gpsSourceHealth"),  # timing-common 1.17.0: SessionState.GpsSourceHealth
]

TICKS = 10_000_000
UTC = dt.UTC


def _typed(key: int, cs_type: str, row_names: bool) -> tuple[Any, Any]:
    """(MessagePack value, expected JSON value) for one field of the given C# type."""
    t = cs_type.removesuffix("?")
    s = key % 60
    if t == "string":
        return f"s{key}", f"s{key}"
    if t == "int":
        return 1000 + key, 1000 + key
    if t == "uint":
        return 4_000_000_000 + key, 4_000_000_000 + key
    if t == "double":
        return key + 0.25, key + 0.25
    if t == "bool":
        return key % 2 == 0, key % 2 == 0
    if t == "Flags":  # enum: an int on both protocols
        return key % 13, key % 13
    if t == "TimeOnly":  # int64 ticks since midnight -> "HH:MM:SS.fffffff"
        return (19 * 3600 + 42 * 60 + s) * TICKS + 5_310_000, f"19:42:{s:02d}.5310000"
    if t == "DateTime":  # msgpack timestamp extension (-1) -> ISO, UTC, trimmed fraction
        return dt.datetime(2026, 8, 22, 19, 43, s, 402_000, tzinfo=UTC), f"2026-08-22T19:43:{s:02d}.402Z"
    if t == "List<CompletedSection>":
        return [["42", "S1", 31_000, 30_500, 12]], [
            {
                "number": "42",
                "sectionId": "S1",
                "elapsedTimeMs": 31_000,
                "lastSectionTimeMs": 30_500,
                "lastLap": 12,
            }
        ]
    if t == "VideoStatus":
        return [2, [1, "https://v.example/x", "host", 8080, "pw"]], {
            "videoSystemType": 2,
            "videoDestination": {"t": 1, "u": "https://v.example/x", "h": "host", "p": 8080, "pa": "pw"},
        }
    if t == "List<EventEntry>":
        return [["42", "Team Dawg", "Miata", "GTO"]], [
            {"no": "42", "nm": "Team Dawg", "t": "Miata", "c": "GTO"}
        ]
    if t == "List<CarPosition>":
        arr, expected = car_frame(row_names=True)
        return [arr], [expected]
    if t == "List<FlagDuration>":
        start = dt.datetime(2026, 8, 22, 19, 0, 0, tzinfo=UTC)
        end = dt.datetime(2026, 8, 22, 19, 4, 30, 1000, tzinfo=UTC)
        return [[2, start, end], [1, end, None]], [
            {"f": 2, "s": "2026-08-22T19:00:00Z", "e": "2026-08-22T19:04:30.001Z"},
            {"f": 1, "s": "2026-08-22T19:04:30.001Z", "e": None},
        ]
    if t == "List<Section>":
        return [["S1", 52_800, "SF", "T3"]], [
            {"name": "S1", "lengthInches": 52_800, "startLabel": "SF", "endLabel": "T3"}
        ]
    if t == "List<Announcement>":
        when = dt.datetime(2026, 8, 22, 19, 5, 0, 500_000, tzinfo=UTC)
        return [[when, "high", "Pit lane open ✓"]], [
            {"timestamp": "2026-08-22T19:05:00.5Z", "priority": "high", "text": "Pit lane open ✓"}
        ]
    if t == "Dictionary<string, string>":
        return {"GTO": f"#{key:08d}"}, {"GTO": f"#{key:08d}"}
    raise AssertionError(f"no typed value for {cs_type}")


def car_frame(*, row_names: bool) -> tuple[list[Any], dict[str, Any]]:
    arr: list[Any] = []
    expected: dict[str, Any] = {}
    for key, cs_type, row, patch in CAR_FIELDS:
        assert key == len(arr)
        wire, value = _typed(key, cs_type, row_names)
        arr.append(wire)
        expected[row if row_names else patch] = value
    return arr, expected


def session_frame() -> tuple[list[Any], dict[str, Any]]:
    arr: list[Any] = []
    expected: dict[str, Any] = {}
    for key, cs_type, name in SESSION_FIELDS:
        assert key == len(arr)
        wire, value = _typed(key, cs_type, True)
        arr.append(wire)
        expected[name] = value
    return arr, expected


def names_of(type_name: str) -> list[str]:
    if type_name == "CarPosition":
        return [row for _, _, row, _ in CAR_FIELDS]
    if type_name == "CarPositionPatch":
        return [patch for _, _, _, patch in CAR_FIELDS]
    return [name for _, _, name in SESSION_FIELDS]


def typed_frame(type_name: str) -> tuple[list[Any], dict[str, Any]]:
    if type_name.startswith("CarPosition"):
        return car_frame(row_names=type_name == "CarPosition")
    return session_frame()


def _convert(c: Contract, type_name: str, arr: list[Any]) -> tuple[Any, bytes]:
    """Through real MessagePack bytes: (dict form, JSON bytes of the Struct form)."""
    wire = msgspec.msgpack.encode(arr)
    as_dict = c.converter(type_name, "from")(msgspec.msgpack.decode(wire))  # type: ignore[misc]
    encodable = c.converter(type_name, "encodable")(msgspec.msgpack.decode(wire))  # type: ignore[misc]
    return as_dict, msgspec.json.encode(encodable)


def check_type(c: Contract, type_name: str) -> None:
    """Raises AssertionError when `c` converts any field of `type_name` differently from the C# tables."""
    names = names_of(type_name)
    # typed values, every field
    arr, expected = typed_frame(type_name)
    as_dict, encoded = _convert(c, type_name, arr)
    assert as_dict == expected
    assert list(as_dict) == names  # key order = MessagePack key order
    assert encoded == msgspec.json.encode(expected)
    # a distinct marker in every slot
    markers = [f"v{key}" for key in range(len(names))]
    as_dict, encoded = _convert(c, type_name, markers)
    expected_markers = {name: f"v{key}" for key, name in enumerate(names)}
    assert as_dict == expected_markers
    assert encoded == msgspec.json.encode(expected_markers)
    # more slots than the contract: kept as key<n>
    longer = [*arr, "newer", 7]
    as_dict, encoded = _convert(c, type_name, longer)
    expected_longer = {**expected, f"key{len(names)}": "newer", f"key{len(names) + 1}": 7}
    assert as_dict == expected_longer
    assert encoded == msgspec.json.encode(expected_longer)


TYPES = ("CarPositionPatch", "SessionStatePatch", "CarPosition", "SessionState")


@pytest.mark.parametrize("type_name", TYPES)
def test_every_field_converts_as_the_csharp_sources_say(type_name: str) -> None:
    check_type(CONTRACT, type_name)


def test_the_wire_encodings_are_the_real_ones() -> None:
    arr, _ = car_frame(row_names=False)
    wire = msgspec.msgpack.encode(arr)
    assert b"\xd7\xff" in wire  # pitEntryTime: the 8-byte timestamp extension (type -1)
    assert len(msgspec.msgpack.decode(wire)) == 69
    ticks = (19 * 3600 + 42 * 60 + 43) * TICKS + 5_310_000
    assert arr[43] == ticks and msgspec.msgpack.encode(ticks)[:1] == b"\xcf"  # uint64
    as_dict, encoded = _convert(CONTRACT, "CarPositionPatch", arr)
    assert as_dict["lapStartTime"] == "19:42:43.5310000"
    assert b'"pitEntryTime":"2026-08-22T19:43:55.402Z"' in encoded
    assert b'"trackFlag":12,"localFlag":0' in encoded  # Flags 12 = WavingYellow, 0 = Unknown
    assert b'"gpsHealth":1068}' in encoded  # key 68, the last slot of timing-common 1.17.0


def test_tables_cover_every_key_once() -> None:
    assert [k for k, *_ in CAR_FIELDS] == list(range(69))
    assert [k for k, *_ in SESSION_FIELDS] == list(range(36))


# -- the checks are sharp: any single key change in the contract file fails one of them ------------

COVERED = (*TYPES, "CompletedSection", "VideoStatus", "VideoDestination", "EventEntry", "FlagDuration")
COVERED += ("Section", "Announcement")


def mutations(raw: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every single-key change of the covered types: each field's MessagePack key moved to the next
    slot and to a new slot past the end, and its JSON name changed."""
    out: list[tuple[str, dict[str, Any]]] = []
    for type_name in COVERED:
        fields = raw["types"][type_name]["fields"]
        length = 1 + max(f["messagePackKey"] for f in fields if f["messagePackKey"] is not None)
        for i, f in enumerate(fields):
            key = f["messagePackKey"]
            for label, change in (
                ("key+1", {"messagePackKey": key + 1}),
                ("key past the end", {"messagePackKey": length + 3}),
                ("jsonName", {"jsonName": f["jsonName"] + "X"}),
            ):
                mutated = msgspec.json.decode(msgspec.json.encode(raw))
                mutated["types"][type_name]["fields"][i].update(change)
                out.append((f"{type_name}.{f['jsonName']} {label}", mutated))
    return out


def surviving(raw: dict[str, Any]) -> list[str]:
    """The mutations no check notices (should be none)."""
    missed = []
    for label, mutated in mutations(raw):
        c = Contract(mutated)
        failed = False
        for type_name in TYPES:
            try:
                check_type(c, type_name)
            except (AssertionError, Exception):
                failed = True
                break
        if not failed:
            missed.append(label)
    return missed


def test_every_single_key_change_in_the_contract_fails_a_check() -> None:
    raw = msgspec.json.decode(msgspec.json.encode(CONTRACT.raw))
    assert len(mutations(raw)) > 3 * 210
    assert surviving(raw) == []
