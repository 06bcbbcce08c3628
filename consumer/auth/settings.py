"""The [auth] table of the configuration. Key names are fixed by the product contract."""

from __future__ import annotations

from typing import Literal

import msgspec

from consumer.secret import Secret

Grant = Literal["client_credentials", "password", "refresh_token", "token_exchange", "static", "none"]
ClientAuth = Literal["client_secret_basic", "client_secret_post"]
SubjectSource = Literal["configured", "client_credentials"]

# The secret-bearing keys of [auth]; each also has `<key>_env` and `<key>_file` variants.
SECRET_KEYS = ("client_secret", "password", "refresh_token", "subject_token", "static_token")


class AuthConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    grant: Grant = "client_credentials"
    # Where the token endpoint is: exactly one of token_url, issuer (OIDC discovery), base_url + realm.
    token_url: str | None = None
    issuer: str | None = None
    base_url: str | None = None
    realm: str | None = None
    client_id: str | None = None
    client_secret: Secret | None = None
    client_secret_env: str | None = None
    client_secret_file: str | None = None
    client_auth: ClientAuth = "client_secret_basic"
    scope: str | None = None
    audience: str | None = None
    username: str | None = None
    # Every secret comes from exactly one of `<key>`, `<key>_env` or `<key>_file` (SECRET_KEYS).
    password: Secret | None = None
    password_env: str | None = None
    password_file: str | None = None
    refresh_token: Secret | None = None
    refresh_token_env: str | None = None
    refresh_token_file: str | None = None
    # token_exchange: the subject token from subject_token[_env|_file] ("configured"), or the
    # service's own client_credentials token (same client, refreshed as it expires).
    subject_token_source: SubjectSource = "configured"
    subject_token: Secret | None = None
    subject_token_env: str | None = None
    subject_token_file: str | None = None
    subject_token_type: str = "urn:ietf:params:oauth:token-type:access_token"
    requested_subject: str | None = None
    static_token: Secret | None = None
    static_token_env: str | None = None
    static_token_file: str | None = None
    static_header: str = "Authorization"
    refresh_before_expiry_seconds: float = 30.0
    refresh_at_fraction: float = 0.8
    default_expires_in_seconds: float = 300.0
    # Total time for one IdP request (connect to the last body byte), and the largest body accepted.
    timeout_seconds: float = 10.0
    max_response_bytes: int = 1024 * 1024
    backoff_cap_seconds: float = 60.0
    allow_insecure_http: bool = False
