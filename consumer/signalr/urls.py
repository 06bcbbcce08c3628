"""Hub URLs: negotiate and WebSocket URLs, the plain-http rule, and redaction for logs."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from consumer.auth.urls import check_url_security as shared_check_url_security

__all__ = ["build_negotiate_url", "build_ws_url", "check_url_security", "redact_url"]


_REDACT_PARAMS = frozenset({"access_token", "id"})


def redact_url(url: str) -> str:
    """The URL with `access_token` and the connection token (`id`) query values masked, for logging."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if not parts.query:
        return url
    query = [(k, "[redacted]" if k in _REDACT_PARAMS else v) for k, v in parse_qsl(parts.query, True)]
    return urlunsplit(parts._replace(query=urlencode(query, safe="[]")))


def check_url_security(url: str, allow_insecure_http: bool = False) -> None:
    """Refuse plain http/ws unless the host is loopback or insecure transport was explicitly allowed.

    The project's one rule (`consumer.auth.urls.check_url_security`), applied to the redacted URL so
    that an error message can never carry a token.
    """
    shared_check_url_security(redact_url(url), allow_insecure_http, "hub URL", key="url")


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = {k for k, _ in query}
    query.extend((k, v) for k, v in params.items() if k not in names)
    return urlunsplit(parts._replace(query=urlencode(query)))


def build_negotiate_url(url: str, *, stateful_reconnect: bool = False, negotiate_version: int = 1) -> str:
    """`{url}/negotiate?negotiateVersion=1[&useStatefulReconnect=true]`, keeping the URL's own query."""
    parts = urlsplit(url)
    path = parts.path + ("negotiate" if parts.path.endswith("/") else "/negotiate")
    extra = {"negotiateVersion": str(negotiate_version)}
    if stateful_reconnect:
        extra["useStatefulReconnect"] = "true"
    return _with_query(urlunsplit(parts._replace(path=path)), **extra)


def build_ws_url(url: str, connection_token: str | None = None, access_token: str | None = None) -> str:
    """http(s)→ws(s), plus `id=<connectionToken>` and `access_token=` query parameters when given."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme.lower(), parts.scheme.lower())
    out = urlunsplit(parts._replace(scheme=scheme))
    params: dict[str, str] = {}
    if connection_token:
        params["id"] = connection_token
    if access_token:
        params["access_token"] = access_token
    return _with_query(out, **params) if params else out
