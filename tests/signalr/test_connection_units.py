"""Unit tests of the client's pure parts: retry policies, URL building, redaction, the URL rule."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from consumer.errors import ConfigError
from consumer.signalr.calls import Calls
from consumer.signalr.connection import (
    ConnectionLostError,
    HubConnection,
    build_negotiate_url,
    build_ws_url,
    check_url_security,
    redact_url,
)
from consumer.signalr.retry import (
    NEVER,
    OFFICIAL,
    DaemonRetryPolicy,
    FixedDelaysRetryPolicy,
    retry_policy,
)


def test_daemon_policy_zero_then_jitter_capped_at_5s_never_none() -> None:
    calls: list[tuple[float, float]] = []

    def upper(lo: float, hi: float) -> float:
        calls.append((lo, hi))
        return hi  # the top of the jitter window, to see the ceiling

    policy = DaemonRetryPolicy(uniform=upper)
    assert policy.next_delay(0, 0.0, None) == 0.0
    delays = [policy.next_delay(n, 1.0, RuntimeError("x")) for n in range(1, 12)]
    assert delays[:4] == [1.0, 2.0, 4.0, 5.0]  # the 5 s cap is the recovery bound
    assert all(d == 5.0 for d in delays[3:])
    assert all(lo == hi / 2 for lo, hi in calls)  # jitter in [c/2, c]: the rate bound
    # huge attempt counts neither overflow nor give up
    assert policy.next_delay(10_000, 1e9, None) == 5.0


def test_daemon_policy_default_jitter_stays_in_window() -> None:
    policy = DaemonRetryPolicy()
    for n in range(1, 50):
        delay = policy.next_delay(n, 0.0, None)
        ceiling = min(5.0, 2 ** (n - 1))
        assert delay is not None and ceiling / 2 <= delay <= ceiling
    full = DaemonRetryPolicy(cap=30.0, jitter_floor=0.0)
    assert all(0.0 <= (full.next_delay(n, 0.0, None) or 0.0) <= 30.0 for n in range(1, 50))


def test_daemon_policy_attempts_per_minute_bounded_at_the_cap() -> None:
    """Worst case (every draw at the bottom of its window): at most 30 attempts in 60 s."""
    lowest = DaemonRetryPolicy(uniform=lambda lo, hi: lo)
    t, attempts, n = 0.0, 1, 1
    while True:
        t += lowest.next_delay(n, t, None) or 0.0
        if t > 60.0:
            break
        attempts += 1
        n += 1
    assert attempts <= 30, attempts


def test_official_and_never_presets() -> None:
    assert [OFFICIAL.next_delay(n, 0.0, None) for n in range(5)] == [0.0, 2.0, 10.0, 30.0, None]
    assert NEVER.next_delay(0, 0.0, None) is None
    assert FixedDelaysRetryPolicy((0.5,)).next_delay(1, 0.0, None) is None
    assert retry_policy("official") is OFFICIAL
    assert retry_policy("never") is NEVER
    assert isinstance(retry_policy("daemon"), DaemonRetryPolicy)
    with pytest.raises(ValueError, match="unknown retry policy"):
        retry_policy("sometimes")


@pytest.mark.parametrize(
    ("url", "stateful", "expected"),
    [
        ("https://h/hub", False, "https://h/hub/negotiate?negotiateVersion=1"),
        ("https://h/hub/", False, "https://h/hub/negotiate?negotiateVersion=1"),
        (
            "https://h/hub?x=1",
            True,
            "https://h/hub/negotiate?x=1&negotiateVersion=1&useStatefulReconnect=true",
        ),
        ("https://h/hub?negotiateVersion=0", False, "https://h/hub/negotiate?negotiateVersion=0"),
    ],
)
def test_negotiate_url(url: str, stateful: bool, expected: str) -> None:
    assert build_negotiate_url(url, stateful_reconnect=stateful) == expected


def test_ws_url_scheme_id_and_token() -> None:
    assert build_ws_url("https://h:8443/status/event-status") == "wss://h:8443/status/event-status"
    assert build_ws_url("http://127.0.0.1:5/hub", "tok/en+=") == "ws://127.0.0.1:5/hub?id=tok%2Fen%2B%3D"
    assert build_ws_url("https://h/hub?a=b", "c", "t.o.k") == "wss://h/hub?a=b&id=c&access_token=t.o.k"
    assert build_ws_url("wss://h/hub") == "wss://h/hub"


def test_redact_url_masks_access_token_and_connection_token() -> None:
    url = "wss://h/hub?a=b&id=secret-connection&access_token=eyJ.secret.sig"
    red = redact_url(url)
    assert "eyJ.secret.sig" not in red and "secret-connection" not in red
    assert red.startswith("wss://h/hub?a=b&id=") and "access_token=[redacted]" in red
    assert redact_url("https://h/hub") == "https://h/hub"


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hub",
        "wss://example.com/hub",
        "http://127.0.0.1:1/hub",
        "http://localhost/x",
        "ws://[::1]:80/hub",
        "http://127.3.4.5/hub",
    ],
)
def test_url_rule_accepts_tls_and_loopback(url: str) -> None:
    check_url_security(url)


def test_url_rule_refuses_plain_http_unless_allowed() -> None:
    with pytest.raises(ConfigError, match="allow_insecure_http"):
        check_url_security("http://example.com/hub?access_token=abcdefgh")
    try:
        check_url_security("http://example.com/hub?access_token=abcdefgh")
    except ConfigError as exc:
        assert "abcdefgh" not in str(exc)
    check_url_security("http://example.com/hub", allow_insecure_http=True)
    with pytest.raises(ConfigError):
        check_url_security("ftp://example.com/hub")
    with pytest.raises(ConfigError):
        HubConnection("http://example.com/hub")
    HubConnection("http://example.com/hub", allow_insecure_http=True)


def test_unknown_protocol_and_token_transport_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        HubConnection("https://h/hub", protocol="xml")
    with pytest.raises(ConfigError):
        HubConnection("https://h/hub", token_transport="cookie")  # type: ignore[arg-type]


async def test_an_invocation_failed_while_its_send_failed_logs_no_unretrieved_future() -> None:
    """invoke(): the connection is lost (fail_all fails the pending future) while the send is under
    way, and the send raises too; the caller sees the send's error, and the failed future must not be
    reported by asyncio as "Future exception was never retrieved" (it was, in the daemon's log)."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        calls = Calls()
        invocation_id, future = calls.expect()
        assert len(calls) == 1
        calls.fail_all(ConnectionLostError("connection lost"))
        calls.forget(invocation_id, future)  # what invoke()'s finally does after the send raised
        assert len(calls) == 0
        del future
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert reported == []
