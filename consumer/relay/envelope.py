"""The output envelope: one JSON object per line, built without re-encoding pass-through arguments.

Line shape (JSON Schema: docs/envelope.schema.json)::

    {"received_at": "2026-08-22T19:43:12.402117Z", "seq": 17, "hub": "redmist",
     "kind": "invocation", "target": "<hub method>", "event_id": 1187, "arguments": [...]}

- `received_at`: RFC 3339, UTC, microseconds, `Z` suffix; when the daemon received the message.
- `seq`: per process, strictly increasing (starts at 1); gaps are allowed (filtered records).
- `kind`: `invocation` (a hub → client call), `snapshot` (a state a hub profile fetched over REST;
  target is the REST action), `connection` (target is one of
  `connected`, `reconnecting`, `reconnected`, `closed`; arguments is `[]` or `[error text]`).
- `kind` `ha` (hot-standby pair, NATS stream only): target `failover` or `gap`, arguments `[info]`.
- `event_id`: present only where the hub profile finds one in the payload.
- `arguments`: the invocation's argument array. On the JSON protocol hot path these are the raw bytes
  received from the hub (a `msgspec.Raw`) spliced into the line without decoding. A MessagePack value
  JSON has no form for (an extension type other than the timestamp) is written as
  `{"msgpackExt": <type code>, "data": "<base64>"}` rather than failing the line.
"""

from __future__ import annotations

import base64
import time
from typing import Any, Literal

import msgspec

Kind = Literal["invocation", "snapshot", "connection", "ha"]
CONNECTION_TARGETS = ("connected", "reconnecting", "reconnected", "closed")


class Envelope(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Field order is the line's key order. `event_id` is omitted when None."""

    received_at: str
    seq: int
    hub: str
    kind: str
    target: str
    event_id: int | str | None = None
    arguments: Any


_EMPTY_ARGS = msgspec.Raw(b"[]")


def _enc_hook(value: Any) -> Any:
    """Values msgspec.json cannot encode (called only for those): nothing received is dropped.
    `str` subclasses (consumer.redmist.fastpack's converted slots) are written as their text."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, msgspec.msgpack.Ext):
        return {"msgpackExt": value.code, "data": base64.b64encode(value.data).decode("ascii")}
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


class Clock:
    """RFC 3339 µs UTC timestamps; the `YYYY-MM-DDTHH:MM:SS` prefix is cached per second (hot path)."""

    __slots__ = ("_prefix", "_second", "_time")

    def __init__(self, time_ns: Any = time.time_ns) -> None:
        self._time = time_ns
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        sec, ns = divmod(self._time(), 1_000_000_000)
        if sec != self._second:
            self._second = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._prefix}.{ns // 1000:06d}Z"


class EnvelopeEncoder:
    """Numbers and encodes records. One instance per process (it owns `seq`)."""

    __slots__ = ("_clock", "_encoder", "hub", "seq")

    def __init__(self, hub: str, *, clock: Clock | None = None) -> None:
        self.hub = hub
        self.seq = 0
        self._clock = clock or Clock()
        self._encoder = msgspec.json.Encoder(enc_hook=_enc_hook)

    def encode(self, kind: Kind, target: str, arguments: Any, event_id: int | str | None = None) -> bytes:
        """One line without the trailing newline. `arguments` may be a msgspec.Raw (spliced as is)."""
        self.seq += 1
        return self._encoder.encode(
            Envelope(
                received_at=self._clock.now(),
                seq=self.seq,
                hub=self.hub,
                kind=kind,
                target=target,
                event_id=event_id,
                arguments=arguments,
            )
        )

    def invocation(self, target: str, arguments: Any, event_id: int | str | None = None) -> bytes:
        return self.encode("invocation", target, arguments, event_id)

    def snapshot(self, target: str, state: Any, event_id: int | str | None = None) -> bytes:
        return self.encode("snapshot", target, [state], event_id)

    def connection(self, state: str, error: str | None = None) -> bytes:
        if state not in CONNECTION_TARGETS:
            raise ValueError(f"unknown connection state {state!r}")
        return self.encode("connection", state, [error] if error else _EMPTY_ARGS)
