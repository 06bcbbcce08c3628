"""structlog set up once for the whole project, with redaction that runs on every event.

Three layers keep secrets out of logs:
1. keys that look secret (`client_secret`, `password`, `token`, `authorization`, ...) are masked;
2. values registered with `register_secret()` (every token the factory obtains, every configured
   secret) are replaced wherever they appear inside any string, including stdlib records (httpx,
   websockets, aiohttp) that pass through the same processors;
3. `access_token=` query parameters and `Bearer ...` credentials in strings are masked by pattern.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from consumer.errors import describe_error
from consumer.secret import Secret, fingerprint

REDACTED = "[redacted]"

_SECRET_KEY = re.compile(
    r"(secret|password|passwd|token|authorization|api[_-]?key|credential|cookie|assertion)", re.IGNORECASE
)
# Keys that merely *describe* a token are safe to show.
_SAFE_KEYS = frozenset(
    {
        "token_url",
        "token_type",
        "token_fingerprint",
        "token_transport",
        "token_endpoint",
        "token_requests",
        "refresh_token_present",
        "subject_token_type",
        "requested_token_type",
        "static_token_env",
        "client_secret_env",
        "client_secret_file",
        "password_env",
        "refresh_token_env",
        "subject_token_env",
        "expires_in",
        "token_expires_in",
    }
)
_PATTERNS = (
    (
        re.compile(r"(?i)(access_token|id_token|refresh_token|client_secret|password|code)=([^&\s\"']+)"),
        r"\1=" + REDACTED,
    ),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + REDACTED),
)

_MAX_REGISTERED = 256
_registered: OrderedDict[str, None] = OrderedDict()
_registered_lock = threading.Lock()


def register_secret(value: str | Secret | None) -> None:
    """Remember a secret value so that any log string containing it is redacted (bounded, LRU)."""
    if value is None:
        return
    raw = value.reveal() if isinstance(value, Secret) else value
    if len(raw) < 6:  # too short to scrub safely without mangling ordinary words
        return
    with _registered_lock:
        _registered[raw] = None
        _registered.move_to_end(raw)
        while len(_registered) > _MAX_REGISTERED:
            _registered.popitem(last=False)


def scrub(text: str) -> str:
    """Redact registered secrets and secret-looking patterns inside a string."""
    with _registered_lock:
        known = list(_registered)
    for raw in known:
        if raw in text:
            text = text.replace(raw, f"[redacted {fingerprint(raw)}]")
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def _redact_value(key: str | None, value: Any) -> Any:
    if isinstance(value, Secret):
        return repr(value)
    if key is not None and key not in _SAFE_KEYS and _SECRET_KEY.search(key):
        # Secrets are text. Numbers, booleans and None under a secret-looking key (a counter keyed by a
        # sink path that happens to contain "token", say) carry nothing to hide. Containers keep the
        # key's context, so every text leaf beneath it is masked.
        if isinstance(value, Mapping):
            return {k: _redact_value(key, v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [_redact_value(key, v) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        return REDACTED
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, bytes):
        return scrub(value.decode("utf-8", "replace"))
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(None, v) for v in value]
    if isinstance(value, BaseException):
        return scrub(describe_error(value))
    if isinstance(value, int | float) or value is None:
        return value
    return scrub(repr(value)) if not isinstance(value, str) else value


def redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask secret-looking keys and scrub every string value."""
    for key in list(event_dict):
        if key in ("_record", "_from_structlog"):
            continue
        event_dict[key] = _redact_value(None if key == "event" else key, event_dict[key])
    return event_dict


def _scrub_rendered(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # exc_info is rendered into "exception" by format_exc_info; scrub the rendered traceback too.
    exc = event_dict.get("exception")
    if isinstance(exc, str):
        event_dict["exception"] = scrub(exc)
    return event_dict


def setup_logging(level: str | int = "INFO", *, fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib root logger once (calling again reconfigures).

    fmt: "json", "console", or "auto" (console on a TTY, JSON otherwise). Logs go to stderr so that
    stdout stays free for data (the stdout sink, `simulate`'s ready line).
    """
    out = stream if stream is not None else sys.stderr
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
        if not isinstance(level, int):
            level = logging.INFO
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        redact_processor,
    ]
    renderer: Any
    if use_console:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
        tail: list[Any] = []
    else:
        renderer = structlog.processors.JSONRenderer()
        tail = [structlog.processors.format_exc_info, _scrub_rendered]

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_event_consumer", False):
            root.removeHandler(old)
    handler._event_consumer = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party chatter stays at WARNING unless we are debugging.
    for noisy in ("httpx", "httpcore", "websockets", "aiohttp.access", "hpack", "asyncio"):
        logging.getLogger(noisy).setLevel(level if level <= logging.DEBUG else logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
