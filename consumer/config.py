"""Configuration: TOML file + `EVENT_CONSUMER__SECTION__KEY` environment overrides, validated at load.

Every mistake is a `ConfigError` naming the file and the dotted key (e.g. `auth.timeout_seconds`) and
what was expected; secret values are never echoed. Sections are msgspec Structs, so unknown keys are
errors and types are checked strictly.
"""

from __future__ import annotations

import os
import re
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from consumer.auth.settings import AuthConfig
from consumer.errors import ConfigError
from consumer.secret import Secret
from consumer.signalr.proxies import redact_proxy, validate_proxy

ENV_PREFIX = "EVENT_CONSUMER__"


class OnConnect(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A hub invocation performed after every connect and reconnect, in order."""

    method: str
    arguments: list[Any] = msgspec.field(default_factory=list)


class HubConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str = "https://api.redmist.racing/status/event-status"
    name: str = "redmist"
    protocol: Literal["json", "messagepack"] = "json"
    skip_negotiation: bool = True
    # The real hub reads the Authorization header; the query string (`access_token`) only on request,
    # so that tokens do not land in proxy and access logs.
    token_transport: Literal["header", "query", "both"] = "header"
    stateful_reconnect: bool = False
    handshake_timeout_seconds: float = 15.0
    keepalive_interval_seconds: float = 15.0
    server_timeout_seconds: float = 30.0
    reconnect: Literal["daemon", "official", "never"] = "daemon"
    # The cap of the jittered reconnect backoff = the recovery bound after an outage of any length.
    reconnect_max_delay_seconds: float = 5.0
    # A connection is healthy once it stayed up this long; shorter ones back off like failures.
    healthy_after_seconds: float = 10.0
    # "env" (HTTPS_PROXY/HTTP_PROXY/NO_PROXY, as httpx), "off", or an http(s):// proxy URL.
    proxy: str = "env"
    retry_initial_start: bool = True
    max_message_bytes: int = 1024 * 1024
    # Decoded, not yet relayed invocations (wire bytes); the receive loop stops reading at the bound.
    max_dispatch_bytes: int = 16 * 1024 * 1024
    # Stateful reconnect: sent, not yet acknowledged messages kept for replay (sends wait at the bound).
    max_replay_bytes: int = 100_000
    # Targets counted by name in metrics besides RedMist's and the sinks' filters (others: `other`).
    known_targets: list[str] = msgspec.field(default_factory=list)
    allow_insecure_http: bool = False
    on_connect: list[OnConnect] = msgspec.field(default_factory=list)


class InCar(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    event: int
    car: str


class RedMistConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The RedMist profile: subscriptions, snapshots over REST, live state. Empty `events` = off."""

    events: list[int] = msgspec.field(default_factory=list)
    # eventId (as a string key, TOML tables need string keys) -> access code for private events.
    access_codes: dict[str, Secret] = msgspec.field(default_factory=dict)
    # The same from environment variables / files (eventId -> variable name / path), see load_access_codes.
    access_codes_env: dict[str, str] = msgspec.field(default_factory=dict)
    access_codes_file: dict[str, str] = msgspec.field(default_factory=dict)
    control_logs: bool = False
    in_car: list[InCar] = msgspec.field(default_factory=list)
    rest_url: str | None = None  # default: derived from hub.url ("https://host/status")
    snapshot_format: Literal["json", "messagepack"] = "json"
    # RedMist allows about one snapshot call per 0.9 s per IP with a token (3 s anonymous).
    snapshot_min_interval_seconds: float = 1.0
    snapshot_timeout_seconds: float = 10.0  # total deadline of one snapshot read (headers and body)
    snapshot_max_bytes: int = 16 * 1024 * 1024
    # Snapshot resyncs (RedMist's UI: after a silent 5 s, every 5 min); 0 turns one off.
    resync_quiet_seconds: float = 5.0
    resync_every_seconds: float = 300.0
    # A snapshot 404 means "event not live": recheck this often (any hub message for it rechecks at once).
    not_live_recheck_seconds: float = 30.0
    # Optional merged live session per event, rewritten atomically (temp file + rename) on change.
    state_path: str | None = None
    state_min_interval_seconds: float = 0.5
    # "compact": patch objects (ReceiveCarPatches, ReceiveSessionPatch) without their null (= unchanged)
    # fields, about 4x smaller lines; "faithful" (default): every field as received.
    patches: Literal["faithful", "compact"] = "faithful"


class NatsSinkConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[sinks.nats]` of a `type = "nats"` sink: where each line goes in JetStream (issue 14)."""

    # Placeholders {hub} {event_id} {target} {kind}; each value is sanitised into one subject token.
    subject: str = "{hub}.{event_id}.{target}"
    stream: str = "EVENTS"
    # Create (or update) the stream at start; otherwise a missing stream is a configuration error.
    create_stream: bool = False
    stream_subjects: list[str] = msgspec.field(default_factory=list)  # default: the template, {x} -> *
    stream_max_age_seconds: float = 0.0  # 0 = unlimited
    stream_max_bytes: int = -1  # -1 = unlimited
    duplicate_window_seconds: float = 120.0
    max_in_flight: int = 1024  # lines published and not yet proven stored (pipelined)
    ack_timeout_seconds: float = 5.0


class SinkConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal["stdout", "file", "nats"] = "stdout"
    nats: NatsSinkConfig = msgspec.field(default_factory=NatsSinkConfig)
    name: str | None = None
    path: str | None = None
    pretty: bool = False
    rotate_bytes: int | None = None
    rotate_daily: bool = False
    keep: int = 7
    fsync: Literal["never", "interval", "always"] = "interval"
    fsync_interval_seconds: float = 1.0
    queue_size: int = 10000
    overflow: Literal["block", "drop_oldest"] = "block"
    # Lines kept (and retried) while the sink fails, e.g. ENOSPC; beyond this the oldest are dropped.
    max_buffered: int = 100000
    # The same bounds in bytes (whichever is reached first): memory stays bounded whatever the line size.
    max_queue_bytes: int = 16 * 1024 * 1024
    max_buffered_bytes: int = 32 * 1024 * 1024
    # File sinks: recreate a missing directory (at start, or when it vanishes while running).
    create_dirs: bool = False
    include: list[str] = msgspec.field(default_factory=list)
    exclude: list[str] = msgspec.field(default_factory=list)


class HttpConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9464
    reconnect_grace_seconds: float = 60.0
    # The board API + live page (served when [redmist] follows events): at most this many SSE
    # publications per second, stream clients, and bytes a client may fall behind before it is dropped.
    board_max_hz: float = 10.0
    board_max_clients: int = 1000
    board_client_buffer_bytes: int = 262144
    board_heartbeat_seconds: float = 15.0
    # CORS for the board API: allowed origins ("*" for any); empty = off.
    cors_origins: list[str] = msgspec.field(default_factory=list)


class LoggingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "console"] = "auto"


class ServiceConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # When systemd is told READY=1: after the first successful connect, or as soon as we started.
    ready: Literal["connected", "started"] = "connected"
    shutdown_grace_seconds: float = 10.0
    # Retry delays for failed [[hub.on_connect]] invocations (exponential, capped).
    subscribe_retry_initial_seconds: float = 1.0
    subscribe_retry_max_seconds: float = 30.0
    # The systemd watchdog (WATCHDOG_USEC) withholds WATCHDOG=1 while a sink has had lines waiting this
    # long with no write call returning (hung), or the hub has been disconnected this long (0 = no limit).
    sink_stall_seconds: float = 60.0
    watchdog_disconnected_seconds: float = 600.0


class NatsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[nats]`: the NATS connection shared by nats sinks, the KV board and the HA lease (issue 14).

    Each secret comes from exactly one of the value, `*_env` (an environment variable) or `*_file` (a
    file; relative: $CREDENTIALS_DIRECTORY first, then next to the config file)."""

    servers: list[str] = msgspec.field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    name: str = "event-consumer"
    token: Secret | None = None
    token_env: str | None = None
    token_file: str | None = None
    user: str | None = None
    password: Secret | None = None
    password_env: str | None = None
    password_file: str | None = None
    nkey_seed: Secret | None = None
    nkey_seed_env: str | None = None
    nkey_seed_file: str | None = None
    creds_file: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_hostname: str | None = None
    connect_timeout_seconds: float = 5.0
    # The merged board of each event in a KV bucket (key <hub>.<event>); empty = off.
    board_bucket: str | None = None
    board_max_hz: float = 2.0


class HaConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[ha]`: a hot-standby pair deciding the leader by a lease in a NATS KV bucket (issue 14)."""

    enabled: bool = False
    bucket: str = "event_consumer_ha"
    key: str | None = None  # default: the hub name
    node_id: str | None = None  # default: hostname-pid
    lease_ttl_seconds: float = 5.0
    # Recent invocations the standby keeps to fill in what the leader did not publish.
    buffer_records: int = 50000


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    hub: HubConfig = msgspec.field(default_factory=HubConfig)
    redmist: RedMistConfig = msgspec.field(default_factory=RedMistConfig)
    sinks: list[SinkConfig] = msgspec.field(default_factory=lambda: [SinkConfig()])
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    service: ServiceConfig = msgspec.field(default_factory=ServiceConfig)
    nats: NatsConfig = msgspec.field(default_factory=NatsConfig)
    ha: HaConfig = msgspec.field(default_factory=HaConfig)
    # Where this config was loaded from (not a TOML key); used in error messages.
    source: str = "<defaults>"


def _dec_hook(typ: type, obj: Any) -> Any:
    if typ is Secret:
        if not isinstance(obj, str):
            raise msgspec.ValidationError("Expected `str`")
        return Secret(obj)
    raise NotImplementedError


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Secret):
        return repr(obj)
    raise NotImplementedError


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")


def _translate(err: msgspec.ValidationError, file: str) -> ConfigError:
    m = _AT.match(str(err))
    msg, path = (m.group("msg"), m.group("path") or "") if m else (str(err), "")
    key = re.sub(r"\[(\d+)\]", r".\1", path).lstrip(".")
    unknown = _UNKNOWN.search(msg)
    if unknown:
        key = f"{key}.{unknown.group('field')}".lstrip(".")
        return ConfigError("unknown key", file=file, key=key)
    msg = msg.replace("`", "")
    msg = msg[:1].lower() + msg[1:]
    if msg.startswith("invalid enum value"):
        choices = _literal_choices(key)
        if choices:
            msg += f"; expected one of {', '.join(repr(c) for c in choices)}"
    return ConfigError(msg, file=file, key=key or None)


def _literal_choices(key: str) -> tuple[Any, ...]:
    """The allowed values of the Literal field at dotted `key` (list indexes skipped), if any."""
    typ: Any = Config
    for part in key.split("."):
        if part.isdigit():
            continue
        hints = typing.get_type_hints(typ) if isinstance(typ, type) else {}
        typ = hints.get(part)
        if typ is None:
            return ()
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        origin = typing.get_origin(typ)
        if (origin is list and args) or (origin is not typing.Literal and len(args) == 1):
            typ = args[0]
    return typing.get_args(typ) if typing.get_origin(typ) is typing.Literal else ()


def _parse_env_value(raw: str) -> Any:
    """Environment values are TOML values when they parse as one (5, true, [1, 2]); else strings."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _apply_override(data: dict[str, Any], parts: list[str], name: str, raw: str) -> None:
    """Set `data[parts[0]][parts[1]]...` to the parsed `raw` (variable `name`); lists by index."""
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not (part.isascii() and part.isdigit()) or int(part) >= len(node):
                raise ConfigError(f"no list element {part} to override", file=f"${name}")
            if last:
                node[int(part)] = _parse_env_value(raw)
                return
            node = node[int(part)]
        elif last:
            node[part] = _parse_env_value(raw)
            return
        else:
            node = node.setdefault(part, {})
        if not isinstance(node, dict | list):
            raise ConfigError(f"{'.'.join(parts[: i + 1])} is not a table", file=f"${name}")


def apply_env_overrides(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """`EVENT_CONSUMER__AUTH__CLIENT_ID=x` sets data["auth"]["client_id"]; numeric parts index lists."""
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        try:  # os.environ holds undecodable bytes as surrogates; msgspec and stdout reject those later
            name.encode("utf-8")
            env[name].encode("utf-8")
        except UnicodeEncodeError:
            shown = name.encode("utf-8", "backslashreplace").decode("utf-8")
            raise ConfigError("environment variable is not valid UTF-8", file=f"${shown}") from None
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        _apply_override(data, parts, name, env[name])
    return data


def parse_config(data: dict[str, Any], *, source: str = "<config>") -> Config:
    if "source" in data:
        raise ConfigError("unknown key", file=source, key="source")
    try:
        cfg = msgspec.convert({**data, "source": source}, Config, dec_hook=_dec_hook)
    except msgspec.ValidationError as err:
        raise _translate(err, source) from None
    _validate(cfg, source)
    return cfg


def _validate(cfg: Config, file: str) -> None:
    """Checks the types alone cannot express; each error names the key and what was expected."""

    def need(ok: bool, key: str, expected: str) -> None:
        if not ok:
            raise ConfigError(f"expected {expected}", file=file, key=key)

    hub = cfg.hub
    need(hub.url.startswith(("http://", "https://", "ws://", "wss://")), "hub.url", "an http(s) or ws(s) URL")
    need(bool(hub.name), "hub.name", "a non-empty string")
    for key in ("handshake_timeout_seconds", "keepalive_interval_seconds", "server_timeout_seconds"):
        need(getattr(hub, key) > 0, f"hub.{key}", "a number > 0")
    need(hub.max_dispatch_bytes > 0, "hub.max_dispatch_bytes", "an int > 0")
    need(hub.max_replay_bytes > 0, "hub.max_replay_bytes", "an int > 0")
    need(all(hub.known_targets), "hub.known_targets", "non-empty target names")
    need(hub.max_message_bytes > 0, "hub.max_message_bytes", "an int > 0")
    need(hub.reconnect_max_delay_seconds > 0, "hub.reconnect_max_delay_seconds", "a number > 0")
    need(hub.healthy_after_seconds >= 0, "hub.healthy_after_seconds", "a number >= 0")
    proxy_problem = validate_proxy(hub.proxy)
    need(proxy_problem is None, "hub.proxy", proxy_problem or "")
    for i, oc in enumerate(hub.on_connect):
        need(bool(oc.method), f"hub.on_connect.{i}.method", "a non-empty string")
    rm = cfg.redmist
    need(all(e > 0 for e in rm.events), "redmist.events", "positive event ids")
    for table in ("access_codes", "access_codes_env", "access_codes_file"):
        for ev in getattr(rm, table):
            need(ev.isdigit(), f"redmist.{table}.{ev}", "an event id as key")
    need(rm.snapshot_min_interval_seconds >= 0, "redmist.snapshot_min_interval_seconds", "a number >= 0")
    need(rm.snapshot_timeout_seconds > 0, "redmist.snapshot_timeout_seconds", "a number > 0")
    need(rm.snapshot_max_bytes >= 1024, "redmist.snapshot_max_bytes", "an integer >= 1024")
    need(rm.resync_quiet_seconds >= 0, "redmist.resync_quiet_seconds", "a number >= 0 (0: off)")
    need(rm.resync_every_seconds >= 0, "redmist.resync_every_seconds", "a number >= 0 (0: off)")
    need(rm.not_live_recheck_seconds > 0, "redmist.not_live_recheck_seconds", "a number > 0")
    names: set[str] = set()
    for i, sink in enumerate(cfg.sinks):
        key = f"sinks.{i}"
        if sink.type == "file":
            need(bool(sink.path), f"{key}.path", 'a file path (required for type = "file")')
        need(sink.queue_size >= 1, f"{key}.queue_size", "an int >= 1")
        need(sink.max_buffered >= 1, f"{key}.max_buffered", "an int >= 1")
        need(sink.max_queue_bytes >= 1, f"{key}.max_queue_bytes", "an int >= 1")
        need(sink.max_buffered_bytes >= 1, f"{key}.max_buffered_bytes", "an int >= 1")
        need(sink.keep >= 1, f"{key}.keep", "an int >= 1")
        need(sink.rotate_bytes is None or sink.rotate_bytes > 0, f"{key}.rotate_bytes", "an int > 0")
        need(sink.fsync_interval_seconds > 0, f"{key}.fsync_interval_seconds", "a number > 0")
        name = sink_name(sink)
        need(name not in names, f"{key}.name", f"a unique sink name ({name!r} is used twice)")
        names.add(name)
    _validate_nats(cfg, need)
    need(0 <= cfg.http.port <= 65535, "http.port", "an int in 0..65535")
    need(0 < cfg.http.board_max_hz <= 100, "http.board_max_hz", "a number in (0, 100]")
    need(cfg.http.board_max_clients >= 1, "http.board_max_clients", "an int >= 1")
    need(cfg.http.board_client_buffer_bytes >= 65536, "http.board_client_buffer_bytes", "an int >= 65536")
    need(cfg.http.board_heartbeat_seconds > 0, "http.board_heartbeat_seconds", "a number > 0")
    need(cfg.service.shutdown_grace_seconds > 0, "service.shutdown_grace_seconds", "a number > 0")
    need(cfg.service.sink_stall_seconds > 0, "service.sink_stall_seconds", "a number > 0")
    need(
        cfg.service.watchdog_disconnected_seconds >= 0,
        "service.watchdog_disconnected_seconds",
        "a number >= 0 (0: never)",
    )


def load_access_codes(
    cfg: Config, *, env: Mapping[str, str] | None = None, strict: bool = False
) -> dict[str, Secret]:
    """Every [redmist] access code: inline `access_codes`, `access_codes_env` (eventId -> variable) and
    `access_codes_file` (eventId -> path; relative paths in $CREDENTIALS_DIRECTORY, then next to the
    config), one source per event. ConfigError (exit 78) names the file and key; never the code."""
    from consumer.auth.credentials import read_secret  # consumer.auth imports this module's neighbours

    env = os.environ if env is None else env
    rm = cfg.redmist
    codes: dict[str, Secret] = {}
    for ev in sorted({*rm.access_codes, *rm.access_codes_env, *rm.access_codes_file}, key=int):
        secret = read_secret(
            rm.access_codes.get(ev),
            rm.access_codes_env.get(ev),
            rm.access_codes_file.get(ev),
            key=f"redmist.access_codes.{ev}",
            env_key=f"redmist.access_codes_env.{ev}",
            file_key=f"redmist.access_codes_file.{ev}",
            source=cfg.source,
            env=env,
            strict=strict,
        )
        assert secret is not None
        codes[ev] = secret
    return codes


def _validate_nats(cfg: Config, need: typing.Callable[[bool, str, str], None]) -> None:
    from consumer.natsconn import subject_template_error

    n = cfg.nats
    need(
        bool(n.servers) and all(s.startswith(("nats://", "tls://")) for s in n.servers),
        "nats.servers",
        "a list of nats:// or tls:// URLs",
    )
    need(n.connect_timeout_seconds > 0, "nats.connect_timeout_seconds", "a number > 0")
    need(n.board_max_hz > 0, "nats.board_max_hz", "a number > 0")
    need(
        n.board_bucket is None or bool(cfg.redmist.events),
        "nats.board_bucket",
        "redmist.events to be set too (the board is the RedMist profile's live state)",
    )
    need(
        n.board_bucket is None or bool(re.fullmatch(r"[A-Za-z0-9_-]+", n.board_bucket)),
        "nats.board_bucket",
        "a bucket name of letters, digits, _ and -",
    )
    need(
        bool(re.fullmatch(r"[A-Za-z0-9_-]+", cfg.ha.bucket)),
        "ha.bucket",
        "a bucket name of letters, digits, _ and -",
    )
    need(cfg.ha.lease_ttl_seconds >= 1, "ha.lease_ttl_seconds", "a number >= 1")
    need(
        not cfg.ha.enabled or any(sink.type == "nats" for sink in cfg.sinks),
        "ha.enabled",
        'a [[sinks]] entry with type = "nats" (only the leader publishes to it)',
    )
    need(cfg.ha.buffer_records >= 1, "ha.buffer_records", "an int >= 1")
    for i, sink in enumerate(cfg.sinks):
        if sink.type != "nats":
            continue
        key, ns = f"sinks.{i}.nats", sink.nats
        err = subject_template_error(ns.subject)
        need(err is None, f"{key}.subject", f"a subject template ({err})")
        need(
            bool(re.fullmatch(r"[A-Za-z0-9_-]+", ns.stream)),
            f"{key}.stream",
            "a stream name of letters, digits, _ and -",
        )
        need(ns.max_in_flight >= 1, f"{key}.max_in_flight", "an int >= 1")
        need(ns.ack_timeout_seconds > 0, f"{key}.ack_timeout_seconds", "a number > 0")
        need(ns.duplicate_window_seconds > 0, f"{key}.duplicate_window_seconds", "a number > 0")
        need(ns.stream_max_age_seconds >= 0, f"{key}.stream_max_age_seconds", "a number >= 0 (0 = unlimited)")


def sink_name(sink: SinkConfig) -> str:
    """A sink's name in logs and metrics labels: `name`, else `stdout` / `file:PATH`."""
    if sink.name:
        return sink.name
    if sink.type == "nats":
        return f"nats:{sink.nats.stream}"
    return "stdout" if sink.type == "stdout" else f"file:{sink.path}"


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Load, override from the environment, and validate. Raises ConfigError (exit 78)."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError("file not found", file=file) from None
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror}", file=file) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", file=file) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"invalid TOML: {err}", file=file) from None
    data = apply_env_overrides(data, os.environ if env is None else env)
    return parse_config(data, source=file)


def to_display(cfg: Config) -> dict[str, Any]:
    """The effective config as plain data with every secret masked (for `check-config`)."""
    out: dict[str, Any] = msgspec.to_builtins(cfg, enc_hook=_enc_hook)
    out["hub"]["proxy"] = redact_proxy(cfg.hub.proxy)  # user info in a proxy URL is a credential
    return out
