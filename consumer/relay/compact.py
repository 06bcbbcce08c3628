"""`[redmist] patches = "compact"`: patch objects written without their null fields.

In RedMist's patches (`CarPositionPatch`, `SessionStatePatch`) a null field means "unchanged", so
leaving it out loses nothing under those semantics and makes car patch lines about 4x smaller. Only
the patch objects themselves are compacted: the hub method's arguments declared as a patch type or a
list of one (`COMPACT_ARGUMENTS`, derived from the contract); objects nested inside a patch (e.g. a
`CompletedSection`) and every other record keep their nulls. The default (`"faithful"`) writes every
field as received.

- JSON protocol: `compact_json(target, raw)` decodes the raw arguments and drops the null members of
  those patch objects (other members and key order as received; values re-encoded by msgspec);
  targets without patch arguments keep the raw bytes (None is returned: splice as today).
- MessagePack: `consumer.relay.fastpack.convert(..., compact=True)`; its fallback (and the dict form
  the watchers get) goes through `compact_decoded(target, args)`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from consumer.relay.contract import CLIENT_METHOD_ARGS
from consumer.relay.fastpack import PATCH_TYPES

__all__ = ["COMPACT_ARGUMENTS", "compact_decoded", "compact_json"]


def _is_patch(type_expr: str) -> bool:
    expr = type_expr.strip().removesuffix("?")
    if expr.endswith("[]"):
        expr = expr[:-2].strip().removesuffix("?")
    elif expr.startswith("List<") and expr.endswith(">"):
        expr = expr[5:-1].strip().removesuffix("?")
    return expr in PATCH_TYPES


# hub method -> positions of its arguments that are patch objects or lists of them
COMPACT_ARGUMENTS: dict[str, tuple[int, ...]] = {
    target: positions
    for target, types in CLIENT_METHOD_ARGS.items()
    if (positions := tuple(i for i, t in enumerate(types) if _is_patch(t)))
}


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [{k: v for k, v in x.items() if v is not None} if isinstance(x, dict) else x for x in value]
    return value


def compact_decoded(target: str, args: list[Any]) -> list[Any]:
    """A copy of decoded arguments (dicts, or Structs from the contract's encodable form) with the
    patch arguments' null fields left out; `args` itself is not modified."""
    positions = COMPACT_ARGUMENTS.get(target)
    if not positions:
        return args
    out = list(args)
    for i in positions:
        if i < len(out) and out[i] is not None:
            value = out[i]
            if not isinstance(value, dict | list) or (
                isinstance(value, list) and any(isinstance(x, msgspec.Struct) for x in value)
            ):
                value = msgspec.to_builtins(value)
            out[i] = _without_nulls(value)
    return out


def compact_json(target: str, raw: Any) -> list[Any] | None:
    """JSON raw arguments -> decoded arguments with the patch objects' nulls left out, or None when
    `target` has no patch argument (the raw bytes stay as they are)."""
    if target not in COMPACT_ARGUMENTS:
        return None
    args = msgspec.json.decode(raw)
    if not isinstance(args, list):
        return None
    return compact_decoded(target, args)
