"""SignalR hub protocol core, sans-I/O: bytes in, messages out, and back. No asyncio, no sockets.

Spec: dotnet/aspnetcore src/SignalR/docs/specs/HubProtocol.md and TransportProtocols.md.

PUBLIC API (pinned: the server, the client and the relay are written against these names):
- `MessageType`, the message dataclasses below, `HubMessage`
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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Literal, Protocol, TypeAlias

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


@dataclass(slots=True)
class Invocation:
    target: str
    arguments: Any  # list[Any], or msgspec.Raw when the protocol was built with raw_arguments=True
    invocation_id: str | None = None
    stream_ids: list[str] | None = None
    headers: Headers | None = None
    type: Literal[MessageType.INVOCATION] = field(default=MessageType.INVOCATION, init=False)


@dataclass(slots=True)
class StreamItem:
    invocation_id: str
    item: Any
    headers: Headers | None = None
    type: Literal[MessageType.STREAM_ITEM] = field(default=MessageType.STREAM_ITEM, init=False)


@dataclass(slots=True)
class Completion:
    """result_kind semantics: `error` set → error; else `has_result` → result (may be None); else void."""

    invocation_id: str
    result: Any = None
    error: str | None = None
    has_result: bool = False
    headers: Headers | None = None
    type: Literal[MessageType.COMPLETION] = field(default=MessageType.COMPLETION, init=False)


@dataclass(slots=True)
class StreamInvocation:
    invocation_id: str
    target: str
    arguments: Any
    stream_ids: list[str] | None = None
    headers: Headers | None = None
    type: Literal[MessageType.STREAM_INVOCATION] = field(default=MessageType.STREAM_INVOCATION, init=False)


@dataclass(slots=True)
class CancelInvocation:
    invocation_id: str
    headers: Headers | None = None
    type: Literal[MessageType.CANCEL_INVOCATION] = field(default=MessageType.CANCEL_INVOCATION, init=False)


@dataclass(slots=True)
class Ping:
    type: Literal[MessageType.PING] = field(default=MessageType.PING, init=False)


@dataclass(slots=True)
class Close:
    error: str | None = None
    allow_reconnect: bool = False
    type: Literal[MessageType.CLOSE] = field(default=MessageType.CLOSE, init=False)


@dataclass(slots=True)
class Ack:
    sequence_id: int
    type: Literal[MessageType.ACK] = field(default=MessageType.ACK, init=False)


@dataclass(slots=True)
class Sequence:
    sequence_id: int
    type: Literal[MessageType.SEQUENCE] = field(default=MessageType.SEQUENCE, init=False)


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


# --- to be implemented (issue 3) ------------------------------------------------------------------


def encode_handshake_request(request: HandshakeRequest) -> bytes:
    raise NotImplementedError


def encode_handshake_response(response: HandshakeResponse) -> bytes:
    raise NotImplementedError


def parse_handshake_request(buffer: bytes) -> tuple[HandshakeRequest | None, bytes]:
    raise NotImplementedError


def parse_handshake_response(buffer: bytes) -> tuple[HandshakeResponse | None, bytes]:
    raise NotImplementedError


def get_protocol(name: str, **options: Any) -> HubProtocol:
    raise NotImplementedError
