"""Behaviour of the sans-I/O protocol core beyond the spec's examples: incremental reading, limits,
validation of field types, forward compatibility, raw arguments, handshake edge cases."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest

from consumer.signalr import protocol as p

JSON = p.get_protocol("json")
MSGPACK = p.get_protocol("messagepack")
PROTOCOLS = [JSON, MSGPACK]
PROTOCOL_IDS = ["json", "messagepack"]

SAMPLE: list[p.HubMessage] = [
    p.Invocation(target="Send", arguments=[1, "two", {"three": [3.5, None, True]}], invocation_id="7"),
    p.Invocation(target="Fire", arguments=[], headers={"a": "b"}),
    p.StreamItem(invocation_id="7", item={"k": "v"}),
    p.Completion(invocation_id="7", result=None, has_result=True),
    p.Completion(invocation_id="8", error="boom"),
    p.Completion(invocation_id="9"),
    p.StreamInvocation(invocation_id="10", target="Count", arguments=[5], stream_ids=["s1"]),
    p.CancelInvocation(invocation_id="10"),
    p.Ping(),
    p.Close(error="bye", allow_reconnect=True),
    p.Ack(sequence_id=70000),
    p.Sequence(sequence_id=2**40),
]


def stream_of(proto: p.JsonHubProtocol | p.MessagePackHubProtocol) -> bytes:
    return b"".join(proto.encode(m) for m in SAMPLE)


# --- protocol objects ----------------------------------------------------------------------------------


def test_protocol_objects() -> None:
    assert (JSON.name, JSON.version, JSON.transfer_format) == ("json", 1, "text")
    assert (MSGPACK.name, MSGPACK.version, MSGPACK.transfer_format) == ("messagepack", 1, "binary")
    for proto in PROTOCOLS:
        assert proto.is_version_supported(1)
        assert proto.is_version_supported(2)  # the official clients send 2 with stateful reconnect
        assert not proto.is_version_supported(0)
        assert not proto.is_version_supported(3)
    assert p.SUPPORTED_PROTOCOLS == ("json", "messagepack")


def test_get_protocol_unknown_name_is_a_protocol_error() -> None:
    with pytest.raises(p.ProtocolError, match="'xml' is not available"):
        p.get_protocol("xml")


def test_get_protocol_rejects_unknown_options() -> None:
    with pytest.raises(TypeError):
        p.get_protocol("json", frobnicate=True)


# --- incremental reading -------------------------------------------------------------------------------


@pytest.mark.parametrize("proto", PROTOCOLS, ids=PROTOCOL_IDS)
def test_many_messages_in_one_frame(proto: Any) -> None:
    assert proto.reader().feed(stream_of(proto)) == SAMPLE


@pytest.mark.parametrize("proto", PROTOCOLS, ids=PROTOCOL_IDS)
def test_byte_by_byte(proto: Any) -> None:
    reader = proto.reader()
    data = stream_of(proto)
    out: list[p.HubMessage] = []
    for i in range(len(data)):
        out += reader.feed(data[i : i + 1])
    assert out == SAMPLE
    assert reader.buffered == 0


@pytest.mark.parametrize("proto", PROTOCOLS, ids=PROTOCOL_IDS)
def test_message_split_across_frames_is_delivered_once_complete(proto: Any) -> None:
    reader = proto.reader()
    frame = proto.encode(SAMPLE[0])
    assert reader.feed(frame[:5]) == []
    assert reader.buffered == 5
    assert reader.feed(frame[5:-1]) == []
    assert reader.feed(frame[-1:] + proto.encode(p.Ping())) == [SAMPLE[0], p.Ping()]
    assert reader.buffered == 0


@pytest.mark.parametrize("proto", PROTOCOLS, ids=PROTOCOL_IDS)
def test_bytearray_and_memoryview_input(proto: Any) -> None:
    data = stream_of(proto)
    assert proto.reader().feed(bytearray(data)) == SAMPLE
    assert proto.reader().feed(memoryview(data)) == SAMPLE
    assert proto.reader().feed(b"") == []


def test_json_reader_accepts_text_frames() -> None:
    text = stream_of(JSON).decode()
    assert JSON.reader().feed(text) == SAMPLE
    message = p.StreamItem(invocation_id="1", item="€" * 50)  # 150 UTF-8 bytes, 50 characters
    assert JSON.decode(JSON.encode(message).decode()) == [message]


def test_msgpack_reader_rejects_text_frames() -> None:
    with pytest.raises(p.ProtocolError, match="text"):
        MSGPACK.reader().feed("\x02\x91\x06")


@pytest.mark.parametrize("proto", PROTOCOLS, ids=PROTOCOL_IDS)
def test_decode_rejects_trailing_partial_message(proto: Any) -> None:
    with pytest.raises(p.ProtocolError, match="incomplete"):
        proto.decode(proto.encode(SAMPLE[0])[:-1])


@pytest.mark.parametrize("proto", PROTOCOLS, ids=PROTOCOL_IDS)
def test_reader_stays_failed_after_a_protocol_error(proto: Any) -> None:
    reader = proto.reader()
    bad = b"not json\x1e" if proto is JSON else b"\x01\xc1"
    with pytest.raises(p.ProtocolError):
        reader.feed(bad)
    with pytest.raises(p.ProtocolError, match="earlier protocol error"):
        reader.feed(proto.encode(p.Ping()))


# --- maximum message size ------------------------------------------------------------------------------


@pytest.mark.parametrize("proto", PROTOCOLS, ids=PROTOCOL_IDS)
def test_message_at_the_limit_is_accepted(proto: Any) -> None:
    message = p.StreamItem(invocation_id="1", item="x" * 200)
    frame = proto.encode(message)
    size = len(frame) - 1 if proto is JSON else len(frame) - 2  # RS / two-byte VarInt for ~210 bytes
    assert proto.reader(max_message_size=size).feed(frame) == [message]
    with pytest.raises(p.ProtocolError, match="maximum size"):
        proto.reader(max_message_size=size - 1).feed(frame)


def test_json_oversize_without_separator_fails_without_buffering_it() -> None:
    reader = JSON.reader(max_message_size=100)
    assert reader.feed(b'{"type":2,' + b" " * 80) == []
    with pytest.raises(p.ProtocolError, match="maximum size"):
        reader.feed(b" " * 20)  # 110 bytes pending, no separator yet
    assert reader.buffered == 0


def test_json_oversize_in_one_chunk_fails_immediately() -> None:
    with pytest.raises(p.ProtocolError, match="maximum size"):
        JSON.reader(max_message_size=1000).feed(b"[" * 5000)


def test_msgpack_oversize_fails_on_the_length_prefix_alone() -> None:
    reader = MSGPACK.reader(max_message_size=1000)
    with pytest.raises(p.ProtocolError, match="maximum size"):
        reader.feed(p.encode_varint(1001))  # no body byte sent at all
    assert reader.buffered == 0


def test_default_limit_is_one_mebibyte() -> None:
    assert p.DEFAULT_MAX_MESSAGE_SIZE == 1024 * 1024
    with pytest.raises(p.ProtocolError, match="maximum size"):
        MSGPACK.reader().feed(p.encode_varint(1024 * 1024 + 1))
    with pytest.raises(p.ProtocolError, match="maximum size"):
        JSON.reader().feed(b" " * (1024 * 1024 + 1))


@pytest.mark.parametrize(
    "prefix",
    [b"\xff\xff\xff\xff\x08", b"\xff\xff\xff\xff\x80", b"\x80\x80\x80\x80\x80\x01"],
    ids=["over-2GB", "5th-byte-continues", "6-bytes"],
)
def test_msgpack_invalid_length_prefixes(prefix: bytes) -> None:
    with pytest.raises(p.ProtocolError, match=r"2 GB|longer than 5 bytes"):
        MSGPACK.reader().feed(prefix)


def test_msgpack_zero_length_message_is_an_error() -> None:
    with pytest.raises(p.ProtocolError, match="empty"):
        MSGPACK.reader().feed(b"\x00")


def test_json_empty_record_is_an_error() -> None:
    with pytest.raises(p.ProtocolError):
        JSON.reader().feed(b'{"type":6}\x1e\x1e')


def test_encode_varint_bounds() -> None:
    assert p.encode_varint(0) == b"\x00"
    assert p.encode_varint(127) == b"\x7f"
    assert p.encode_varint(128) == b"\x80\x01"
    with pytest.raises(ValueError):
        p.encode_varint(2**31)
    with pytest.raises(ValueError):
        p.encode_varint(-1)


# --- JSON: validation and forward compatibility --------------------------------------------------------


def jdecode(text: str) -> list[p.HubMessage]:
    return JSON.decode(text.encode() + b"\x1e")


def test_json_any_key_order_and_unknown_keys_ignored() -> None:
    assert jdecode(
        '{"arguments":[1],"extra":{"deep":[1,2]},"target":"T","invocationId":"1","type":1,"future":null}'
    ) == [p.Invocation(target="T", arguments=[1], invocation_id="1")]


def test_json_unknown_message_types_are_skipped() -> None:
    assert JSON.decode(b'{"type":42,"whatever":[1]}\x1e{"type":6}\x1e{"type":0}\x1e') == [p.Ping()]


def test_json_completion_null_result_is_a_result() -> None:
    assert jdecode('{"type":3,"invocationId":"1","result":null}') == [
        p.Completion(invocation_id="1", result=None, has_result=True)
    ]
    assert JSON.encode(p.Completion(invocation_id="1", has_result=True)) == (
        b'{"type":3,"invocationId":"1","result":null}\x1e'
    )


def test_json_completion_null_error_is_no_error() -> None:
    assert jdecode('{"type":3,"invocationId":"1","error":null}') == [p.Completion(invocation_id="1")]


def test_json_empty_headers_are_none() -> None:
    assert jdecode('{"type":5,"invocationId":"1","headers":{}}') == [p.CancelInvocation(invocation_id="1")]


@pytest.mark.parametrize(
    "text",
    [
        '{"target":"T","arguments":[]}',  # no type
        '{"type":"1","target":"T","arguments":[]}',  # type not a number
        '{"type":true}',
        '{"type":1.5}',
        '{"type":1,"arguments":[]}',  # no target
        '{"type":1,"target":5,"arguments":[]}',  # target not a string
        '{"type":1,"target":"T"}',  # no arguments
        '{"type":1,"target":"T","arguments":{}}',  # arguments not an array
        '{"type":1,"target":"T","arguments":[],"invocationId":7}',  # id not a string
        '{"type":1,"target":"T","arguments":[],"streamIds":[1]}',
        '{"type":1,"target":"T","arguments":[],"headers":{"a":1}}',  # header value not a string
        '{"type":1,"target":"T","arguments":[],"headers":[]}',
        '{"type":2,"invocationId":"1"}',  # no item
        '{"type":2,"item":1}',  # no invocationId
        '{"type":3}',
        '{"type":3,"invocationId":"1","error":5}',
        '{"type":4,"target":"T","arguments":[]}',  # StreamInvocation requires an id
        '{"type":5}',
        '{"type":7,"allowReconnect":"yes"}',
        '{"type":7,"error":1}',
        '{"type":8}',
        '{"type":8,"sequenceId":"1"}',
        '{"type":9,"sequenceId":1.5}',
        "[1]",
        "42",
        '"text"',
        "null",
        "{",
        '{"type":6} trailing',
    ],
)
def test_json_invalid_messages(text: str) -> None:
    with pytest.raises(p.ProtocolError):
        jdecode(text)


def test_json_invalid_utf8_is_a_protocol_error() -> None:
    with pytest.raises(p.ProtocolError):
        JSON.decode(b'{"type":1,"target":"\xff","arguments":[]}\x1e')


def test_json_deep_nesting_is_a_protocol_error() -> None:
    with pytest.raises(p.ProtocolError):
        JSON.decode(b'{"type":2,"invocationId":"1","item":' + b"[" * 100_000 + b"\x1e")


def test_json_raw_arguments_keep_the_text_and_reject_non_arrays() -> None:
    proto = p.get_protocol("json", raw_arguments=True)
    [message] = proto.decode(b'{"type":1,"target":"T","arguments": [1, {"a" : 2}] }\x1e')
    assert isinstance(message, p.Invocation)
    assert isinstance(message.arguments, msgspec.Raw)
    assert bytes(message.arguments) == b'[1, {"a" : 2}]'
    assert msgspec.json.decode(message.arguments) == [1, {"a": 2}]
    with pytest.raises(p.ProtocolError, match="array"):
        proto.decode(b'{"type":1,"target":"T","arguments":{"a":1}}\x1e')
    # StreamInvocation arguments are always decoded
    [stream] = proto.decode(b'{"type":4,"invocationId":"1","target":"T","arguments":[1]}\x1e')
    assert isinstance(stream, p.StreamInvocation)
    assert stream.arguments == [1]


def test_json_encodes_raw_arguments_verbatim() -> None:
    message = p.Invocation(target="T", arguments=msgspec.Raw(b'[{"pre":"encoded"}]'))
    assert JSON.encode(message) == b'{"type":1,"target":"T","arguments":[{"pre":"encoded"}]}\x1e'


def test_json_completion_streamitem_headers_order() -> None:
    assert JSON.encode(p.StreamItem(invocation_id="1", item=2, headers={"h": "v"})) == (
        b'{"type":2,"headers":{"h":"v"},"invocationId":"1","item":2}\x1e'
    )
    assert JSON.encode(p.Completion(invocation_id="1", error="e", headers={"h": "v"})) == (
        b'{"type":3,"headers":{"h":"v"},"invocationId":"1","error":"e"}\x1e'
    )


def test_json_encodes_non_ascii_and_control_characters_safely() -> None:
    message = p.Invocation(target="Send", arguments=["é\x1e\n"])
    frame = JSON.encode(message)
    assert frame.count(b"\x1e") == 1 and frame.endswith(b"\x1e")
    assert JSON.decode(frame) == [message]


# --- MessagePack: validation and forward compatibility -------------------------------------------------


def mdecode(obj: Any) -> list[p.HubMessage]:
    return MSGPACK.decode(p.frame_binary(msgspec.msgpack.encode(obj)))


def test_msgpack_trailing_items_ignored_and_short_forms_accepted() -> None:
    assert mdecode([1, {}, "1", "T", [], ["s"], "future"]) == [
        p.Invocation(target="T", arguments=[], invocation_id="1", stream_ids=["s"])
    ]
    assert mdecode([1, {}, None, "T", [1]]) == [p.Invocation(target="T", arguments=[1])]
    assert mdecode([7, None]) == [p.Close()]
    assert mdecode([7, "x", False]) == [p.Close(error="x")]
    assert mdecode([6, "future"]) == [p.Ping()]
    assert mdecode([3, {}, "1", 2, "ignored"]) == [p.Completion(invocation_id="1")]


def test_msgpack_unknown_message_types_are_skipped() -> None:
    frames = p.frame_binary(msgspec.msgpack.encode([99, "x"])) + MSGPACK.encode(p.Ping())
    assert MSGPACK.decode(frames) == [p.Ping()]


def test_msgpack_nil_headers_tolerated() -> None:
    assert mdecode([5, None, "1"]) == [p.CancelInvocation(invocation_id="1")]


def test_msgpack_close_encoding_forms() -> None:
    assert MSGPACK.encode(p.Close()) == b"\x03\x92\x07\xc0"  # [7, nil], as @microsoft/signalr writes it
    assert MSGPACK.encode(p.Close(error="x", allow_reconnect=True)) == b"\x05\x93\x07\xa1x\xc3"


def test_msgpack_ping_is_always_exactly_0x91_0x06() -> None:
    assert MSGPACK.encode(p.Ping()) == b"\x02\x91\x06"
    assert JSON.encode(p.Ping()) == b'{"type":6}\x1e'


@pytest.mark.parametrize("seq", [0, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1])
def test_msgpack_sequence_ids_round_trip_at_width_boundaries(seq: int) -> None:
    for message in (p.Ack(sequence_id=seq), p.Sequence(sequence_id=seq)):
        assert MSGPACK.decode(MSGPACK.encode(message)) == [message]


def test_msgpack_sequence_id_out_of_range_cannot_be_encoded() -> None:
    with pytest.raises(p.ProtocolError):
        MSGPACK.encode(p.Ack(sequence_id=-1))
    with pytest.raises(p.ProtocolError):
        MSGPACK.encode(p.Sequence(sequence_id=2**64))


@pytest.mark.parametrize(
    "obj",
    [
        [],
        {},
        1,
        "x",
        ["1"],
        [True],
        [1.0],
        [1, {}, "1", "T"],  # no arguments
        [1, {}, 1, "T", []],  # id not str/nil
        [1, {}, "1", 5, []],  # target not str
        [1, {}, "1", "T", {}],  # arguments not an array
        [1, {}, "1", "T", [], [1]],  # stream id not a string
        [1, [], "1", "T", []],  # headers not a map
        [1, {"a": 1}, "1", "T", []],  # header value not a string
        [1, {1: "a"}, "1", "T", []],  # header key not a string
        [2, {}, "1"],  # no item
        [3, {}, "1"],  # no result kind
        [3, {}, "1", 1],  # error kind without the error
        [3, {}, "1", 1, 5],  # error not a string
        [3, {}, "1", 3],  # result kind without the result
        [3, {}, "1", 4, 1],  # unknown result kind
        [3, {}, "1", "2"],
        [4, {}, None, "T", []],  # StreamInvocation requires an id
        [5, {}],
        [7],  # Close requires its error slot
        [7, 1],
        [7, None, "yes"],
        [8],
        [8, "1"],
        [9, 1.5],
    ],
)
def test_msgpack_invalid_messages(obj: Any) -> None:
    with pytest.raises(p.ProtocolError):
        mdecode(obj)


@pytest.mark.parametrize(
    "body",
    [b"\xc1", b"\x91", b"\x92\x06\xc1", b"\x91\x06\x00", b"\x94\x02\x80\xa11" + b"\x91" * 100_000 + b"\x06"],
    ids=["reserved-byte", "truncated", "bad-inner", "trailing-bytes", "deep-nesting"],
)
def test_msgpack_malformed_bodies(body: bytes) -> None:
    with pytest.raises(p.ProtocolError):
        MSGPACK.decode(p.frame_binary(body))


def test_msgpack_timestamps_binary_and_integer_keys() -> None:
    when = dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.UTC)
    message = p.Invocation(target="T", arguments=[when, b"\x00\x01", {1: "a", 2: [3]}])
    frame = MSGPACK.encode(message)
    assert b"\xd7\xff" in frame or b"\xc7\x0c\xff" in frame  # timestamp extension, type -1
    [decoded] = MSGPACK.decode(frame)
    assert isinstance(decoded, p.Invocation)
    assert decoded.arguments == [when, b"\x00\x01", {1: "a", 2: [3]}]


def test_msgpack_unknown_extension_types_pass_through() -> None:
    [decoded] = mdecode([2, {}, "1", msgspec.msgpack.Ext(5, b"abc")])
    assert isinstance(decoded, p.StreamItem)
    assert decoded.item == msgspec.msgpack.Ext(5, b"abc")


def test_msgpack_raw_arguments_keep_the_bytes_and_reject_non_arrays() -> None:
    proto = p.get_protocol("messagepack", raw_arguments=True)
    args = [1, {"a": [True, None]}, "x" * 40]
    frame = MSGPACK.encode(p.Invocation(target="T", arguments=args, invocation_id="1"))
    [message] = proto.decode(frame)
    assert isinstance(message, p.Invocation)
    assert isinstance(message.arguments, msgspec.Raw)
    assert bytes(message.arguments) == msgspec.msgpack.encode(args)
    assert proto.encode(message) == frame
    with pytest.raises(p.ProtocolError, match="array"):
        proto.decode(p.frame_binary(msgspec.msgpack.encode([1, {}, "1", "T", {"a": 1}])))


def test_msgpack_encodes_raw_arguments_verbatim() -> None:
    raw = msgspec.Raw(msgspec.msgpack.encode(["pre", "encoded"]))
    frame = MSGPACK.encode(p.Invocation(target="T", arguments=raw))
    assert MSGPACK.decode(frame) == [p.Invocation(target="T", arguments=["pre", "encoded"])]


@pytest.mark.parametrize("proto", PROTOCOLS, ids=PROTOCOL_IDS)
def test_unencodable_values_raise_protocol_error(proto: Any) -> None:
    with pytest.raises(p.ProtocolError, match="cannot encode"):
        proto.encode(p.Invocation(target="T", arguments=[object()]))


@pytest.mark.parametrize("proto", PROTOCOLS, ids=PROTOCOL_IDS)
def test_encoding_a_non_message_is_a_type_error(proto: Any) -> None:
    with pytest.raises(TypeError):
        proto.encode({"type": 1})


# --- handshake -----------------------------------------------------------------------------------------


def test_handshake_request_round_trip_with_trailing_messages() -> None:
    request = p.HandshakeRequest(protocol="messagepack", version=2)
    data = p.encode_handshake_request(request)
    assert data == b'{"protocol":"messagepack","version":2}\x1e'
    assert p.parse_handshake_request(data + b"\x02\x91\x06") == (request, b"\x02\x91\x06")


def test_handshake_partial_then_complete() -> None:
    data = p.encode_handshake_request(p.HandshakeRequest(protocol="json", version=1))
    assert p.parse_handshake_request(data[:-1]) == (None, data[:-1])
    assert p.parse_handshake_response(b"{") == (None, b"{")
    assert p.parse_handshake_request(data.decode()) == (p.HandshakeRequest("json", 1), b"")


def test_handshake_response_forms() -> None:
    assert p.encode_handshake_response(p.HandshakeResponse()) == b"{}\x1e"
    assert p.parse_handshake_response(b"{}\x1e") == (p.HandshakeResponse(), b"")
    # unknown properties (older servers sent minorVersion) are ignored
    assert p.parse_handshake_response(b'{"minorVersion":1}\x1e{"type":6}\x1e') == (
        p.HandshakeResponse(),
        b'{"type":6}\x1e',
    )


def test_handshake_response_that_is_a_hub_message_is_rejected() -> None:
    with pytest.raises(p.ProtocolError, match="expected a handshake response"):
        p.parse_handshake_response(b'{"type":7,"error":"x"}\x1e')


@pytest.mark.parametrize(
    "record",
    [
        b"",
        b"[]",
        b"{}",
        b'{"protocol":"json"}',
        b'{"protocol":1,"version":1}',
        b'{"protocol":"json","version":"1"}',
        b"\xff",
    ],
)
def test_invalid_handshake_requests(record: bytes) -> None:
    with pytest.raises(p.ProtocolError):
        p.parse_handshake_request(record + b"\x1e")


@pytest.mark.parametrize("record", [b"", b"[]", b'{"error":5}', b"nope", b"\xff"])
def test_invalid_handshake_responses(record: bytes) -> None:
    with pytest.raises(p.ProtocolError):
        p.parse_handshake_response(record + b"\x1e")


def test_handshake_size_limit() -> None:
    with pytest.raises(p.ProtocolError, match="handshake exceeds"):
        p.parse_handshake_request(b" " * (64 * 1024 + 1))
    with pytest.raises(p.ProtocolError, match="handshake exceeds"):
        p.parse_handshake_response(b" " * 101, max_size=100)
    with pytest.raises(p.ProtocolError, match="handshake exceeds"):
        p.parse_handshake_request(b" " * 101 + b"\x1e", max_size=100)
