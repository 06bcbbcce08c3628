"""Issue 10 item 10: token exchange with the service's own client_credentials token as the subject
(`subject_token_source = "client_credentials"`), refreshed as it expires — against the simulator's
Keycloak-compatible IdP (real HTTP, real JWTs, its own clock advanced with the provider's)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from consumer.auth import AuthConfig, TokenRequestRejected, build_token_provider
from consumer.errors import ConfigError
from consumer.secret import Secret
from consumer.sim.idp import Idp, IdpConfig
from consumer.sim.serving import serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "auth"))
from authtest_helpers import FakeClock

SECRET = "relay-svc-demo-secret"
LIFETIME = 60.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(auto=True)


@pytest.fixture
async def idp(clock: FakeClock) -> AsyncIterator[Idp]:
    # The IdP's wall clock is the provider's fake clock: advancing it expires tokens on both sides.
    server = Idp(
        IdpConfig.load(token_lifetime=LIFETIME, refresh_lifetime=LIFETIME, rate_limit=1000), clock=clock.time
    )
    app = web.Application()
    server.add_routes(app)
    async with serve(app) as site:
        server.base_url = site.base_url
        yield server


def exchange_cfg(idp: Idp, **kw: object) -> AuthConfig:
    base: dict[str, object] = {
        "grant": "token_exchange",
        "issuer": idp.issuer(),
        "client_id": "relay-svc",
        "client_secret": Secret(SECRET),
        "subject_token_source": "client_credentials",
        "requested_subject": "viewer",
    }
    base.update(kw)
    return AuthConfig(**base)  # type: ignore[arg-type]


async def test_exchange_uses_own_client_credentials_token(idp: Idp, clock: FakeClock) -> None:
    provider = build_token_provider(exchange_cfg(idp), env={}, clock=clock)
    try:
        token = await provider.get_token()
        claims = idp.verify(token)
        assert claims["preferred_username"] == "viewer" and claims["azp"] == "relay-svc"
        assert idp.stats["tokens_issued"] == 2  # the service's own token, then the exchange
        assert await provider.get_token() == token  # cached
        info = provider.last_token_info
        assert info is not None and info.grant == "token_exchange"

        # Both the exchanged token (and its refresh token) and the subject expire: the next request
        # gets a new client_credentials token and exchanges that.
        clock.advance(LIFETIME + 1)
        fresh = await provider.get_token()
        assert fresh != token
        assert idp.verify(fresh)["preferred_username"] == "viewer"
        assert idp.stats["tokens_issued"] == 4
    finally:
        await provider.aclose()


async def test_revoked_subject_is_replaced_once(idp: Idp, clock: FakeClock) -> None:
    provider = build_token_provider(exchange_cfg(idp), env={}, clock=clock)
    try:
        first = await provider.get_token()
        # Every token issued so far is revoked: our cached subject is still "fresh" by its schedule,
        # so the exchange is refused (invalid_token); the provider must drop the subject and retry.
        idp.expire_all_tokens()
        provider.invalidate(first)
        clock.advance(2)  # past the 1 s request floor
        second = await provider.get_token(max_wait=10)
        assert idp.verify(second)["preferred_username"] == "viewer"
        # Refused: the exchanged token's refresh token (revoked), then the exchange with the revoked
        # subject; issued: own token + exchange, twice.
        assert idp.stats["rejected"] == 2
        assert idp.stats["tokens_issued"] == 4
    finally:
        await provider.aclose()


async def test_wrong_secret_for_own_token_is_rejected(idp: Idp, clock: FakeClock) -> None:
    provider = build_token_provider(exchange_cfg(idp, client_secret=Secret("wrong")), env={}, clock=clock)
    try:
        with pytest.raises(TokenRequestRejected) as caught:
            await provider.get_token(max_wait=10)
        assert caught.value.exit_code == 77 and "wrong" not in str(caught.value)
    finally:
        await provider.aclose()


def test_own_token_source_needs_a_secret_and_no_configured_subject(idp: Idp) -> None:
    with pytest.raises(ConfigError, match=r"auth\.client_secret: subject_token_source"):
        build_token_provider(exchange_cfg(idp, client_secret=None), env={}, source="f.toml")
    with pytest.raises(ConfigError, match=r"auth\.subject_token_source"):
        build_token_provider(exchange_cfg(idp, subject_token=Secret("x")), env={}, source="f.toml")


async def test_config_file_with_secret_file_end_to_end(idp: Idp, clock: FakeClock, tmp_path: Path) -> None:
    from consumer.config import load_config

    (tmp_path / "relay-secret").write_text(SECRET + "\n")
    (tmp_path / "relay-secret").chmod(0o600)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[auth]\ngrant = "token_exchange"\nissuer = "{idp.issuer()}"\nclient_id = "relay-svc"\n'
        'client_secret_file = "relay-secret"\nsubject_token_source = "client_credentials"\n'
        'requested_subject = "demo"\n'
    )
    cfg = load_config(config, env={})
    provider = build_token_provider(
        cfg.auth, source=cfg.source, env={"CREDENTIALS_DIRECTORY": str(tmp_path)}, clock=clock
    )
    try:
        assert idp.verify(await provider.get_token())["preferred_username"] == "demo"
    finally:
        await provider.aclose()
