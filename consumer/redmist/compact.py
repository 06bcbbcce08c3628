"""`[redmist] patches = "compact"`: patch objects written without their null fields.

In RedMist's patches (`CarPositionPatch`, `SessionStatePatch`) a null field means "unchanged", so
leaving it out loses nothing under those semantics and makes car patch lines about 4x smaller. Only
the patch objects themselves are compacted: the hub method's arguments declared as a patch type or a
list of one (`COMPACT_ARGUMENTS`, derived from the contract); objects nested inside a patch (e.g. a
`CompletedSection`) and every other record keep their nulls. The default (`"faithful"`) writes every
field as received.

- JSON protocol: `compact_json(target, raw)` decodes the raw arguments straight into generated
  Structs (one per patch type: the contract's JSON names in key order, `omit_defaults`, so null
  members are left out when encoded; values re-encoded by msgspec) and the other arguments as they
  are. A patch object with a member the contract does not know (or any argument shape the typed decoder
  rejects) goes the general way instead: decoded to dicts, null members dropped, the rest (unknown
  members included) kept in the order received. Targets without patch arguments keep the raw bytes
  (None is returned: splice as today).
- MessagePack: `consumer.redmist.fastpack.convert(..., compact=True)`; its fallback (and the dict form
  the watchers get) goes through `compact_decoded(target, args)`.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from consumer.redmist.contract import CLIENT_METHOD_ARGS, CONTRACT
from consumer.redmist.fastpack import PATCH_TYPES

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


@functools.cache
def _patch_struct(name: str) -> Any:
    fields = CONTRACT.type(name).fields
    attrs = [f"f{f.key}" for f in fields]
    return msgspec.defstruct(
        f"{name}JsonCompact",
        [(a, Any, None) for a in attrs],
        rename={a: f.json_name for a, f in zip(attrs, fields, strict=True)},
        omit_defaults=True,
        forbid_unknown_fields=True,
        gc=False,
        module=__name__,
    )


def _argument_annotation(type_expr: str) -> Any:
    expr = type_expr.strip().removesuffix("?")
    if expr in PATCH_TYPES:
        return _patch_struct(expr) | None
    for inner in (
        expr[:-2] if expr.endswith("[]") else None,
        expr[5:-1] if expr.startswith("List<") else None,
    ):
        if inner is not None and inner.strip().removesuffix("?") in PATCH_TYPES:
            return list[_patch_struct(inner.strip().removesuffix("?")) | None] | None  # type: ignore[misc]
    return Any


_JSON_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    target: msgspec.json.Decoder(tuple.__class_getitem__(tuple(_argument_annotation(t) for t in types)))
    for target, types in CLIENT_METHOD_ARGS.items()
    if target in COMPACT_ARGUMENTS
}


def compact_json(target: str, raw: Any) -> list[Any] | None:
    """JSON raw arguments -> decoded arguments with the patch objects' nulls left out, or None when
    `target` has no patch argument (the raw bytes stay as they are)."""
    decoder = _JSON_DECODERS.get(target)
    if decoder is None:
        return None
    try:
        return list(decoder.decode(raw))
    except (msgspec.MsgspecError, ValueError, RecursionError):
        pass  # an unknown member or an unexpected shape: the general way below keeps everything
    args = msgspec.json.decode(raw)
    if not isinstance(args, list):
        return None
    return compact_decoded(target, args)
