"""Which HTTP proxy the hub connection uses: the same environment rules as httpx, or an explicit setting.

`resolve_proxy(url, setting, env)` answers for one URL (http(s) or ws(s)):

- `setting` "env" (default): `HTTPS_PROXY` for https/wss, `HTTP_PROXY` for http/ws, else `ALL_PROXY`
  (lower-case names win over upper-case, as in urllib and httpx); `NO_PROXY` as httpx reads it:
  `*` bypasses every proxy; `localhost`, IP addresses and `scheme://host` entries match exactly;
  `example.com` matches it and its subdomains, `.example.com` only subdomains. A proxy value without
  a scheme means `http://`.
- `setting` "off": no proxy, whatever the environment says.
- any other `setting`: that proxy URL (http:// or https://) for every hub connection.

`redact_proxy(url)` is the proxy URL with its user info masked, for logs and error messages; the
caller never logs a proxy URL any other way.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "PROXY_ENV",
    "PROXY_OFF",
    "environment_proxies",
    "httpx_proxy_options",
    "redact_proxy",
    "resolve_proxy",
    "validate_proxy",
]

PROXY_ENV = "env"
PROXY_OFF = "off"
_SCHEME = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


def environment_proxies(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`{"http": ..., "https": ..., "all": ..., "no": ...}` from `*_proxy` variables (lower case wins)."""
    env = os.environ if env is None else env
    found: dict[str, str] = {}
    for name, value in env.items():
        low = name.lower()
        if value and low.endswith("_proxy"):
            found.setdefault(low[:-6], value)
    for name, value in env.items():  # an exact lower-case name overrides its upper-case twin
        if name.endswith("_proxy") and name == name.lower():
            if value:
                found[name[:-6]] = value
            else:
                found.pop(name[:-6], None)
    if "REQUEST_METHOD" in env:  # CGI: HTTP_PROXY may come from a request header (httpoxy)
        found.pop("http", None)
    return found


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _host_matches(host: str, pattern: str) -> bool:
    if _is_ip(pattern) or pattern == "localhost":
        return host == pattern
    if pattern.startswith("*."):
        pattern = pattern[1:]
    elif pattern.startswith("*"):
        pattern = pattern[1:].lstrip(".")
        return host == pattern or host.endswith("." + pattern)
    if pattern.startswith("."):  # ".example.com": subdomains only
        return host.endswith(pattern)
    return host == pattern or host.endswith("." + pattern)


def _bypassed(scheme: str, host: str, port: int | None, no_proxy: str) -> bool:
    host = host.lower().strip("[]")
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        if "://" in entry:
            try:
                parts = urlsplit(entry)
                want_port = parts.port
            except ValueError:
                continue
            if parts.scheme not in ("all", scheme) or (want_port is not None and want_port != port):
                continue
            if parts.hostname and _host_matches(host, parts.hostname):
                return True
            continue
        if _host_matches(host, entry.split("/")[0].strip("[]")):
            return True
    return False


def resolve_proxy(url: str, setting: str = PROXY_ENV, env: Mapping[str, str] | None = None) -> str | None:
    """The proxy URL to use for `url`, or None for a direct connection."""
    if setting == PROXY_OFF:
        return None
    if setting != PROXY_ENV:
        return setting
    parts = urlsplit(url)
    scheme = _SCHEME.get(parts.scheme.lower(), parts.scheme.lower())
    proxies = environment_proxies(env)
    if _bypassed(scheme, parts.hostname or "", parts.port, proxies.get("no", "")):
        return None
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy:
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def validate_proxy(setting: str) -> str | None:
    """None when `setting` is usable ("env", "off" or an http(s) proxy URL), else what is wrong."""
    if setting in (PROXY_ENV, PROXY_OFF):
        return None
    try:
        parts = urlsplit(setting)
        port = parts.port
    except ValueError:
        return "an http:// or https:// proxy URL, 'env' or 'off'"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "an http:// or https:// proxy URL, 'env' or 'off'"
    del port
    return None


def redact_proxy(url: str | None) -> str | None:
    """The proxy URL with user name and password masked (never log a proxy URL otherwise)."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable proxy url>"
    if parts.username is None and parts.password is None:
        return url
    netloc = "[redacted]@" + (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def httpx_proxy_options(setting: str) -> dict[str, Any]:
    """Keyword arguments for `httpx.AsyncClient` that apply a proxy setting to REST calls."""
    if setting == PROXY_OFF:
        return {"trust_env": False}  # environment proxies ignored
    if setting == PROXY_ENV:
        return {}
    return {"proxy": setting}
