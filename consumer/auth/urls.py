"""URL rules shared by every component that talks to the IdP or the hub.

`check_url_security` is THE plain-http rule for the whole project (token, discovery and hub URLs):
`http`/`ws` are only allowed for loopback hosts (127.0.0.0/8, ::1, localhost) or when the operator
set `allow_insecure_http = true`.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import quote, urlsplit

from consumer.errors import ConfigError

_SECURE = frozenset({"https", "wss"})
_PLAIN = frozenset({"http", "ws"})


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url_security(
    url: str, allow_insecure: bool, what: str, *, file: str | None = None, key: str | None = None
) -> str:
    """Return `url` if it may be used; raise ConfigError (exit 78) naming `what`/`file`/`key` if not.

    Accepts https/wss anywhere; http/ws only for loopback hosts unless `allow_insecure` is true.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as err:
        raise ConfigError(f"{what} is not a valid URL ({err})", file=file, key=key) from None
    scheme = parts.scheme.lower()
    if scheme not in _SECURE | _PLAIN or not host:
        raise ConfigError(f"{what} must be an absolute http(s) or ws(s) URL, got {url!r}", file=file, key=key)
    if scheme in _PLAIN and not allow_insecure and not is_loopback_host(host):
        raise ConfigError(
            f"{what} uses plain {scheme} to non-loopback host {host!r}; use https "
            "or set allow_insecure_http = true",
            file=file,
            key=key,
        )
    return url


def keycloak_token_url(base_url: str, realm: str) -> str:
    """`{base}/realms/{realm}/protocol/openid-connect/token` (realm path-quoted)."""
    return f"{base_url.rstrip('/')}/realms/{quote(realm, safe='')}/protocol/openid-connect/token"


def discovery_url(issuer: str) -> str:
    """OIDC discovery document URL for an issuer (`{issuer}/.well-known/openid-configuration`)."""
    return f"{issuer.rstrip('/')}/.well-known/openid-configuration"
