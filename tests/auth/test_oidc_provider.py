"""Integration: the token factory and `event-consumer token` against npm oidc-provider (real IdP)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from authtest_helpers import OIDC_SECRET, OIDC_TTL, NodeIdP

from consumer.auth import AuthConfig, BearerAuth, TokenRequestRejected, build_token_provider
from consumer.secret import Secret

pytestmark = pytest.mark.node


def cfg(idp: NodeIdP, client_id: str, **kw: object) -> AuthConfig:
    base: dict[str, object] = {"token_url": f"{idp.url}/token", "client_id": client_id}
    base.update(kw)
    if "client_secret" not in base:
        base["client_secret"] = Secret(OIDC_SECRET)
    return AuthConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("client_id", "method", "seen"),
    [
        ("svc-basic", "client_secret_basic", "basic"),
        ("svc-post", "client_secret_post", "post"),
    ],
)
async def test_client_credentials(oidc_idp: NodeIdP, client_id: str, method: str, seen: str) -> None:
    provider = build_token_provider(cfg(oidc_idp, client_id, client_auth=method), env={})
    try:
        token = await provider.get_token()
        again = await provider.get_token()
    finally:
        await provider.aclose()
    assert token and again == token  # second call is a cache hit
    info = provider.last_token_info
    assert info is not None
    assert info.token_type == "Bearer"
    assert info.expires_in == OIDC_TTL
    assert info.expires_in_source == "response"
    reqs = oidc_idp.wait_requests(1, client_id)
    assert [(r["status"], r["auth"], r["grant"]) for r in reqs] == [(200, seen, "client_credentials")]
    assert provider.stats.requests["ok"] == 1


async def test_discovery_from_issuer(oidc_idp: NodeIdP) -> None:
    c = AuthConfig(issuer=oidc_idp.url, client_id="svc-discovery", client_secret=Secret(OIDC_SECRET))
    provider = build_token_provider(c, env={})
    try:
        assert await provider.get_token()
    finally:
        await provider.aclose()
    assert [r["status"] for r in oidc_idp.wait_requests(1, "svc-discovery")] == [200]


async def test_wrong_secret_is_a_typed_error_without_the_secret(oidc_idp: NodeIdP) -> None:
    wrong = "definitely-the-wrong-secret-123"
    provider = build_token_provider(cfg(oidc_idp, "svc-wrong", client_secret=Secret(wrong)), env={})
    try:
        with pytest.raises(TokenRequestRejected) as caught:
            await provider.get_token()
        # Permanent: a second call raises again without asking the IdP again.
        with pytest.raises(TokenRequestRejected):
            await provider.get_token()
    finally:
        await provider.aclose()
    err = caught.value
    assert err.error == "invalid_client"
    assert err.exit_code == 77
    text = f"{err} {err!r} {provider!r}"
    assert "svc-wrong" in text and "client_credentials" in text and f"{oidc_idp.url}/token" in text
    assert wrong not in text and OIDC_SECRET not in text
    assert [r["status"] for r in oidc_idp.wait_requests(1, "svc-wrong")] == [401]
    assert provider.stats.requests["rejected"] == 1


async def test_unknown_scope_is_rejected(oidc_idp: NodeIdP) -> None:
    provider = build_token_provider(cfg(oidc_idp, "svc-scope", scope="openid"), env={})
    try:
        with pytest.raises(TokenRequestRejected) as caught:
            await provider.get_token()
    finally:
        await provider.aclose()
    assert caught.value.error == "invalid_scope"


async def test_bearer_auth_retries_once_after_401(oidc_idp: NodeIdP) -> None:
    """BearerAuth against a resource server that rejects the first token it sees."""
    provider = build_token_provider(cfg(oidc_idp, "svc-bearer"), env={})
    seen: list[str] = []

    def resource(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization", ""))
        return httpx.Response(401 if len(seen) == 1 else 200)

    try:
        async with httpx.AsyncClient(transport=httpx.MockTransport(resource), auth=BearerAuth(provider)) as c:
            resp = await c.get("https://resource.example/api")
    finally:
        await provider.aclose()
    assert resp.status_code == 200
    assert len(seen) == 2 and seen[0] != seen[1]
    assert all(h.startswith("Bearer ") for h in seen)
    assert len(oidc_idp.wait_requests(2, "svc-bearer")) == 2


async def test_five_second_tokens_refreshed_on_schedule(oidc_idp: NodeIdP) -> None:
    """5 s tokens, defaults (30 s / 0.8): fresh for 4 s. A caller asking 4x a second for 20 s causes
    one request at start and one per ~4 s — five in all — and never holds an expired token."""
    provider = build_token_provider(cfg(oidc_idp, "svc-schedule"), env={})
    start = time.monotonic()
    tokens: list[str] = []
    try:
        while time.monotonic() - start < 20.0:
            token = await provider.get_token()
            info = provider.last_token_info
            assert info is not None and time.time() < info.expires_at  # type: ignore[operator]
            if not tokens or tokens[-1] != token:
                tokens.append(token)
            await asyncio.sleep(0.25)  # the caller's pace, not synchronisation
    finally:
        await provider.aclose()
    reqs = oidc_idp.wait_requests(5, "svc-schedule")
    assert len(reqs) == 5, reqs
    assert all(r["status"] == 200 for r in reqs)
    gaps = [(b["t"] - a["t"]) / 1000 for a, b in itertools.pairwise(reqs)]
    assert all(3.9 <= g <= 5.0 for g in gaps), gaps
    assert len(tokens) == 5 and len(set(tokens)) == 5


def _cli(config: Path, *args: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENT_CONSUMER__")}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "consumer", "token", "--config", str(config), *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def _write_config(tmp_path: Path, idp: NodeIdP, client_id: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[auth]\ntoken_url = "{idp.url}/token"\nclient_id = "{client_id}"\n'
        'client_secret_env = "TEST_CLIENT_SECRET"\n'
    )
    return path


def test_cli_token_json(oidc_idp: NodeIdP, tmp_path: Path) -> None:
    config = _write_config(tmp_path, oidc_idp, "svc-cli")
    res = _cli(config, "--json", env_extra={"TEST_CLIENT_SECRET": OIDC_SECRET})
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["token_type"] == "Bearer"
    assert report["expires_in"] == OIDC_TTL
    assert report["fingerprint"].startswith("sha256:")
    assert "access_token" not in report
    assert OIDC_SECRET not in res.stdout + res.stderr

    shown = _cli(config, "--json", "--show-token", env_extra={"TEST_CLIENT_SECRET": OIDC_SECRET})
    assert shown.returncode == 0, shown.stderr
    token = json.loads(shown.stdout)["access_token"]
    assert token and token not in res.stdout
    human = _cli(config, env_extra={"TEST_CLIENT_SECRET": OIDC_SECRET})
    assert human.returncode == 0 and "expires_in:" in human.stdout and "opaque token" in human.stdout


def test_cli_wrong_secret_exits_77_with_one_line(oidc_idp: NodeIdP, tmp_path: Path) -> None:
    config = _write_config(tmp_path, oidc_idp, "svc-cli-wrong")
    wrong = "wrong-secret-for-the-cli"
    res = _cli(config, env_extra={"TEST_CLIENT_SECRET": wrong})
    assert res.returncode == 77
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "invalid_client" in lines[0] and "svc-cli-wrong" in lines[0]
    assert wrong not in res.stdout + res.stderr and res.stdout == ""


def test_cli_config_error_exits_78(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[auth]\ntoken_url = "http://idp.example/token"\nclient_id = "x"\nclient_secret = "abcdefgh"\n'
    )
    config.chmod(0o600)
    res = _cli(config, env_extra={})
    assert res.returncode == 78
    assert "auth.token_url" in res.stderr and "abcdefgh" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


async def test_token_exchange_with_own_client_credentials_token(oidc_idp: NodeIdP) -> None:
    """subject_token_source = "client_credentials" against oidc-provider (its RFC 8693 grant is
    registered by the test IdP script through registerGrantType: oidc-provider has none built in).
    Tokens live OIDC_TTL (5) seconds: the exchanged token is refreshed with a fresh subject."""
    c = cfg(
        oidc_idp,
        "svc-exchange",
        grant="token_exchange",
        subject_token_source="client_credentials",
        requested_subject="someone",
    )
    provider = build_token_provider(c, env={})
    try:
        first = await provider.get_token()
        reqs = oidc_idp.wait_requests(2, "svc-exchange")
        assert [(r["grant"], r["status"], r["auth"]) for r in reqs] == [
            ("client_credentials", 200, "basic"),
            ("urn:ietf:params:oauth:grant-type:token-exchange", 200, "basic"),
        ]
        assert reqs[1]["exchange"] == {"subject_valid": True, "requested_subject": "someone"}
        # Past the refresh point (0.8 x 5 s) the provider exchanges again, with a fresh subject once
        # the first one has expired on the IdP's clock.
        deadline = time.monotonic() + 4 * OIDC_TTL
        second = first
        while second == first:
            assert time.monotonic() < deadline, "the exchanged token was never refreshed"
            second = await provider.get_token()
            await asyncio.sleep(0.05)
        later = await provider.get_token(max_wait=10)
        assert later
    finally:
        await provider.aclose()
    exchanges = [r for r in oidc_idp.requests("svc-exchange") if r["grant"].endswith("token-exchange")]
    assert len(exchanges) >= 2 and all(
        r["status"] == 200 and r["exchange"]["subject_valid"] for r in exchanges
    )
