"""The NATS connection shared by the JetStream sink, the KV board and the HA lease (issue 14).

- `connect_kwargs(cfg.nats, source=, env=)`: the keyword arguments for `nats.connect` with every
  secret resolved (value / `*_env` / `*_file`, like `auth.client_secret`) and registered with the log
  scrubber; TLS from `tls_ca_file` / `tls_cert_file` / `tls_key_file`. Never puts a secret in a URL.
- `connect(cfg.nats, ...)`: one connection attempt, no automatic reconnect (callers reconnect with
  their own backoff). Rejected credentials raise `CredentialsRejected` (exit 77) naming the server;
  an unreachable server raises `NatsUnavailable` (an OSError, so sink workers retry it).
- `SubjectTemplate`: `{hub}.{event_id}.{target}` style templates; every value becomes one sanitised
  subject token (anything but letters, digits, `_` and `-` becomes `_`).
- `server_label(servers)`: the servers for messages and logs, without any user info.

nats-py is an optional dependency (the `nats` extra): it is imported only when something NATS is
configured, and a missing install is a configuration error naming the key that asked for it.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from consumer.auth.credentials import _from_env, _secret_file, warn_if_readable
from consumer.errors import ConfigError, CredentialsRejected
from consumer.logs import get_logger, register_secret
from consumer.secret import Secret

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from consumer.config import NatsConfig

__all__ = [
    "NatsUnavailable",
    "SubjectTemplate",
    "close_quietly",
    "connect",
    "connect_kwargs",
    "require_nats",
    "sanitize_token",
    "server_label",
    "subject_template_error",
]

log = get_logger(__name__)

PLACEHOLDERS = ("hub", "event_id", "target", "kind")
_FIELD = re.compile(r"\{([^{}]*)\}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class NatsUnavailable(OSError):
    """The NATS server could not be reached (or the connection broke); retried by the caller."""


def require_nats(file: str, key: str) -> None:
    """ConfigError (exit 78) naming `key` when nats-py is not installed."""
    try:
        import nats  # noqa: F401
    except ImportError:
        raise ConfigError(
            "NATS support needs the nats extra: pip install 'event-consumer[nats]'", file=file, key=key
        ) from None


def server_label(servers: list[str]) -> str:
    """`nats://host:port[, ...]` with user info removed (a URL may carry credentials)."""
    out = []
    for url in servers:
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
            if ":" in host:
                host = f"[{host}]"
            netloc = f"{host}:{parts.port}" if parts.port else host
            out.append(urlunsplit((parts.scheme, netloc, parts.path, "", "")))
        except ValueError:
            out.append("<invalid URL>")
    return ", ".join(out)


def sanitize_token(value: object) -> str:
    """One NATS subject token: letters, digits, `_` and `-` kept, anything else `_`; never empty."""
    text = "none" if value is None else str(value)
    return _UNSAFE.sub("_", text) or "_"


def subject_template_error(template: str) -> str | None:
    """Why `template` is not a usable subject template, or None."""
    names = _FIELD.findall(template)
    unknown = [n for n in names if n not in PLACEHOLDERS]
    if unknown:
        return f"unknown placeholder {{{unknown[0]}}}; use {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
    sample = _FIELD.sub("x", template)
    if "{" in sample or "}" in sample:
        return "unbalanced braces"
    tokens = sample.split(".")
    if any(not t or re.search(r"[\s*>]", t) for t in tokens):
        return "empty tokens, spaces, '*' or '>' outside placeholders"
    return None


class SubjectTemplate:
    """Renders a subject per record; results are cached per (hub, event_id, target, kind)."""

    __slots__ = ("_cache", "template")

    def __init__(self, template: str) -> None:
        self.template = template
        self._cache: dict[tuple[Any, ...], str] = {}

    def wildcard(self, hub: str | None = None) -> str:
        """The subject filter matching every rendered subject: each placeholder `*`, but `{hub}` the
        hub's token when known (a bare `*.*.*` would overlap the JetStream API's own subjects)."""
        return _FIELD.sub(
            lambda m: sanitize_token(hub) if m.group(1) == "hub" and hub is not None else "*", self.template
        )

    def filter(self, hub: str | None, event_id: object) -> str:
        """The subjects of one event: `{hub}` and `{event_id}` rendered, other placeholders `*`."""
        values = {"hub": hub, "event_id": event_id}

        def one(m: re.Match[str]) -> str:
            name = m.group(1)
            if name == "event_id" or (name == "hub" and hub is not None):
                return sanitize_token(values[name])
            return "*"

        return _FIELD.sub(one, self.template)

    def render(self, hub: str, event_id: object, target: str, kind: str) -> str:
        key = (hub, event_id, target, kind)
        subject = self._cache.get(key)
        if subject is None:
            values = {"hub": hub, "event_id": event_id, "target": target, "kind": kind}
            subject = _FIELD.sub(lambda m: sanitize_token(values[m.group(1)]), self.template)
            if len(self._cache) >= 10_000:  # bounded: event ids come from the hub
                self._cache.clear()
            self._cache[key] = subject
        return subject


def read_secret(
    value: Secret | None,
    env_name: str | None,
    file_name: str | None,
    key: str,
    *,
    source: str,
    env: Mapping[str, str],
) -> Secret | None:
    """A secret from exactly one of `key` / `key_env` / `key_file` (the `auth.client_secret` rules)."""
    given = [
        k for k, v in ((key, value), (f"{key}_env", env_name), (f"{key}_file", file_name)) if v is not None
    ]
    if len(given) > 1:
        raise ConfigError(f"set only one of {', '.join(given)}", file=source, key=given[1])
    secret: Secret | None = None
    if value is not None:
        if not value:
            raise ConfigError("is empty", file=source, key=key)
        secret = value
    elif env_name is not None:
        secret = _from_env(env, env_name, f"{key}_env", source)
    elif file_name is not None:
        path = _secret_file(file_name, source, env)
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(
                f"cannot read secret file {str(path)!r}: {err.strerror}", file=source, key=f"{key}_file"
            ) from None
        text = raw.strip()
        if not text:
            raise ConfigError(f"secret file {str(path)!r} is empty", file=source, key=f"{key}_file")
        warn_if_readable(path, f"{key} file")
        secret = Secret(text)
    register_secret(secret)
    return secret


def _tls_context(cfg: NatsConfig, source: str) -> ssl.SSLContext | None:
    wants_tls = any(s.startswith("tls://") for s in cfg.servers)
    if not (cfg.tls_ca_file or cfg.tls_cert_file or wants_tls):
        return None
    try:
        ctx = ssl.create_default_context(cafile=cfg.tls_ca_file)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"cannot load the CA file: {err}", file=source, key="nats.tls_ca_file") from None
    if cfg.tls_cert_file or cfg.tls_key_file:
        if not cfg.tls_cert_file:
            raise ConfigError("tls_key_file needs tls_cert_file", file=source, key="nats.tls_cert_file")
        try:
            ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(
                f"cannot load the client certificate: {err}", file=source, key="nats.tls_cert_file"
            ) from None
    return ctx


def connect_kwargs(cfg: NatsConfig, *, source: str, env: Mapping[str, str]) -> dict[str, Any]:
    """Keyword arguments for `nats.connect` (no callbacks); ConfigError names the file and key."""
    token = read_secret(cfg.token, cfg.token_env, cfg.token_file, "nats.token", source=source, env=env)
    password = read_secret(
        cfg.password, cfg.password_env, cfg.password_file, "nats.password", source=source, env=env
    )
    seed = read_secret(
        cfg.nkey_seed, cfg.nkey_seed_env, cfg.nkey_seed_file, "nats.nkey_seed", source=source, env=env
    )
    if password is not None and not cfg.user:
        raise ConfigError("a password needs user", file=source, key="nats.user")
    methods = [
        k
        for k, v in (
            ("token", token),
            ("user", cfg.user),
            ("nkey_seed", seed),
            ("creds_file", cfg.creds_file),
        )
        if v
    ]
    if len(methods) > 1:
        raise ConfigError(
            f"choose one authentication method, not {' and '.join(methods)}",
            file=source,
            key=f"nats.{methods[1]}",
        )
    kwargs: dict[str, Any] = {
        "servers": list(cfg.servers),
        "name": cfg.name,
        "connect_timeout": cfg.connect_timeout_seconds,
        # One attempt per server (nats-py: 0 would mean "forever" inside connect; 1 = two tries, no wait):
        # reconnecting is the caller's job, with its own backoff.
        "allow_reconnect": False,
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0,
    }
    if token is not None:
        kwargs["token"] = token.reveal()
    if cfg.user:
        kwargs["user"] = cfg.user
        kwargs["password"] = password.reveal() if password is not None else ""
    if seed is not None:
        kwargs["nkeys_seed_str"] = seed.reveal()
    if cfg.creds_file:
        path = _secret_file(cfg.creds_file, source, env)
        if not path.is_file():
            raise ConfigError(f"creds file {str(path)!r} not found", file=source, key="nats.creds_file")
        warn_if_readable(path, "NATS creds file")
        kwargs["user_credentials"] = str(path)
    tls = _tls_context(cfg, source)
    if tls is not None:
        kwargs["tls"] = tls
        if cfg.tls_hostname:
            kwargs["tls_hostname"] = cfg.tls_hostname
    return kwargs


def _is_auth_error(err: BaseException) -> bool:
    text = str(err).lower()
    return "authorization violation" in text or "authentication" in text or "user authentication" in text


async def connect(
    kwargs: Mapping[str, Any],
    *,
    on_disconnect: Any = None,
) -> NATS:
    """One connection attempt with `connect_kwargs(...)`.

    Raises `CredentialsRejected` (exit 77) when the server rejects the credentials and
    `NatsUnavailable` (OSError) when it cannot be reached; neither message contains a secret.
    """
    import nats
    import nats.errors

    servers = server_label(list(kwargs["servers"]))
    errors: list[BaseException] = []

    async def error_cb(err: Exception) -> None:
        errors.append(err)

    async def disconnected_cb() -> None:
        if on_disconnect is not None:
            on_disconnect()

    try:
        nc = await nats.connect(
            **kwargs, error_cb=error_cb, disconnected_cb=disconnected_cb, closed_cb=disconnected_cb
        )
    except Exception as err:
        causes = [err, *errors]
        if any(_is_auth_error(e) for e in causes):
            raise CredentialsRejected(f"NATS server {servers} rejected the credentials") from None
        detail = next(
            (str(e) for e in causes if not isinstance(e, nats.errors.NoServersError) and str(e)), str(err)
        )
        raise NatsUnavailable(
            f"cannot connect to NATS server {servers}: {detail or type(err).__name__}"
        ) from None
    return nc


async def close_quietly(nc: NATS | None, *, event: str) -> None:
    """Close a NATS connection at the end of a retry cycle: bounded (2 s), never raising (logged at
    debug under `event`, the caller's dotted log name)."""
    if nc is None or nc.is_closed:
        return
    try:
        async with asyncio.timeout(2.0):
            await nc.close()
    except Exception as err:
        log.debug(event, error=type(err).__name__)
