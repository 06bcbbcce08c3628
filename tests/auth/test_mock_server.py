"""Integration: 429 + Retry-After, 503 sequences and the password grant against oauth2-mock-server@8."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from authtest_helpers import NodeIdP

from consumer.auth import AuthConfig, TokenUnavailable, build_token_provider
from consumer.auth.jwtinfo import decode_unverified
from consumer.secret import Secret

pytestmark = pytest.mark.node

StartIdP = Callable[..., NodeIdP]


def cc(idp: NodeIdP, **kw: object) -> AuthConfig:
    return AuthConfig(
        token_url=f"{idp.url}/token",
        client_id="svc",
        client_secret=Secret("mock-server-secret"),
        **kw,  # type: ignore[arg-type]
    )


def gaps(reqs: list[dict[str, object]]) -> list[float]:
    return [(int(b["t"]) - int(a["t"])) / 1000 for a, b in itertools.pairwise(reqs)]  # type: ignore[call-overload]


async def test_429_retry_after_is_honoured(mock_idp: StartIdP) -> None:
    idp = mock_idp(script=[{"status": 429, "retry_after": "2"}])
    provider = build_token_provider(cc(idp), env={})
    try:
        assert await provider.get_token()
    finally:
        await provider.aclose()
    reqs = idp.wait_requests(2)
    assert [r["status"] for r in reqs] == [429, 200]
    assert gaps(reqs)[0] >= 1.95  # Retry-After: 2 (longer than the 1 s rate floor)
    assert provider.stats.requests["rate_limited"] == 1 and provider.stats.requests["ok"] == 1


async def test_503_sequence_backs_off_then_succeeds(mock_idp: StartIdP) -> None:
    idp = mock_idp(script=[{"status": 503}] * 3)
    provider = build_token_provider(cc(idp, backoff_cap_seconds=1.0), env={})
    try:
        token = await provider.get_token(max_wait=20)
    finally:
        await provider.aclose()
    assert decode_unverified(token) is not None
    reqs = idp.wait_requests(4)
    assert [r["status"] for r in reqs] == [503, 503, 503, 200]
    # Never more than one token request per second, even while failing.
    assert all(g >= 0.95 for g in gaps(reqs)), gaps(reqs)
    assert provider.stats.requests["server_error"] == 3


async def test_503_forever_with_a_bound_is_service_unavailable(mock_idp: StartIdP) -> None:
    idp = mock_idp(script=[{"status": 503}] * 100)
    provider = build_token_provider(cc(idp), env={})
    try:
        with pytest.raises(TokenUnavailable) as caught:
            await provider.get_token(max_wait=2.5)
    finally:
        await provider.aclose()
    assert caught.value.exit_code == 69
    assert "server_error" in str(caught.value) and "mock-server-secret" not in str(caught.value)
    n = len(idp.requests())
    assert 1 <= n <= 3  # 2.5 s at >= 1 s apart


async def test_password_grant_then_refresh_token(mock_idp: StartIdP) -> None:
    idp = mock_idp(expect_password="hunter2-password", omit_expires_in=True, ttl=120)
    config = AuthConfig(
        grant="password",
        token_url=f"{idp.url}/token",
        client_id="cli-app",
        username="alice",
        password_env="TEST_PASSWORD",
    )
    provider = build_token_provider(config, env={"TEST_PASSWORD": "hunter2-password"})
    try:
        first = await provider.get_token()
        info = provider.last_token_info
        assert info is not None
        # No expires_in in the response: the JWT's exp decides (ttl 120 via beforeTokenSigning).
        assert info.expires_in_source == "jwt"
        assert info.expires_in is not None and 115 <= info.expires_in <= 121
        assert info.refresh_token_present
        claims = decode_unverified(first)
        assert claims is not None and claims["sub"] == "alice"
        provider.invalidate(first)  # a resource server rejected it: refresh with the refresh token
        second = await provider.get_token()
    finally:
        await provider.aclose()
    assert second != first
    reqs = idp.wait_requests(2)
    assert reqs[0]["grant"] == "password" and reqs[0]["username"] == "alice" and reqs[0]["password_ok"]
    assert reqs[0]["client_id"] == "cli-app" and not reqs[0]["basic"]  # public client: id in the body
    assert reqs[1]["grant"] == "refresh_token"
    assert gaps(reqs)[0] >= 0.95


def test_cli_gives_up_with_69_when_bounded(mock_idp: StartIdP, tmp_path: Path) -> None:
    idp = mock_idp(script=[{"status": 503}] * 100)
    config = tmp_path / "config.toml"
    config.write_text(f'[auth]\ntoken_url = "{idp.url}/token"\nclient_id = "svc"\nclient_secret_env = "S"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENT_CONSUMER__")}
    env["S"] = "cli-secret-value"
    res = subprocess.run(
        [sys.executable, "-m", "consumer", "token", "--config", str(config), "--timeout", "1.5"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert res.returncode == 69, res.stderr
    assert "within 1.5 s" in res.stderr and "server_error" in res.stderr
    assert "cli-secret-value" not in res.stderr + res.stdout
