"""The token factory (consumer.auth) against the simulator's Keycloak-compatible IdP: real HTTP, real JWTs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from consumer.auth.errors import TokenRequestRejected
from consumer.auth.factory import build_token_provider
from consumer.auth.settings import AuthConfig
from consumer.secret import Secret
from consumer.sim.idp import Idp, IdpConfig
from consumer.sim.serving import serve

SECRET = "relay-svc-demo-secret"


@pytest.fixture
async def idp() -> AsyncIterator[Idp]:
    server = Idp(IdpConfig.load(token_lifetime=60, rate_limit=1000))
    app = web.Application()
    server.add_routes(app)
    async with serve(app) as site:
        server.base_url = site.base_url
        yield server


@pytest.mark.parametrize("where", ["token_url", "issuer", "base_url"])
@pytest.mark.parametrize("client_auth", ["client_secret_basic", "client_secret_post"])
async def test_client_credentials_tokens_verify(idp: Idp, where: str, client_auth: str) -> None:
    assert idp.base_url is not None
    location = {
        "token_url": {"token_url": f"{idp.issuer()}/protocol/openid-connect/token"},
        "issuer": {"issuer": idp.issuer()},
        "base_url": {"base_url": idp.base_url, "realm": "redmist"},
    }[where]
    cfg = AuthConfig(
        grant="client_credentials",
        client_id="relay-svc",
        client_secret=Secret(SECRET),
        client_auth=client_auth,  # type: ignore[arg-type]
        **location,  # type: ignore[arg-type]
    )
    provider = build_token_provider(cfg, env={})
    try:
        token = await provider.get_token()
        claims = idp.verify(token)
        assert claims["azp"] == "relay-svc" and "relay-svc" in claims["realm_access"]["roles"]
        assert await provider.get_token() == token  # cached
        assert idp.stats["tokens_issued"] == 1
    finally:
        await provider.aclose()


async def test_password_grant(idp: Idp) -> None:
    cfg = AuthConfig(
        grant="password",
        token_url=f"{idp.issuer()}/protocol/openid-connect/token",
        client_id="relay-svc",
        client_secret=Secret(SECRET),
        username="demo",
        password_env="DEMO_PASSWORD",
    )
    provider = build_token_provider(cfg, env={"DEMO_PASSWORD": "demo-password"})
    try:
        assert idp.verify(await provider.get_token())["preferred_username"] == "demo"
    finally:
        await provider.aclose()


@pytest.mark.parametrize(
    ("client_id", "secret", "scope", "error"),
    [
        ("relay-svc", "wrong", None, "unauthorized_client"),
        ("nobody", SECRET, None, "invalid_client"),
        ("relay-svc", SECRET, "superuser", "invalid_scope"),
    ],
)
async def test_rejections_are_permanent_typed_errors(
    idp: Idp, client_id: str, secret: str, scope: str | None, error: str
) -> None:
    cfg = AuthConfig(
        grant="client_credentials",
        token_url=f"{idp.issuer()}/protocol/openid-connect/token",
        client_id=client_id,
        client_secret=Secret(secret),
        scope=scope,
    )
    provider = build_token_provider(cfg, env={})
    try:
        with pytest.raises(TokenRequestRejected) as info:
            await provider.get_token(max_wait=5)
        assert info.value.error == error
        assert secret not in str(info.value)
    finally:
        await provider.aclose()


async def test_bad_password_is_invalid_grant(idp: Idp) -> None:
    cfg = AuthConfig(
        grant="password",
        token_url=f"{idp.issuer()}/protocol/openid-connect/token",
        client_id="relay-svc",
        client_secret=Secret(SECRET),
        username="demo",
        password_env="DEMO_PASSWORD",
    )
    provider = build_token_provider(cfg, env={"DEMO_PASSWORD": "nope"})
    try:
        with pytest.raises(TokenRequestRejected) as info:
            await provider.get_token(max_wait=5)
        assert info.value.error == "invalid_grant" and info.value.status == 401
    finally:
        await provider.aclose()
