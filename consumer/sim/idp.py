"""A Keycloak-compatible token service on aiohttp (the simulator's IdP).

Paths (realm from the clients file, default `redmist`):
  POST /realms/{realm}/protocol/openid-connect/token
  GET  /realms/{realm}/.well-known/openid-configuration
  GET  /realms/{realm}/protocol/openid-connect/certs        (JWKS)
Grants: client_credentials (client_secret_basic and client_secret_post), password, refresh_token,
token exchange (RFC 8693, `requested_subject` impersonation as Keycloak's legacy exchange does).
Access tokens are RS256 JWTs (key generated at start) with iss, sub, aud, azp, exp, iat, jti, scope,
typ and realm_access.roles. Client credentials get `refresh_expires_in: 0` and no refresh token.
Errors use Keycloak's shapes: `{"error": ..., "error_description": ...}`.

Faults (Python API; the simulator's admin API exposes them): `fail_for(status, seconds)` answers every
IdP request with 429/503 (+ Retry-After) for a while, `slow_for(delay, seconds)` delays answers,
`expire_all_tokens()` makes every token issued so far invalid.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import time
import tomllib
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from consumer.logs import get_logger
from consumer.sim.ratelimit import TokenBucket, retry_after_header

log = get_logger(__name__)

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
REFRESH_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:refresh_token"
DEFAULT_SCOPES = ("profile", "email")
_NS = uuid.UUID("6f9c1a52-6a53-4f0e-9a43-5b7c2a1e0d11")

Clock = Callable[[], float]


class InvalidToken(Exception):
    """A bearer the IdP did not issue, or one that has expired or was revoked."""


@dataclass(frozen=True, slots=True)
class IdpClient:
    client_id: str
    client_secret: str | None = None
    public: bool = False
    roles: tuple[str, ...] = ()
    service_account: bool = True
    direct_access_grants: bool = False
    token_exchange: bool = False
    scopes: tuple[str, ...] = ("openid", "profile", "email")


@dataclass(frozen=True, slots=True)
class IdpUser:
    username: str
    password: str
    roles: tuple[str, ...] = ()


@dataclass(slots=True)
class IdpConfig:
    realm: str = "redmist"
    clients: dict[str, IdpClient] = field(default_factory=dict)
    users: dict[str, IdpUser] = field(default_factory=dict)
    token_lifetime: float = 300.0
    refresh_lifetime: float = 1800.0
    rate_limit: float = 50.0  # requests per second per client IP
    audience: str = "account"

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> IdpConfig:
        """Clients and users from a TOML file (default: the demo file shipped with the package)."""
        if path is None:
            text = resources.files("consumer.sim").joinpath("clients.toml").read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        data = tomllib.loads(text)
        clients = {
            c["client_id"]: IdpClient(
                client_id=c["client_id"],
                client_secret=c.get("client_secret"),
                public=bool(c.get("public", False)),
                roles=tuple(c.get("roles", ())),
                service_account=bool(c.get("service_account", True)),
                direct_access_grants=bool(c.get("direct_access_grants", False)),
                token_exchange=bool(c.get("token_exchange", False)),
                scopes=tuple(c.get("scopes", ("openid", "profile", "email"))),
            )
            for c in data.get("clients", [])
        }
        users = {
            u["username"]: IdpUser(u["username"], u["password"], tuple(u.get("roles", ())))
            for u in data.get("users", [])
        }
        return cls(realm=str(data.get("realm", "redmist")), clients=clients, users=users, **overrides)


class OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{status} {error}: {description}")
        self.status = status
        self.error = error
        self.description = description

    def response(self) -> web.Response:
        return web.json_response(
            {"error": self.error, "error_description": self.description}, status=self.status
        )


def _invalid_client_credentials() -> OAuthError:
    return OAuthError(401, "unauthorized_client", "Invalid client or Invalid client credentials")


class Idp:
    """The token service. Mount with `add_routes(app)`; `verify(token)` validates a bearer in-process."""

    def __init__(
        self,
        config: IdpConfig | None = None,
        *,
        clock: Clock = time.time,
        private_key: rsa.RSAPrivateKey | None = None,
        base_url: str | None = None,
    ) -> None:
        self.config = config if config is not None else IdpConfig.load()
        self._clock = clock
        self._key = private_key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key = self._key.public_key()
        self.kid = uuid.uuid4().hex[:16]
        self.base_url = base_url  # set by whoever binds the port; else derived from each request
        self._limiter = TokenBucket(self.config.rate_limit, clock=time.monotonic)
        self._not_before = 0.0
        self._fail_status = 0
        self._fail_until = 0.0
        self._slow_delay = 0.0
        self._slow_until = 0.0
        self.stats: dict[str, int] = {"token_requests": 0, "tokens_issued": 0, "rejected": 0}

    # --- faults --------------------------------------------------------------------------------------

    def fail_for(self, status: int, seconds: float) -> None:
        """Answer every IdP request with `status` (429 or 503, with Retry-After) for `seconds`."""
        if status not in (429, 503):
            raise ValueError("status must be 429 or 503")
        self._fail_status = status
        self._fail_until = time.monotonic() + seconds

    def slow_for(self, delay: float, seconds: float) -> None:
        """Delay every IdP answer by `delay` seconds for the next `seconds`."""
        self._slow_delay = delay
        self._slow_until = time.monotonic() + seconds

    def expire_all_tokens(self) -> None:
        """Every access and refresh token issued until now becomes invalid (`verify` rejects it)."""
        self._not_before = self._clock() + 1e-6

    def clear_faults(self) -> None:
        self._fail_until = 0.0
        self._slow_until = 0.0

    # --- URLs ----------------------------------------------------------------------------------------

    @property
    def realm_path(self) -> str:
        return f"/realms/{self.config.realm}"

    def issuer(self, request: web.Request | None = None) -> str:
        base = self.base_url
        if base is None:
            if request is None:
                raise RuntimeError("Idp.base_url is not set")
            base = f"{request.scheme}://{request.host}"
        return base.rstrip("/") + self.realm_path

    def add_routes(self, app: web.Application) -> None:
        p = self.realm_path
        app.router.add_post(f"{p}/protocol/openid-connect/token", self._guard(self._token))
        app.router.add_get(f"{p}/.well-known/openid-configuration", self._guard(self._discovery))
        app.router.add_get(f"{p}/protocol/openid-connect/certs", self._guard(self._jwks))

    def jwks(self) -> dict[str, Any]:
        jwk: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(self.public_key, as_dict=True)
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}

    # --- verification (the hub and REST use this in-process) -----------------------------------------

    def verify(self, token: str, *, expected_type: str = "Bearer") -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.public_key,
                algorithms=["RS256"],
                options={"verify_aud": False, "verify_iss": False, "verify_exp": False},
            )
        except jwt.PyJWTError as err:
            raise InvalidToken("signature or format invalid") from err
        now = self._clock()
        if claims.get("typ") != expected_type:
            raise InvalidToken("wrong token type")
        if float(claims.get("exp", 0)) <= now:
            raise InvalidToken("token expired")
        if float(claims.get("iat", 0)) < self._not_before:
            raise InvalidToken("token revoked")
        if self.base_url is not None and claims.get("iss") != self.issuer():
            raise InvalidToken("wrong issuer")
        return claims

    def issue_token(self, client_id: str, *, username: str | None = None, scope: str = "") -> str:
        """Mint an access token directly (tests): for a client's service account or a user."""
        client = self.config.clients[client_id]
        user = self.config.users[username] if username else None
        return self._access_token(None, client, user, scope or " ".join(DEFAULT_SCOPES))[0]

    # --- handlers ------------------------------------------------------------------------------------

    def _guard(
        self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def guarded(request: web.Request) -> web.StreamResponse:
            now = time.monotonic()
            if now < self._slow_until:
                await asyncio.sleep(self._slow_delay)
            if now < self._fail_until:
                self.stats["rejected"] += 1
                return web.json_response(
                    {"error": "temporarily_unavailable", "error_description": "Injected fault"},
                    status=self._fail_status,
                    headers={"Retry-After": retry_after_header(self._fail_until - now)},
                )
            wait = self._limiter.acquire(request.remote or "?")
            if wait > 0:
                self.stats["rejected"] += 1
                return web.json_response(
                    {"error": "too_many_requests", "error_description": "Too many requests"},
                    status=429,
                    headers={"Retry-After": retry_after_header(wait)},
                )
            try:
                return await handler(request)
            except OAuthError as err:
                self.stats["rejected"] += 1
                return err.response()

        return guarded

    async def _discovery(self, request: web.Request) -> web.StreamResponse:
        iss = self.issuer(request)
        oidc = f"{iss}/protocol/openid-connect"
        return web.json_response(
            {
                "issuer": iss,
                "authorization_endpoint": f"{oidc}/auth",
                "token_endpoint": f"{oidc}/token",
                "introspection_endpoint": f"{oidc}/token/introspect",
                "userinfo_endpoint": f"{oidc}/userinfo",
                "end_session_endpoint": f"{oidc}/logout",
                "jwks_uri": f"{oidc}/certs",
                "grant_types_supported": [
                    "authorization_code",
                    "client_credentials",
                    "password",
                    "refresh_token",
                    TOKEN_EXCHANGE_GRANT,
                ],
                "response_types_supported": ["code"],
                "subject_types_supported": ["public", "pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "scopes_supported": sorted({s for c in self.config.clients.values() for s in c.scopes}),
                "claims_supported": ["iss", "sub", "aud", "exp", "iat", "azp", "scope", "realm_access"],
            }
        )

    async def _jwks(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.jwks())

    async def _token(self, request: web.Request) -> web.StreamResponse:
        self.stats["token_requests"] += 1
        form = await request.post()
        params = {k: str(v) for k, v in form.items()}
        client = self._authenticate_client(request, params)
        grant = params.get("grant_type")
        if not grant:
            raise OAuthError(400, "invalid_request", "Missing form parameter: grant_type")
        if grant == "client_credentials":
            body = self._client_credentials(request, client, params)
        elif grant == "password":
            body = self._password(request, client, params)
        elif grant == "refresh_token":
            body = self._refresh(request, client, params)
        elif grant == TOKEN_EXCHANGE_GRANT:
            body = self._exchange(request, client, params)
        else:
            raise OAuthError(400, "unsupported_grant_type", "Unsupported grant_type")
        self.stats["tokens_issued"] += 1
        return web.json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _authenticate_client(self, request: web.Request, params: Mapping[str, str]) -> IdpClient:
        client_id, secret = params.get("client_id"), params.get("client_secret")
        header = request.headers.get("Authorization", "")
        if header[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
                basic_id, _, basic_secret = decoded.partition(":")
            except (binascii.Error, UnicodeDecodeError) as err:
                raise OAuthError(400, "invalid_request", "Invalid Authorization header") from err
            client_id, secret = unquote_plus(basic_id), unquote_plus(basic_secret)
        if not client_id:
            raise OAuthError(401, "invalid_client", "Invalid client or Invalid client credentials")
        client = self.config.clients.get(client_id)
        if client is None:
            raise OAuthError(401, "invalid_client", "Invalid client or Invalid client credentials")
        if client.public:
            return client
        if not secret:
            raise OAuthError(401, "unauthorized_client", "Client secret not provided in request")
        if client.client_secret is None or not _consteq(secret, client.client_secret):
            raise _invalid_client_credentials()
        return client

    def _scope(self, client: IdpClient, requested: str | None) -> str:
        asked = (requested or "").split()
        bad = [s for s in asked if s not in client.scopes]
        if bad:
            raise OAuthError(400, "invalid_scope", f"Invalid scopes: {' '.join(asked)}")
        granted = [s for s in asked if s == "openid"] + [s for s in DEFAULT_SCOPES if s in client.scopes]
        granted += [s for s in asked if s not in granted]
        return " ".join(granted)

    def _client_credentials(
        self, request: web.Request, client: IdpClient, params: Mapping[str, str]
    ) -> dict[str, Any]:
        if client.public or not client.service_account:
            raise OAuthError(400, "unauthorized_client", "Client not enabled to retrieve service account")
        scope = self._scope(client, params.get("scope"))
        token, lifetime = self._access_token(request, client, None, scope)
        return self._response(token, lifetime, scope, refresh=None)

    def _password(self, request: web.Request, client: IdpClient, params: Mapping[str, str]) -> dict[str, Any]:
        if not client.direct_access_grants:
            raise OAuthError(400, "unauthorized_client", "Client not allowed for direct access grants")
        user = self.config.users.get(params.get("username", ""))
        if user is None or not _consteq(params.get("password", ""), user.password):
            raise OAuthError(401, "invalid_grant", "Invalid user credentials")
        scope = self._scope(client, params.get("scope"))
        token, lifetime = self._access_token(request, client, user, scope)
        refresh = self._refresh_token(request, client, user, scope)
        return self._response(token, lifetime, scope, refresh=refresh)

    def _refresh(self, request: web.Request, client: IdpClient, params: Mapping[str, str]) -> dict[str, Any]:
        raw = params.get("refresh_token")
        if not raw:
            raise OAuthError(400, "invalid_request", "Missing parameter: refresh_token")
        try:
            claims = self.verify(raw, expected_type="Refresh")
        except InvalidToken as err:
            raise OAuthError(400, "invalid_grant", "Invalid refresh token") from err
        if claims.get("azp") != client.client_id:
            raise OAuthError(
                400, "invalid_grant", "Invalid refresh token. Token client and authorized client don't match"
            )
        user = self.config.users.get(str(claims.get("preferred_username", "")))
        if user is None:
            raise OAuthError(400, "invalid_grant", "User not found")
        scope = str(claims.get("scope", ""))
        token, lifetime = self._access_token(request, client, user, scope)
        refresh = self._refresh_token(request, client, user, scope)
        return self._response(token, lifetime, scope, refresh=refresh)

    def _exchange(self, request: web.Request, client: IdpClient, params: Mapping[str, str]) -> dict[str, Any]:
        subject_token = params.get("subject_token")
        if not subject_token:
            raise OAuthError(400, "invalid_request", "Missing parameter: subject_token")
        subject_type = params.get("subject_token_type", ACCESS_TOKEN_TYPE)
        if subject_type != ACCESS_TOKEN_TYPE:
            raise OAuthError(400, "invalid_request", "Invalid token type, must be access token")
        try:
            self.verify(subject_token)
        except InvalidToken as err:
            raise OAuthError(400, "invalid_token", "Invalid token") from err
        if not client.token_exchange:
            raise OAuthError(403, "access_denied", "Client not allowed to exchange")
        requested = params.get("requested_subject")
        if not requested:
            raise OAuthError(400, "invalid_request", "requested_subject is required by this simulator")
        user = self.config.users.get(requested) or next(
            (u for u in self.config.users.values() if _user_sub(u) == requested), None
        )
        if user is None:
            raise OAuthError(403, "access_denied", "Requested subject not found")
        requested_type = params.get("requested_token_type", ACCESS_TOKEN_TYPE)
        if requested_type not in (ACCESS_TOKEN_TYPE, REFRESH_TOKEN_TYPE):
            raise OAuthError(400, "invalid_request", "requested_token_type unsupported")
        scope = self._scope(client, params.get("scope"))
        token, lifetime = self._access_token(request, client, user, scope)
        refresh = self._refresh_token(request, client, user, scope)
        body = self._response(token, lifetime, scope, refresh=refresh)
        body["issued_token_type"] = ACCESS_TOKEN_TYPE
        return body

    # --- minting -------------------------------------------------------------------------------------

    def _response(
        self, token: str, lifetime: float, scope: str, *, refresh: tuple[str, float] | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "access_token": token,
            "expires_in": int(lifetime) if float(lifetime).is_integer() else lifetime,
            "refresh_expires_in": 0,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "scope": scope,
        }
        if refresh is not None:
            body["refresh_token"], refresh_lifetime = refresh
            body["refresh_expires_in"] = int(refresh_lifetime)
            body["session_state"] = uuid.uuid4().hex
        return body

    def _base_claims(
        self,
        request: web.Request | None,
        client: IdpClient,
        user: IdpUser | None,
        scope: str,
        lifetime: float,
    ) -> dict[str, Any]:
        now = self._clock()
        if user is not None:
            sub, username, roles = _user_sub(user), user.username, user.roles
        else:
            sub = str(uuid.uuid5(_NS, f"service-account-{client.client_id}"))
            username, roles = f"service-account-{client.client_id}", client.roles
        claims: dict[str, Any] = {
            "exp": now + lifetime,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "iss": self.issuer(request),
            "aud": self.config.audience,
            "sub": sub,
            "azp": client.client_id,
            "scope": scope,
            "preferred_username": username,
            "realm_access": {"roles": ["default-roles-" + self.config.realm, *roles]},
        }
        if user is None:
            claims["client_id"] = client.client_id
        return claims

    def _access_token(
        self, request: web.Request | None, client: IdpClient, user: IdpUser | None, scope: str
    ) -> tuple[str, float]:
        lifetime = self.config.token_lifetime
        claims = self._base_claims(request, client, user, scope, lifetime)
        claims["typ"] = "Bearer"
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid}), lifetime

    def _refresh_token(
        self, request: web.Request | None, client: IdpClient, user: IdpUser, scope: str
    ) -> tuple[str, float]:
        lifetime = self.config.refresh_lifetime
        claims = self._base_claims(request, client, user, scope, lifetime)
        claims["typ"] = "Refresh"
        claims["aud"] = self.issuer(request)
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid}), lifetime


def _user_sub(user: IdpUser) -> str:
    return str(uuid.uuid5(_NS, f"user-{user.username}"))


def _consteq(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
