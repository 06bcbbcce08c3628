"""Property tests: arbitrary input raises only ProtocolError; every message type round-trips through
both protocols; how the bytes are chunked never changes what the readers return."""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.signalr import protocol as p

JSON = p.get_protocol("json")
MSGPACK = p.get_protocol("messagepack")
JSON_RAW = p.get_protocol("json", raw_arguments=True)
MSGPACK_RAW = p.get_protocol("messagepack", raw_arguments=True)
ALL = [JSON, MSGPACK, JSON_RAW, MSGPACK_RAW]

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- values both protocols carry losslessly ------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
ids = st.text(max_size=12)
headers = st.none() | st.dictionaries(st.text(max_size=8), st.text(max_size=8), min_size=1, max_size=3)
stream_ids = st.none() | st.lists(st.text(max_size=5), max_size=3)
arguments = st.lists(values, max_size=4)
seq_ids = st.integers(min_value=0, max_value=2**63 - 1)

completions = st.one_of(
    st.builds(p.Completion, invocation_id=ids, headers=headers),
    st.builds(p.Completion, invocation_id=ids, error=st.text(max_size=20), headers=headers),
    st.builds(p.Completion, invocation_id=ids, result=values, has_result=st.just(True), headers=headers),
)
messages: st.SearchStrategy[p.HubMessage] = st.one_of(
    st.builds(
        p.Invocation,
        target=st.text(max_size=12),
        arguments=arguments,
        invocation_id=st.none() | ids,
        stream_ids=stream_ids,
        headers=headers,
    ),
    st.builds(p.StreamItem, invocation_id=ids, item=values, headers=headers),
    completions,
    st.builds(
        p.StreamInvocation,
        invocation_id=ids,
        target=st.text(max_size=12),
        arguments=arguments,
        stream_ids=stream_ids,
        headers=headers,
    ),
    st.builds(p.CancelInvocation, invocation_id=ids, headers=headers),
    st.builds(p.Ping),
    st.builds(p.Close, error=st.none() | st.text(max_size=20), allow_reconnect=st.booleans()),
    st.builds(p.Ack, sequence_id=seq_ids),
    st.builds(p.Sequence, sequence_id=seq_ids),
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def feed_all(
    proto: Any, chunks: list[bytes], max_message_size: int = p.DEFAULT_MAX_MESSAGE_SIZE
) -> list[Any]:
    reader = proto.reader(max_message_size=max_message_size)
    out: list[Any] = []
    for chunk in chunks:
        out += reader.feed(chunk)
    return out


# --- round trips ---------------------------------------------------------------------------------------


@SETTINGS
@given(message=messages)
def test_json_round_trip(message: p.HubMessage) -> None:
    assert JSON.decode(JSON.encode(message)) == [message]


@SETTINGS
@given(message=messages)
def test_msgpack_round_trip(message: p.HubMessage) -> None:
    assert MSGPACK.decode(MSGPACK.encode(message)) == [message]


@SETTINGS
@given(message=messages)
def test_raw_arguments_round_trip_re_encodes_identically(message: p.HubMessage) -> None:
    for plain, raw in ((JSON, JSON_RAW), (MSGPACK, MSGPACK_RAW)):
        frame = plain.encode(message)
        [decoded] = raw.decode(frame)
        assert raw.encode(decoded) == frame
        if isinstance(message, p.Invocation):
            assert isinstance(decoded, p.Invocation)
            assert isinstance(decoded.arguments, msgspec.Raw)
            assert (msgspec.json if plain is JSON else msgspec.msgpack).decode(decoded.arguments) == (
                message.arguments
            )


@SETTINGS
@given(batch=st.lists(messages, max_size=8), cuts=st.lists(st.integers(min_value=0), max_size=12))
def test_chunking_never_changes_the_result(batch: list[p.HubMessage], cuts: list[int]) -> None:
    for proto in (JSON, MSGPACK):
        data = b"".join(proto.encode(m) for m in batch)
        assert feed_all(proto, chunked(data, cuts)) == batch


@SETTINGS
@given(
    protocol=st.sampled_from(["json", "messagepack"]),
    version=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    error=st.none() | st.text(),
    rest=st.binary(max_size=20),
)
def test_handshake_round_trip(protocol: str, version: int, error: str | None, rest: bytes) -> None:
    request = p.HandshakeRequest(protocol=protocol, version=version)
    assert p.parse_handshake_request(p.encode_handshake_request(request) + rest) == (request, rest)
    response = p.HandshakeResponse(error=error)
    assert p.parse_handshake_response(p.encode_handshake_response(response) + rest) == (response, rest)


# --- hostile input: only ProtocolError -----------------------------------------------------------------


def only_protocol_errors(proto: Any, chunks: list[bytes], max_message_size: int = 4096) -> None:
    try:
        result = feed_all(proto, chunks, max_message_size)
    except p.ProtocolError:
        return
    for message in result:  # anything accepted is a well-formed message
        assert isinstance(message, p.HubMessage)


@SETTINGS
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(min_value=0), max_size=6))
def test_arbitrary_bytes_raise_only_protocol_error(data: bytes, cuts: list[int]) -> None:
    for proto in ALL:
        only_protocol_errors(proto, chunked(data, cuts))


@SETTINGS
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_into_handshake_parsers(data: bytes) -> None:
    for parse in (p.parse_handshake_request, p.parse_handshake_response):
        with contextlib.suppress(p.ProtocolError):
            parse(data, max_size=256)


# Structured garbage gets much deeper into the decoders than random bytes do.
any_values = st.recursive(
    scalars | st.binary(max_size=8) | st.integers(min_value=0, max_value=2**64 - 1),
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.text(max_size=6) | st.integers(-5, 5), children, max_size=4)
    ),
    max_leaves=16,
)
type_ints = st.integers(min_value=-2, max_value=12)


@SETTINGS
@given(items=st.lists(any_values, max_size=7), kind=type_ints, prefix=st.booleans())
def test_structured_msgpack_garbage_raises_only_protocol_error(
    items: list[Any], kind: int, prefix: bool
) -> None:
    obj = [kind, *items] if prefix else items
    frame = p.frame_binary(msgspec.msgpack.encode(obj))
    for proto in (MSGPACK, MSGPACK_RAW):
        only_protocol_errors(proto, [frame])


json_keys = st.sampled_from(
    [
        "type",
        "invocationId",
        "target",
        "arguments",
        "item",
        "result",
        "error",
        "headers",
        "streamIds",
        "allowReconnect",
        "sequenceId",
        "other",
    ]
)


@SETTINGS
@given(obj=st.dictionaries(json_keys, any_values | type_ints, max_size=6), kind=st.none() | type_ints)
def test_structured_json_garbage_raises_only_protocol_error(obj: dict[str, Any], kind: int | None) -> None:
    if kind is not None:
        obj["type"] = kind
    record = msgspec.json.encode(obj) + b"\x1e"
    for proto in (JSON, JSON_RAW):
        only_protocol_errors(proto, [record])
    with contextlib.suppress(p.ProtocolError):
        p.parse_handshake_response(record)


# Token soups: fragments that reach invalid UTF-8 inside strings, absurd nesting and bad lengths,
# which uniformly random bytes almost never do.
JSON_TOKENS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b":",
    b",",
    b"\x1e",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\\u",
    b"\\ud800",
    b"null",
    b"true",
    b"1",
    b"-0.5e3",
    b'"type"',
    b'"target"',
    b'"arguments"',
    b'"invocationId"',
    b'"x"',
    b'"result"',
    b'"error"',
    b'"headers"',
    b'"sequenceId"',
    b'"type":1,',
    b'"type":3,',
    b" ",
]
MSGPACK_TOKENS = [
    b"\x91",
    b"\x92",
    b"\x95",
    b"\x96",
    b"\xdc\xff\xff",
    b"\xdd\xff\xff\xff\xff",
    b"\x80",
    b"\x81",
    b"\xde\xff\xff",
    b"\xc0",
    b"\xc1",
    b"\xc2",
    b"\xc3",
    b"\x01",
    b"\x03",
    b"\x06",
    b"\x07",
    b"\xa1x",
    b"\xa2\xff\xfe",
    b"\xd9\x05",
    b"\xc4\x02ab",
    b"\xd4\xff\x00",
    b"\xd6\xff\x00\x00\x00\x00",
    b"\xd7\xff" + b"\xff" * 8,
    b"\xc7\x03\xff\x01",
    b"\xcc\x24",
    b"\xcf" + b"\xff" * 8,
    b"\xd3" + b"\x80" + b"\x00" * 7,
    b"\xcb" + b"\x7f\xf8" + b"\x00" * 6,
]


# Openings that get past the typed envelope into Any-typed fields (item, arguments, result, headers).
JSON_OPENINGS = [
    b"",
    b'{"type":2,"invocationId":"1","item":',
    b'{"type":1,"target":"T","arguments":',
    b'{"type":1,"target":"T","arguments":[',
    b'{"type":3,"invocationId":"1","result":',
    b'{"type":1,"target":"',
    b'{"type":1,"headers":{"',
]
MSGPACK_OPENINGS = [
    b"",
    b"\x94\x02\x80\xa11",
    b"\x95\x01\x80\xc0\xa1T",
    b"\x95\x03\x80\xa11\x03",
    b"\x93\x05\x81",
]


@SETTINGS
@given(
    opening=st.sampled_from(JSON_OPENINGS),
    depth=st.sampled_from([0, 0, 0, 1, 3, 50, 5000]),
    tokens=st.lists(st.sampled_from(JSON_TOKENS), max_size=40),
    cuts=st.lists(st.integers(min_value=0), max_size=4),
)
def test_json_token_soup_raises_only_protocol_error(
    opening: bytes, depth: int, tokens: list[bytes], cuts: list[int]
) -> None:
    data = opening + b"[" * depth + b"".join(tokens) + b"\x1e"
    for proto in (JSON, JSON_RAW):
        only_protocol_errors(proto, chunked(data, cuts), max_message_size=1 << 16)
    for parse in (p.parse_handshake_request, p.parse_handshake_response):
        with contextlib.suppress(p.ProtocolError):
            parse(data)


@SETTINGS
@given(
    opening=st.sampled_from(MSGPACK_OPENINGS),
    depth=st.sampled_from([0, 0, 0, 1, 3, 50, 5000]),
    tokens=st.lists(st.sampled_from(MSGPACK_TOKENS), max_size=40),
    cuts=st.lists(st.integers(min_value=0), max_size=4),
)
def test_msgpack_token_soup_raises_only_protocol_error(
    opening: bytes, depth: int, tokens: list[bytes], cuts: list[int]
) -> None:
    body = opening + b"\x91" * depth + b"".join(tokens)
    frame = p.frame_binary(body) if body else b"\x00"
    for proto in (MSGPACK, MSGPACK_RAW):
        only_protocol_errors(proto, chunked(frame, cuts), max_message_size=1 << 16)
