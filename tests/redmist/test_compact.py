"""`[redmist] patches = "compact"`: patch objects without their null fields, both protocols.

Real replay patches in RedMist's wire shape (JSON: every key, unset ones null; MessagePack: full-length
arrays) go through the real `Relay` for each protocol; the compact lines must carry exactly the non-null
fields of the faithful lines (nothing else changed), be identical for both protocols, keep nulls inside
nested objects and in non-patch records, and the default must stay faithful.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from consumer.config import ConfigError, parse_config
from consumer.redmist import PAYLOADS, contract
from consumer.redmist.compact import COMPACT_ARGUMENTS
from consumer.relay.relay import Relay
from consumer.sim.race import PACKAGED_REPLAYS, RaceEngine, load_replay

CAR = "ReceiveCarPatches"
SESSION = "ReceiveSessionPatch"
NAMES = [f.json_name for f in contract.CONTRACT.type("CarPositionPatch").fields]
SESSION_NAMES = [f.json_name for f in contract.CONTRACT.type("SessionStatePatch").fields]


class Capture:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def accepts(self, target: str) -> bool:
        return True

    def offer(self, line: bytes) -> bool:
        self.lines.append(line)
        return True


def arguments(line: bytes) -> Any:
    return msgspec.json.decode(line)["arguments"]


@pytest.fixture(scope="module")
def batches() -> list[tuple[str, list[Any]]]:
    """(target, JSON-form arguments) from a replay: 12-car patch batches with every key present and
    session patches, as RedMist's JSON protocol writes them."""
    engine = RaceEngine(load_replay(PACKAGED_REPLAYS[0]))
    out: list[tuple[str, list[Any]]] = []
    t = engine.first_lap_ms
    pending: list[dict[str, Any]] = []
    while t < engine.end_ms and len(out) < 300:
        t += 5000
        update = engine.advance_to(t)
        pending.extend(update.car_patches)
        while len(pending) >= 12:
            batch, pending = pending[:12], pending[12:]
            out.append((CAR, [[{n: p.get(n) for n in NAMES} for p in batch]]))
        if update.session_patch is not None:
            out.append((SESSION, [{n: update.session_patch.get(n) for n in SESSION_NAMES}]))
    return out


async def relay_lines(protocol: str, frames: list[tuple[str, list[Any]]], compact: bool) -> list[bytes]:
    sink = Capture()
    relay = Relay([sink], hub="h", profile=PAYLOADS, protocol=protocol, compact_patches=compact)  # type: ignore[list-item,arg-type]
    for target, args in frames:
        if protocol == "json":
            raw = msgspec.json.encode(args)
        else:
            raw = msgspec.msgpack.encode(contract.arguments_to_msgpack(target, args))
        await relay.on_raw(target, msgspec.Raw(raw))
    return sink.lines


def without_nulls(value: Any) -> Any:
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return {k: v for k, v in value.items() if v is not None}


async def test_compact_lines_are_the_faithful_ones_without_null_fields_on_both_protocols(
    batches: list[tuple[str, list[Any]]],
) -> None:
    assert {t for t, _ in batches} == {CAR, SESSION}
    faithful = await relay_lines("json", batches, compact=False)
    compact = {p: await relay_lines(p, batches, compact=True) for p in ("json", "messagepack")}
    sizes = {"faithful": 0, "compact": 0}
    for i, line in enumerate(faithful):
        full = arguments(line)
        expected = [without_nulls(full[0])]
        for protocol in ("json", "messagepack"):
            got = compact[protocol][i]
            assert arguments(got) == expected, protocol
            # the rest of the envelope is untouched (seq, target, event id)
            head, _, _ = got.partition(b',"arguments":')
            assert (
                head[head.index(b',"seq"') :] == line.partition(b',"arguments":')[0][line.index(b',"seq"') :]
            )
        assert (
            compact["json"][i].partition(b',"arguments":')[2]
            == compact["messagepack"][i].partition(b',"arguments":')[2]
        )
        sizes["faithful"] += len(line)
        sizes["compact"] += len(compact["json"][i])
    # the faithful form really has nulls to drop, and dropping them pays
    assert b":null" in b"".join(faithful)
    assert sizes["compact"] * 3 < sizes["faithful"]


async def test_default_stays_faithful_and_non_patch_records_keep_their_nulls() -> None:
    patch = dict.fromkeys(NAMES)
    patch.update(eventId="1187", number="42")
    control = {"cn": "42", "entries": None}
    for protocol in ("json", "messagepack"):
        default = await relay_lines(protocol, [(CAR, [[patch]])], compact=False)
        assert arguments(default[0])[0][0] == patch  # every key, nulls written
        lines = await relay_lines(
            protocol, [(CAR, [[patch]]), ("ReceiveControlLog", [control])], compact=True
        )
        assert arguments(lines[0]) == [[{"eventId": "1187", "number": "42"}]]
        assert arguments(lines[1]) == [control]  # not a patch: its null stays
    assert set(COMPACT_ARGUMENTS) == {CAR, SESSION}


async def test_json_members_the_contract_does_not_know_are_kept() -> None:
    """A JSON patch with a member the contract lacks takes the general way: nothing dropped but nulls."""
    patch = dict.fromkeys(NAMES)
    patch.update(eventId="1187", number="42", aFutureField=5, anotherOne=None)
    (line,) = await relay_lines("json", [(CAR, [[patch]])], compact=True)
    assert arguments(line) == [[{"eventId": "1187", "number": "42", "aFutureField": 5}]]


async def test_nested_objects_keep_their_nulls() -> None:
    patch = dict.fromkeys(NAMES)
    patch.update(number="42", completedSections=[{"number": "42", "sectionId": "S1", "elapsedTimeMs": None}])
    for protocol in ("json", "messagepack"):
        (line,) = await relay_lines(protocol, [(CAR, [[patch]])], compact=True)
        (obj,) = arguments(line)[0]
        assert set(obj) == {"number", "completedSections"}
        assert obj["completedSections"][0]["elapsedTimeMs"] is None  # inside: kept as is


async def test_messagepack_fallback_frames_are_compacted_too() -> None:
    """A frame the fast path declines (a slot beyond the contract) goes through the reference
    conversion, and is compacted the same way."""
    arr: list[Any] = [None] * contract.CONTRACT.type("CarPositionPatch").array_length
    arr[0], arr[2] = "1187", "7"
    sink = Capture()
    relay = Relay([sink], hub="h", profile=PAYLOADS, protocol="messagepack", compact_patches=True)  # type: ignore[list-item]
    await relay.on_raw(CAR, msgspec.Raw(msgspec.msgpack.encode([[[*arr, "beyond"]]])))
    await relay.on_raw(CAR, msgspec.Raw(msgspec.msgpack.encode([[arr]])))
    first, second = (arguments(x) for x in sink.lines)
    assert second == [[{"eventId": "1187", "number": "7"}]]
    assert {k: v for k, v in first[0][0].items() if k in ("eventId", "number")} == second[0][0]
    assert None not in first[0][0].values()


def config(patches: Any) -> dict[str, Any]:
    return {
        "auth": {"grant": "none"},
        "hub": {"url": "https://hub.example/status/event-status"},
        "redmist": {"patches": patches},
    }


def test_config_key() -> None:
    assert parse_config(config("compact"), source="t.toml").redmist.patches == "compact"
    assert parse_config(config("faithful"), source="t.toml").redmist.patches == "faithful"
    with pytest.raises(ConfigError) as err:
        parse_config(config("tiny"), source="t.toml")
    assert "t.toml" in str(err.value) and "patches" in str(err.value)
