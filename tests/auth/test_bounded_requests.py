"""Issue 10 item 4: every IdP read has a total deadline (timeout_seconds) and a size limit.

The hostile endpoint is a separate process on loopback (tests/auth/idp/hostile_idp.py): a token
endpoint that trickles its body, or streams far more than any token response.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from authtest_helpers import LogCapture, NodeIdP

from consumer.auth import AuthConfig, TokenUnavailable, build_token_provider
from consumer.secret import Secret

SECRET = "hostile-test-client-secret-value"
MiB = 1024 * 1024


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[Callable[..., NodeIdP]]:
    started: list[NodeIdP] = []

    def start(**options: Any) -> NodeIdP:
        idp = NodeIdP(sys.executable, "hostile_idp.py", options, tmp_path)
        started.append(idp)
        return idp

    try:
        yield start
    finally:
        for idp in started:
            idp.stop()


def cfg(url: str, **kw: Any) -> AuthConfig:
    return AuthConfig(token_url=f"{url}/token", client_id="svc-hostile", client_secret=Secret(SECRET), **kw)


async def test_trickling_idp_is_cut_at_timeout_seconds_then_retried(
    hostile: Callable[..., NodeIdP], json_logs: LogCapture
) -> None:
    # One byte every 0.4 s of a 100-byte body: each read is well within the 1 s timeout, the whole
    # answer would take 40 s. The request must end at 1 s, log, back off and try again.
    idp = hostile(mode="trickle", bytes=100, interval=0.4)
    provider = build_token_provider(cfg(idp.url, timeout_seconds=1.0), env={})
    try:
        with pytest.raises(TokenUnavailable) as caught:
            await provider.get_token(max_wait=6.0)
    finally:
        await provider.aclose()
    conns = idp.wait_requests(2, timeout=10)
    first = conns[0]
    assert first["client_closed"] and first["sent"] < 100, first  # we hung up, mid-body
    assert "within 1 s" in str(caught.value) and "timeout_seconds" in str(caught.value)
    warnings = [r for r in json_logs.records() if r["event"] == "auth.token_failing_retrying"]
    assert len(warnings) == 1
    assert warnings[0]["outcome"] == "network_error" and warnings[0]["client_id"] == "svc-hostile"
    assert provider.stats.requests["network_error"] >= 2
    assert SECRET not in json_logs.text and SECRET not in str(caught.value)


@pytest.mark.parametrize(("mode", "shown"), [("chunked", "exceeded 1048576 bytes"), ("declared", "declares")])
async def test_oversized_token_response_stops_reading(
    hostile: Callable[..., NodeIdP], json_logs: LogCapture, mode: str, shown: str
) -> None:
    total = 48 * MiB
    idp = hostile(mode=mode, bytes=total)
    provider = build_token_provider(cfg(idp.url), env={})
    try:
        with pytest.raises(TokenUnavailable) as caught:
            await provider.get_token(max_wait=2.5)
    finally:
        await provider.aclose()
    conns = idp.wait_requests(1, timeout=10)
    # What the server managed to write: the 1 MiB we read plus what the loopback socket buffers hold.
    assert all(c["sent"] < 16 * MiB and c["client_closed"] for c in conns), conns
    message = str(caught.value)
    assert shown in message and "svc-hostile" in message and f"{idp.url}/token" in message
    assert SECRET not in message and SECRET not in json_logs.text
    # Every completed request was refused as too large (one may have been cut short by aclose()).
    assert provider.stats.requests["malformed"] >= 1
    assert provider.stats.requests["ok"] == 0


async def test_compression_bomb_is_cut_at_the_decoded_limit(
    hostile: Callable[..., NodeIdP], json_logs: LogCapture
) -> None:
    idp = hostile(mode="gzip", bytes=256 * MiB)  # ~250 KB on the wire
    provider = build_token_provider(cfg(idp.url), env={})
    try:
        with pytest.raises(TokenUnavailable, match="exceeded 1048576 bytes"):
            await provider.get_token(max_wait=2.5)
    finally:
        await provider.aclose()
    assert provider.stats.requests["malformed"] >= 1


async def test_oversized_discovery_document_is_refused(
    hostile: Callable[..., NodeIdP], json_logs: LogCapture
) -> None:
    idp = hostile(mode="chunked", bytes=48 * MiB)
    c = AuthConfig(issuer=idp.url, client_id="svc-hostile", client_secret=Secret(SECRET))
    provider = build_token_provider(c, env={})
    try:
        with pytest.raises(TokenUnavailable, match=r"discovery .*exceeded 1048576 bytes"):
            await provider.get_token(max_wait=2.5)
    finally:
        await provider.aclose()
    assert all(c["sent"] < 16 * MiB for c in idp.wait_requests(1, timeout=10))


def test_max_response_bytes_is_validated() -> None:
    from consumer.errors import ConfigError

    with pytest.raises(ConfigError, match=r"auth\.max_response_bytes"):
        build_token_provider(cfg("https://idp.example", max_response_bytes=0), env={}, source="f.toml")
