"""Secrets sources, URL rules, BearerAuth, static/none providers, and log redaction."""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import pytest
from authtest_helpers import FakeClock, LogCapture

from consumer.auth import (
    AuthConfig,
    BearerAuth,
    TokenRequestRejected,
    TokenUnavailable,
    build_token_provider,
    check_url_security,
    headers_for,
    rejected_401_403,
)
from consumer.auth.credentials import read_client_secret
from consumer.config import load_config
from consumer.errors import ConfigError
from consumer.secret import Secret

URL = "https://idp.example/token"


# -- URL rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://idp.example/token",
        "http://127.0.0.1:8080/token",
        "http://127.5.6.7/token",
        "http://[::1]:9/x",
        "http://localhost/x",
        "ws://localhost/hub",
        "wss://hub.example/hub",
    ],
)
def test_urls_allowed(url: str) -> None:
    assert check_url_security(url, False, "token_url") == url


@pytest.mark.parametrize(
    "url", ["http://idp.example/token", "ws://10.0.0.1/hub", "http://localhost.evil.com/"]
)
def test_plain_http_refused_unless_allowed(url: str) -> None:
    with pytest.raises(ConfigError, match="plain") as caught:
        check_url_security(url, False, "token_url", file="c.toml", key="auth.token_url")
    assert "c.toml: auth.token_url" in str(caught.value)
    assert check_url_security(url, True, "token_url") == url


@pytest.mark.parametrize("url", ["ftp://idp.example/", "idp.example/token", "https:///nohost"])
def test_bad_urls_refused(url: str) -> None:
    with pytest.raises(ConfigError):
        check_url_security(url, True, "token_url")


def test_exactly_one_endpoint_source() -> None:
    both = AuthConfig(
        token_url=URL, issuer="https://idp.example", client_id="c", client_secret=Secret("abcdefg")
    )
    with pytest.raises(ConfigError, match="exactly one"):
        build_token_provider(both, source="f.toml", env={})
    realm_only = AuthConfig(base_url="https://kc.example", client_id="c", client_secret=Secret("abcdefg"))
    with pytest.raises(ConfigError, match="realm"):
        build_token_provider(realm_only, source="f.toml", env={})


# -- secret sources --------------------------------------------------------------------------------


def test_secret_from_env_and_missing_env() -> None:
    cfg = AuthConfig(token_url=URL, client_id="c", client_secret_env="MY_SECRET")
    assert read_client_secret(cfg, source="f.toml", env={"MY_SECRET": "from-env"}) == Secret("from-env")
    with pytest.raises(ConfigError) as caught:
        build_token_provider(cfg, source="f.toml", env={})
    assert "MY_SECRET" in str(caught.value) and "auth.client_secret_env" in str(caught.value)


def test_secret_file_credentials_directory_first(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "client_secret").write_text("from-credentials-dir\n")
    confdir = tmp_path / "conf"
    confdir.mkdir()
    (confdir / "client_secret").write_text("from-config-dir\n")
    config = confdir / "config.toml"
    config.write_text("")
    cfg = AuthConfig(token_url=URL, client_id="c", client_secret_file="client_secret")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert read_client_secret(cfg, source=str(config), env=env) == Secret("from-credentials-dir")
    assert read_client_secret(cfg, source=str(config), env={}) == Secret("from-config-dir")
    with pytest.raises(ConfigError, match="cannot read"):
        read_client_secret(AuthConfig(client_secret_file="nope"), source=str(config), env=env)


def test_only_one_secret_source() -> None:
    cfg = AuthConfig(token_url=URL, client_id="c", client_secret=Secret("abcdefg"), client_secret_env="X")
    with pytest.raises(ConfigError, match="only one"):
        build_token_provider(cfg, env={"X": "y"})


def test_inline_secret_in_readable_config_warns(tmp_path: Path, json_logs: LogCapture) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[auth]\ntoken_url = "{URL}"\nclient_id = "c"\nclient_secret = "inline-secret-value"\n'
    )
    config.chmod(0o644)
    loaded = load_config(config, env={})
    build_token_provider(loaded.auth, source=loaded.source, env={})
    warnings = [r for r in json_logs.records() if r["level"] == "warning"]
    assert len(warnings) == 1 and warnings[0]["event"] == "auth.file_readable_by_others"
    assert "readable by group/others" in warnings[0]["problem"]
    assert warnings[0]["file"] == str(config)
    config.chmod(0o600)
    build_token_provider(loaded.auth, source=loaded.source, env={})
    assert len([r for r in json_logs.records() if r["level"] == "warning"]) == 1
    assert "inline-secret-value" not in json_logs.text


def test_env_override_of_auth_key(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[auth]\ntoken_url = "{URL}"\nclient_id = "c"\n')
    loaded = load_config(config, env={"EVENT_CONSUMER__AUTH__CLIENT_ID": "overridden"})
    assert loaded.auth.client_id == "overridden"


# -- static / none / BearerAuth --------------------------------------------------------------------


async def test_static_provider_raw_header_and_bearer_auth() -> None:
    provider = build_token_provider(
        AuthConfig(grant="static", static_token_env="KEY", static_header="RPIAuthKey"),
        env={"KEY": "api-key-123"},
    )
    assert provider.header_name == "RPIAuthKey"
    assert await provider.get_token() == "api-key-123"
    assert "api-key-123" not in repr(provider)
    seen: list[httpx.Headers] = []

    def resource(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(401)

    async with httpx.AsyncClient(transport=httpx.MockTransport(resource), auth=BearerAuth(provider)) as c:
        resp = await c.get("https://api.example/x")
    assert resp.status_code == 401
    assert len(seen) == 1  # a static token cannot change: no pointless retry
    assert seen[0]["RPIAuthKey"] == "api-key-123" and "authorization" not in seen[0]


async def test_none_provider_sends_nothing() -> None:
    provider = build_token_provider(AuthConfig(grant="none"))
    assert await provider.get_token() == ""
    assert headers_for(provider.header_name, "") == {}
    assert headers_for("Authorization", "abc") == {"Authorization": "Bearer abc"}
    seen: list[httpx.Headers] = []

    def resource(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(resource), auth=BearerAuth(provider)) as c:
        await c.get("https://api.example/x")
    assert "authorization" not in seen[0]


async def test_bearer_auth_invalid_token_challenge_retries_once() -> None:
    clock = FakeClock()
    n = 0

    def idp(_request: httpx.Request) -> httpx.Response:
        nonlocal n
        n += 1
        return httpx.Response(200, json={"access_token": f"tok-{n}-abcdef", "expires_in": 300})

    provider = build_token_provider(
        AuthConfig(token_url=URL, client_id="c", client_secret=Secret("abcdefgh")),
        http=httpx.AsyncClient(transport=httpx.MockTransport(idp)),
        clock=clock,
        env={},
    )
    seen: list[str] = []

    def resource(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        challenge = 'Bearer error="invalid_token", error_description="expired"'
        return httpx.Response(403, headers={"WWW-Authenticate": challenge})

    async with httpx.AsyncClient(transport=httpx.MockTransport(resource), auth=BearerAuth(provider)) as c:
        resp = await c.post("https://api.example/x", json={"a": 1})
    assert resp.status_code == 403
    assert seen == ["Bearer tok-1-abcdef", "Bearer tok-2-abcdef"]  # retried once, then gave up
    await provider.aclose()


async def test_bearer_auth_rejection_rule_is_injectable_for_negotiate() -> None:
    """The same flow with negotiate's rule: a plain 403 (no challenge) also invalidates and retries
    once; with the default REST rule a plain 403 is final."""
    clock = FakeClock()
    n = 0

    def idp(_request: httpx.Request) -> httpx.Response:
        nonlocal n
        n += 1
        return httpx.Response(200, json={"access_token": f"tok-{n}-abcdef", "expires_in": 300})

    provider = build_token_provider(
        AuthConfig(token_url=URL, client_id="c", client_secret=Secret("abcdefgh")),
        http=httpx.AsyncClient(transport=httpx.MockTransport(idp)),
        clock=clock,
        env={},
    )
    seen: list[str] = []

    def resource(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return (
            httpx.Response(200)
            if request.headers["Authorization"] == "Bearer tok-2-abcdef"
            else httpx.Response(403)
        )

    transport = httpx.MockTransport(resource)
    async with httpx.AsyncClient(transport=transport, auth=BearerAuth(provider)) as c:
        assert (await c.post("https://api.example/negotiate")).status_code == 403
    assert seen == ["Bearer tok-1-abcdef"]
    seen.clear()
    negotiate_auth = BearerAuth(provider, rejected=rejected_401_403)
    async with httpx.AsyncClient(transport=transport, auth=negotiate_auth) as c:
        assert (await c.post("https://api.example/negotiate")).status_code == 200
    assert seen == ["Bearer tok-1-abcdef", "Bearer tok-2-abcdef"]
    await provider.aclose()


# -- redaction -------------------------------------------------------------------------------------


async def test_no_secret_or_token_in_logs_reprs_or_errors(json_logs: LogCapture) -> None:
    secret = "client-secret-never-logged"
    password = "password-never-logged"
    tokens = ["access-token-never-logged-1", "access-token-never-logged-2"]
    refresh = "refresh-token-never-logged"
    clock = FakeClock()
    calls = 0

    def idp(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 2:
            return httpx.Response(503, text=f"upstream said {secret}")  # an IdP echoing input
        if calls == 4:
            return httpx.Response(
                400, json={"error": "invalid_grant", "error_description": f"bad {password}"}
            )
        return httpx.Response(
            200,
            json={"access_token": tokens[min(calls, 3) // 3], "refresh_token": refresh, "expires_in": 300},
        )

    cfg = AuthConfig(
        grant="password",
        token_url=URL,
        client_id="c",
        client_secret=Secret(secret),
        client_auth="client_secret_post",
        username="u",
        password_env="PW",
    )
    provider = build_token_provider(
        cfg,
        http=httpx.AsyncClient(transport=httpx.MockTransport(idp)),
        clock=clock,
        env={"PW": password},
        rng=random.Random(1),
    )
    texts: list[str] = [repr(provider), repr(cfg), str(cfg)]
    first = await provider.get_token()
    provider.invalidate(first)
    second = await provider.get_token()  # 503 then success (refresh grant)
    provider.invalidate(second)
    # The refresh token is rejected: the provider re-authenticates with the password.
    third = await provider.get_token()
    texts += [repr(provider), repr(provider.last_token_info), str(provider.stats)]
    rejecting = build_token_provider(
        AuthConfig(token_url=URL, client_id="c", client_secret=Secret(secret)),
        http=httpx.AsyncClient(
            transport=httpx.MockTransport(
                lambda _r: httpx.Response(401, json={"error": "invalid_client", "error_description": secret})
            )
        ),
        clock=clock,
        env={},
    )
    with pytest.raises(TokenRequestRejected) as caught:
        await rejecting.get_token()
    texts += [str(caught.value), repr(caught.value)]
    failing = build_token_provider(
        AuthConfig(token_url=URL, client_id="c", client_secret=Secret(secret)),
        http=httpx.AsyncClient(transport=httpx.MockTransport(lambda _r: httpx.Response(200, text=secret))),
        clock=FakeClock(auto=False),
        env={},
    )
    with pytest.raises(TokenUnavailable) as unavailable:
        await failing.get_token(max_wait=0.05)
    texts.append(str(unavailable.value))
    for p in (provider, rejecting, failing):
        await p.aclose()
    assert {first, second, third} <= {*tokens}
    assert json_logs.records(), "expected DEBUG logs to be captured"
    blob = json_logs.text + "\n".join(texts)
    for value in (secret, password, refresh, *tokens):
        assert value not in blob, value
