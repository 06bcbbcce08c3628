"""Typed token errors. Messages name the client id, grant and token URL — never a secret or token."""

from __future__ import annotations

from consumer.errors import CredentialsRejected, ServiceUnavailable
from consumer.logs import scrub

# OAuth error codes that mean "try again later" even when sent with a 400.
TRANSIENT_OAUTH_ERRORS = frozenset({"temporarily_unavailable", "slow_down", "server_error"})


class TokenRequestRejected(CredentialsRejected):
    """The IdP permanently rejected the token request (invalid_client, invalid_grant, ...). Exit 77.

    Not retried: retrying bad credentials only locks accounts and floods the IdP.
    """

    def __init__(
        self,
        *,
        error: str,
        description: str | None,
        status: int,
        client_id: str | None,
        grant: str,
        token_url: str,
    ) -> None:
        self.error = error
        self.description = scrub(description)[:200] if description else None
        self.status = status
        self.client_id = client_id
        self.grant = grant
        self.token_url = token_url
        detail = f" ({self.description})" if self.description else ""
        super().__init__(
            f"credentials rejected by {token_url} (HTTP {status}): {error}{detail}; "
            f"client_id={client_id!r}, grant={grant}"
        )


class TokenUnavailable(ServiceUnavailable):
    """No token could be obtained within the caller's bound (`max_wait`). Exit 69."""
