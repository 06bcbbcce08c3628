"""RedMist as the relay's hub profile (`consumer.relay.profile.HubProfile`): event ids, contract names
for MessagePack arguments (fastpack first, the contract's reference conversion as the fallback), and
`[redmist] patches = "compact"`.

- `peek_json_event_id(raw)`: cheap event id peek on raw JSON arguments (no full parse).
- `event_id_of(args)`: the `eventId` of decoded arguments (first object, or first object of a list).
- `PAYLOADS`: the profile instance the daemon gives the relay (`Relay(profile=PAYLOADS)`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Any

import msgspec

from consumer.redmist import contract, fastpack
from consumer.redmist.compact import compact_decoded, compact_json

__all__ = ["PAYLOADS", "RedMistPayloads", "event_id_of", "normalise_event_id", "peek_json_event_id"]

_EVENT_ID = re.compile(rb'"eventId":\s*(?:"([^"\\]*)"|(-?\d+))')


def peek_json_event_id(raw: bytes | memoryview | msgspec.Raw, limit: int = 512) -> int | str | None:
    """Cheap RedMist event id peek on raw JSON arguments: the first `"eventId":` value, no full parse.

    Car patches carry it as a string ("1187"), session patches as a number; both become an int
    when they are digits. Returns None when absent within the first `limit` bytes (RedMist puts
    `eventId` first). A regex over the buffer: no copy, no decode of the payload.
    """
    m = _EVENT_ID.search(raw, 0, limit)  # any buffer (bytes, memoryview, msgspec.Raw): no copy
    if m is None:
        return None
    quoted, number = m.groups()
    if number is not None:
        return int(number)
    if quoted.isdigit():  # ASCII digits (the common case: "1187")
        return int(quoted)
    text = bytes(quoted).decode("utf-8", "replace")
    return int(text) if text.isdigit() else text


def normalise_event_id(value: Any) -> int | str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value:
        return int(value) if value.isdigit() else value
    return None


def event_id_of(args: Sequence[Any]) -> int | str | None:
    """The `eventId` of a decoded RedMist argument list (first object, or first object of a list)."""
    if not args:
        return None
    first = args[0]
    if isinstance(first, list):
        first = first[0] if first else None
    if isinstance(first, dict):
        return normalise_event_id(first.get("eventId"))
    if isinstance(first, msgspec.Struct):  # contract.encodable_arguments_from_msgpack's objects
        return normalise_event_id(getattr(first, "eventId", None))
    return None


class RedMistPayloads:
    """The RedMist hub profile of the relay (see consumer.relay.profile)."""

    known_targets: Collection[str] = frozenset(contract.CLIENT_METHOD_ARGS)

    # the hot path calls these once per message: the functions themselves, no wrapper call
    json_event_id = staticmethod(peek_json_event_id)
    event_id = staticmethod(event_id_of)
    compact_json = staticmethod(compact_json)
    compact_decoded = staticmethod(compact_decoded)

    def msgpack_decoded(self, target: str, raw: Any, compact: bool) -> tuple[list[Any], Any]:
        """The watchers get the dict form (always faithful); the envelope the Structs or the dicts."""
        fast = fastpack.convert(target, raw)
        if fast is not None:
            decoded = fastpack.to_dicts(fast)
            return decoded, (compact_decoded(target, decoded) if compact else fast)
        decoded = contract.arguments_from_msgpack(target, msgspec.msgpack.decode(raw))
        return decoded, (compact_decoded(target, decoded) if compact else decoded)

    def msgpack_encodable(self, target: str, raw: Any, compact: bool) -> Any:
        """Structs encode to the same bytes as the dicts, and cost far less: fastpack decodes and names
        in C where it can prove the result exact; else the contract's reference conversion."""
        arguments = fastpack.convert(target, raw, compact)
        if arguments is None:
            arguments = contract.encodable_arguments_from_msgpack(target, msgspec.msgpack.decode(raw))
            if compact:
                arguments = compact_decoded(target, arguments)
        return arguments


PAYLOADS = RedMistPayloads()
