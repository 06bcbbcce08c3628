"""The hub profile: what the relay needs to know about one hub's payloads, injected (`Relay(profile=)`).

The relay is generic: it counts, routes and wraps every invocation the same way. What depends on the
hub's payloads — which targets are known by name, where an invocation's event id is, how MessagePack
arguments are named for the JSON envelope, what "compact" means — comes from a `HubProfile`:

- `known_targets`: target names counted by name in metrics (others count as `other`).
- `json_event_id(raw)`: the event id peeked from raw JSON arguments (None: the record has none).
- `event_id(args)`: the event id of decoded arguments (dicts, or the profile's own objects).
- `compact_json(target, raw)`: compact arguments for a JSON invocation, or None (splice `raw` as is).
- `compact_decoded(target, args)`: compact form of decoded arguments.
- `msgpack_decoded(target, raw, compact)`: `(dicts, arguments)` for a MessagePack invocation a watcher
  reads: the dict form the watchers get, and what goes into the envelope.
- `msgpack_encodable(target, raw, compact)`: what goes into the envelope when nothing reads the fields.

`PlainProfile` (the default) knows no targets, finds no event ids, and writes MessagePack arguments
as decoded. A hub's own profile lives in its own package (`consumer.redmist.payloads.RedMistPayloads`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Protocol

import msgspec

__all__ = ["HubProfile", "PlainProfile"]

EventId = int | str | None


class HubProfile(Protocol):
    @property
    def known_targets(self) -> Collection[str]: ...

    def json_event_id(self, raw: Any) -> EventId: ...

    def event_id(self, args: Sequence[Any]) -> EventId: ...

    def compact_json(self, target: str, raw: Any) -> Any | None: ...

    def compact_decoded(self, target: str, args: list[Any]) -> Any: ...

    def msgpack_decoded(self, target: str, raw: Any, compact: bool) -> tuple[list[Any], Any]: ...

    def msgpack_encodable(self, target: str, raw: Any, compact: bool) -> Any: ...


class PlainProfile:
    """No hub-specific knowledge: no event ids, MessagePack arguments written as decoded."""

    known_targets: Collection[str] = frozenset()

    def json_event_id(self, raw: Any) -> EventId:
        return None

    def event_id(self, args: Sequence[Any]) -> EventId:
        return None

    def compact_json(self, target: str, raw: Any) -> Any | None:
        return None

    def compact_decoded(self, target: str, args: list[Any]) -> Any:
        return args

    def msgpack_decoded(self, target: str, raw: Any, compact: bool) -> tuple[list[Any], Any]:
        decoded = list(msgspec.msgpack.decode(raw))
        return decoded, decoded

    def msgpack_encodable(self, target: str, raw: Any, compact: bool) -> Any:
        return msgspec.msgpack.decode(raw)
