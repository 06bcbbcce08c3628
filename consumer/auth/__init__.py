"""Service-account tokens a daemon can live on.

Public API (everything else in consumer.auth is internal):

    provider = build_token_provider(cfg.auth, source=cfg.source)   # -> TokenProvider
    token = await provider.get_token()            # cached; single-flight; refreshed early
    token = await provider.get_token(max_wait=30) # bounded: TokenUnavailable (exit 69) after 30 s
    provider.invalidate(token)                    # a resource server rejected it (401)
    await provider.aclose()

    headers_for(provider.header_name, token)      # the headers to send (see below)
    httpx.AsyncClient(auth=BearerAuth(provider))  # REST: bearer + one retry after a 401 (THE flow:
                                                  # consumer.auth.httpx_auth; negotiate can use it
                                                  # with rejected=rejected_401_403)
    check_url_security(url, allow_insecure, what) # THE plain-http rule (token, discovery, hub URLs)

How to send a token: `provider.header_name == "Authorization"` means `Authorization: Bearer <token>`;
any other name (grant static, `static_header = "RPIAuthKey"`) carries the raw token in that header; an
empty token (grant none) means send no credentials. `headers_for()` implements exactly this.

Metadata and metrics: `provider.last_token_info` (TokenInfo: expiry, scope, type, fingerprint — never
the token) and `provider.stats.requests` (token requests by outcome, plain ints; `stats.on_request` /
`build_token_provider(on_request=...)` is called with each outcome).

Errors: TokenRequestRejected (a CredentialsRejected, exit 77: permanent, never retried),
TokenUnavailable (a ServiceUnavailable, exit 69: only with max_wait), ConfigError (exit 78).
"""

from consumer.auth.base import (
    AUTHORIZATION,
    NoneTokenProvider,
    StaticTokenProvider,
    TokenInfo,
    TokenProvider,
    TokenStats,
    headers_for,
)
from consumer.auth.clock import SYSTEM_CLOCK, Clock, SystemClock
from consumer.auth.errors import TokenRequestRejected, TokenUnavailable
from consumer.auth.factory import build_token_provider, resolve_endpoint
from consumer.auth.httpx_auth import BearerAuth, rejected_401_403, token_rejected
from consumer.auth.oauth import OAuthTokenProvider, parse_retry_after
from consumer.auth.settings import AuthConfig
from consumer.auth.urls import check_url_security, is_loopback_host, keycloak_token_url

__all__ = [
    "AUTHORIZATION",
    "SYSTEM_CLOCK",
    "AuthConfig",
    "BearerAuth",
    "Clock",
    "NoneTokenProvider",
    "OAuthTokenProvider",
    "StaticTokenProvider",
    "SystemClock",
    "TokenInfo",
    "TokenProvider",
    "TokenRequestRejected",
    "TokenStats",
    "TokenUnavailable",
    "build_token_provider",
    "check_url_security",
    "headers_for",
    "is_loopback_host",
    "keycloak_token_url",
    "parse_retry_after",
    "rejected_401_403",
    "resolve_endpoint",
    "token_rejected",
]
