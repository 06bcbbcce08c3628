"""`build_token_provider`: validate the [auth] table, read its secrets, return the right provider."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping

import httpx
import msgspec

from consumer.auth.base import NoneTokenProvider, StaticTokenProvider, TokenProvider, TokenStats
from consumer.auth.clock import SYSTEM_CLOCK, Clock
from consumer.auth.credentials import load_credentials
from consumer.auth.oauth import OAuthTokenProvider, TokenEndpoint
from consumer.auth.settings import AuthConfig
from consumer.auth.urls import check_url_security, keycloak_token_url
from consumer.errors import ConfigError


def _validate_numbers(cfg: AuthConfig, source: str) -> None:
    checks = (
        ("refresh_before_expiry_seconds", cfg.refresh_before_expiry_seconds >= 0, "must be >= 0"),
        ("refresh_at_fraction", 0 < cfg.refresh_at_fraction <= 1, "must be in (0, 1]"),
        ("default_expires_in_seconds", cfg.default_expires_in_seconds > 0, "must be > 0"),
        ("timeout_seconds", cfg.timeout_seconds > 0, "must be > 0"),
        ("max_response_bytes", cfg.max_response_bytes > 0, "must be > 0"),
        ("backoff_cap_seconds", cfg.backoff_cap_seconds > 0, "must be > 0"),
    )
    for key, ok, msg in checks:
        if not ok:
            raise ConfigError(msg, file=source, key=f"auth.{key}")


def resolve_endpoint(cfg: AuthConfig, *, source: str = "<config>") -> TokenEndpoint:
    """The token endpoint from exactly one of token_url, issuer (discovery) or base_url + realm."""
    given = [k for k in ("token_url", "issuer", "base_url") if getattr(cfg, k)]
    if cfg.realm and not cfg.base_url:
        raise ConfigError("realm needs base_url", file=source, key="auth.realm")
    if len(given) != 1:
        what = ", ".join(given) if given else "none"
        raise ConfigError(
            f"set exactly one of token_url, issuer, base_url + realm (got {what})",
            file=source,
            key="auth.token_url",
        )
    insecure = cfg.allow_insecure_http
    if cfg.token_url:
        url = check_url_security(cfg.token_url, insecure, "token_url", file=source, key="auth.token_url")
        return TokenEndpoint(token_url=url, issuer=None, allow_insecure=insecure, source=source)
    if cfg.issuer:
        check_url_security(cfg.issuer, insecure, "issuer", file=source, key="auth.issuer")
        return TokenEndpoint(token_url=None, issuer=cfg.issuer, allow_insecure=insecure, source=source)
    assert cfg.base_url is not None
    if not cfg.realm:
        raise ConfigError("base_url needs realm", file=source, key="auth.realm")
    check_url_security(cfg.base_url, insecure, "base_url", file=source, key="auth.base_url")
    url = keycloak_token_url(cfg.base_url, cfg.realm)
    return TokenEndpoint(token_url=url, issuer=None, allow_insecure=insecure, source=source)


def build_token_provider(
    cfg: AuthConfig,
    *,
    http: httpx.AsyncClient | None = None,
    clock: Clock = SYSTEM_CLOCK,
    source: str = "<config>",
    env: Mapping[str, str] | None = None,
    subject_provider: TokenProvider | None = None,
    on_request: Callable[[str], None] | None = None,
    rng: random.Random | None = None,
    strict: bool = False,
) -> TokenProvider:
    """Build the provider for `cfg` (raises ConfigError, exit 78, naming `source` and the key).

    http: the client for IdP requests (created and owned by the provider if None).
    clock: injectable monotonic/wall clock and sleep.
    source: the config file path (`Config.source`): used in errors, for the permission check of an
        inline client_secret, and to resolve a relative client_secret_file.
    env: environment for *_env secrets and $CREDENTIALS_DIRECTORY (default os.environ).
    subject_provider: for token_exchange, the provider whose token is the subject token (otherwise
        subject_token[_env|_file], or with subject_token_source = "client_credentials" a provider
        for the same client's client_credentials grant, built and closed here).
    on_request: called with each token request's outcome ("ok", "rejected", "rate_limited", ...).
    strict: the preflight's rule: a world-readable secret file (or config file holding an inline
        secret) is a ConfigError instead of a warning.
    """
    env = os.environ if env is None else env
    _validate_numbers(cfg, source)
    creds = load_credentials(cfg, source=source, env=env, strict=strict)
    stats = TokenStats(on_request=on_request)
    if cfg.grant == "none":
        provider: TokenProvider = NoneTokenProvider()
        provider.stats.on_request = on_request
        return provider
    if cfg.grant == "static":
        assert creds.static_token is not None
        if not cfg.static_header.strip():
            raise ConfigError("must not be empty", file=source, key="auth.static_header")
        static = StaticTokenProvider(creds.static_token, header_name=cfg.static_header, wall=clock.time)
        static.stats.on_request = on_request
        return static
    own_subject = cfg.grant == "token_exchange" and cfg.subject_token_source == "client_credentials"
    if (
        cfg.grant == "token_exchange"
        and not own_subject
        and creds.subject_token is None
        and subject_provider is None
    ):
        raise ConfigError(
            "grant token_exchange needs subject_token, subject_token_env or subject_token_file "
            '(or subject_token_source = "client_credentials")',
            file=source,
            key="auth.subject_token",
        )
    endpoint = resolve_endpoint(cfg, source=source)
    owns = http is None
    client = http or httpx.AsyncClient(timeout=cfg.timeout_seconds, follow_redirects=False)
    owns_subject = False
    if own_subject and subject_provider is None:
        # The service's own client_credentials token (same client, endpoint and client auth; no
        # scope/audience, those are for the exchanged token), cached and refreshed as it expires.
        own_cfg = msgspec.structs.replace(cfg, grant="client_credentials", scope=None, audience=None)
        subject_provider = OAuthTokenProvider(
            own_cfg,
            endpoint=endpoint,
            http=client,
            owns_http=False,
            clock=clock,
            client_secret=creds.client_secret,
            rng=rng,
            stats=stats,
        )
        owns_subject = True
    return OAuthTokenProvider(
        cfg,
        endpoint=endpoint,
        http=client,
        owns_http=owns,
        clock=clock,
        client_secret=creds.client_secret,
        password=creds.password,
        refresh_token=creds.refresh_token,
        subject_token=creds.subject_token,
        subject_provider=subject_provider,
        owns_subject_provider=owns_subject,
        rng=rng,
        stats=stats,
    )
