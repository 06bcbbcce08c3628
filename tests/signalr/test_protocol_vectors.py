"""Every example of HubProtocol.md, byte for byte: decode → the expected message, encode → the bytes.

The vectors in tests/signalr/vectors/ are the spec's examples copied verbatim (JSON text as printed,
MessagePack payloads as the printed hex byte lists).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from consumer.signalr import protocol as p

VECTORS = Path(__file__).resolve().parent / "vectors"
JSON_VECTORS = json.loads((VECTORS / "hubprotocol_json.json").read_text())
MSGPACK_VECTORS = json.loads((VECTORS / "hubprotocol_msgpack.json").read_text())

KINDS: dict[str, type[Any]] = {
    "Invocation": p.Invocation,
    "StreamItem": p.StreamItem,
    "Completion": p.Completion,
    "StreamInvocation": p.StreamInvocation,
    "CancelInvocation": p.CancelInvocation,
    "Ping": p.Ping,
    "Close": p.Close,
    "Ack": p.Ack,
    "Sequence": p.Sequence,
}


def build(spec: dict[str, Any]) -> p.HubMessage:
    fields = dict(spec)
    return KINDS[fields.pop("kind")](**fields)  # type: ignore[no-any-return]


def hexbytes(text: str) -> bytes:
    return bytes(int(token, 16) for token in text.split())


def compact(pretty: str) -> bytes:
    """The spec's pretty-printed example without insignificant whitespace, key order kept."""
    return json.dumps(json.loads(pretty), separators=(",", ":"), ensure_ascii=False).encode()


def ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in vectors]


# --- JSON ------------------------------------------------------------------------------------------------


def test_json_vectors_cover_every_message_type() -> None:
    kinds = {v["message"]["kind"] for v in JSON_VECTORS["messages"]}
    assert kinds == set(KINDS)


@pytest.mark.parametrize("vector", JSON_VECTORS["messages"], ids=ids(JSON_VECTORS["messages"]))
def test_json_example_decodes_as_printed(vector: dict[str, Any]) -> None:
    record = vector["json"].encode() + b"\x1e"
    assert p.get_protocol("json").decode(record) == [build(vector["message"])]


@pytest.mark.parametrize("vector", JSON_VECTORS["messages"], ids=ids(JSON_VECTORS["messages"]))
def test_json_example_encodes_byte_for_byte(vector: dict[str, Any]) -> None:
    expected = compact(vector["json"]) + b"\x1e"
    assert p.get_protocol("json").encode(build(vector["message"])) == expected
    # and the compact form decodes back to the same message
    assert p.get_protocol("json").decode(expected) == [build(vector["message"])]


@pytest.mark.parametrize("vector", JSON_VECTORS["messages"], ids=ids(JSON_VECTORS["messages"]))
def test_json_example_raw_arguments_pass_through(vector: dict[str, Any]) -> None:
    proto = p.get_protocol("json", raw_arguments=True)
    expected = compact(vector["json"]) + b"\x1e"
    [message] = proto.decode(expected)
    if isinstance(message, p.Invocation):
        assert bytes(message.arguments) == compact(json.dumps(vector["message"]["arguments"]))
    assert proto.encode(message) == expected


@pytest.mark.parametrize("vector", JSON_VECTORS["protocol_errors"], ids=ids(JSON_VECTORS["protocol_errors"]))
def test_json_protocol_error_examples(vector: dict[str, Any]) -> None:
    with pytest.raises(p.ProtocolError):
        p.get_protocol("json").decode(vector["json"].encode() + b"\x1e")


@pytest.mark.parametrize("vector", JSON_VECTORS["handshake_requests"])
def test_handshake_request_example(vector: dict[str, Any]) -> None:
    request = p.HandshakeRequest(protocol=vector["protocol"], version=vector["version"])
    assert p.parse_handshake_request(vector["json"].encode() + b"\x1e") == (request, b"")
    assert p.encode_handshake_request(request) == compact(vector["json"]) + b"\x1e"


@pytest.mark.parametrize("vector", JSON_VECTORS["handshake_responses"])
def test_handshake_response_example(vector: dict[str, Any]) -> None:
    response = p.HandshakeResponse(error=vector["error"])
    assert p.parse_handshake_response(vector["json"].encode() + b"\x1e") == (response, b"")
    assert p.encode_handshake_response(response) == compact(vector["json"]) + b"\x1e"


# --- MessagePack -------------------------------------------------------------------------------------------


def test_msgpack_vectors_cover_every_message_type() -> None:
    kinds = {v["message"]["kind"] for v in MSGPACK_VECTORS["messages"]}
    assert kinds == set(KINDS)


@pytest.mark.parametrize("vector", MSGPACK_VECTORS["messages"], ids=ids(MSGPACK_VECTORS["messages"]))
def test_msgpack_example_decodes(vector: dict[str, Any]) -> None:
    payload = hexbytes(vector["payload"])
    assert len(payload) < 128  # so the VarInt prefix is the single length byte
    frame = bytes([len(payload)]) + payload
    assert p.get_protocol("messagepack").decode(frame) == [build(vector["message"])]


@pytest.mark.parametrize("vector", MSGPACK_VECTORS["messages"], ids=ids(MSGPACK_VECTORS["messages"]))
def test_msgpack_example_encodes_byte_for_byte(vector: dict[str, Any]) -> None:
    payload = hexbytes(vector["payload"])
    assert p.get_protocol("messagepack").encode(build(vector["message"])) == bytes([len(payload)]) + payload


@pytest.mark.parametrize("vector", MSGPACK_VECTORS["messages"], ids=ids(MSGPACK_VECTORS["messages"]))
def test_msgpack_example_raw_arguments_pass_through(vector: dict[str, Any]) -> None:
    proto = p.get_protocol("messagepack", raw_arguments=True)
    payload = hexbytes(vector["payload"])
    frame = bytes([len(payload)]) + payload
    [message] = proto.decode(frame)
    if isinstance(message, p.Invocation):
        assert bytes(message.arguments) == b"\x91\x2a"  # the [42] arguments array, undecoded
    assert proto.encode(message) == frame


@pytest.mark.parametrize("vector", MSGPACK_VECTORS["varints"], ids=ids(MSGPACK_VECTORS["varints"]))
def test_varint_examples(vector: dict[str, Any]) -> None:
    encoded = hexbytes(vector["bytes"])
    assert p.encode_varint(vector["value"]) == encoded
    assert p.decode_varint(encoded) == (vector["value"], len(encoded))
    assert p.decode_varint(encoded[:-1]) is None  # one byte short: need more


def test_binary_framing_example() -> None:
    framing = MSGPACK_VECTORS["framing"]
    frames = [hexbytes(f) for f in framing["frames"]]
    # The spec's prose says "Hello\nWorld" but its printed bytes (0x68 ... 0x77) spell it in lower case.
    assert frames[0] == b"hello\nworld"
    encoded = hexbytes(framing["encoded"])
    assert b"".join(p.frame_binary(f) for f in frames) == encoded
    # and split back
    offset, parsed = 0, []
    while offset < len(encoded):
        prefix = p.decode_varint(encoded, offset)
        assert prefix is not None
        length, used = prefix
        parsed.append(encoded[offset + used : offset + used + length])
        offset += used + length
    assert parsed == frames


def test_varint_two_byte_prefix_through_the_reader() -> None:
    """A 5248-byte message (the spec's 0x80 0x29 prefix) decodes through the MessagePack reader."""
    proto = p.get_protocol("messagepack")
    # 10 bytes of array header, type, headers, id and str16 header, then the string
    message = p.StreamItem(invocation_id="xyz", item="a" * (5248 - 10))
    frame = proto.encode(message)
    assert frame[:2] == b"\x80\x29"
    assert len(frame) == 2 + 5248
    assert proto.reader().feed(frame) == [message]
