"""The MessagePack fast path (`consumer.redmist.fastpack`) against the reference conversion.

Pinned: on every replay frame (both the shared replays and the simulator's packaged copies, played
through the `RaceEngine`, sparse patches and RedMist-shaped full ones) and on hypothesis-generated
frames, `fastpack.convert` either declines (None: the relay then uses the reference) or yields
arguments that encode to exactly the bytes of `contract.encodable_arguments_from_msgpack` — and of the
plain per-field reference in test_hot_path_contract — through the real envelope encoder. The replay
frames must all take the fast path (otherwise the agreement would be vacuous); frames the fast path
cannot prove exact (extra slots, unexpected slot types) must decline.
"""

from __future__ import annotations

import datetime as dt
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.redmist import PAYLOADS, contract, fastpack
from consumer.redmist.payloads import event_id_of
from consumer.relay.envelope import EnvelopeEncoder
from consumer.relay.relay import Relay
from consumer.sim.race import PACKAGED_REPLAYS, RaceEngine, load_replay

from .test_hot_path_contract import reference_arguments

CAR = "ReceiveCarPatches"
SESSION = "ReceiveSessionPatch"
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "replays"
CAR_SPEC = contract.CONTRACT.type("CarPositionPatch")
SESSION_SPEC = contract.CONTRACT.type("SessionStatePatch")
TICKS_PER_DAY = 86_400 * 10_000_000


def replay_sources() -> list[str | Path]:
    """The packaged replays and the shared ones; a shared file byte-identical to a packaged one is
    played once (the frames would be the same)."""
    sources: list[str | Path] = list(PACKAGED_REPLAYS)
    packaged = {load_text(name) for name in PACKAGED_REPLAYS}
    if SHARED.is_dir():
        for path in sorted(SHARED.glob("*.json")):
            if path.name != "index.json" and path.read_text(encoding="utf-8") not in packaged:
                sources.append(path)
    return sources


def load_text(name: str) -> str:
    return resources.files("consumer.sim").joinpath("replays", f"{name}.json").read_text(encoding="utf-8")


def encoded(args: list[Any]) -> bytes:
    """Through the envelope encoder the relay uses (its `str`-subclass hook included)."""
    enc = EnvelopeEncoder("h", clock=None)
    line = enc.invocation(CAR, args, None)
    return line[line.index(b'"arguments":') :]


def reference_bytes(target: str, raw: bytes) -> bytes:
    ref = contract.encodable_arguments_from_msgpack(target, msgspec.msgpack.decode(raw))
    plain = reference_arguments(target, msgspec.msgpack.decode(raw))
    assert encoded(ref) == encoded(plain)  # the two references agree with each other
    return encoded(ref)


@pytest.fixture(scope="module")
def replay_frames() -> list[tuple[str, bytes]]:
    """MessagePack argument arrays as the hub sends them over every replay: car patch batches of up to
    40 sparse patches (every 4th also as 12 RedMist-shaped full objects: every key, unset null), and
    every session patch."""
    names = [f.json_name for f in CAR_SPEC.fields]
    frames: list[tuple[str, bytes]] = []
    for source in replay_sources():
        engine = RaceEngine(load_replay(source))
        t = engine.first_lap_ms
        pending: list[dict[str, Any]] = []
        while t < engine.end_ms:
            t += 5000
            update = engine.advance_to(t)
            pending.extend(update.car_patches)
            while len(pending) >= 40:
                batch, pending = pending[:40], pending[40:]
                frames.append((CAR, msgspec.msgpack.encode(contract.arguments_to_msgpack(CAR, [batch]))))
                if len(frames) % 4 == 0:  # every 4th batch also as RedMist writes it (every key)
                    full = [{n: p.get(n) for n in names} for p in batch[:12]]
                    frames.append((CAR, msgspec.msgpack.encode(contract.arguments_to_msgpack(CAR, [full]))))
            if update.session_patch is not None:
                packed = contract.arguments_to_msgpack(SESSION, [update.session_patch])
                frames.append((SESSION, msgspec.msgpack.encode(packed)))
        if pending:
            frames.append((CAR, msgspec.msgpack.encode(contract.arguments_to_msgpack(CAR, [pending]))))
    return frames


def test_every_replay_frame_takes_the_fast_path_and_agrees(replay_frames: list[tuple[str, bytes]]) -> None:
    assert len(replay_frames) > 2000
    assert {t for t, _ in replay_frames} == {CAR, SESSION}
    wire = b"".join(raw for _, raw in replay_frames)
    assert b"\xd6\xff" in wire or b"\xd7\xff" in wire  # MessagePack timestamps are on the wire
    for target, raw in replay_frames:
        fast = fastpack.convert(target, raw)
        assert fast is not None, "a replay frame fell back"
        assert encoded(fast) == reference_bytes(target, raw)
        ref = contract.encodable_arguments_from_msgpack(target, msgspec.msgpack.decode(raw))
        assert event_id_of(fast) == event_id_of(ref)
        # the dict form the relay's watchers get: equal to the reference dict conversion
        dicts = fastpack.to_dicts(fast)
        assert dicts == contract.arguments_from_msgpack(target, msgspec.msgpack.decode(raw))
        assert encoded(dicts) == encoded(fast)


def patch(**slots: Any) -> list[Any]:
    arr: list[Any] = [None] * CAR_SPEC.array_length
    for key, value in slots.items():
        arr[int(key[1:])] = value
    return arr


def frame(*patches: list[Any]) -> bytes:
    return msgspec.msgpack.encode([list(patches)])


def test_converted_slots_match_the_reference() -> None:
    when = dt.datetime(2026, 8, 22, 19, 43, 55, 402000, tzinfo=dt.UTC)
    sections = [["42", "S1", 31_000, 30_500, 12], None, ["42", "S2"]]
    raw = frame(
        patch(
            k0="1187", k2="42", k41=sections, k43=TICKS_PER_DAY - 1, k46=[2, [1, "u", "h", 1, "p"]], k55=when
        ),
        patch(k0="1187", k43="19:42:08.5310000", k55="2026-08-22T19:43:55Z"),  # string forms pass through
        patch(k55=dt.datetime(1960, 1, 1, tzinfo=dt.UTC), k43=0),
    )
    fast = fastpack.convert(CAR, raw)
    assert fast is not None
    out = encoded(fast)
    assert out == reference_bytes(CAR, raw)
    assert b'"pitEntryTime":"2026-08-22T19:43:55.402Z"' in out
    assert b'"lapStartTime":"23:59:59.9999999"' in out
    assert b'"completedSections":[{"number":"42","sectionId":"S1"' in out


def test_time_only_ticks_agree_with_the_reference_at_every_boundary() -> None:
    """TimeOnly text is built from per-minute and per-second tables plus the 7-digit fraction: every
    carry (fraction -> second -> minute -> hour) and both ends of the day, against the reference."""
    second, minute, hour = 10_000_000, 600_000_000, 36_000_000_000
    ticks = sorted(
        {0, 1, 9, 10, 999_999, 1_000_000, TICKS_PER_DAY - 1}
        | {b + d for b in (second, minute, hour, 10 * hour, 23 * hour + 59 * minute) for d in (-1, 0, 1)}
        | set(range(0, TICKS_PER_DAY, 86_399_999_999 // 997))  # a stride that walks every field
    )
    raw = frame(*(patch(k0="1", k43=t) for t in ticks))
    fast = fastpack.convert(CAR, raw)
    assert fast is not None
    assert encoded(fast) == reference_bytes(CAR, raw)
    assert b'"lapStartTime":"00:00:00.0000001"' in encoded(fast)


@pytest.mark.parametrize(
    "raw",
    [
        frame([*patch(k0="1"), "a slot beyond the contract"]),  # more slots than the contract
        frame(patch(k43=TICKS_PER_DAY)),  # TimeOnly ticks out of range
        frame(patch(k43=1.5)),  # TimeOnly as a float
        frame(patch(k55=7)),  # DateTime as a number
        frame(patch(k41="not a list")),
        frame(patch(k41=[{"number": "1"}])),  # an object as a map, not an array
        frame(patch(k46=[1, 2, 3, 4, 5, 6, 7])),  # a nested array longer than its type
        frame({"number": "1"}),  # a patch as a map
        msgspec.msgpack.encode([[patch()], {"sentAtNs": 1}]),  # more arguments than declared
        msgspec.msgpack.encode("not an argument array"),
        b"\xc1",  # not MessagePack
    ],
)
def test_frames_it_cannot_prove_exact_fall_back(raw: bytes) -> None:
    assert fastpack.convert(CAR, raw) is None


def test_unknown_targets_fall_back() -> None:
    assert fastpack.convert("SomethingNew", msgspec.msgpack.encode([[1]])) is None
    assert {CAR, SESSION} <= fastpack.supported_targets()


async def test_relay_output_is_the_reference_line_on_both_paths() -> None:
    """The relay's MessagePack lines: fast path when it can, the reference conversion otherwise."""

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

    sink = Capture()
    relay = Relay([sink], hub="h", profile=PAYLOADS, protocol="messagepack")  # type: ignore[list-item]
    good = frame(patch(k0="1187", k2="7", k43=10_000_000))
    extra = frame([*patch(k0="1187", k2="8"), "beyond"])
    for raw in (good, extra):
        await relay.on_raw(CAR, msgspec.Raw(raw))
    assert fastpack.convert(CAR, good) is not None and fastpack.convert(CAR, extra) is None
    for line, raw in zip(sink.lines, (good, extra), strict=True):
        assert line[line.index(b'"arguments":') :] == reference_bytes(CAR, raw)
        assert b'"event_id":1187' in line


async def test_watchers_get_the_reference_dicts_and_the_line_is_unchanged() -> None:
    """With a watcher (the live state), the MessagePack fast path still serves: the watcher gets the
    same dicts as the reference conversion, the line the same bytes."""

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

    sink = Capture()
    relay = Relay([sink], hub="h", profile=PAYLOADS, protocol="messagepack")  # type: ignore[list-item]
    seen: list[list[Any]] = []
    relay.watch(CAR, lambda args, event_id: seen.append(args))
    when = dt.datetime(2026, 8, 22, 19, 43, 55, 402000, tzinfo=dt.UTC)
    good = frame(patch(k0="1187", k2="7", k43=10_000_000, k55=when, k41=[["7", "S1", 1, 2, 3]]))
    extra = frame([*patch(k0="1187", k2="8"), "beyond"])
    for raw in (good, extra):
        await relay.on_raw(CAR, msgspec.Raw(raw))
    for got, line, raw in zip(seen, sink.lines, (good, extra), strict=True):
        assert got == contract.arguments_from_msgpack(CAR, msgspec.msgpack.decode(raw))
        assert line[line.index(b'"arguments":') :] == reference_bytes(CAR, raw)
    assert seen[0][0][0]["lapStartTime"] == "00:00:01.0000000" and type(seen[0][0][0]["lapStartTime"]) is str


# -- hypothesis ---------------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.datetimes(
        min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(dt.UTC)
    ),
)
slot_values = st.one_of(
    scalars,
    st.integers(min_value=0, max_value=TICKS_PER_DAY + 5),
    st.lists(st.one_of(st.none(), st.lists(scalars, max_size=7)), max_size=3),
    st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
)


@st.composite
def patch_arrays(draw: st.DrawFn, spec: contract.TypeSpec) -> list[Any]:
    n = draw(st.integers(min_value=0, max_value=spec.array_length + 2))
    return [draw(slot_values) for _ in range(n)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.none(), patch_arrays(CAR_SPEC)), max_size=4))
def test_generated_car_frames_agree_or_fall_back(patches: list[Any]) -> None:
    raw = msgspec.msgpack.encode([patches])
    fast = fastpack.convert(CAR, raw)
    if fast is None:
        return  # the relay uses the reference; nothing to compare
    assert encoded(fast) == reference_bytes(CAR, raw)
    dicts = fastpack.to_dicts(fast)
    assert dicts == contract.arguments_from_msgpack(CAR, msgspec.msgpack.decode(raw))
    assert all(type(v) is str for p in dicts[0] or () if p for v in p.values() if isinstance(v, str))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patch_arrays(SESSION_SPEC))
def test_generated_session_frames_agree_or_fall_back(state: list[Any]) -> None:
    raw = msgspec.msgpack.encode([state])
    fast = fastpack.convert(SESSION, raw)
    if fast is not None:
        assert encoded(fast) == reference_bytes(SESSION, raw)


def well_typed_value(type_expr: str) -> st.SearchStrategy[Any]:
    t = type_expr.removesuffix("?")
    if t == "TimeOnly":
        return st.integers(min_value=0, max_value=TICKS_PER_DAY - 1)
    if t == "DateTime":
        return st.datetimes(timezones=st.just(dt.UTC))
    if t in ("int", "uint", "ushort"):
        return st.integers(min_value=0, max_value=2**31)
    if t == "string":
        return st.text(max_size=6)
    if t == "bool":
        return st.booleans()
    if t == "double":
        return st.floats(allow_nan=False, allow_infinity=False)
    return st.none()


# Patches whose slots hold what the contract declares (or nil): these must take the fast path.
well_typed_patches = st.tuples(
    *(st.one_of(st.none(), well_typed_value(f.type)) for f in CAR_SPEC.fields)
).map(list)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(well_typed_patches, min_size=1, max_size=4),
    st.integers(min_value=0, max_value=CAR_SPEC.array_length),
)
def test_well_typed_frames_take_the_fast_path(patches: list[Any], length: int) -> None:
    raw = msgspec.msgpack.encode([[p[:length] for p in patches]])  # full or short arrays
    fast = fastpack.convert(CAR, raw)
    assert fast is not None
    assert encoded(fast) == reference_bytes(CAR, raw)
