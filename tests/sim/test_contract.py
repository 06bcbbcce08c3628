"""consumer.redmist.contract: MessagePack integer-keyed arrays <-> RedMist's named JSON."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from consumer.redmist import contract
from consumer.redmist.contract import (
    CLIENT_METHOD_ARGS,
    CONTRACT,
    ContractError,
    arguments_from_msgpack,
    arguments_to_msgpack,
    from_msgpack_array,
    json_names,
    to_msgpack_array,
    value_from_msgpack,
    value_to_msgpack,
)

SHARED_CONTRACT = Path(__file__).resolve().parents[3] / "shared" / "redmist" / "contract.json"
PACKAGED = Path(contract.__file__).with_name("contract.json")


def _sample(type_expr: str, depth: int = 0) -> Any:
    """A non-null JSON-form sample value for a contract type expression."""
    expr = type_expr.rstrip("?")
    if expr.endswith("[]") and expr != "byte[]":
        return [_sample(expr[:-2], depth + 1)]
    if expr.startswith("List<"):
        return [_sample(expr[5:-1], depth + 1)]
    if expr.startswith("Dictionary<"):
        return {"LDRL A": "#ffff7679"}
    scalars: dict[str, Any] = {
        "int": 7,
        "uint": 4_000_000_000,
        "ushort": 8080,
        "double": -4.5,
        "bool": True,
        "string": "x1",
        "DateTime": "2026-08-22T19:43:12.402Z",
        "TimeOnly": "19:42:08.5310000",
        "byte[]": "AAEC/w==",
    }
    if expr in scalars:
        return scalars[expr]
    if expr in CONTRACT.enums:
        return 2
    spec = CONTRACT.type(expr)
    return {f.json_name: _sample(f.type, depth + 1) for f in spec.fields}


def test_packaged_contract_is_the_shared_one() -> None:
    if SHARED_CONTRACT.exists():  # the project's copy is byte-identical to the shared facts
        assert PACKAGED.read_bytes() == SHARED_CONTRACT.read_bytes()
    # timing-common 1.17.0 (written here from the RedMist README, not read from the file)
    assert CONTRACT.version == "timing-common 1.17.0"
    assert CONTRACT.type("CarPosition").array_length == CONTRACT.type("CarPositionPatch").array_length == 69
    assert CONTRACT.type("SessionState").array_length == CONTRACT.type("SessionStatePatch").array_length == 36


@pytest.mark.parametrize("type_name", sorted(CONTRACT.types))
def test_every_type_round_trips_through_real_msgpack(type_name: str) -> None:
    obj = _sample(type_name)
    arr = to_msgpack_array(type_name, obj)
    assert len(arr) == CONTRACT.type(type_name).array_length
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(arr))
    assert from_msgpack_array(type_name, wire) == obj


@pytest.mark.parametrize("type_name", sorted(CONTRACT.types))
def test_json_names_and_keys_match_the_contract(type_name: str) -> None:
    raw = json.loads(PACKAGED.read_text())["types"][type_name]["fields"]
    confirmed = sorted((f for f in raw if f["messagePackKey"] is not None), key=lambda f: f["messagePackKey"])
    assert json_names(type_name) == [f["jsonName"] for f in confirmed]
    arr = [None] * (confirmed[-1]["messagePackKey"] + 1)
    for f in confirmed:
        arr[f["messagePackKey"]] = f"k{f['messagePackKey']}" if f["type"].rstrip("?") == "string" else None
    decoded = from_msgpack_array(type_name, arr)
    for f in confirmed:
        if f["type"].rstrip("?") == "string":
            assert decoded[f["jsonName"]] == f"k{f['messagePackKey']}"


def test_patch_uses_camel_case_and_row_uses_short_names() -> None:
    arr: list[Any] = [None] * 69
    arr[0], arr[1], arr[2], arr[20], arr[14], arr[68] = "1187", "14", "42", 3, "00:01:41.872", 4
    patch = from_msgpack_array("CarPositionPatch", arr)
    assert patch["number"] == "42" and patch["overallPosition"] == 3
    assert patch["lastLapTime"] == "00:01:41.872"
    assert patch["eventId"] == "1187" and patch["isInPit"] is None
    row = from_msgpack_array("CarPosition", arr)
    assert row["n"] == "42" and row["ovp"] == 3 and row["ltm"] == "00:01:41.872"
    assert row["lastLapPitted"] is None and "number" not in row
    assert len(patch) == 69 and patch["gpsHealth"] == 4 and row["gh"] == 4  # key 68 (timing-common 1.17.0)


def test_extra_trailing_elements_are_kept_and_short_arrays_pad_with_none() -> None:
    arr: list[Any] = [None] * 72
    arr[2], arr[70] = "7X", "future"
    patch = from_msgpack_array("CarPositionPatch", arr)
    assert patch["number"] == "7X"
    assert list(patch)[69:] == ["key69", "key70", "key71"]
    assert patch["key70"] == "future" and patch["key69"] is None
    short = from_msgpack_array("SessionStatePatch", [1187, None, 14])
    assert short["eventId"] == 1187 and short["sessionId"] == 14 and short["lastUpdated"] is None
    assert len(short) == 36 and short["gpsSourceHealth"] is None


def test_timestamp_and_timeonly_wire_forms() -> None:
    when = dt.datetime(2026, 8, 22, 19, 43, 55, tzinfo=dt.UTC)
    arr: list[Any] = [None] * 69
    arr[55] = when
    arr[43] = (19 * 3600 + 42 * 60 + 8) * 10_000_000 + 5_310_000
    wire = msgspec.msgpack.encode(arr)
    assert b"\xd6\xff" in wire  # the 4-byte timestamp extension (type -1)
    patch = from_msgpack_array("CarPositionPatch", msgspec.msgpack.decode(wire))
    assert patch["pitEntryTime"] == "2026-08-22T19:43:55Z"
    assert patch["lapStartTime"] == "19:42:08.5310000"
    back = to_msgpack_array("CarPositionPatch", patch)
    assert back[55] == when and back[43] == arr[43]
    assert contract.format_datetime(dt.datetime(2026, 8, 22, 19, 43, 12, 402000, tzinfo=dt.UTC)) == (
        "2026-08-22T19:43:12.402Z"
    )
    # an undecoded timestamp extension (e.g. a decoder with no datetime support) is handled too
    ext = msgspec.msgpack.Ext(-1, int(when.timestamp()).to_bytes(4, "big"))
    assert value_from_msgpack("DateTime", ext) == "2026-08-22T19:43:55Z"


def test_nested_lists_inside_a_snapshot() -> None:
    state = _sample("SessionState")
    state["carPositions"] = [_sample("CarPosition"), _sample("CarPosition")]
    state["carPositions"][1]["n"] = "99"
    arr = to_msgpack_array("SessionState", state)
    assert isinstance(arr[14][1], list) and arr[14][1][2] == "99"
    decoded = value_from_msgpack("SessionState", msgspec.msgpack.decode(msgspec.msgpack.encode(arr)))
    assert decoded["carPositions"][1]["n"] == "99"
    assert decoded == state


def test_client_method_arguments() -> None:
    assert CLIENT_METHOD_ARGS["ReceiveCarPatches"] == ["CarPositionPatch[]"]
    assert CLIENT_METHOD_ARGS["ReceiveSessionPatch"] == ["SessionStatePatch"]
    assert CLIENT_METHOD_ARGS["ReceiveReset"] == []
    patches = [{"eventId": "1", "sessionId": "2", "number": "42", "overallPosition": 1}]
    wire = arguments_to_msgpack("ReceiveCarPatches", [patches])
    assert wire[0][0][2] == "42" and wire[0][0][20] == 1
    back = arguments_from_msgpack("ReceiveCarPatches", wire)
    assert back[0][0]["number"] == "42" and back[0][0]["bestTime"] is None
    assert arguments_from_msgpack("SomethingElse", [[1, 2]]) == [[1, 2]]
    listed = value_to_msgpack("List<EventListSummary>", [{"eid": 5, "en": "Race"}])
    assert listed[0][0] == 5 and listed[0][3] == "Race"


def test_contract_errors() -> None:
    with pytest.raises(ContractError):
        to_msgpack_array("CarPositionPatch", {"n": "42"})  # short name is not a patch field
    with pytest.raises(ContractError):
        to_msgpack_array("CarPositionPatch", {"key5": 1})  # a generic name inside the contract
    with pytest.raises(ContractError):
        from_msgpack_array("NoSuchType", [])
    with pytest.raises(ContractError):
        value_to_msgpack("DateTime", "yesterday")


def test_inbound_values_in_unexpected_forms_pass_through_and_are_counted() -> None:
    before = dict(contract.STATS.unexpected_values)
    assert value_from_msgpack("TimeOnly", 10**15) == 10**15  # out of range: as received
    got = from_msgpack_array("CarPositionPatch", {"number": "1"})  # type: ignore[arg-type]
    assert got == {"number": "1"}
    after = contract.STATS.unexpected_values
    assert after["TimeOnly"] == before.get("TimeOnly", 0) + 1
    assert after["CarPositionPatch"] == before.get("CarPositionPatch", 0) + 1
