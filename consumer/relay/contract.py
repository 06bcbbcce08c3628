"""The RedMist consumer contract as data: MessagePack integer-keyed arrays <-> RedMist's named JSON.

Loaded once from `contract.json` (package data; a copy of /work/shared/redmist/contract.json).

RedMist sends every payload object over MessagePack as an array indexed by `[Key(n)]`, and over JSON
as an object with the names System.Text.Json writes. The two directions here make the MessagePack
form indistinguishable from the JSON form:

- `from_msgpack_array(type_name, arr)` -> dict with exactly the JSON names RedMist writes
  (`CarPositionPatch`: camelCase `number`, `overallPosition`; `CarPosition`: short `n`, `ovp`;
  `SessionState`/`SessionStatePatch`: camelCase). Every confirmed field is present (nil -> None,
  like SignalR's JSON which writes nulls); nested contract types are converted recursively; extra
  trailing elements from a newer server are ignored; a short array yields None for the missing keys.
- `to_msgpack_array(type_name, obj)` -> list of length highest key + 1 (None where absent).
- Wire conversions: DateTime <-> msgpack timestamp (Python `datetime`, UTC) / ISO string
  `YYYY-MM-DDTHH:MM:SS[.fffffff]Z` (fraction trimmed of trailing zeros, as .NET writes UTC
  DateTimes); TimeOnly <-> int64 ticks / `HH:MM:SS.fffffff`; byte[] <-> bin / base64; enums, ints,
  strings, bools, doubles and string dictionaries pass through.
- Fields the contract marks unconfirmed (no MessagePack key, e.g. GpsHealth) are not part of either form.
- `CLIENT_METHOD_ARGS` / `SERVER_METHOD_PARAMS`: argument types and parameter names per hub method;
  `arguments_from_msgpack(target, args)` / `arguments_to_msgpack(target, args)` convert a whole
  invocation's argument list (unknown targets pass through unchanged).
- `value_from_msgpack(type_expr, value)` / `value_to_msgpack(type_expr, value)` for any contract type
  expression such as `"List<EventListSummary>"` (REST bodies) or `"SessionState"`.

Precision note: Python `datetime` holds microseconds, so a DateTime's 7th fractional digit (100 ns)
does not survive the MessagePack direction; RedMist's own timestamps rarely carry it.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = [
    "CLIENT_METHOD_ARGS",
    "CONTRACT",
    "SERVER_METHOD_PARAMS",
    "Contract",
    "ContractError",
    "FieldSpec",
    "TypeSpec",
    "arguments_from_msgpack",
    "arguments_to_msgpack",
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
    hours, rem = divmod(seconds, 3600)
    minutes, secs = divmod(rem, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{frac:07d}"


def parse_time_only(text: str) -> int:
    m = _TIME_ONLY.match(text)
    if m is None:
        raise ContractError(f"not a TimeOnly: {text!r}")
    hours, minutes, secs = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if hours > 23 or minutes > 59 or secs > 59:
        raise ContractError(f"not a TimeOnly: {text!r}")
    frac = int((m.group(4) or "0").ljust(7, "0"))
    return (hours * 3600 + minutes * 60 + secs) * _TICKS_PER_SECOND + frac


def _dt_from_wire(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return format_datetime(value)
    ext_code = getattr(value, "code", None)
    if ext_code == -1:  # an undecoded msgspec.msgpack.Ext timestamp
        return format_datetime(_timestamp_ext_to_datetime(bytes(value.data)))
    if isinstance(value, str):
        return value
    raise ContractError(f"expected a MessagePack timestamp, got {type(value).__name__}")


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
    if isinstance(value, bool):
        raise ContractError("expected TimeOnly ticks, got bool")
    if isinstance(value, int):
        return format_time_only(value)
    if isinstance(value, str):  # tolerate a server that already sends the string form
        return value
    raise ContractError(f"expected TimeOnly ticks, got {type(value).__name__}")


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
    raise ContractError(f"expected bin, got {type(value).__name__}")


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


class Contract:
    """The parsed contract: types, enums, hub methods; compiled converters per type expression."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw
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
        self._from_cache: dict[str, Converter | None] = {}
        self._to_cache: dict[str, Converter | None] = {}
        self._obj_from: dict[str, Converter] = {}
        self._obj_to: dict[str, Converter] = {}

    @classmethod
    def load(cls) -> Contract:
        text = resources.files("consumer.relay").joinpath("contract.json").read_text(encoding="utf-8")
        return cls(json.loads(text))

    def type(self, name: str) -> TypeSpec:
        try:
            return self.types[name]
        except KeyError:
            raise ContractError(f"unknown contract type {name!r}") from None

    # -- converters; None means "pass through unchanged" (the fast path for scalars)

    def from_converter(self, type_expr: str) -> Converter | None:
        if type_expr not in self._from_cache:
            self._from_cache[type_expr] = self._build(type_expr, outbound=False)
        return self._from_cache[type_expr]

    def to_converter(self, type_expr: str) -> Converter | None:
        if type_expr not in self._to_cache:
            self._to_cache[type_expr] = self._build(type_expr, outbound=True)
        return self._to_cache[type_expr]

    def _build(self, type_expr: str, *, outbound: bool) -> Converter | None:
        expr = type_expr.strip()
        if expr.endswith("?"):
            expr = expr[:-1]
        element: str | None = None
        if expr.endswith("[]") and expr != "byte[]":
            element = expr[:-2]
        elif expr.startswith("List<") and expr.endswith(">"):
            element = expr[5:-1]
        if element is not None:
            inner = self._build(element, outbound=outbound)
            if inner is None:
                return None
            conv = inner

            def convert_list(value: Any) -> Any:
                if value is None:
                    return None
                if not isinstance(value, list | tuple):
                    raise ContractError(f"expected a list for {type_expr}, got {type(value).__name__}")
                return [None if v is None else conv(v) for v in value]

            return convert_list
        if expr.startswith("Dictionary<"):
            return None
        if expr == "DateTime":
            return _dt_to_wire if outbound else _dt_from_wire
        if expr == "TimeOnly":
            return _time_to_wire if outbound else _time_from_wire
        if expr == "byte[]":
            return _bytes_to_wire if outbound else _bytes_from_wire
        if expr in self.types:
            return self._object_converter(expr, outbound=outbound)
        return None  # int, uint, ushort, double, bool, string, enums

    def _object_converter(self, name: str, *, outbound: bool) -> Converter:
        cache = self._obj_to if outbound else self._obj_from
        if name in cache:
            return cache[name]
        spec = self.types[name]

        # Registered before the field converters are built so that recursive types terminate.
        def convert(value: Any) -> Any:
            return impl(value)

        cache[name] = convert
        plan = [(f.key, f.json_name, self._build(f.type, outbound=outbound)) for f in spec.fields]
        length = spec.array_length
        names = {f.json_name for f in spec.fields}

        if outbound:

            def impl(value: Any) -> Any:
                if value is None:
                    return None
                if not isinstance(value, Mapping):
                    raise ContractError(f"expected an object for {name}, got {type(value).__name__}")
                unknown = [k for k in value if k not in names]
                if unknown:
                    raise ContractError(f"{name} has no field(s) {sorted(unknown)!r}")
                arr: list[Any] = [None] * length
                for key, json_name, conv in plan:
                    v = value.get(json_name)
                    if v is not None and conv is not None:
                        v = conv(v)
                    arr[key] = v
                return arr

        else:

            def impl(value: Any) -> Any:
                if value is None:
                    return None
                if not isinstance(value, list | tuple):
                    raise ContractError(f"expected an array for {name}, got {type(value).__name__}")
                n = len(value)
                out: dict[str, Any] = {}
                for key, json_name, conv in plan:
                    v = value[key] if key < n else None
                    if v is not None and conv is not None:
                        v = conv(v)
                    out[json_name] = v
                return out

        return convert


CONTRACT: Contract = Contract.load()
CLIENT_METHOD_ARGS: dict[str, list[str]] = CONTRACT.client_method_args
SERVER_METHOD_PARAMS: dict[str, list[str]] = CONTRACT.server_method_params


def json_names(type_name: str) -> list[str]:
    """The JSON names of a contract type's confirmed fields, in MessagePack key order."""
    return [f.json_name for f in CONTRACT.type(type_name).fields]


def from_msgpack_array(type_name: str, arr: Sequence[Any]) -> dict[str, Any]:
    """An integer-keyed MessagePack array of `type_name` -> the dict RedMist's JSON protocol carries."""
    CONTRACT.type(type_name)
    result: dict[str, Any] = CONTRACT._object_converter(type_name, outbound=False)(arr)
    return result


def to_msgpack_array(type_name: str, obj: Mapping[str, Any]) -> list[Any]:
    """A dict with RedMist's JSON names -> the integer-keyed array (length = highest key + 1)."""
    CONTRACT.type(type_name)
    result: list[Any] = CONTRACT._object_converter(type_name, outbound=True)(obj)
    return result


def value_from_msgpack(type_expr: str, value: Any) -> Any:
    """Any contract type expression (`SessionState`, `List<EventListSummary>`, `DateTime?`, ...)."""
    conv = CONTRACT.from_converter(type_expr)
    return value if conv is None or value is None else conv(value)


def value_to_msgpack(type_expr: str, value: Any) -> Any:
    conv = CONTRACT.to_converter(type_expr)
    return value if conv is None or value is None else conv(value)


def arguments_from_msgpack(target: str, args: Sequence[Any]) -> list[Any]:
    """Convert a client method's MessagePack arguments to the JSON protocol's named form."""
    types = CLIENT_METHOD_ARGS.get(target)
    if types is None:
        return list(args)
    return [value_from_msgpack(t, a) if i < len(types) else a for i, (t, a) in enumerate(_pad(types, args))]


def arguments_to_msgpack(target: str, args: Sequence[Any]) -> list[Any]:
    """Convert a client method's named (JSON-form) arguments to MessagePack integer-keyed arrays."""
    types = CLIENT_METHOD_ARGS.get(target)
    if types is None:
        return list(args)
    return [value_to_msgpack(t, a) if i < len(types) else a for i, (t, a) in enumerate(_pad(types, args))]


def _pad(types: list[str], args: Sequence[Any]) -> list[tuple[str, Any]]:
    return [(types[i] if i < len(types) else "", a) for i, a in enumerate(args)]
