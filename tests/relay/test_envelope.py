from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import msgspec
import pytest

from consumer.redmist.payloads import peek_json_event_id
from consumer.relay.envelope import Clock, EnvelopeEncoder

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "envelope.schema.json").read_text())


def validate(line: bytes) -> dict[str, object]:
    rec = json.loads(line)
    jsonschema.Draft202012Validator(SCHEMA).validate(rec)
    return rec  # type: ignore[no-any-return]


def test_raw_arguments_are_spliced_byte_for_byte() -> None:
    raw = b'[[{"eventId":"1187","number":"42","lastLapTime":"00:01:41.872","x":"\\u00e9\xc3\xa9"}]]'
    enc = EnvelopeEncoder("redmist")
    line = enc.invocation("ReceiveCarPatches", msgspec.Raw(raw), peek_json_event_id(raw))
    assert raw in line  # not decoded and re-encoded: even the \u escape survives as sent
    rec = validate(line)
    assert rec["event_id"] == 1187
    assert rec["seq"] == 1
    assert list(rec) == ["received_at", "seq", "hub", "kind", "target", "event_id", "arguments"]


def test_sample_output_of_every_kind_validates_and_seq_increases() -> None:
    enc = EnvelopeEncoder("redmist")
    out = [
        enc.connection("connected"),
        enc.invocation("ReceiveSessionPatch", [{"eventId": 5, "sessionId": 1}], 5),
        enc.invocation("ReceiveReset", []),
        enc.snapshot("GetCurrentSessionStateJson", {"eventId": 5, "carPositions": [{"n": "1"}]}, 5),
        enc.connection("reconnecting", "connection lost"),
        enc.connection("reconnected"),
        enc.connection("closed", "stopped"),
    ]
    seqs = [validate(line)["seq"] for line in out]
    assert seqs == sorted(set(seqs))
    assert "event_id" not in json.loads(out[2])


def test_schema_rejects_bad_records() -> None:
    good = json.loads(EnvelopeEncoder("h").connection("connected"))
    for bad in (
        {**good, "kind": "other"},
        {**good, "received_at": "2026-01-01T00:00:00+00:00"},
        {**good, "target": "bogus"},
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "seq"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft202012Validator(SCHEMA).validate(bad)


def test_clock_formats_rfc3339_microseconds() -> None:
    t = [1_700_000_000_000_042_999]
    c = Clock(lambda: t[0])
    assert c.now() == "2023-11-14T22:13:20.000042Z"
    t[0] += 1_500_000_000
    assert c.now() == "2023-11-14T22:13:21.500042Z"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'[[{"eventId":"1187","number":"1"}]]', 1187),
        (b'[{"eventId": 42, "sessionId": 3}]', 42),
        (b'[{"sessionId": 3}]', None),
        (b'[[{"eventId":"abc"}]]', "abc"),
        (b'[[{"eventId":', None),
    ],
)
def test_event_id_peek(raw: bytes, expected: object) -> None:
    assert peek_json_event_id(raw) == expected


def test_connection_state_is_checked() -> None:
    with pytest.raises(ValueError, match="unknown connection state"):
        EnvelopeEncoder("h").connection("exploded")
