"""The simulator's Keycloak-compatible IdP: grants, token claims, discovery/JWKS, error table, limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from aiohttp import web

from consumer.sim.idp import TOKEN_EXCHANGE_GRANT, Idp, IdpConfig, InvalidToken
from consumer.sim.serving import serve

SECRET = "relay-svc-demo-secret"


@pytest.fixture
async def idp_url() -> AsyncIterator[tuple[Idp, str]]:
    idp = Idp(IdpConfig.load(token_lifetime=60, rate_limit=1000))
    app = web.Application()
    idp.add_routes(app)
    async with serve(app) as site:
        idp.base_url = site.base_url
        yield idp, site.base_url


def _token_url(base: str) -> str:
    return f"{base}/realms/redmist/protocol/openid-connect/token"


async def _post(base: str, data: dict[str, str], auth: tuple[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(_token_url(base), data=data, auth=auth)


async def test_discovery_and_jwks_verify_a_client_credentials_token(idp_url: tuple[Idp, str]) -> None:
    idp, base = idp_url
    async with httpx.AsyncClient() as http:
        disc = (await http.get(f"{base}/realms/redmist/.well-known/openid-configuration")).json()
        assert disc["issuer"] == f"{base}/realms/redmist"
        assert disc["token_endpoint"] == _token_url(base)
        jwks = (await http.get(disc["jwks_uri"])).json()
        resp = await http.post(
            disc["token_endpoint"], data={"grant_type": "client_credentials"}, auth=("relay-svc", SECRET)
        )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 60
    assert body["refresh_expires_in"] == 0 and "refresh_token" not in body
    key = jwt.PyJWK(jwks["keys"][0])
    token = body["access_token"]
    assert jwt.get_unverified_header(token)["kid"] == jwks["keys"][0]["kid"]
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience="account", issuer=disc["issuer"])
    for claim in ("iss", "sub", "aud", "azp", "exp", "iat", "jti", "scope"):
        assert claim in claims
    assert claims["azp"] == "relay-svc"
    assert "relay-svc" in claims["realm_access"]["roles"]
    assert claims["exp"] - claims["iat"] == pytest.approx(60)
    assert idp.verify(token)["sub"] == claims["sub"]


async def test_client_secret_post_and_scope(idp_url: tuple[Idp, str]) -> None:
    _, base = idp_url
    resp = await _post(
        base,
        {
            "grant_type": "client_credentials",
            "client_id": "relay-svc",
            "client_secret": SECRET,
            "scope": "status",
        },
    )
    assert resp.status_code == 200
    assert "status" in resp.json()["scope"].split()


@pytest.mark.parametrize(
    ("data", "auth", "status", "error"),
    [
        ({"grant_type": "client_credentials"}, ("relay-svc", "wrong"), 401, "unauthorized_client"),
        ({"grant_type": "client_credentials"}, ("nobody", "x"), 401, "invalid_client"),
        (
            {"grant_type": "client_credentials", "scope": "superuser"},
            ("relay-svc", SECRET),
            400,
            "invalid_scope",
        ),
        (
            {"grant_type": "password", "username": "demo", "password": "nope"},
            ("relay-svc", SECRET),
            401,
            "invalid_grant",
        ),
        ({"grant_type": "magic"}, ("relay-svc", SECRET), 400, "unsupported_grant_type"),
        (
            {"grant_type": "refresh_token", "refresh_token": "garbage"},
            ("relay-svc", SECRET),
            400,
            "invalid_grant",
        ),
    ],
)
async def test_keycloak_error_table(
    idp_url: tuple[Idp, str], data: dict[str, str], auth: tuple[str, str], status: int, error: str
) -> None:
    _, base = idp_url
    resp = await _post(base, data, auth)
    assert resp.status_code == status
    body = resp.json()
    assert body["error"] == error and isinstance(body["error_description"], str)
    assert SECRET not in resp.text


async def test_password_refresh_and_token_exchange(idp_url: tuple[Idp, str]) -> None:
    idp, base = idp_url
    pw = await _post(
        base,
        {"grant_type": "password", "username": "demo", "password": "demo-password"},
        ("relay-svc", SECRET),
    )
    assert pw.status_code == 200
    first: dict[str, Any] = pw.json()
    assert first["refresh_expires_in"] > 0 and first["refresh_token"]
    assert idp.verify(first["access_token"])["preferred_username"] == "demo"
    refreshed = await _post(
        base, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}, ("relay-svc", SECRET)
    )
    assert refreshed.status_code == 200
    assert refreshed.json()["access_token"] != first["access_token"]
    # a refresh token belongs to the client it was issued to
    other = await _post(
        base,
        {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        ("org-admin", "org-admin-demo-secret"),
    )
    assert other.status_code == 400 and other.json()["error"] == "invalid_grant"
    # an access token is not a refresh token
    wrong_type = await _post(
        base, {"grant_type": "refresh_token", "refresh_token": first["access_token"]}, ("relay-svc", SECRET)
    )
    assert wrong_type.status_code == 400

    cc = (await _post(base, {"grant_type": "client_credentials"}, ("relay-svc", SECRET))).json()[
        "access_token"
    ]
    exch = await _post(
        base,
        {
            "grant_type": TOKEN_EXCHANGE_GRANT,
            "subject_token": cc,
            "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "requested_subject": "viewer",
        },
        ("relay-svc", SECRET),
    )
    assert exch.status_code == 200, exch.text
    assert exch.json()["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert idp.verify(exch.json()["access_token"])["preferred_username"] == "viewer"
    denied = await _post(
        base,
        {"grant_type": TOKEN_EXCHANGE_GRANT, "subject_token": cc, "requested_subject": "viewer"},
        ("org-admin", "org-admin-demo-secret"),
    )
    assert denied.status_code == 403 and denied.json()["error"] == "access_denied"


async def test_public_client_has_no_service_account(idp_url: tuple[Idp, str]) -> None:
    _, base = idp_url
    resp = await _post(base, {"grant_type": "client_credentials", "client_id": "timing-web"})
    assert resp.status_code == 400 and resp.json()["error"] == "unauthorized_client"
    ok = await _post(
        base,
        {
            "grant_type": "password",
            "client_id": "timing-web",
            "username": "viewer",
            "password": "viewer-password",
        },
    )
    assert ok.status_code == 200


async def test_rate_limit_per_ip_answers_429_with_retry_after() -> None:
    idp = Idp(IdpConfig.load(rate_limit=5))
    app = web.Application()
    idp.add_routes(app)
    async with serve(app) as site, httpx.AsyncClient() as http:
        url = f"{site.base_url}/realms/redmist/.well-known/openid-configuration"
        statuses = [(await http.get(url)) for _ in range(8)]
    codes = [r.status_code for r in statuses]
    assert codes[:5] == [200] * 5 and 429 in codes[5:]
    limited = next(r for r in statuses if r.status_code == 429)
    assert int(limited.headers["Retry-After"]) >= 1


async def test_fault_fail_for_503_and_429_then_recovers(idp_url: tuple[Idp, str]) -> None:
    idp, base = idp_url
    idp.fail_for(503, 30)
    resp = await _post(base, {"grant_type": "client_credentials"}, ("relay-svc", SECRET))
    assert resp.status_code == 503 and int(resp.headers["Retry-After"]) >= 1
    idp.fail_for(429, 30)
    resp = await _post(base, {"grant_type": "client_credentials"}, ("relay-svc", SECRET))
    assert resp.status_code == 429 and "Retry-After" in resp.headers
    idp.clear_faults()
    resp = await _post(base, {"grant_type": "client_credentials"}, ("relay-svc", SECRET))
    assert resp.status_code == 200


async def test_fault_slow_idp(idp_url: tuple[Idp, str]) -> None:
    idp, base = idp_url
    idp.slow_for(0.3, 30)
    started = time.monotonic()
    resp = await _post(base, {"grant_type": "client_credentials"}, ("relay-svc", SECRET))
    assert resp.status_code == 200
    assert time.monotonic() - started >= 0.3
    async with httpx.AsyncClient(timeout=0.1) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(
                _token_url(base), data={"grant_type": "client_credentials"}, auth=("relay-svc", SECRET)
            )


async def test_fault_expire_all_tokens_and_natural_expiry() -> None:
    now = [1_000_000.0]
    idp = Idp(IdpConfig.load(token_lifetime=3), clock=lambda: now[0], base_url="http://127.0.0.1:9")
    token = idp.issue_token("relay-svc")
    assert idp.verify(token)["azp"] == "relay-svc"
    now[0] += 3.5
    with pytest.raises(InvalidToken):
        idp.verify(token)
    fresh = idp.issue_token("relay-svc")
    idp.expire_all_tokens()
    with pytest.raises(InvalidToken):
        idp.verify(fresh)
    now[0] += 0.01
    assert idp.verify(idp.issue_token("relay-svc"))


async def test_concurrent_requests_each_get_distinct_tokens(idp_url: tuple[Idp, str]) -> None:
    _, base = idp_url
    async with httpx.AsyncClient() as http:
        resps = await asyncio.gather(
            *(
                http.post(
                    _token_url(base), data={"grant_type": "client_credentials"}, auth=("relay-svc", SECRET)
                )
                for _ in range(10)
            )
        )
    tokens = {r.json()["access_token"] for r in resps}
    assert len(tokens) == 10
