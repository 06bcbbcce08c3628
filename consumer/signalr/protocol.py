"""SignalR hub protocol core, sans-I/O: bytes in, messages out, and back. No asyncio, no sockets.

Spec: dotnet/aspnetcore src/SignalR/docs/specs/HubProtocol.md and TransportProtocols.md.

Layout (over 700 lines on purpose: both encodings' wire tables sit beside the one shell they plug
into, so every difference between JSON and MessagePack is visible in one file): messages,
handshake, the JSON wire (structs, Completion shape, encoder layout), the MessagePack wire (same +
VarInt framing helpers), then the shared shell — `_Reader` (failure latch and the Invocation loop,
written once; subclasses only frame), `_HubProtocolBase` (encode error wrapping, readers, decode)
and the two thin protocol classes.

PUBLIC API (pinned: the server, the client and the relay are written against these names):
- `MessageType`, the message classes below (msgspec Structs: keyword or positional construction,
  `==` by value, class patterns in `match`; `type` is a class attribute, not a field), `HubMessage`
- `ProtocolError` — the only exception any parser raises on malformed input
- `HandshakeRequest`, `HandshakeResponse`, `encode_handshake_request`, `encode_handshake_response`,
  `parse_handshake_request(buffer) -> (HandshakeRequest | None, rest)`,
  `parse_handshake_response(buffer) -> (HandshakeResponse | None, rest)` (None = need more bytes)
- `JsonHubProtocol`, `MessagePackHubProtocol`, both `HubProtocol`; `get_protocol(name, **opts)`
  - `encode(message) -> bytes` (one framed message: JSON + 0x1E, or VarInt length + MessagePack)
  - `reader(max_message_size=...) -> MessageReader`; `MessageReader.feed(data) -> list[HubMessage]`
    handles partial frames, many messages per frame and messages split across frames.
  - `raw_arguments=True` (constructor option): Invocation.arguments is left undecoded as a
    `msgspec.Raw` of the arguments array (JSON text or MessagePack bytes) for pass-through relays.

ADDITIONS (beyond the pinned API):
- `HubProtocol.decode(data)` for whole frames; `reader(...).buffered` (bytes held for a partial message).
- JSON readers also accept `str` (WebSocket text frames); the MessagePack reader rejects text.
- `max_version` (2) and `is_version_supported(v)`: the official clients send handshake version 2 when
  stateful reconnect was negotiated (then Ack/Sequence may flow), else 1; `version` stays 1.
- `encode_varint`, `decode_varint`, `frame_binary` (binary framing), `SUPPORTED_PROTOCOLS`,
  `DEFAULT_MAX_MESSAGE_SIZE` (1 MiB), `parse_handshake_*(..., max_size=64 KiB)`.

Wire decisions where the spec is silent:
- Unknown message types (an integer `type` outside 1..9) are skipped, as the official clients do.
  Unknown JSON properties and extra trailing MessagePack array items are ignored.
- Empty headers decode to `headers=None`; `None`/empty headers encode as absent (JSON) / 0x80 (MsgPack).
- `stream_ids=None` is omitted on the wire; `[]` is written (`"streamIds":[]` / 0x90) and read back as [].
- Close encodes as [7, error] unless allow_reconnect (then [7, error, true]); JSON omits falsy fields.
- After a reader raised ProtocolError it stays failed (the connection must be closed).
- Encoding a value msgspec cannot serialise raises ProtocolError; a non-message raises TypeError.
- Readers return exactly `Invocation` (never a subclass); with raw_arguments the Raw may point into
  the reader's buffer of a message that arrived in pieces (that buffer is never written again).
- A `msgspec.Raw` given as Invocation arguments is written verbatim: it must already be in the
  protocol's encoding (JSON text for json, MessagePack bytes for messagepack).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, Literal, Protocol, TypeAlias, Union

import msgspec

RECORD_SEPARATOR = b"\x1e"


class ProtocolError(Exception):
    """Malformed or oversized protocol data. Parsers raise this and nothing else on bad input."""


class MessageType(IntEnum):
    INVOCATION = 1
    STREAM_ITEM = 2
    COMPLETION = 3
    STREAM_INVOCATION = 4
    CANCEL_INVOCATION = 5
    PING = 6
    CLOSE = 7
    ACK = 8
    SEQUENCE = 9


Headers: TypeAlias = dict[str, str]


class Invocation(msgspec.Struct):
    target: str
    arguments: Any  # list[Any], or msgspec.Raw when the protocol was built with raw_arguments=True
    invocation_id: str | None = None
    stream_ids: list[str] | None = None
    headers: Headers | None = None
    type: ClassVar[Literal[MessageType.INVOCATION]] = MessageType.INVOCATION


class StreamItem(msgspec.Struct):
    invocation_id: str
    item: Any
    headers: Headers | None = None
    type: ClassVar[Literal[MessageType.STREAM_ITEM]] = MessageType.STREAM_ITEM


class Completion(msgspec.Struct):
    """result_kind semantics: `error` set → error; else `has_result` → result (may be None); else void."""

    invocation_id: str
    result: Any = None
    error: str | None = None
    has_result: bool = False
    headers: Headers | None = None
    type: ClassVar[Literal[MessageType.COMPLETION]] = MessageType.COMPLETION


class StreamInvocation(msgspec.Struct):
    invocation_id: str
    target: str
    arguments: Any
    stream_ids: list[str] | None = None
    headers: Headers | None = None
    type: ClassVar[Literal[MessageType.STREAM_INVOCATION]] = MessageType.STREAM_INVOCATION


class CancelInvocation(msgspec.Struct):
    invocation_id: str
    headers: Headers | None = None
    type: ClassVar[Literal[MessageType.CANCEL_INVOCATION]] = MessageType.CANCEL_INVOCATION


class Ping(msgspec.Struct):
    type: ClassVar[Literal[MessageType.PING]] = MessageType.PING


class Close(msgspec.Struct):
    error: str | None = None
    allow_reconnect: bool = False
    type: ClassVar[Literal[MessageType.CLOSE]] = MessageType.CLOSE


class Ack(msgspec.Struct):
    sequence_id: int
    type: ClassVar[Literal[MessageType.ACK]] = MessageType.ACK


class Sequence(msgspec.Struct):
    sequence_id: int
    type: ClassVar[Literal[MessageType.SEQUENCE]] = MessageType.SEQUENCE


HubMessage: TypeAlias = (
    Invocation | StreamItem | Completion | StreamInvocation | CancelInvocation | Ping | Close | Ack | Sequence
)


@dataclass(slots=True, frozen=True)
class HandshakeRequest:
    protocol: str
    version: int


@dataclass(slots=True, frozen=True)
class HandshakeResponse:
    error: str | None = None


class MessageReader(Protocol):
    def feed(self, data: bytes) -> list[HubMessage]: ...


class HubProtocol(Protocol):
    name: str
    version: int
    transfer_format: Literal["text", "binary"]

    def encode(self, message: HubMessage) -> bytes: ...

    def reader(self, max_message_size: int = ...) -> MessageReader: ...


# --- implementation ---------------------------------------------------------------------------------

#: Default upper bound for one hub message (JSON record without its separator / MessagePack body).
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
#: Upper bound for a handshake request or response (they are tiny; anything bigger is hostile).
DEFAULT_MAX_HANDSHAKE_SIZE = 64 * 1024
#: Protocol names `get_protocol` accepts (the handshake's `protocol` field).
SUPPORTED_PROTOCOLS = ("json", "messagepack")

_RS = 0x1E
# Everything a msgspec decode can raise on hostile input: DecodeError/ValidationError (MsgspecError),
# UnicodeDecodeError (a ValueError) and RecursionError for absurd nesting.
_DECODE_ERRORS = (msgspec.MsgspecError, ValueError, RecursionError)
_ENCODE_ERRORS = (msgspec.MsgspecError, TypeError, ValueError, OverflowError, RecursionError)
_EMPTY_HEADERS: Headers = {}
_KNOWN_TYPES = frozenset(int(t) for t in MessageType)
_UNSET = msgspec.UNSET


def _as_bytes(data: bytes | bytearray | memoryview | str) -> bytes:
    """Immutable bytes for `data` (zero-copy for bytes); str is UTF-8 encoded (WebSocket text frames)."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        try:
            return data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ProtocolError("text data is not encodable as UTF-8") from exc
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"expected bytes, got {type(data).__name__}")


def _headers_or_none(headers: Headers | None) -> Headers | None:
    return headers or None


# --- handshake ----------------------------------------------------------------------------------------


class _HandshakeRequestWire(msgspec.Struct):
    protocol: str
    version: int


class _HandshakeResponseWire(msgspec.Struct):
    error: str | None = None
    type: Any = _UNSET


_handshake_request_decoder = msgspec.json.Decoder(_HandshakeRequestWire)
_handshake_response_decoder = msgspec.json.Decoder(_HandshakeResponseWire)
_json_encoder = msgspec.json.Encoder()


def encode_handshake_request(request: HandshakeRequest) -> bytes:
    """`{"protocol":"json","version":1}` + 0x1E, key order as the official clients write it."""
    return _json_encoder.encode({"protocol": request.protocol, "version": request.version}) + RECORD_SEPARATOR


def encode_handshake_response(response: HandshakeResponse) -> bytes:
    """`{}` + 0x1E on success, `{"error":"..."}` + 0x1E on failure."""
    if response.error is None:
        return b"{}" + RECORD_SEPARATOR
    return _json_encoder.encode({"error": response.error}) + RECORD_SEPARATOR


def _split_handshake(
    buffer: bytes | bytearray | memoryview | str, max_size: int
) -> tuple[bytes | None, bytes]:
    data = _as_bytes(buffer)
    idx = data.find(RECORD_SEPARATOR)
    if idx < 0:
        if len(data) > max_size:
            raise ProtocolError(f"handshake exceeds {max_size} bytes without a record separator")
        return None, data
    if idx > max_size:
        raise ProtocolError(f"handshake exceeds {max_size} bytes")
    return data[:idx], data[idx + 1 :]


def parse_handshake_request(
    buffer: bytes | bytearray | memoryview | str, *, max_size: int = DEFAULT_MAX_HANDSHAKE_SIZE
) -> tuple[HandshakeRequest | None, bytes]:
    """Parse the client's handshake from the start of `buffer`.

    Returns (None, buffer) when the record separator has not arrived yet, else (request, rest) where
    rest are the bytes after the separator (hub messages sent right behind the handshake).
    The version is returned as sent (the official JS client sends 2 when stateful reconnect was
    negotiated, else 1); use `HubProtocol.is_version_supported` to decide.
    """
    record, rest = _split_handshake(buffer, max_size)
    if record is None:
        return None, rest
    try:
        wire = _handshake_request_decoder.decode(record)
    except _DECODE_ERRORS as exc:
        raise ProtocolError(f"invalid handshake request: {exc}") from exc
    return HandshakeRequest(protocol=wire.protocol, version=wire.version), rest


def parse_handshake_response(
    buffer: bytes | bytearray | memoryview | str, *, max_size: int = DEFAULT_MAX_HANDSHAKE_SIZE
) -> tuple[HandshakeResponse | None, bytes]:
    """Parse the server's handshake response; same contract as `parse_handshake_request`.

    A hub message (an object with `type`) where the response belongs is a ProtocolError, as in the
    official clients ("Expected a handshake response from the server.").
    """
    record, rest = _split_handshake(buffer, max_size)
    if record is None:
        return None, rest
    try:
        wire = _handshake_response_decoder.decode(record)
    except _DECODE_ERRORS as exc:
        raise ProtocolError(f"invalid handshake response: {exc}") from exc
    if wire.type is not _UNSET:
        raise ProtocolError("expected a handshake response from the server, got a hub message")
    return HandshakeResponse(error=wire.error), rest


# --- JSON hub protocol: wire structs (decode side; unknown keys are ignored) -----------------------------


class _JInvocation(msgspec.Struct, tag=1, tag_field="type", rename="camel", kw_only=True, gc=False):
    target: str
    arguments: list[Any]
    headers: Headers | None = None
    invocation_id: str | None = None
    stream_ids: list[str] | None = None


class _JInvocationRaw(msgspec.Struct, tag=1, tag_field="type", rename="camel", kw_only=True, gc=False):
    target: str
    arguments: msgspec.Raw
    headers: Headers | None = None
    invocation_id: str | None = None
    stream_ids: list[str] | None = None


class _JStreamItem(msgspec.Struct, tag=2, tag_field="type", rename="camel", kw_only=True, gc=False):
    invocation_id: str
    item: Any
    headers: Headers | None = None


class _JCompletion(msgspec.Struct, tag=3, tag_field="type", rename="camel", kw_only=True, gc=False):
    invocation_id: str
    result: Any = _UNSET
    error: str | msgspec.UnsetType | None = _UNSET
    headers: Headers | None = None


class _JStreamInvocation(msgspec.Struct, tag=4, tag_field="type", rename="camel", kw_only=True, gc=False):
    invocation_id: str
    target: str
    arguments: list[Any]
    stream_ids: list[str] | None = None
    headers: Headers | None = None


class _JCancelInvocation(msgspec.Struct, tag=5, tag_field="type", rename="camel", kw_only=True, gc=False):
    invocation_id: str
    headers: Headers | None = None


class _JPing(msgspec.Struct, tag=6, tag_field="type", rename="camel", kw_only=True, gc=False):
    pass


class _JClose(msgspec.Struct, tag=7, tag_field="type", rename="camel", kw_only=True, gc=False):
    error: str | None = None
    allow_reconnect: bool = False


class _JAck(msgspec.Struct, tag=8, tag_field="type", rename="camel", kw_only=True, gc=False):
    sequence_id: int


class _JSequence(msgspec.Struct, tag=9, tag_field="type", rename="camel", kw_only=True, gc=False):
    sequence_id: int


class _JTypeProbe(msgspec.Struct):
    type: int


_JSON_ARRAY_START = 0x5B  # "[": a raw JSON value is never empty and never starts with whitespace


def _json_completion(wire: Any) -> HubMessage:
    headers = wire.headers or None
    if wire.error is not _UNSET and wire.error is not None:
        if wire.result is not _UNSET:
            raise ProtocolError("Completion carries both a result and an error")
        return Completion(invocation_id=wire.invocation_id, error=wire.error, headers=headers)
    if wire.result is not _UNSET:
        return Completion(
            invocation_id=wire.invocation_id, result=wire.result, has_result=True, headers=headers
        )
    return Completion(invocation_id=wire.invocation_id, headers=headers)


def _to_json_dict(message: HubMessage) -> dict[str, Any]:
    """The JSON object for `message`, keys in the order of the spec's examples; absent fields omitted."""
    if isinstance(message, Invocation):
        d: dict[str, Any] = {"type": 1}
        if message.headers:
            d["headers"] = message.headers
        if message.invocation_id is not None:
            d["invocationId"] = message.invocation_id
        d["target"] = message.target
        d["arguments"] = message.arguments
        if message.stream_ids is not None:
            d["streamIds"] = message.stream_ids
        return d
    if isinstance(message, StreamItem):
        d = {"type": 2}
        if message.headers:
            d["headers"] = message.headers
        d["invocationId"] = message.invocation_id
        d["item"] = message.item
        return d
    if isinstance(message, Completion):
        d = {"type": 3}
        if message.headers:
            d["headers"] = message.headers
        d["invocationId"] = message.invocation_id
        if message.error is not None:
            d["error"] = message.error
        elif message.has_result:
            d["result"] = message.result
        return d
    if isinstance(message, StreamInvocation):
        d = {"type": 4}
        if message.headers:
            d["headers"] = message.headers
        d["invocationId"] = message.invocation_id
        d["target"] = message.target
        d["arguments"] = message.arguments
        if message.stream_ids is not None:
            d["streamIds"] = message.stream_ids
        return d
    if isinstance(message, CancelInvocation):
        d = {"type": 5}
        if message.headers:
            d["headers"] = message.headers
        d["invocationId"] = message.invocation_id
        return d
    if isinstance(message, Ping):
        return {"type": 6}
    if isinstance(message, Close):
        d = {"type": 7}
        if message.error is not None:
            d["error"] = message.error
        if message.allow_reconnect:
            d["allowReconnect"] = True
        return d
    if isinstance(message, Ack):
        return {"type": 8, "sequenceId": message.sequence_id}
    if isinstance(message, Sequence):
        return {"type": 9, "sequenceId": message.sequence_id}
    raise TypeError(f"not a hub message: {type(message).__name__}")


# --- MessagePack hub protocol ---------------------------------------------------------------------------


class _MInvocation(msgspec.Struct, tag=1, array_like=True, gc=False):
    headers: Headers | None
    invocation_id: str | None
    target: str
    arguments: list[Any]
    stream_ids: list[str] | None = None


class _MInvocationRaw(msgspec.Struct, tag=1, array_like=True, gc=False):
    headers: Headers | None
    invocation_id: str | None
    target: str
    arguments: msgspec.Raw
    stream_ids: list[str] | None = None


class _MStreamItem(msgspec.Struct, tag=2, array_like=True, gc=False):
    headers: Headers | None
    invocation_id: str
    item: Any


class _MCompletion(msgspec.Struct, tag=3, array_like=True, gc=False):
    headers: Headers | None
    invocation_id: str
    result_kind: int
    result: Any = _UNSET


class _MStreamInvocation(msgspec.Struct, tag=4, array_like=True, gc=False):
    headers: Headers | None
    invocation_id: str
    target: str
    arguments: list[Any]
    stream_ids: list[str] | None = None


class _MCancelInvocation(msgspec.Struct, tag=5, array_like=True, gc=False):
    headers: Headers | None
    invocation_id: str


class _MPing(msgspec.Struct, tag=6, array_like=True, gc=False):
    pass


class _MClose(msgspec.Struct, tag=7, array_like=True, gc=False):
    error: str | None
    allow_reconnect: bool = False


class _MAck(msgspec.Struct, tag=8, array_like=True, gc=False):
    sequence_id: int


class _MSequence(msgspec.Struct, tag=9, array_like=True, gc=False):
    sequence_id: int


class _MTypeProbe(msgspec.Struct, array_like=True):
    type: int


_RESULT_ERROR, _RESULT_VOID, _RESULT_VALUE = 1, 2, 3
# First byte of a MessagePack array: fixarray, array16, array32.
_MSGPACK_ARRAY_MARKERS = frozenset(range(0x90, 0xA0)) | {0xDC, 0xDD}


def _msgpack_completion(wire: Any) -> HubMessage:
    headers = wire.headers or None
    kind = wire.result_kind
    if kind == _RESULT_ERROR:
        if not isinstance(wire.result, str):
            raise ProtocolError("Completion with an error result must carry the error as a string")
        return Completion(invocation_id=wire.invocation_id, error=wire.result, headers=headers)
    if kind == _RESULT_VOID:
        return Completion(invocation_id=wire.invocation_id, headers=headers)
    if kind == _RESULT_VALUE:
        if wire.result is _UNSET:
            raise ProtocolError("Completion with a non-void result kind lacks the result")
        return Completion(
            invocation_id=wire.invocation_id, result=wire.result, has_result=True, headers=headers
        )
    raise ProtocolError(f"invalid Completion result kind {kind}")


def _to_msgpack_array(message: HubMessage) -> tuple[Any, ...]:
    """The MessagePack array for `message`, laid out as HubProtocol.md and the official clients do."""
    if isinstance(message, Invocation):
        headers = message.headers or _EMPTY_HEADERS
        if message.stream_ids is None:
            return (1, headers, message.invocation_id, message.target, message.arguments)
        return (1, headers, message.invocation_id, message.target, message.arguments, message.stream_ids)
    if isinstance(message, StreamItem):
        return (2, message.headers or _EMPTY_HEADERS, message.invocation_id, message.item)
    if isinstance(message, Completion):
        headers = message.headers or _EMPTY_HEADERS
        if message.error is not None:
            return (3, headers, message.invocation_id, _RESULT_ERROR, message.error)
        if message.has_result:
            return (3, headers, message.invocation_id, _RESULT_VALUE, message.result)
        return (3, headers, message.invocation_id, _RESULT_VOID)
    if isinstance(message, StreamInvocation):
        headers = message.headers or _EMPTY_HEADERS
        if message.stream_ids is None:
            return (4, headers, message.invocation_id, message.target, message.arguments)
        return (4, headers, message.invocation_id, message.target, message.arguments, message.stream_ids)
    if isinstance(message, CancelInvocation):
        return (5, message.headers or _EMPTY_HEADERS, message.invocation_id)
    if isinstance(message, Close):
        # [7, error] unless reconnect is allowed (older peers only know the 2-element form).
        if message.allow_reconnect:
            return (7, message.error, True)
        return (7, message.error)
    raise TypeError(f"not a hub message: {type(message).__name__}")


def _encode_sequence_message(kind: int, sequence_id: int) -> bytes:
    """[8|9, SequenceId] with the id written as a MessagePack uint (0xcc/0xcd/0xce/0xcf).

    HubProtocol.md's Ack/Sequence examples use this form (0x92 0x08 0xcc 0x24) rather than a fixint;
    both are valid MessagePack, and this one matches the spec byte for byte.
    """
    if sequence_id < 0 or sequence_id > 0xFFFFFFFFFFFFFFFF or isinstance(sequence_id, bool):
        raise ProtocolError(f"sequence id must be an unsigned 64-bit integer, got {sequence_id!r}")
    if sequence_id <= 0xFF:
        body = bytes((0x92, kind, 0xCC, sequence_id))
    elif sequence_id <= 0xFFFF:
        body = bytes((0x92, kind, 0xCD)) + sequence_id.to_bytes(2, "big")
    elif sequence_id <= 0xFFFFFFFF:
        body = bytes((0x92, kind, 0xCE)) + sequence_id.to_bytes(4, "big")
    else:
        body = bytes((0x92, kind, 0xCF)) + sequence_id.to_bytes(8, "big")
    return encode_varint(len(body)) + body


def encode_varint(value: int) -> bytes:
    """The VarInt length prefix of the binary framing (7 bits per byte, least significant first)."""
    if value < 0 or value > 0x7FFFFFFF:
        raise ValueError("VarInt length must be in 0..2**31-1")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while True:
        part = value & 0x7F
        value >>= 7
        if value:
            out.append(part | 0x80)
        else:
            out.append(part)
            return bytes(out)


_VARINT_MAX_BYTES = 5


def decode_varint(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int] | None:
    """Read a VarInt length prefix at `offset`: (value, bytes used), or None if `data` ends inside it.

    At most 5 bytes; values above 2**31-1 (the 2 GB limit of HubProtocol.md) raise ProtocolError.
    """
    value = 0
    shift = 0
    i = offset
    n = len(data)
    while True:
        if i >= n:
            return None
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if i - offset >= _VARINT_MAX_BYTES:
            raise ProtocolError("message length prefix is longer than 5 bytes")
    if i - offset == _VARINT_MAX_BYTES and byte > 7:
        raise ProtocolError("messages bigger than 2 GB are not supported")
    return value, i - offset


def frame_binary(payload: bytes) -> bytes:
    """One frame of the binary framing: VarInt length prefix + payload."""
    return encode_varint(len(payload)) + payload


# --- one reader shell and one protocol shell for both encodings ------------------------------------------
# What JSON and MessagePack share is written once below: the failure latch, the Invocation loop (decode a
# record, build the Invocation inline, convert anything else), unknown-type skipping, encode's error
# wrapping, whole-frame decode. What differs is the wire: the structs above, the Completion shape, the
# encoders' layouts and the framing (`_JsonReader._frame`, `_MessagePackReader._frame`).


def _stream_item(wire: Any) -> HubMessage:
    return StreamItem(invocation_id=wire.invocation_id, item=wire.item, headers=wire.headers or None)


def _stream_invocation(wire: Any) -> HubMessage:
    return StreamInvocation(
        invocation_id=wire.invocation_id,
        target=wire.target,
        arguments=wire.arguments,
        stream_ids=wire.stream_ids,
        headers=wire.headers or None,
    )


def _cancel_invocation(wire: Any) -> HubMessage:
    return CancelInvocation(invocation_id=wire.invocation_id, headers=wire.headers or None)


def _ping(_wire: Any) -> HubMessage:
    return Ping()


def _close(wire: Any) -> HubMessage:
    return Close(error=wire.error, allow_reconnect=wire.allow_reconnect)


def _ack(wire: Any) -> HubMessage:
    return Ack(sequence_id=wire.sequence_id)


def _sequence(wire: Any) -> HubMessage:
    return Sequence(sequence_id=wire.sequence_id)


@dataclass(frozen=True, slots=True)
class _Wire:
    """One encoding's wire shapes, as the shared reader and protocol shells need them."""

    label: str  # "JSON" / "MessagePack" in error texts
    invocation: type  # the Invocation struct (arguments decoded)
    invocation_raw: type  # the Invocation struct with arguments as msgspec.Raw
    array_starts: frozenset[int]  # first bytes of an array in this encoding (raw arguments check)
    convert: dict[type, Callable[[Any], HubMessage]]  # every other message struct -> its message
    probe: Callable[[Any], Any]  # decodes just `type` (to tell a future message type from bad data)


def _make_wire(
    label: str,
    *,
    invocations: tuple[type, type],
    array_starts: frozenset[int],
    completion: tuple[type, Callable[[Any], HubMessage]],
    others: tuple[type, type, type, type, type, type, type],
    probe: Callable[[Any], Any],
) -> _Wire:
    """`others`: the StreamItem, StreamInvocation, CancelInvocation, Ping, Close, Ack, Sequence structs."""
    common = (_stream_item, _stream_invocation, _cancel_invocation, _ping, _close, _ack, _sequence)
    convert = dict(zip(others, common, strict=True))
    convert[completion[0]] = completion[1]
    return _Wire(label, invocations[0], invocations[1], array_starts, convert, probe)


_JSON_WIRE = _make_wire(
    "JSON",
    invocations=(_JInvocation, _JInvocationRaw),
    array_starts=frozenset({_JSON_ARRAY_START}),
    completion=(_JCompletion, _json_completion),
    others=(_JStreamItem, _JStreamInvocation, _JCancelInvocation, _JPing, _JClose, _JAck, _JSequence),
    probe=msgspec.json.Decoder(_JTypeProbe).decode,
)
_MSGPACK_WIRE = _make_wire(
    "MessagePack",
    invocations=(_MInvocation, _MInvocationRaw),
    array_starts=_MSGPACK_ARRAY_MARKERS,
    completion=(_MCompletion, _msgpack_completion),
    others=(_MStreamItem, _MStreamInvocation, _MCancelInvocation, _MPing, _MClose, _MAck, _MSequence),
    probe=msgspec.msgpack.Decoder(_MTypeProbe).decode,
)


def _decode_failed(wire: _Wire, record: bytes | bytearray | memoryview, exc: Exception) -> None:
    """Returns when `record` is a message of a future type (ignored, as the spec and the official
    clients do); else raises ProtocolError."""
    if isinstance(exc, msgspec.ValidationError):
        try:
            unknown = wire.probe(record).type not in _KNOWN_TYPES
        except _DECODE_ERRORS:
            unknown = False
        if unknown:
            return
    raise ProtocolError(f"invalid {wire.label} hub message: {exc}") from exc


_Record: TypeAlias = bytes | bytearray | memoryview


class _Reader:
    """The incremental reader shell: `feed` frames the data into records (subclass), then decodes them.

    After a ProtocolError the reader stays failed (the connection must be closed). Records are
    zero-copy slices; a Raw decoded from one may point into a buffer that is never written again.
    """

    __slots__ = ("_failed", "_loop", "_max", "_need", "_pending", "_wire")

    def __init__(
        self,
        decoder: msgspec.json.Decoder[Any] | msgspec.msgpack.Decoder[Any],
        wire: _Wire,
        max_message_size: int,
    ) -> None:
        if max_message_size < 1:
            raise ValueError("max_message_size must be positive")
        self._wire = wire
        # what the decode loop needs, fetched with one attribute load per feed
        self._loop = (decoder.decode, wire.invocation, wire.invocation_raw, wire.array_starts)
        self._max = max_message_size
        self._pending = bytearray()  # the start of an incomplete record / frame
        self._need = 0  # MessagePack: bytes `_pending` must hold before parsing can make progress
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete message."""
        return len(self._pending)

    def feed(self, data: bytes | bytearray | memoryview | str) -> list[HubMessage]:
        if self._failed:
            raise ProtocolError("reader is unusable after an earlier protocol error")
        out: list[HubMessage] = []
        try:
            records = self._frame(data)
            if not records:
                return out
            # Hot loop: Invocations are built inline (no per-record call); anything else is converted.
            append = out.append
            decode, plain, raw, array_starts = self._loop
            for record in records:
                try:
                    message = decode(record)
                except _DECODE_ERRORS as exc:
                    _decode_failed(self._wire, record, exc)
                    continue
                cls = message.__class__
                if cls is raw:
                    arguments = message.arguments
                    if memoryview(arguments)[0] not in array_starts:
                        raise ProtocolError("Invocation arguments must be an array")
                    append(
                        Invocation(
                            message.target,
                            arguments,
                            message.invocation_id,
                            message.stream_ids,
                            message.headers or None,
                        )
                    )
                elif cls is plain:
                    append(
                        Invocation(
                            message.target,
                            message.arguments,
                            message.invocation_id,
                            message.stream_ids,
                            message.headers or None,
                        )
                    )
                else:
                    append(self._wire.convert[cls](message))
        except ProtocolError:
            self._failed = True
            self._pending = bytearray()
            raise
        return out

    def _frame(self, data: bytes | bytearray | memoryview | str) -> list[_Record]:
        """Split `data` (after what is pending) into complete records; keep the rest pending."""
        raise NotImplementedError


class _JsonReader(_Reader):
    """0x1E-separated JSON records. Never buffers more than max_message_size."""

    __slots__ = ()

    def _frame(self, data: bytes | bytearray | memoryview | str) -> list[_Record]:
        if type(data) is not bytes:
            data = _as_bytes(data)
        records: list[_Record] = []
        start = 0
        limit = self._max
        pending = self._pending
        if pending:
            idx = data.find(RECORD_SEPARATOR)
            if idx < 0:
                if len(pending) + len(data) > limit:
                    raise ProtocolError(f"message exceeds the maximum size of {limit} bytes")
                pending += data
                return records
            if len(pending) + idx > limit:
                raise ProtocolError(f"message exceeds the maximum size of {limit} bytes")
            # The completed record is decoded from the buffer itself (one copy, no join), which is
            # then dropped: a Raw decoded from it keeps it alive and nothing writes to it again.
            pending += memoryview(data)[:idx]
            self._pending = bytearray()
            records.append(pending)
            start = idx + 1
        n = len(data)
        view = memoryview(data)
        if (
            not start and 0 < n <= limit and data.find(RECORD_SEPARATOR) == n - 1
        ):  # one record: the common frame
            return [view[: n - 1]]
        find = data.find
        append = records.append
        while start < n:
            idx = find(RECORD_SEPARATOR, start)
            if idx < 0:
                if n - start > limit:
                    raise ProtocolError(f"message exceeds the maximum size of {limit} bytes")
                self._pending = bytearray(view[start:])
                break
            if idx - start > limit:
                raise ProtocolError(f"message exceeds the maximum size of {limit} bytes")
            append(view[start:idx])
            start = idx + 1
        return records


class _MessagePackReader(_Reader):
    """VarInt-length-prefixed MessagePack messages; the prefix is checked against max_message_size
    before any of the body is buffered."""

    __slots__ = ()

    def _frame(self, data: bytes | bytearray | memoryview | str) -> list[_Record]:
        if isinstance(data, str):
            raise ProtocolError("text data received on the binary MessagePack protocol")
        if self._pending:
            self._pending += data
            if len(self._pending) < self._need:
                return []
            # Parsed in place (no copy) and dropped: Raws decoded from it keep it alive.
            buf: bytes | bytearray = self._pending
            self._pending = bytearray()
            self._need = 0
        else:
            buf = _as_bytes(data)
        # 1- and 2-byte length prefixes (bodies under 16 KiB) are read inline; bodies are zero-copy.
        n = len(buf)
        view = memoryview(buf)
        limit = self._max
        if n > 2 and n - 2 <= limit:  # the common frame: one message with a 1- or 2-byte prefix
            first = buf[0]
            if first == n - 1 and first <= limit:  # (then first < 0x80)
                return [view[1:]]
            if first >= 0x80 and buf[1] < 0x80 and (first & 0x7F) | (buf[1] << 7) == n - 2:
                return [view[2:]]
        records: list[_Record] = []
        append = records.append
        pos = 0
        while pos < n:
            first = buf[pos]
            if first < 0x80:
                length = first
                i = pos + 1
            elif pos + 1 < n and buf[pos + 1] < 0x80:
                length = (first & 0x7F) | (buf[pos + 1] << 7)
                i = pos + 2
            else:
                prefix = decode_varint(buf, pos)
                if prefix is None:  # incomplete length prefix
                    self._pending = bytearray(view[pos:])
                    self._need = n - pos + 1
                    return records
                length, size = prefix
                i = pos + size
            if length > limit:
                raise ProtocolError(f"message exceeds the maximum size of {limit} bytes")
            if length == 0:
                raise ProtocolError("empty MessagePack hub message")
            end = i + length
            if end > n:
                self._pending = bytearray(view[pos:])
                self._need = end - pos
                return records
            append(view[i:end])
            pos = end
        return records


class _HubProtocolBase:
    """The protocol shell: decoder choice, encode's error wrapping, readers, whole-frame decode."""

    name: str
    version: int = 1
    #: Highest handshake version understood (2 = stateful reconnect's Ack/Sequence messages).
    max_version: int = 2
    transfer_format: Literal["text", "binary"]
    _wire: ClassVar[_Wire]
    _reader_class: ClassVar[type[_Reader]]
    _ping: ClassVar[bytes]  # Ping is constant: encoded once
    _incomplete: ClassVar[str]

    def __init__(self, *, raw_arguments: bool = False) -> None:
        self.raw_arguments = raw_arguments
        wire = self._wire
        union: Any = Union[(wire.invocation_raw if raw_arguments else wire.invocation, *wire.convert)]
        self._decoder = self._new_decoder(union)

    def _new_decoder(self, union: Any) -> msgspec.json.Decoder[Any] | msgspec.msgpack.Decoder[Any]:
        raise NotImplementedError

    def _shape(self, message: HubMessage) -> Any:
        """The wire shape to encode (TypeError for a non-message), or finished bytes."""
        raise NotImplementedError

    def _finish(self, shape: Any) -> bytes:
        """Encode and frame a wire shape (msgspec errors are wrapped by `encode`)."""
        raise NotImplementedError

    def is_version_supported(self, version: int) -> bool:
        return 1 <= version <= self.max_version

    def encode(self, message: HubMessage) -> bytes:
        if message.__class__ is Ping:
            return self._ping
        shape = self._shape(message)
        if shape.__class__ is bytes:
            return shape
        try:
            return self._finish(shape)
        except _ENCODE_ERRORS as exc:
            raise ProtocolError(
                f"cannot encode {type(message).__name__} as {self._wire.label}: {exc}"
            ) from exc

    def reader(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> _Reader:
        return self._reader_class(self._decoder, self._wire, max_message_size)

    def decode(self, data: bytes | bytearray | memoryview | str) -> list[HubMessage]:
        """Decode whole frames; a trailing incomplete message is a ProtocolError."""
        if isinstance(data, str) and self.transfer_format == "text":
            data = _as_bytes(data)
        reader = self.reader(max(len(data), 1))
        messages = reader.feed(data)
        if reader.buffered:
            raise ProtocolError(self._incomplete)
        return messages


class JsonHubProtocol(_HubProtocolBase):
    """The JSON hub protocol: one JSON object per message, each terminated by 0x1E."""

    name: str = "json"
    transfer_format: Literal["text", "binary"] = "text"
    _wire = _JSON_WIRE
    _reader_class = _JsonReader
    _ping = b'{"type":6}' + RECORD_SEPARATOR
    _incomplete = "incomplete JSON hub message (missing record separator)"
    _encoder = msgspec.json.Encoder()

    def _new_decoder(self, union: Any) -> msgspec.json.Decoder[Any]:
        return msgspec.json.Decoder(union)

    def _shape(self, message: HubMessage) -> Any:
        return _to_json_dict(message)

    def _finish(self, shape: Any) -> bytes:
        return self._encoder.encode(shape) + RECORD_SEPARATOR


class MessagePackHubProtocol(_HubProtocolBase):
    """The MessagePack hub protocol: VarInt length prefix + one MessagePack array per message."""

    name: str = "messagepack"
    transfer_format: Literal["text", "binary"] = "binary"
    _wire = _MSGPACK_WIRE
    _reader_class = _MessagePackReader
    _ping = b"\x02\x91\x06"  # always exactly 0x91 0x06
    _incomplete = "incomplete MessagePack hub message"
    _encoder = msgspec.msgpack.Encoder()

    def _new_decoder(self, union: Any) -> msgspec.msgpack.Decoder[Any]:
        return msgspec.msgpack.Decoder(union)

    def _shape(self, message: HubMessage) -> Any:
        if isinstance(message, Ack | Sequence):
            return _encode_sequence_message(int(message.type), message.sequence_id)
        return _to_msgpack_array(message)

    def _finish(self, shape: Any) -> bytes:
        body = self._encoder.encode(shape)
        return encode_varint(len(body)) + body


def get_protocol(name: str, **options: Any) -> JsonHubProtocol | MessagePackHubProtocol:
    """The hub protocol called `name` ("json" or "messagepack"); options: raw_arguments=bool.

    An unknown name raises ProtocolError (a server answers it with a handshake error).
    """
    if name == "json":
        return JsonHubProtocol(**options)
    if name == "messagepack":
        return MessagePackHubProtocol(**options)
    raise ProtocolError(f"Requested protocol {name[:64]!r} is not available.")
