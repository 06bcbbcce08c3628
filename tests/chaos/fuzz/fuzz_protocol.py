"""atheris target: the SignalR hub protocol readers and handshake parsers only ever raise ProtocolError.

Input layout (so libFuzzer can steer every mode): byte 0 selects the protocol (bit 0: json/messagepack),
raw_arguments (bit 1) and whether a handshake (bits 2-3: 1 = request, 2 = response) precedes the hub
messages; byte 1 picks the split point of the rest (fed as two chunks, as a socket would deliver it);
byte 2 the reader's max_message_size (1..256 * 16). Beyond "only ProtocolError escapes" it checks the
readers' documented invariants: nothing but hub messages comes out, buffering never exceeds the limit,
decoded messages re-encode (or raise ProtocolError).

Run: `.venv/bin/python tests/chaos/fuzz/fuzz_protocol.py -runs=1000000` (see _common.py).
"""

from __future__ import annotations

import json
import sys
import typing

import atheris
from _common import ROOT, hexbytes, run

with atheris.instrument_imports(include=["consumer"]):
    from consumer.signalr import protocol as p

_MESSAGE_TYPES = typing.get_args(p.HubMessage)
_MAX_VARINT = 5  # bytes of a length prefix (a 32-bit length)
_PROTOCOLS = {
    (name, raw): p.get_protocol(name, raw_arguments=raw)
    for name in ("json", "messagepack")
    for raw in (False, True)
}


def _handshake(parse: typing.Callable[..., tuple[object, bytes]], a: bytes, b: bytes, limit: int) -> bytes:
    """The handshake as a connection parses it: retry with more data while it is incomplete."""
    result, rest = parse(a, max_size=limit)
    if result is None:
        result, rest = parse(rest + b, max_size=limit)
        if result is None:
            assert len(rest) <= limit  # an incomplete handshake larger than the limit is an error
            return b""
        return rest
    return rest + b


def test_one_input(data: bytes) -> None:
    if len(data) < 3:
        return
    mode, split, size = data[0], data[1], data[2]
    body = data[3:]
    name = "messagepack" if mode & 1 else "json"
    proto = _PROTOCOLS[(name, bool(mode & 2))]
    limit = 16 * (size + 1) if size & 1 else size + 1
    cut = split * len(body) // 255
    first, second = body[:cut], body[cut:]
    reader = proto.reader(max_message_size=limit)
    try:
        handshake = (mode >> 2) & 3
        if handshake == 1:
            first, second = _handshake(p.parse_handshake_request, first, second, limit), b""
        elif handshake == 2:
            first, second = _handshake(p.parse_handshake_response, first, second, limit), b""
        messages = [*reader.feed(first), *reader.feed(second)]
        slack = 0 if name == "json" else _MAX_VARINT
        assert reader.buffered <= limit + slack, (reader.buffered, limit)
        for message in messages:
            assert isinstance(message, _MESSAGE_TYPES), type(message)
            proto.encode(message)
    except p.ProtocolError:
        pass


def _seeds() -> dict[str, bytes]:
    vectors = ROOT / "tests" / "signalr" / "vectors"
    js = json.loads((vectors / "hubprotocol_json.json").read_text())
    mp = json.loads((vectors / "hubprotocol_msgpack.json").read_text())
    seeds: dict[str, bytes] = {}
    # Header bytes: mode, split (middle), size (255 -> 4096-byte limit).
    for i, m in enumerate(js["messages"] + js["protocol_errors"]):
        record = m["json"].encode() + p.RECORD_SEPARATOR
        seeds[f"json-{i}"] = bytes([0, 128, 255]) + record * 2
        seeds[f"json-raw-{i}"] = bytes([2, 128, 255]) + record
    for i, m in enumerate(js["handshake_requests"]):
        seeds[f"hs-req-{i}"] = bytes([4, 200, 255]) + m["json"].encode() + p.RECORD_SEPARATOR
    for i, m in enumerate(js["handshake_responses"]):
        seeds[f"hs-resp-{i}"] = bytes([8, 200, 255]) + m["json"].encode() + p.RECORD_SEPARATOR
    seeds["hs-resp-ok-then-ping"] = bytes([8, 100, 255]) + b"{}\x1e" + b'{"type":6}\x1e'
    for i, m in enumerate(mp["messages"]):
        frame = p.frame_binary(hexbytes(m["payload"]))
        seeds[f"msgpack-{i}"] = bytes([1, 128, 255]) + frame * 2
        seeds[f"msgpack-raw-{i}"] = bytes([3, 128, 255]) + frame
    seeds["msgpack-framing"] = bytes([1, 60, 255]) + hexbytes(mp["framing"]["encoded"])
    for i, v in enumerate(mp["varints"]):
        seeds[f"varint-{i}"] = bytes([1, 128, 255]) + hexbytes(v["bytes"])
    return seeds


if __name__ == "__main__":
    sys.exit(run(test_one_input, _seeds))
