"""The MessagePack fast path: RedMist frames decoded and converted to the named JSON form in C.

`convert(target, raw)` takes the raw MessagePack arguments array of an invocation and returns the
same encodable arguments `contract.encodable_arguments_from_msgpack(target, msgpack.decode(raw))`
returns — objects that `msgspec.json` encodes to exactly the same bytes — or None when it cannot
prove it handles the frame exactly; the caller then uses that reference conversion (so every rule
about unexpected input lives in one place, `consumer.redmist.contract`).

How: derived at import from the contract tables (`CONTRACT.types`, `CLIENT_METHOD_ARGS`), per
contract type two generated Structs share one field layout: `<T>Named` (fields renamed to RedMist's
JSON names, what the envelope encodes) and its subclass `<T>Wire` (`array_like=True`,
`forbid_unknown_fields=True`: decoded positionally from the integer-keyed array), and for patch types
a second subclass `<T>Compact` (`omit_defaults=True`: null fields left out, `patches = "compact"`). One typed
`msgspec.msgpack.Decoder` per hub method decodes the whole argument array straight into `Wire`
objects (no intermediate lists), then each object's class is switched to its `Named` parent (same
layout: one pointer store per object, no field copied). Slots that need a conversion are typed with
small `str` subclasses whose `dec_hook` formats them while decoding, only where a value is present:
DateTime (MessagePack timestamp -> `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` with trailing zeros trimmed, as
`contract.format_datetime`), TimeOnly (ticks -> `HH:MM:SS.fffffff`), byte[] (bin -> base64); a string
already in that form passes through as the reference does. Every other slot is `Any`: the reference
passes those through unchanged, and so does the decoder. The envelope encoder writes `str`
subclasses as their text (`consumer.relay.envelope`).

What falls back to the reference (returns None): a hub method or argument type the generated decoders
do not cover (unknown targets, types whose keys have gaps), more arguments than the method declares,
an array with more slots than its contract type (`forbid_unknown_fields`), a slot of a converted or
object type holding something else (e.g. a map where an object array is expected, a float where
TimeOnly ticks are expected, ticks out of range), and any decode error.
"""

from __future__ import annotations

import base64
import datetime as dt
import keyword
from typing import Any

import msgspec

from consumer.redmist.contract import CONTRACT, Contract, FieldSpec, format_datetime

__all__ = ["FastPack", "convert", "supported_targets", "to_dicts"]

_TICKS_PER_DAY = 86_400 * 10_000_000


class DateTimeText(str):
    """A DateTime slot's JSON text (encoded as a plain string)."""

    __slots__ = ()


class TimeOnlyText(str):
    """A TimeOnly slot's JSON text."""

    __slots__ = ()


class BytesText(str):
    """A byte[] slot's JSON text (base64)."""

    __slots__ = ()


_UTC = dt.UTC


# "HH:MM:" for every minute of the day and "SS." for every second: the per-value work is two divmods,
# two list lookups and the 7-digit fraction (an int -> str conversion): ~3x cheaper than %-formatting
# four numbers, for the ~3 TimeOnly slots a 12-car frame carries.
_HOUR_MINUTE = tuple(f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60))
_SECOND = tuple(f"{s:02d}." for s in range(60))
_FRACTION_BASE = 10_000_000  # str(frac + base)[1:] is frac zero-padded to 7 digits (0 <= frac < base)


def _time_only_text(ticks: int) -> TimeOnlyText:
    """`contract.format_time_only` for 0 <= ticks < one day (the caller checks the range)."""
    seconds, frac = divmod(ticks, 10_000_000)
    minutes, secs = divmod(seconds, 60)
    return TimeOnlyText(_HOUR_MINUTE[minutes] + _SECOND[secs] + str(frac + _FRACTION_BASE)[1:])


def _datetime_text(value: dt.datetime) -> DateTimeText:
    """`contract.format_datetime` for the aware UTC datetimes msgspec decodes timestamps to."""
    if value.tzinfo is not _UTC or value.year < 1000:  # (strftime writes years below 1000 unpadded)
        return DateTimeText(format_datetime(value))
    text = "%04d-%02d-%02dT%02d:%02d:%02d" % (  # noqa: UP031
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
    )
    micro = value.microsecond
    if micro:
        return DateTimeText(text + ("." + "%06d" % micro).rstrip("0") + "Z")  # noqa: UP031
    return DateTimeText(text + "Z")


def _dec_hook(typ: type, value: Any) -> Any:
    """Called by the decoder for each non-nil converted slot; anything unexpected raises (-> fallback)."""
    if typ is TimeOnlyText:
        if type(value) is int and 0 <= value < _TICKS_PER_DAY:
            return _time_only_text(value)
        if type(value) is str:
            return TimeOnlyText(value)
    elif typ is DateTimeText:
        if type(value) is dt.datetime:
            return _datetime_text(value)
        if type(value) is str:
            return DateTimeText(value)
    elif typ is BytesText:
        if type(value) is bytes:
            return BytesText(base64.b64encode(value).decode("ascii"))
        if type(value) is str:
            return BytesText(value)
    raise TypeError(f"not handled by the fast path: {type(value).__name__} as {typ.__name__}")


class _Unsupported(Exception):
    pass


def _attr_name(f: FieldSpec) -> str:
    name = f.json_name
    return name if name.isidentifier() and not keyword.iskeyword(name) else f"k{f.key}"


class FastPack:
    """Generated decoders for one contract (see the module docstring)."""

    def __init__(self, contract: Contract) -> None:
        self.contract = contract
        self._wire: dict[str, Any] = {}  # type name -> Wire class (or _Unsupported marker)
        self._named: dict[type, type] = {}  # Wire class -> Named class
        self._compact: dict[type, type] = {}  # Wire class of a patch type -> Compact class
        self._nested: dict[type, tuple[str, ...]] = {}  # Wire class -> attributes holding objects
        self.decoders: dict[str, msgspec.msgpack.Decoder[Any]] = {}
        for target, types in contract.client_method_args.items():
            try:
                parts = tuple(self._annotation(t) for t in types)
                annotation: Any = tuple.__class_getitem__(parts)  # tuple[A, B, ...]: exactly these
            except _Unsupported:
                continue
            self.decoders[target] = msgspec.msgpack.Decoder(annotation, dec_hook=_dec_hook)

    # -- generation ----------------------------------------------------------------------------

    def _annotation(self, type_expr: str) -> Any:
        expr = type_expr.strip().removesuffix("?")
        if expr.endswith("[]") and expr != "byte[]":
            return list[self._annotation(expr[:-2]) | None] | None  # type: ignore[misc]
        if expr.startswith("List<") and expr.endswith(">"):
            return list[self._annotation(expr[5:-1]) | None] | None  # type: ignore[misc]
        if expr.startswith("Dictionary<"):
            return Any
        if expr == "DateTime":
            return DateTimeText | None
        if expr == "TimeOnly":
            return TimeOnlyText | None
        if expr == "byte[]":
            return BytesText | None
        if expr in self.contract.types:
            return self._wire_type(expr) | None
        return Any  # numbers, strings, booleans, enums: passed through as decoded, as the reference does

    def _wire_type(self, name: str) -> Any:
        cls = self._wire.get(name)
        if cls is _Unsupported:
            raise _Unsupported(name)
        if cls is not None:
            return cls
        spec = self.contract.type(name)
        if tuple(f.key for f in spec.fields) != tuple(range(len(spec.fields))):
            self._wire[name] = _Unsupported
            raise _Unsupported(name)  # a gap in the keys: positional decoding would misplace slots
        self._wire[name] = _Unsupported  # while building (a recursive type is not fast-pathed)
        attrs = [_attr_name(f) for f in spec.fields]
        annotations = [self._annotation(f.type) for f in spec.fields]
        named = msgspec.defstruct(
            f"{name}Named",
            [(a, t, None) for a, t in zip(attrs, annotations, strict=True)],
            rename={a: f.json_name for a, f in zip(attrs, spec.fields, strict=True)},
            gc=False,
            module=__name__,
        )
        wire = msgspec.defstruct(
            f"{name}Wire",
            [],
            bases=(named,),
            array_like=True,
            forbid_unknown_fields=True,
            gc=False,
            module=__name__,
        )
        self._wire[name] = wire
        self._named[wire] = named
        if name in PATCH_TYPES:
            self._compact[wire] = msgspec.defstruct(
                f"{name}Compact", [], bases=(named,), omit_defaults=True, gc=False, module=__name__
            )
        self._nested[wire] = tuple(
            a for a, f in zip(attrs, spec.fields, strict=True) if _mentions_object(f.type, self.contract)
        )
        return wire

    # -- conversion ----------------------------------------------------------------------------

    def convert(self, target: str, raw: Any, compact: bool = False) -> list[Any] | None:
        decoder = self.decoders.get(target)
        if decoder is None:
            return None
        try:
            args = decoder.decode(raw)
        except (msgspec.MsgspecError, ValueError, TypeError, RecursionError):
            return None
        out = list(args)
        for value in out:
            if value is not None:
                self._rename(value, compact)
        return out

    def _rename(self, value: Any, compact: bool = False) -> None:
        """Switch every decoded Wire object to its Named parent (same layout), nested ones too; with
        `compact`, top-level patch objects to their Compact class instead (null fields omitted)."""
        if type(value) is list:
            items = [x for x in value if x is not None]
            if not items:
                return
            wire = type(items[0])
            named = self._named.get(wire)
            if named is None:  # a list of lists
                for item in items:
                    self._rename(item)
                return
            if compact:
                named = self._compact.get(wire, named)
            nested = self._nested[wire]
            for item in items:  # one contract type per list: the common case, kept tight
                item.__class__ = named
            if nested:
                for item in items:
                    for attr in nested:
                        inner = getattr(item, attr)
                        if inner is not None:
                            self._rename(inner)
            return
        wire = type(value)
        named = self._named.get(wire)
        if named is None:
            return
        value.__class__ = self._compact.get(wire, named) if compact else named
        for attr in self._nested[wire]:
            inner = getattr(value, attr)
            if inner is not None:
                self._rename(inner)


def _mentions_object(type_expr: str, contract: Contract) -> bool:
    expr = type_expr.strip().removesuffix("?")
    while True:
        if expr.endswith("[]") and expr != "byte[]":
            expr = expr[:-2].strip().removesuffix("?")
        elif expr.startswith("List<") and expr.endswith(">"):
            expr = expr[5:-1].strip().removesuffix("?")
        else:
            return expr in contract.types


PATCH_TYPES = frozenset(name for name in CONTRACT.types if name.endswith("Patch"))
FASTPACK = FastPack(CONTRACT)


def convert(target: str, raw: Any, compact: bool = False) -> list[Any] | None:
    """The encodable arguments of `target`'s MessagePack `raw` arguments, or None: use the reference.
    `compact`: the method's patch objects (`PATCH_TYPES`) omit their null fields."""
    return FASTPACK.convert(target, raw, compact)


# Values decoded from MessagePack that the dict form keeps as they are (as the reference does).
_KEEP = (bytes, bytearray, memoryview, dt.datetime, dt.date, dt.time, dt.timedelta, msgspec.msgpack.Ext)


def _plain_text(value: Any) -> Any:
    if isinstance(value, str):
        return str(value)
    raise NotImplementedError


def to_dicts(args: list[Any]) -> list[Any]:
    """`convert`'s result as `contract.arguments_from_msgpack` returns it: contract objects as dicts
    with RedMist's JSON names (all keys), converted slots as plain `str`, everything else as decoded.
    For the relay's watchers (the live state reads fields); pinned equal in tests/redmist/test_fastpack.py."""
    out: list[Any] = msgspec.to_builtins(args, builtin_types=_KEEP, enc_hook=_plain_text)
    return out


def supported_targets() -> frozenset[str]:
    return frozenset(FASTPACK.decoders)
