"""The RedMist consumer contract as data: MessagePack integer-keyed arrays <-> RedMist's named JSON.

Loaded once from `contract.json` (package data; a copy of /work/shared/redmist/contract.json).
Size (about 770 lines, over the 700 guideline): both directions of every conversion and the compiled
per-type converters read the same type tables; split in two, each half would import the other.

RedMist sends every payload object over MessagePack as an array indexed by `[Key(n)]`, and over JSON
as an object with the names System.Text.Json writes. The two directions here make the MessagePack
form indistinguishable from the JSON form:

- `from_msgpack_array(type_name, arr)` -> dict with exactly the JSON names RedMist writes
  (`CarPositionPatch`: camelCase `number`, `overallPosition`; `CarPosition`: short `n`, `ovp`;
  `SessionState`/`SessionStatePatch`: camelCase). Every confirmed field is present (nil -> None,
  like SignalR's JSON which writes nulls); nested contract types are converted recursively; a short
  array yields None for the missing keys.
- **Nothing is dropped** (inbound directions): array slots beyond the contract (a newer RedMist
  server) are kept after the known fields under the generic name `key<n>` (`n` = the MessagePack
  key, e.g. `key69`; a timestamp becomes its ISO string, anything else is passed as received),
  counted per type in `Contract.extra_slots` and logged once per type with the contract version to
  update. A value in a form the contract does not expect (a string where ticks were expected, a map
  where an array was) is passed through as received and counted in `Contract.unexpected_values`;
  the conversion never raises for it. The outbound direction (`to_msgpack_array`) stays strict.
- `to_msgpack_array(type_name, obj)` -> list of length highest key + 1 (None where absent).
- Wire conversions: DateTime <-> msgpack timestamp (Python `datetime`, UTC) / ISO string
  `YYYY-MM-DDTHH:MM:SS[.fffffff]Z` (fraction trimmed of trailing zeros, as .NET writes UTC
  DateTimes); TimeOnly <-> int64 ticks / `HH:MM:SS.fffffff`; byte[] <-> bin / base64; enums, ints,
  strings, bools, doubles and string dictionaries pass through.
- Fields the contract marks unconfirmed (no MessagePack key) are not part of either form.
- `CLIENT_METHOD_ARGS` / `SERVER_METHOD_PARAMS`: argument types and parameter names per hub method;
  `arguments_from_msgpack(target, args)` / `arguments_to_msgpack(target, args)` convert a whole
  invocation's argument list (unknown targets pass through unchanged).
- `value_from_msgpack(type_expr, value)` / `value_to_msgpack(type_expr, value)` for any contract type
  expression such as `"List<EventListSummary>"` (REST bodies) or `"SessionState"`.
- `encodable_arguments_from_msgpack(target, args)`: the relay's hot path. Same content as
  `arguments_from_msgpack`, but contract objects become msgspec Structs (one generated class per
  contract type: fields in MessagePack key order, renamed to the JSON names, `gc=False`) instead of
  dicts. `msgspec.json` encodes them to exactly the bytes the dict form encodes to, about 4x faster
  to build and 2x faster to encode. Use it when the result is only encoded; use the dict form when
  code reads the fields.

Speed: every object converter is compiled once per type into a table: the JSON names in key order and
the few slots that need a converter (timestamps, TimeOnly, byte[], nested contract types; enums,
numbers, strings, booleans and dictionaries need none). A dict is then `dict(zip(names, arr))` plus
those slots; a Struct is `cls(*arr)` plus those slots. nil slots are never converted. Types whose keys
are not 0..n-1 without gaps (none in RedMist's contract today) use the plain per-field loop.

Precision note: Python `datetime` holds microseconds, so a DateTime's 7th fractional digit (100 ns)
does not survive the MessagePack direction; RedMist's own timestamps rarely carry it.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import keyword
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import msgspec

from consumer.logs import get_logger

__all__ = [
    "CLIENT_METHOD_ARGS",
    "CONTRACT",
    "EXTRA_SLOT_PREFIX",
    "SERVER_METHOD_PARAMS",
    "STATS",
    "Contract",
    "ContractError",
    "ContractStats",
    "FieldSpec",
    "TypeSpec",
    "arguments_from_msgpack",
    "arguments_to_msgpack",
    "contract_version",
    "encodable_arguments_from_msgpack",
    "encodable_value_from_msgpack",
    "format_datetime",
    "format_time_only",
    "from_msgpack_array",
    "json_names",
    "parse_datetime",
    "parse_time_only",
    "to_msgpack_array",
    "value_from_msgpack",
    "value_to_msgpack",
]

log = get_logger(__name__)

EXTRA_SLOT_PREFIX = "key"  # slots beyond the contract: `key<n>` (documented in docs/envelope.schema.json)
_TICKS_PER_SECOND = 10_000_000
_TICKS_PER_DAY = 86_400 * _TICKS_PER_SECOND
_UTC = dt.UTC
_TIME_ONLY = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?$")
_DATETIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})?$"
)


class ContractError(ValueError):
    """A value does not fit the contract (unknown type or field name, malformed wire value)."""


Converter = Callable[[Any], Any]
StructType = type[msgspec.Struct]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    key: int
    json_name: str
    csharp_name: str
    type: str
    nullable: bool


@dataclass(frozen=True, slots=True)
class TypeSpec:
    name: str
    fields: tuple[FieldSpec, ...]  # confirmed fields, sorted by MessagePack key
    array_length: int  # highest key + 1

    def field_by_json_name(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.json_name == name:
                return f
        raise ContractError(f"{self.name} has no field {name!r}")


# --- scalar wire conversions ------------------------------------------------------------------------


def format_datetime(value: dt.datetime) -> str:
    """The ISO form .NET's System.Text.Json writes for a UTC DateTime (fraction trimmed, `Z`)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=_UTC)
    value = value.astimezone(_UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += "." + f"{value.microsecond:06d}0".rstrip("0")
    return text + "Z"


def parse_datetime(text: str) -> dt.datetime:
    """ISO-8601 string (as RedMist's JSON carries it) -> aware UTC datetime (no offset = UTC)."""
    m = _DATETIME.match(text)
    if m is None:
        raise ContractError(f"not an ISO-8601 date-time: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction, zone = m.group(7), m.group(8)
    micro = int((fraction or "0").ljust(6, "0")[:6])
    tz = _UTC
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        tz = dt.timezone(sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        return dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=tz).astimezone(_UTC)
    except ValueError as err:
        raise ContractError(f"not a valid date-time: {text!r}") from err


def format_time_only(ticks: int) -> str:
    """TimeOnly ticks since midnight -> `HH:MM:SS.fffffff` (System.Text.Json's TimeOnly form)."""
    if not 0 <= ticks < _TICKS_PER_DAY:
        raise ContractError(f"TimeOnly ticks out of range: {ticks}")
    seconds, frac = divmod(ticks, _TICKS_PER_SECOND)
    return "%02d:%02d:%02d.%07d" % (seconds // 3600, seconds // 60 % 60, seconds % 60, frac)  # noqa: UP031 (hot path: %-formatting is about twice as fast here)


def parse_time_only(text: str) -> int:
    m = _TIME_ONLY.match(text)
    if m is None:
        raise ContractError(f"not a TimeOnly: {text!r}")
    hours, minutes, secs = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if hours > 23 or minutes > 59 or secs > 59:
        raise ContractError(f"not a TimeOnly: {text!r}")
    frac = int((m.group(4) or "0").ljust(7, "0"))
    return (hours * 3600 + minutes * 60 + secs) * _TICKS_PER_SECOND + frac


class ContractStats:
    """What the inbound conversion kept that the contract does not describe (read by /metrics).

    `extra_slots[type]`: objects that arrived with more array slots than the contract knows;
    `unexpected_values[type]`: values in a form the contract does not expect (passed through)."""

    __slots__ = ("extra_slots", "unexpected_values", "warned")

    def __init__(self) -> None:
        self.extra_slots: dict[str, int] = {}
        self.unexpected_values: dict[str, int] = {}
        self.warned: set[str] = set()


STATS = ContractStats()


def _unexpected(type_name: str, value: Any) -> Any:
    """A value the contract does not expect in this form: counted, passed through as received."""
    counts = STATS.unexpected_values
    counts[type_name] = counts.get(type_name, 0) + 1
    if f"unexpected:{type_name}" not in STATS.warned:
        STATS.warned.add(f"unexpected:{type_name}")
        log.warning(
            "redmist.contract_unexpected_form",
            type=type_name,
            got=type(value).__name__,
        )
    return value


def _extra_value(value: Any) -> Any:
    """A slot beyond the contract: a timestamp becomes the ISO form DateTimes take, the rest is as sent."""
    if isinstance(value, dt.datetime):
        return format_datetime(value)
    if getattr(value, "code", None) == -1 and isinstance(getattr(value, "data", None), bytes):
        try:
            return format_datetime(_timestamp_ext_to_datetime(value.data))
        except ContractError:
            return value
    return value


def _add_extras(type_name: str, out: dict[str, Any], value: Sequence[Any], start: int, version: str) -> None:
    """Slots `start..` of `value` (beyond the contract) -> `out["key<n>"]`, counted, warned once per type."""
    n = len(value)
    for key in range(start, n):
        out[f"{EXTRA_SLOT_PREFIX}{key}"] = _extra_value(value[key])
    counts = STATS.extra_slots
    counts[type_name] = counts.get(type_name, 0) + 1
    if type_name not in STATS.warned:
        STATS.warned.add(type_name)
        log.warning(
            "redmist.contract_extra_fields",
            type=type_name,
            slots=n,
            known=start,
            names=f"{EXTRA_SLOT_PREFIX}{start}..{EXTRA_SLOT_PREFIX}{n - 1}",
            contract=version,
            action="update consumer/redmist/contract.json from the current RedMist contract",
        )


def _dt_from_wire(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return format_datetime(value)
    ext_code = getattr(value, "code", None)
    if ext_code == -1:  # an undecoded msgspec.msgpack.Ext timestamp
        try:
            return format_datetime(_timestamp_ext_to_datetime(bytes(value.data)))
        except ContractError:
            return _unexpected("DateTime", value)
    if isinstance(value, str):
        return value
    return _unexpected("DateTime", value)


def _timestamp_ext_to_datetime(data: bytes) -> dt.datetime:
    if len(data) == 4:
        seconds, nanos = int.from_bytes(data, "big"), 0
    elif len(data) == 8:
        word = int.from_bytes(data, "big")
        nanos, seconds = word >> 34, word & ((1 << 34) - 1)
    elif len(data) == 12:
        nanos = int.from_bytes(data[:4], "big")
        seconds = int.from_bytes(data[4:], "big", signed=True)
    else:
        raise ContractError("malformed MessagePack timestamp")
    epoch = dt.datetime(1970, 1, 1, tzinfo=_UTC)
    return epoch + dt.timedelta(seconds=seconds, microseconds=nanos // 1000)


def _dt_to_wire(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=_UTC)
    if isinstance(value, str):
        return parse_datetime(value)
    raise ContractError(f"expected an ISO date-time string, got {type(value).__name__}")


def _time_from_wire(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _TICKS_PER_DAY:
        return format_time_only(value)
    if isinstance(value, str):  # tolerate a server that already sends the string form
        return value
    return _unexpected("TimeOnly", value)


def _time_to_wire(value: Any) -> Any:
    if isinstance(value, str):
        return parse_time_only(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ContractError(f"expected a TimeOnly string, got {type(value).__name__}")


def _bytes_from_wire(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, str):
        return value
    return _unexpected("byte[]", value)


def _bytes_to_wire(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error as err:
            raise ContractError("expected a base64 string") from err
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise ContractError(f"expected a base64 string, got {type(value).__name__}")


# --- the contract ------------------------------------------------------------------------------------

_EXTRA_NAME = re.compile(rf"^{EXTRA_SLOT_PREFIX}(\d+)$")
_VERSION = re.compile(r"timing-common (\d+\.\d+\.\d+)")


def contract_version(raw: Mapping[str, Any]) -> str:
    """`timing-common 1.17.0`: the highest timing-common version the contract's array notes name."""
    found = set()
    for t in raw.get("types", {}).values():
        note = (t.get("messagePack") or {}).get("note") or ""
        found.update(_VERSION.findall(note))
    if not found:
        return "timing-common (unknown version)"
    best = max(found, key=lambda v: tuple(int(p) for p in v.split(".")))
    return f"timing-common {best}"


class Contract:
    """The parsed contract: types, enums, hub methods; compiled converters per type expression."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw
        self.version = contract_version(raw)
        self.types: dict[str, TypeSpec] = {}
        for name, t in raw["types"].items():
            fields = sorted(
                (
                    FieldSpec(
                        key=int(f["messagePackKey"]),
                        json_name=str(f["jsonName"]),
                        csharp_name=str(f["csharpName"]),
                        type=str(f["type"]),
                        nullable=bool(f["nullable"]),
                    )
                    for f in t["fields"]
                    if f.get("messagePackKey") is not None and f.get("jsonName")
                ),
                key=lambda f: f.key,
            )
            length = fields[-1].key + 1 if fields else 0
            self.types[name] = TypeSpec(name=name, fields=tuple(fields), array_length=length)
        self.enums: dict[str, dict[str, int]] = {
            name: dict(e["values"]) for name, e in raw.get("enums", {}).items()
        }
        self.client_method_args: dict[str, list[str]] = {
            m["name"]: list(m["args"]) for m in raw["clientMethods"]
        }
        self.server_method_params: dict[str, list[str]] = {
            m["name"]: [p["name"] for p in m["params"]] for m in raw["serverMethods"]
        }
        self._cache: dict[Mode, dict[str, Converter | None]] = {"from": {}, "to": {}, "encodable": {}}
        self._objects: dict[Mode, dict[str, Converter]] = {"from": {}, "to": {}, "encodable": {}}
        self._structs: dict[str, StructType] = {}
        self._struct_parts: dict[str, StructParts] = {}
        self._arguments: dict[Mode, dict[str, tuple[Converter | None, ...] | None]] = {
            "from": {},
            "encodable": {},
        }

    @classmethod
    def load(cls) -> Contract:
        text = resources.files("consumer.redmist").joinpath("contract.json").read_text(encoding="utf-8")
        return cls(json.loads(text))

    def type(self, name: str) -> TypeSpec:
        try:
            return self.types[name]
        except KeyError:
            raise ContractError(f"unknown contract type {name!r}") from None

    # -- converters; None means "pass through unchanged" (the fast path for scalars)

    def from_converter(self, type_expr: str) -> Converter | None:
        """MessagePack wire value -> the JSON form (dicts for contract objects)."""
        return self.converter(type_expr, "from")

    def to_converter(self, type_expr: str) -> Converter | None:
        """The JSON form -> MessagePack wire value (integer-keyed arrays)."""
        return self.converter(type_expr, "to")

    def encodable_converter(self, type_expr: str) -> Converter | None:
        """MessagePack wire value -> an object msgspec.json encodes to the JSON form (Structs)."""
        return self.converter(type_expr, "encodable")

    def converter(self, type_expr: str, mode: Mode) -> Converter | None:
        cache = self._cache[mode]
        if type_expr not in cache:
            cache[type_expr] = self._build(type_expr, mode)
        return cache[type_expr]

    def argument_converters(self, target: str, mode: Mode) -> tuple[Converter | None, ...] | None:
        """Per-argument converters of a client method (None: unknown target, pass through)."""
        cache = self._arguments[mode]
        if target not in cache:
            types = self.client_method_args.get(target)
            cache[target] = None if types is None else tuple(self.converter(t, mode) for t in types)
        return cache[target]

    def struct_type(self, name: str) -> StructType:
        """The generated Struct of a contract type: fields in key order, encoded with the JSON names.

        Attribute names are the JSON names where those are Python identifiers (`eventId`, `number`),
        else `k<key>` (`class` -> `k4`). Every field defaults to None and accepts any value.
        """
        cls = self._structs.get(name)
        if cls is None:
            spec = self.type(name)
            attrs = [_attr_name(f) for f in spec.fields]
            cls = msgspec.defstruct(
                f"{name}Struct",
                [(a, Any, None) for a in attrs],
                rename={a: f.json_name for a, f in zip(attrs, spec.fields, strict=True)},
                gc=False,  # only acyclic decoded values inside: no need for the cyclic GC to track it
                module=__name__,
            )
            self._structs[name] = cls
        return cls

    def _build(self, type_expr: str, mode: Mode) -> Converter | None:
        expr = type_expr.strip()
        if expr.endswith("?"):
            expr = expr[:-1]
        element: str | None = None
        if expr.endswith("[]") and expr != "byte[]":
            element = expr[:-2]
        elif expr.startswith("List<") and expr.endswith(">"):
            element = expr[5:-1]
        if element is not None:
            inner = self._build(element, mode)
            if inner is None:
                return None
            parts = self._struct_parts.get(element.strip().removesuffix("?"))
            if mode == "encodable" and parts is not None:
                return _struct_list(type_expr, parts)  # the payload lists: one call per list, not per item
            conv = inner
            outbound = mode == "to"

            def convert_list(value: Any) -> Any:
                if value is None:
                    return None
                if not isinstance(value, list | tuple):
                    if outbound:
                        raise ContractError(f"expected a list for {type_expr}, got {type(value).__name__}")
                    return _unexpected(type_expr, value)
                return [None if v is None else conv(v) for v in value]

            return convert_list
        if expr.startswith("Dictionary<"):
            return None
        outbound = mode == "to"
        if expr == "DateTime":
            return _dt_to_wire if outbound else _dt_from_wire
        if expr == "TimeOnly":
            return _time_to_wire if outbound else _time_from_wire
        if expr == "byte[]":
            return _bytes_to_wire if outbound else _bytes_from_wire
        if expr in self.types:
            return self._object_converter(expr, mode)
        return None  # int, uint, ushort, double, bool, string, enums

    def _object_converter(self, name: str, mode: Mode) -> Converter:
        cache = self._objects[mode]
        if name in cache:
            return cache[name]
        spec = self.types[name]
        impl: Converter | None = None

        # Registered before the field converters are built so that recursive types terminate; the
        # cache then holds `impl` itself (one call less per object for everything built afterwards).
        def convert(value: Any) -> Any:
            assert impl is not None
            return impl(value)

        cache[name] = convert
        plan = [(f.key, f.json_name, self._build(f.type, mode)) for f in spec.fields]
        if mode == "to":
            impl = _outbound_object(name, spec, plan)
        elif tuple(f.key for f in spec.fields) != tuple(range(len(spec.fields))):
            # a gap in the keys: no positional fast path
            impl = _inbound_object_by_key(name, spec, plan, self.version)
        elif mode == "from":
            impl = _inbound_object_dict(name, spec, plan, self.version)
        else:
            # objects longer than the contract (a newer server) take the dict form: same bytes, extras kept
            overflow = self._object_converter(name, "from")
            parts = _struct_parts(name, spec, plan, self.struct_type(name), overflow)
            impl = _inbound_object_struct(parts)
            self._struct_parts[name] = parts
        cache[name] = impl
        return impl


Mode = Literal["from", "to", "encodable"]
Plan = list[tuple[int, str, "Converter | None"]]


def _attr_name(f: FieldSpec) -> str:
    name = f.json_name
    return name if name.isidentifier() and not keyword.iskeyword(name) else f"k{f.key}"


def _outbound_object(name: str, spec: TypeSpec, plan: Plan) -> Converter:
    length = spec.array_length
    names = {f.json_name for f in spec.fields}

    def impl(value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ContractError(f"expected an object for {name}, got {type(value).__name__}")
        unknown = [k for k in value if k not in names]
        extras: dict[int, Any] = {}
        for k in unknown:  # `key<n>` beyond the contract: what a newer server sends in slot n
            m = _EXTRA_NAME.match(k)
            if m is None or int(m.group(1)) < length:
                raise ContractError(f"{name} has no field(s) {sorted(unknown)!r}")
            extras[int(m.group(1))] = value[k]
        arr: list[Any] = [None] * (max(extras) + 1 if extras else length)
        for key, json_name, conv in plan:
            v = value.get(json_name)
            if v is not None and conv is not None:
                v = conv(v)
            arr[key] = v
        for key, v in extras.items():
            arr[key] = v
        return arr

    return impl


def _inbound_object_by_key(name: str, spec: TypeSpec, plan: Plan, version: str) -> Converter:
    """The general form (any key layout): one lookup per field; non-nil slots the contract has no
    field for (in a gap, or beyond the last key) are kept as `key<n>`."""
    known = {key for key, _, _ in plan}
    length = spec.array_length

    def impl(value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, list | tuple):
            return _unexpected(name, value)
        n = len(value)
        out: dict[str, Any] = {}
        for key, json_name, conv in plan:
            v = value[key] if key < n else None
            if v is not None and conv is not None:
                v = conv(v)
            out[json_name] = v
        for key in range(min(n, length)):
            if key not in known and value[key] is not None:
                out[f"{EXTRA_SLOT_PREFIX}{key}"] = _extra_value(value[key])
        if n > length:
            _add_extras(name, out, value, length, version)
        return out

    return impl


def _inbound_object_dict(name: str, spec: TypeSpec, plan: Plan, version: str) -> Converter:
    """Keys 0..n-1: `dict(zip(names, arr))`, then only the slots that need a converter."""
    names = tuple(json_name for _, json_name, _ in plan)
    length = len(names)
    fixups = tuple((key, json_name, conv) for key, json_name, conv in plan if conv is not None)

    def impl(value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, list | tuple):
            return _unexpected(name, value)
        n = len(value)
        out = dict(zip(names, value, strict=False))
        if n < length:  # a short array: the missing fields are None
            for json_name in names[n:]:
                out[json_name] = None
        for key, json_name, conv in fixups:
            if key < n:
                v = value[key]
                if v is not None:
                    out[json_name] = conv(v)
        if n > length:  # a newer server: nothing dropped
            _add_extras(name, out, value, length, version)
        return out

    return impl


@dataclass(frozen=True, slots=True)
class StructParts:
    """What builds one contract object as a Struct (types with keys 0..n-1)."""

    name: str
    cls: StructType
    length: int  # fields (= array length)
    fixups: tuple[tuple[int, str, Converter], ...]  # (key, attribute, converter) of converted slots
    last_fixup: int  # highest key in fixups (-1: none)
    overflow: Converter  # the dict form, for arrays longer than the contract


def _struct_parts(name: str, spec: TypeSpec, plan: Plan, cls: StructType, overflow: Converter) -> StructParts:
    attrs = [_attr_name(f) for f in spec.fields]
    fixups = tuple((key, attrs[i], conv) for i, (key, _, conv) in enumerate(plan) if conv is not None)
    return StructParts(name, cls, len(plan), fixups, max((k for k, _, _ in fixups), default=-1), overflow)


def _inbound_object_struct(parts: StructParts) -> Converter:
    """Keys 0..n-1: `cls(*arr)` (positional, C), then only the slots that need a converter."""
    name, cls, length, fixups, overflow = parts.name, parts.cls, parts.length, parts.fixups, parts.overflow

    def impl(value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, list | tuple):
            return _unexpected(name, value)
        n = len(value)
        if n > length:  # a newer server: the dict form keeps the extra slots
            return overflow(value)
        obj = cls(*value)  # missing trailing fields default to None
        for key, attr, conv in fixups:
            if key < n:
                v = value[key]
                if v is not None:
                    setattr(obj, attr, conv(v))
        return obj

    return impl


def _struct_list(type_expr: str, parts: StructParts) -> Converter:
    """A list of one contract object type (`CarPositionPatch[]`): `_inbound_object_struct` inlined."""
    name, cls, length, fixups, last = parts.name, parts.cls, parts.length, parts.fixups, parts.last_fixup
    overflow = parts.overflow

    def convert_list(values: Any) -> Any:
        if values is None:
            return None
        if not isinstance(values, list | tuple):
            return _unexpected(type_expr, values)
        out: list[Any] = []
        append = out.append
        for value in values:
            if value is None:
                append(None)
                continue
            if not isinstance(value, list | tuple):
                append(_unexpected(name, value))
                continue
            n = len(value)
            if n > length:  # a newer server: the dict form keeps the extra slots
                append(overflow(value))
                continue
            obj = cls(*value)
            if n > last:  # every converted slot is present (the usual full-length array)
                for key, attr, conv in fixups:
                    v = value[key]
                    if v is not None:
                        setattr(obj, attr, conv(v))
            else:
                for key, attr, conv in fixups:
                    if key < n:
                        v = value[key]
                        if v is not None:
                            setattr(obj, attr, conv(v))
            append(obj)
        return out

    return convert_list


CONTRACT: Contract = Contract.load()
CLIENT_METHOD_ARGS: dict[str, list[str]] = CONTRACT.client_method_args
SERVER_METHOD_PARAMS: dict[str, list[str]] = CONTRACT.server_method_params


def json_names(type_name: str) -> list[str]:
    """The JSON names of a contract type's confirmed fields, in MessagePack key order."""
    return [f.json_name for f in CONTRACT.type(type_name).fields]


def from_msgpack_array(type_name: str, arr: Sequence[Any]) -> dict[str, Any]:
    """An integer-keyed MessagePack array of `type_name` -> the dict RedMist's JSON protocol carries."""
    CONTRACT.type(type_name)
    result: dict[str, Any] = CONTRACT._object_converter(type_name, "from")(arr)
    return result


def to_msgpack_array(type_name: str, obj: Mapping[str, Any]) -> list[Any]:
    """A dict with RedMist's JSON names -> the integer-keyed array (length = highest key + 1)."""
    CONTRACT.type(type_name)
    result: list[Any] = CONTRACT._object_converter(type_name, "to")(obj)
    return result


def value_from_msgpack(type_expr: str, value: Any) -> Any:
    """Any contract type expression (`SessionState`, `List<EventListSummary>`, `DateTime?`, ...)."""
    conv = CONTRACT.from_converter(type_expr)
    return value if conv is None or value is None else conv(value)


def encodable_value_from_msgpack(type_expr: str, value: Any) -> Any:
    """As `value_from_msgpack`, with contract objects as Structs (encode with msgspec, don't read)."""
    conv = CONTRACT.encodable_converter(type_expr)
    return value if conv is None or value is None else conv(value)


def value_to_msgpack(type_expr: str, value: Any) -> Any:
    conv = CONTRACT.to_converter(type_expr)
    return value if conv is None or value is None else conv(value)


def _convert_arguments(convs: tuple[Converter | None, ...] | None, args: Sequence[Any]) -> list[Any]:
    if convs is None:
        return list(args)
    n = len(convs)
    if n == 1 and len(args) == 1:  # the common shape (one payload argument)
        conv, a = convs[0], args[0]
        return [a if conv is None or a is None else conv(a)]
    out = list(args)
    for i in range(min(n, len(out))):
        conv, a = convs[i], out[i]
        if conv is not None and a is not None:
            out[i] = conv(a)
    return out


def arguments_from_msgpack(target: str, args: Sequence[Any]) -> list[Any]:
    """Convert a client method's MessagePack arguments to the JSON protocol's named form.

    Arguments beyond the method's declared ones, and every argument of an unknown target, pass through.
    """
    return _convert_arguments(CONTRACT.argument_converters(target, "from"), args)


def encodable_arguments_from_msgpack(target: str, args: Sequence[Any]) -> list[Any]:
    """As `arguments_from_msgpack`, but contract objects are Structs: `msgspec.json` encodes the result
    to the same bytes as the dict form. The relay's MessagePack hot path."""
    return _convert_arguments(CONTRACT.argument_converters(target, "encodable"), args)


def arguments_to_msgpack(target: str, args: Sequence[Any]) -> list[Any]:
    """Convert a client method's named (JSON-form) arguments to MessagePack integer-keyed arrays."""
    types = CLIENT_METHOD_ARGS.get(target)
    if types is None:
        return list(args)
    return [value_to_msgpack(t, a) if i < len(types) else a for i, (t, a) in enumerate(_pad(types, args))]


def _pad(types: list[str], args: Sequence[Any]) -> list[tuple[str, Any]]:
    return [(types[i] if i < len(types) else "", a) for i, a in enumerate(args)]
