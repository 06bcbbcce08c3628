"""The provider contract, token metadata, request counters, and the static / none providers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from consumer.logs import get_logger, register_secret
from consumer.secret import Secret, fingerprint

log = get_logger(__name__)

AUTHORIZATION = "Authorization"

# Outcomes counted per token request (labels for the daemon's Prometheus counter).
Outcome = Literal[
    "ok", "rejected", "rate_limited", "server_error", "network_error", "malformed", "http_error"
]
OUTCOMES: tuple[Outcome, ...] = (
    "ok",
    "rejected",
    "rate_limited",
    "server_error",
    "network_error",
    "malformed",
    "http_error",
)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What is known about the current token — never the token itself (safe to log and print)."""

    grant: str
    token_type: str
    scope: str | None
    expires_in: float | None  # lifetime in seconds as granted; None = never expires (static)
    expires_in_source: Literal["response", "jwt", "default", "none"]
    obtained_at: float  # wall clock (epoch s) when the request was sent
    expires_at: float | None  # wall clock (epoch s)
    fingerprint: str  # sha256 prefix of the token
    is_jwt: bool
    refresh_token_present: bool = False


@dataclass(slots=True)
class TokenStats:
    """Token requests by outcome (plain ints). `on_request` is called with each outcome as it happens."""

    requests: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    on_request: Callable[[str], None] | None = None

    def count(self, outcome: Outcome) -> None:
        self.requests[outcome] = self.requests.get(outcome, 0) + 1
        if self.on_request is not None:
            self.on_request(outcome)

    @property
    def total(self) -> int:
        return sum(self.requests.values())


class TokenProvider(Protocol):
    """Source of access tokens for one identity.

    `header_name` tells callers how to send the token: "Authorization" means `Authorization: Bearer
    <token>`; any other name (e.g. "RPIAuthKey") means that header carries the raw token. An empty
    token ("" — the `none` grant) means: send no credentials at all. Use `headers_for()`.
    """

    header_name: str
    stats: TokenStats

    @property
    def last_token_info(self) -> TokenInfo | None: ...

    async def get_token(self, *, max_wait: float | None = None) -> str:
        """A valid token. Without `max_wait` it waits for the IdP as long as it takes (retrying
        transient failures); with it, raises TokenUnavailable (exit 69) after that many seconds.
        Raises TokenRequestRejected (exit 77) on permanent rejection."""
        ...

    def invalidate(self, token: str) -> None:
        """A resource server rejected `token`: forget it if (and only if) it is still the cached one."""
        ...

    async def aclose(self) -> None: ...


def headers_for(header_name: str, token: str) -> dict[str, str]:
    """HTTP headers carrying `token` the way `header_name` asks (see TokenProvider)."""
    if not token:
        return {}
    if header_name.lower() == AUTHORIZATION.lower():
        return {AUTHORIZATION: f"Bearer {token}"}
    return {header_name: token}


class NoneTokenProvider:
    """grant = "none": no credentials. get_token() returns "" so callers send no Authorization."""

    header_name = AUTHORIZATION

    def __init__(self) -> None:
        self.stats = TokenStats()

    @property
    def last_token_info(self) -> TokenInfo | None:
        return None

    async def get_token(self, *, max_wait: float | None = None) -> str:
        return ""

    def invalidate(self, token: str) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return "NoneTokenProvider()"


class StaticTokenProvider:
    """grant = "static": a fixed token or API key, sent in `header_name` (raw unless Authorization)."""

    def __init__(self, token: Secret, *, header_name: str = AUTHORIZATION, wall: Callable[[], float]) -> None:
        register_secret(token)
        self._token = token
        self.header_name = header_name
        self.stats = TokenStats()
        self._warned = False
        self._info = TokenInfo(
            grant="static",
            token_type="Bearer" if header_name.lower() == AUTHORIZATION.lower() else "api-key",
            scope=None,
            expires_in=None,
            expires_in_source="none",
            obtained_at=wall(),
            expires_at=None,
            fingerprint=token.fingerprint,
            is_jwt=token.reveal().count(".") == 2,
        )

    @property
    def last_token_info(self) -> TokenInfo | None:
        return self._info

    async def get_token(self, *, max_wait: float | None = None) -> str:
        return self._token.reveal()

    def invalidate(self, token: str) -> None:
        # A static token cannot be refreshed; say so once instead of on every rejected request.
        if not self._warned and token == self._token.reveal():
            self._warned = True
            log.warning("auth.static_token_rejected", token_fingerprint=fingerprint(token))

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"StaticTokenProvider(header_name={self.header_name!r}, token={self._token!r})"
