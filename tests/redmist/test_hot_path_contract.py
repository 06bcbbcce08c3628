"""The MessagePack -> named-JSON fast paths (`consumer.redmist.contract`) against a reference conversion.

`reference_from_msgpack` below is the original per-field conversion (one lookup per confirmed field,
converters applied to non-nil values), written out here so that the compiled tables (dict form) and
the generated Structs (encodable form) are always compared with something independent of them. The
differential tests run every car patch, session patch and a series of snapshots that the simulator's
`RaceEngine` produces over both packaged real replays through the real MessagePack wire form.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import msgspec
import pytest

from consumer.redmist import contract
from consumer.redmist.contract import CONTRACT, Contract, ContractError
from consumer.redmist.payloads import event_id_of
from consumer.sim.race import PACKAGED_REPLAYS, RaceEngine, load_replay

CAR = "ReceiveCarPatches"
SESSION = "ReceiveSessionPatch"


# -- the reference ----------------------------------------------------------------------------------


def reference_from_msgpack(type_expr: str, value: Any) -> Any:
    if value is None:
        return None
    expr = type_expr.strip().removesuffix("?")
    if expr.endswith("[]") and expr != "byte[]":
        return [reference_from_msgpack(expr[:-2], v) for v in value]
    if expr.startswith("List<") and expr.endswith(">"):
        return [reference_from_msgpack(expr[5:-1], v) for v in value]
    if expr == "DateTime":
        return contract.format_datetime(value) if isinstance(value, dt.datetime) else value
    if expr == "TimeOnly":
        return contract.format_time_only(value) if isinstance(value, int) else value
    if expr == "byte[]":
        return base64.b64encode(value).decode("ascii") if isinstance(value, bytes) else value
    if expr in CONTRACT.types:
        assert isinstance(value, list | tuple)
        spec = CONTRACT.types[expr]
        out = {
            f.json_name: reference_from_msgpack(f.type, value[f.key] if f.key < len(value) else None)
            for f in spec.fields
        }
        for key in range(spec.array_length, len(value)):  # nothing dropped: `key<n>`, as received
            v = value[key]
            out[f"key{key}"] = contract.format_datetime(v) if isinstance(v, dt.datetime) else v
        return out
    return value  # scalars, enums, dictionaries


def reference_arguments(target: str, args: list[Any]) -> list[Any]:
    types = contract.CLIENT_METHOD_ARGS.get(target)
    if types is None:
        return list(args)
    return [reference_from_msgpack(types[i], a) if i < len(types) else a for i, a in enumerate(args)]


def js(value: Any) -> bytes:
    return msgspec.json.encode(value)


# -- real replay traffic ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replay_traffic() -> dict[str, list[bytes]]:
    """MessagePack argument arrays as the hub sends them: car patch batches (every patch of both
    replays, cut into messages of up to 40), every session patch, and a snapshot every 200 steps."""
    cars: list[bytes] = []
    sessions: list[bytes] = []
    snapshots: list[bytes] = []
    for name in PACKAGED_REPLAYS:
        engine = RaceEngine(load_replay(name))
        t, step = engine.first_lap_ms, 0
        pending: list[dict[str, Any]] = []
        while t < engine.end_ms:
            t += 5000
            step += 1
            update = engine.advance_to(t)
            pending.extend(update.car_patches)
            while len(pending) >= 40:
                batch, pending = pending[:40], pending[40:]
                cars.append(msgspec.msgpack.encode(contract.arguments_to_msgpack(CAR, [batch])))
            if update.session_patch is not None:
                sessions.append(
                    msgspec.msgpack.encode(contract.arguments_to_msgpack(SESSION, [update.session_patch]))
                )
            if step % 200 == 0:
                snapshots.append(
                    msgspec.msgpack.encode(contract.to_msgpack_array("SessionState", engine.snapshot()))
                )
        if pending:
            cars.append(msgspec.msgpack.encode(contract.arguments_to_msgpack(CAR, [pending])))
    return {"cars": cars, "sessions": sessions, "snapshots": snapshots}


def test_replay_traffic_is_substantial(replay_traffic: dict[str, list[bytes]]) -> None:
    patches = sum(len(msgspec.msgpack.decode(m)[0]) for m in replay_traffic["cars"])
    assert patches > 40_000
    assert len(replay_traffic["sessions"]) > 10 and len(replay_traffic["snapshots"]) > 5
    # the wire carries the converted kinds the fast paths special-case
    wire = b"".join(replay_traffic["cars"])
    assert b"\xd6\xff" in wire or b"\xd7\xff" in wire  # a MessagePack timestamp (pitEntryTime)


def test_dict_form_equals_reference_over_every_replay_message(replay_traffic: dict[str, list[bytes]]) -> None:
    for target, key in ((CAR, "cars"), (SESSION, "sessions")):
        for raw in replay_traffic[key]:
            expected = reference_arguments(target, msgspec.msgpack.decode(raw))
            got = contract.arguments_from_msgpack(target, msgspec.msgpack.decode(raw))
            assert got == expected
            assert js(got) == js(expected)  # same key order, same bytes
    for raw in replay_traffic["snapshots"]:
        expected = reference_from_msgpack("SessionState", msgspec.msgpack.decode(raw))
        got = contract.value_from_msgpack("SessionState", msgspec.msgpack.decode(raw))
        assert got == expected and js(got) == js(expected)


def test_encodable_form_encodes_to_the_reference_bytes_over_every_replay_message(
    replay_traffic: dict[str, list[bytes]],
) -> None:
    enc = msgspec.json.Encoder()
    for target, key in ((CAR, "cars"), (SESSION, "sessions")):
        for raw in replay_traffic[key]:
            expected = reference_arguments(target, msgspec.msgpack.decode(raw))
            got = contract.encodable_arguments_from_msgpack(target, msgspec.msgpack.decode(raw))
            assert enc.encode(got) == enc.encode(expected)
            assert event_id_of(got) == event_id_of(expected)
    for raw in replay_traffic["snapshots"]:
        expected = reference_from_msgpack("SessionState", msgspec.msgpack.decode(raw))
        got = contract.encodable_value_from_msgpack("SessionState", msgspec.msgpack.decode(raw))
        assert isinstance(got, msgspec.Struct)
        assert enc.encode(got) == enc.encode(expected)


# -- focused cases ----------------------------------------------------------------------------------


def both(target: str, args: list[Any]) -> tuple[list[Any], bytes]:
    """(dict form, encoded encodable form), each checked against the reference."""
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(args))
    expected = reference_arguments(target, wire)
    as_dicts = contract.arguments_from_msgpack(target, msgspec.msgpack.decode(msgspec.msgpack.encode(args)))
    encodable = contract.encodable_arguments_from_msgpack(target, wire)
    assert as_dicts == expected and js(as_dicts) == js(expected)
    assert js(encodable) == js(expected)
    return as_dicts, js(encodable)


def patch_array(**slots: Any) -> list[Any]:
    arr: list[Any] = [None] * 69
    for key, value in slots.items():
        arr[int(key[1:])] = value
    return arr


def test_extra_trailing_elements_are_kept_under_generic_names() -> None:
    when = dt.datetime(2026, 8, 22, 19, 43, 55, tzinfo=dt.UTC)
    arr = [*patch_array(k0="1187", k2="42"), "future", 5, [1, 2], when]
    before = contract.STATS.extra_slots.get("CarPositionPatch", 0)
    dicts, encoded = both(CAR, [[arr, patch_array(k2="7")]])  # one long and one normal patch
    patch = dicts[0][0]
    assert len(patch) == 73 and patch["number"] == "42"
    assert [patch[f"key{k}"] for k in (69, 70, 71, 72)] == ["future", 5, [1, 2], "2026-08-22T19:43:55Z"]
    tail = b'"gpsHealth":null,"key69":"future","key70":5,"key71":[1,2],"key72":"2026-08-22T19:43:55Z"}'
    assert tail in encoded
    assert "key69" not in dicts[0][1]
    assert contract.STATS.extra_slots["CarPositionPatch"] == before + 2  # dict and encodable form


def test_short_arrays_give_none_for_the_missing_fields() -> None:
    dicts, encoded = both(
        CAR, [[["1187", "14", "42"], ["1187", "14", "7", 99, None, None, None, None, None, None]]]
    )
    first, second = dicts[0]
    assert len(first) == 69 and first["number"] == "42" and first["gpsHealth"] is None
    assert second["transponderId"] == 99 and second["completedSections"] is None
    assert encoded.count(b'"lapStartTime":null') == 2


def test_nil_means_unchanged_and_is_never_converted() -> None:
    dicts, encoded = both(CAR, [[patch_array(k0="1187", k2="42", k43=None, k55=None, k41=None, k46=None)]])
    patch = dicts[0][0]
    assert patch["lapStartTime"] is None and patch["pitEntryTime"] is None
    assert patch["completedSections"] is None and patch["inCarVideo"] is None
    assert b'"pitEntryTime":null' in encoded
    # None elements of the argument list and of the patch list stay None
    dicts, encoded = both(CAR, [[None, patch_array(k2="1")]])
    assert dicts[0][0] is None and encoded.startswith(b"[[null,{")
    dicts, encoded = both(CAR, [None])
    assert dicts == [None] and encoded == b"[null]"


def test_nested_types_timestamps_and_time_only() -> None:
    when = dt.datetime(2026, 8, 22, 19, 43, 55, 402000, tzinfo=dt.UTC)
    ticks = (19 * 3600 + 42 * 60 + 8) * 10_000_000 + 5_310_000
    sections = [["42", "S1", 31_000, 30_500, 12], None, ["42", "S2", 1, 2]]  # a None and a short element
    video = [2, [1, "https://v.example/x", "h", 8080, "p"], "extra"]
    arr = patch_array(k0="1187", k2="42", k41=sections, k43=ticks, k46=video, k55=when)
    dicts, encoded = both(CAR, [[arr]])
    patch = dicts[0][0]
    assert patch["pitEntryTime"] == "2026-08-22T19:43:55.402Z"
    assert patch["lapStartTime"] == "19:42:08.5310000"
    assert patch["completedSections"][0] == {
        "number": "42",
        "sectionId": "S1",
        "elapsedTimeMs": 31_000,
        "lastSectionTimeMs": 30_500,
        "lastLap": 12,
    }
    assert patch["completedSections"][1] is None and patch["completedSections"][2]["lastLap"] is None
    # VideoStatus's second slot is declared VideoDestination (an enum): passed through as sent
    assert patch["inCarVideo"]["videoSystemType"] == 2
    assert b'"pitEntryTime":"2026-08-22T19:43:55.402Z"' in encoded
    assert b'"completedSections":[{"number":"42","sectionId":"S1"' in encoded
    # a server that already sends the string forms (tolerated by the reference) is passed through
    dicts, _ = both(CAR, [[patch_array(k43="19:42:08.5310000", k55="2026-08-22T19:43:55Z")]])
    assert dicts[0][0]["lapStartTime"] == "19:42:08.5310000"


def test_timestamp_extension_forms() -> None:
    for when in (
        dt.datetime(2026, 8, 22, 19, 43, 55, tzinfo=dt.UTC),  # 4-byte form
        dt.datetime(2026, 8, 22, 19, 43, 55, 1, tzinfo=dt.UTC),  # 8-byte form
        dt.datetime(1960, 1, 1, tzinfo=dt.UTC),  # 12-byte form (before the epoch)
    ):
        _, encoded = both(SESSION, [[1187, None, 14, None, None, None, None, None, None, when]])
        assert contract.format_datetime(when).encode() in encoded


def test_snapshot_with_every_nested_type() -> None:
    state = {
        "eventId": 5,
        "sessionStartTime": "2026-08-22T19:00:00Z",
        "carPositions": [{"n": "1", "lstt": "00:00:01.0000000", "csec": [{"number": "1", "lastLap": 3}]}],
        "flagDurations": [{"f": 1, "s": "2026-08-22T19:00:00.5Z", "e": None}],
        "announcements": [{"timestamp": "2026-08-22T19:01:00Z", "priority": "h", "text": "é ✓"}],
        "classColors": {"A": "#ff000000"},
    }
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(contract.to_msgpack_array("SessionState", state)))
    expected = reference_from_msgpack("SessionState", wire)
    assert contract.value_from_msgpack("SessionState", wire) == expected
    assert js(contract.encodable_value_from_msgpack("SessionState", wire)) == js(expected)
    assert expected["carPositions"][0]["lstt"] == "00:00:01.0000000"


def test_unknown_targets_and_extra_arguments_pass_through() -> None:
    assert contract.encodable_arguments_from_msgpack("Other", [[1, 2], "x"]) == [[1, 2], "x"]
    dicts, encoded = both(CAR, [[patch_array(k2="1")], {"sentAtNs": 5}])
    assert dicts[1] == {"sentAtNs": 5} and encoded.endswith(b',{"sentAtNs":5}]')
    assert contract.encodable_arguments_from_msgpack("ReceiveReset", []) == []


def test_tuples_are_accepted_and_inputs_are_not_modified() -> None:
    arr = tuple(patch_array(k2="42", k43=10_000_000))
    got = contract.encodable_value_from_msgpack("CarPositionPatch", arr)
    assert js(got) == js(contract.value_from_msgpack("CarPositionPatch", arr))
    assert arr[43] == 10_000_000  # converted into the result, not in place


def test_values_in_unexpected_forms_pass_through_in_both_forms() -> None:
    for bad in ({"number": "1"}, "42", 7):
        assert contract.arguments_from_msgpack(CAR, [[bad]]) == [[bad]]
        assert js(contract.encodable_arguments_from_msgpack(CAR, [[bad]])) == js([[bad]])
    for slot, bad in ((43, 10**15), (55, 3.5), (41, "x"), (43, True)):
        args = [[patch_array(k2="9", **{f"k{slot}": bad})]]
        dicts = contract.arguments_from_msgpack(CAR, args)
        name = contract.json_names("CarPositionPatch")[slot]
        assert dicts[0][0][name] == bad and dicts[0][0]["number"] == "9"
        assert js(contract.encodable_arguments_from_msgpack(CAR, args)) == js(dicts)
    assert contract.arguments_from_msgpack(CAR, ["not a list"]) == ["not a list"]


def test_struct_attributes_and_event_id() -> None:
    cls = CONTRACT.struct_type("CarPositionPatch")
    assert [f.encode_name for f in msgspec.structs.fields(cls)] == contract.json_names("CarPositionPatch")
    got = contract.encodable_arguments_from_msgpack(CAR, [[patch_array(k0="1187", k4="GT")]])
    patch = got[0][0]
    assert patch.eventId == "1187" and patch.k4 == "GT"  # `class` is a keyword: k<key>
    assert event_id_of(got) == 1187
    session = contract.encodable_arguments_from_msgpack(SESSION, [[1187, "Race"]])
    assert event_id_of(session) == 1187


def test_types_with_a_gap_in_their_keys_use_the_general_form() -> None:
    raw = {
        "types": {
            "Gappy": {
                "fields": [
                    {
                        "messagePackKey": 0,
                        "jsonName": "a",
                        "csharpName": "A",
                        "type": "int",
                        "nullable": False,
                    },
                    {
                        "messagePackKey": 2,
                        "jsonName": "c",
                        "csharpName": "C",
                        "type": "TimeOnly",
                        "nullable": False,
                    },
                ]
            }
        },
        "clientMethods": [{"name": "M", "args": ["Gappy"]}],
        "serverMethods": [],
    }
    c = Contract(raw)
    for mode in ("from", "encodable"):
        conv = c.converter("Gappy", mode)  # type: ignore[arg-type]
        assert conv is not None
        # non-nil slots the contract has no field for (in the gap, after the end) are kept
        assert js(conv([1, "gap", 10_000_000, "extra"])) == (
            b'{"a":1,"c":"00:00:01.0000000","key1":"gap","key3":"extra"}'
        )
        assert js(conv([1, None, 10_000_000])) == b'{"a":1,"c":"00:00:01.0000000"}'
        assert js(conv([1])) == b'{"a":1,"c":null}'


def test_time_only_format_matches_the_plain_formula() -> None:
    def plain(ticks: int) -> str:
        seconds, frac = divmod(ticks, 10_000_000)
        hours, rem = divmod(seconds, 3600)
        minutes, secs = divmod(rem, 60)
        return f"{hours:02d}:{minutes:02d}:{secs:02d}.{frac:07d}"

    day = 86_400 * 10_000_000
    for ticks in (0, 1, 9_999_999, 10_000_000, 3_599 * 10_000_000, day - 1, *range(0, day, 7_777_777_777)):
        assert contract.format_time_only(ticks) == plain(ticks)
    for bad in (-1, day):
        with pytest.raises(ContractError):
            contract.format_time_only(bad)
