"""Unit tests of the OAuth provider with httpx.MockTransport and an injected clock (no real sleeps)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import parse_qsl, unquote_plus

import httpx
import jwt
import pytest
from authtest_helpers import FakeClock, LogCapture, until

from consumer.auth import (
    AuthConfig,
    TokenProvider,
    TokenRequestRejected,
    TokenUnavailable,
    build_token_provider,
    parse_retry_after,
)
from consumer.errors import ConfigError
from consumer.secret import Secret

SECRET = "unit-test-client-secret"
URL = "https://idp.example/token"
Handler = Callable[[httpx.Request], Awaitable[httpx.Response] | httpx.Response]


class IdP:
    """A scripted token endpoint: records (virtual time, request) and answers from `respond`."""

    def __init__(
        self, clock: FakeClock, respond: Callable[[httpx.Request, int], httpx.Response] | None = None
    ):
        self.clock = clock
        self.calls: list[tuple[float, httpx.Request]] = []
        self.respond = respond or (lambda _req, n: ok(f"token-{n}"))
        self.gate: asyncio.Event | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append((self.clock.monotonic(), request))
        n = len(self.calls)
        if self.gate is not None:
            await self.gate.wait()
        return self.respond(request, n)

    @property
    def times(self) -> list[float]:
        return [t for t, r in self.calls if r.method == "POST"]

    def form(self, i: int = -1) -> dict[str, str]:
        posts = [r for _, r in self.calls if r.method == "POST"]
        return dict(parse_qsl(posts[i].content.decode()))

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self))


def ok(token: str, expires_in: float | None = 300, **extra: object) -> httpx.Response:
    body: dict[str, object] = {"access_token": token, "token_type": "Bearer", **extra}
    if expires_in is not None:
        body["expires_in"] = expires_in
    return httpx.Response(200, json=body)


def make(idp: IdP, clock: FakeClock, env: dict[str, str] | None = None, **kw: object) -> TokenProvider:
    fields: dict[str, object] = {"token_url": URL, "client_id": "svc", "client_secret": Secret(SECRET)}
    fields.update(kw)
    return build_token_provider(
        AuthConfig(**fields),  # type: ignore[arg-type]
        http=idp.client(),
        clock=clock,
        env=env or {},
        rng=random.Random(7),
    )


# -- cache, schedule, single flight -------------------------------------------------------------------


async def test_single_flight_1000_concurrent_callers_one_request() -> None:
    clock = FakeClock()
    idp = IdP(clock)
    idp.gate = asyncio.Event()
    provider = make(idp, clock)
    callers = [asyncio.create_task(provider.get_token()) for _ in range(1000)]
    await until(lambda: len(idp.calls) == 1, what="the one request")
    idp.gate.set()
    tokens = await asyncio.gather(*callers)
    assert set(tokens) == {"token-1"}
    assert len(idp.calls) == 1
    await provider.aclose()


async def test_cancelled_waiter_does_not_cancel_the_shared_fetch() -> None:
    clock = FakeClock()
    idp = IdP(clock)
    idp.gate = asyncio.Event()
    provider = make(idp, clock)
    first = asyncio.create_task(provider.get_token())
    second = asyncio.create_task(provider.get_token())
    await until(lambda: len(idp.calls) == 1)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    idp.gate.set()
    assert await second == "token-1"
    assert len(idp.calls) == 1
    await provider.aclose()


@pytest.mark.parametrize(("expires_in", "fresh_for"), [(300, 240.0), (3600, 3570.0), (5, 4.0)])
async def test_fresh_until_min_of_margin_and_fraction(expires_in: float, fresh_for: float) -> None:
    clock = FakeClock()
    idp = IdP(clock, lambda _r, n: ok(f"t{n}", expires_in))
    provider = make(idp, clock)
    assert await provider.get_token() == "t1"
    clock.advance(fresh_for - 0.001)
    assert await provider.get_token() == "t1"
    assert len(idp.calls) == 1  # still fresh: no request
    clock.advance(0.002)
    assert await provider.get_token() == "t1"  # stale but valid: served at once, refresh started
    await until(lambda: provider.last_token_info is not None and provider.stats.requests["ok"] == 2)
    assert len(idp.calls) == 2
    assert await provider.get_token() == "t2"
    await provider.aclose()


async def test_missing_expires_in_uses_jwt_exp_else_default() -> None:
    clock = FakeClock()
    exp = int(clock.time()) + 100
    signed = jwt.encode({"exp": exp, "sub": "svc"}, "k" * 32, algorithm="HS256")
    idp = IdP(clock, lambda _r, n: ok(signed if n == 1 else "opaque-token", None))
    provider = make(idp, clock, default_expires_in_seconds=42)
    assert await provider.get_token() == signed
    info = provider.last_token_info
    assert info is not None and info.expires_in_source == "jwt" and info.expires_in == pytest.approx(100)
    assert info.is_jwt
    provider.invalidate(signed)
    clock.advance(1)
    assert await provider.get_token() == "opaque-token"
    info = provider.last_token_info
    assert info is not None and info.expires_in_source == "default" and info.expires_in == 42
    await provider.aclose()


# -- failures ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("error", ["invalid_client", "unauthorized_client", "invalid_grant", "invalid_scope"])
async def test_permanent_errors_raise_once_and_stick(error: str) -> None:
    clock = FakeClock()
    idp = IdP(clock, lambda _r, _n: httpx.Response(400, json={"error": error, "error_description": "no"}))
    provider = make(idp, clock)
    for _ in range(3):
        with pytest.raises(TokenRequestRejected) as caught:
            await provider.get_token()
    assert caught.value.error == error and caught.value.exit_code == 77
    assert caught.value.client_id == "svc" and caught.value.token_url == URL
    assert caught.value.grant == "client_credentials"
    assert SECRET not in str(caught.value)
    assert len(idp.calls) == 1  # no retry loop
    await provider.aclose()


async def test_401_without_body_is_rejected() -> None:
    clock = FakeClock()
    idp = IdP(clock, lambda _r, _n: httpx.Response(401, text="<html>nope</html>"))
    provider = make(idp, clock)
    with pytest.raises(TokenRequestRejected) as caught:
        await provider.get_token()
    assert caught.value.error == "http_401"
    await provider.aclose()


@pytest.mark.parametrize(
    ("response", "needle"),
    [
        (httpx.Response(200, text="<html>login</html>", headers={"content-type": "text/html"}), "not a JSON"),
        (httpx.Response(200, json=["a"]), "not a JSON object"),
        (httpx.Response(200, json={"token_type": "Bearer"}), "no access_token"),
        (httpx.Response(200, json={"access_token": "abcdefgh", "expires_in": "soon"}), "bad expires_in"),
        (httpx.Response(200, json={"access_token": "abcdefgh", "expires_in": -5}), "expires_in <= 0"),
    ],
)
async def test_malformed_responses_are_clear_errors(response: httpx.Response, needle: str) -> None:
    clock = FakeClock(auto=False)
    idp = IdP(clock, lambda _r, _n: response)
    provider = make(idp, clock)
    with pytest.raises(TokenUnavailable) as caught:
        await provider.get_token(max_wait=0.2)
    assert needle in str(caught.value) and "malformed" in str(caught.value)
    assert provider.stats.requests["malformed"] == 1
    await provider.aclose()


async def test_stale_while_failing_serves_cached_and_warns_once(json_logs: LogCapture) -> None:
    clock = FakeClock(auto=False)
    failing = False

    def respond(_r: httpx.Request, n: int) -> httpx.Response:
        return httpx.Response(503) if failing else ok(f"t{n}", 100)

    idp = IdP(clock, respond)
    provider = make(idp, clock, backoff_cap_seconds=5)
    assert await provider.get_token() == "t1"  # fresh for 70 s, valid for 100 s
    failing = True
    clock.advance(75)
    async with asyncio.timeout(10):
        for _ in range(4):  # t = 75 .. 95: still valid (expires at 100)
            assert await provider.get_token() == "t1"  # served while the refresh fails
            await until(lambda: clock.sleeping == 1, what="the retry loop to sleep")
            clock.advance(5)  # >= the backoff cap: the retry loop wakes every time
        await until(lambda: clock.sleeping == 1)
        assert len(idp.calls) == 1 + 5
        warnings = [r for r in json_logs.records() if r["level"] == "warning"]
        assert len(warnings) == 1 and warnings[0]["event"] == "auth.refresh_failing_serving_cached"
        assert len([r for r in json_logs.records() if r["event"] == "auth.token_request_failed"]) == 4
        # Past real expiry (t=101): callers now wait for the refresh; a bound gives exit 69.
        clock.advance(6)
        with pytest.raises(TokenUnavailable) as caught:
            await provider.get_token(max_wait=0.05)
        assert "server_error" in str(caught.value)
        failing = False
        waiter = asyncio.create_task(provider.get_token())
        await until(lambda: clock.sleeping == 1)
        clock.advance(5)
        assert await waiter == f"t{len(idp.calls)}"
    await provider.aclose()


async def test_retry_after_seconds_and_date_parsing() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(" 0 ", now) == 0.0
    date = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(30)
    past = format_datetime(datetime.fromtimestamp(now - 30, UTC), usegmt=True)
    assert parse_retry_after(past, now) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 -0000", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("999999", now) == 3600.0


@pytest.mark.parametrize("header", ["12", "date"])
async def test_429_waits_for_retry_after(header: str) -> None:
    clock = FakeClock()
    value = (
        header
        if header != "date"
        else format_datetime(datetime.fromtimestamp(clock.time() + 12, UTC), usegmt=True)
    )
    idp = IdP(clock, lambda _r, n: httpx.Response(429, headers={"Retry-After": value}) if n == 1 else ok("t"))
    provider = make(idp, clock)
    assert await provider.get_token() == "t"
    assert idp.times[1] - idp.times[0] == pytest.approx(12, abs=1.01)
    assert idp.times[1] - idp.times[0] >= 11
    await provider.aclose()


async def test_failure_storm_never_more_than_one_request_per_second() -> None:
    clock = FakeClock()
    kinds = ["503", "429", "connect", "timeout"]

    def respond(request: httpx.Request, n: int) -> httpx.Response:
        if n > 60:
            return ok(f"t{n}", 2)  # short tokens, constantly invalidated below
        kind = kinds[n % len(kinds)]
        if kind == "connect":
            raise httpx.ConnectError("refused", request=request)
        if kind == "timeout":
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(429, headers={"Retry-After": "0"}) if kind == "429" else httpx.Response(503)

    idp = IdP(clock, respond)
    provider = make(idp, clock, backoff_cap_seconds=0.2)

    async def caller() -> None:
        while len(idp.calls) < 100:
            token = await provider.get_token()
            provider.invalidate(token)  # every resource server rejects every token

    async with asyncio.timeout(30):
        await asyncio.gather(*(caller() for _ in range(200)))
    times = idp.times
    assert len(times) >= 100
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 1.0 - 1e-9, min(gaps)
    stats = provider.stats.requests
    assert stats["network_error"] > 0 and stats["rate_limited"] > 0 and stats["server_error"] > 0
    await provider.aclose()


async def test_backoff_is_full_jitter_and_capped() -> None:
    clock = FakeClock()
    idp = IdP(clock, lambda _r, n: httpx.Response(503) if n <= 40 else ok("t"))
    provider = make(idp, clock, backoff_cap_seconds=8)
    assert await provider.get_token() == "t"
    gaps = [b - a for a, b in zip(idp.times, idp.times[1:], strict=False)]
    assert all(1.0 <= g <= 8.0 + 1e-9 for g in gaps), gaps
    assert max(gaps) > 4  # it does grow towards the cap
    assert len(set(round(g, 6) for g in gaps[10:])) > 5  # and it is jittered
    await provider.aclose()


# -- invalidate -------------------------------------------------------------------------------------


async def test_invalidate_only_if_same_token() -> None:
    clock = FakeClock()
    idp = IdP(clock)
    provider = make(idp, clock)
    first = await provider.get_token()
    for _ in range(50):  # N callers report the same rejected token
        provider.invalidate(first)
    second = await provider.get_token()
    assert second != first and len(idp.calls) == 2
    provider.invalidate(first)  # a late report about the old token changes nothing
    provider.invalidate("some-other-token")
    assert await provider.get_token() == second and len(idp.calls) == 2
    assert idp.times[1] - idp.times[0] >= 1.0  # the rate floor also covers invalidation
    await provider.aclose()


# -- endpoints, grants, client authentication ------------------------------------------------------


async def test_discovery_is_fetched_once_and_used() -> None:
    clock = FakeClock()

    def respond(request: httpx.Request, n: int) -> httpx.Response:
        if request.method == "GET":
            assert request.url.path == "/realms/x/.well-known/openid-configuration"
            return httpx.Response(
                200,
                json={"issuer": "https://idp.example/realms/x", "token_endpoint": "https://idp.example/tok"},
            )
        return ok(f"t{n}")

    idp = IdP(clock, respond)
    provider = make(idp, clock, token_url=None, issuer="https://idp.example/realms/x")
    first = await provider.get_token()
    provider.invalidate(first)
    await provider.get_token()
    methods = [(r.method, str(r.url)) for _, r in idp.calls]
    assert methods[0][0] == "GET"
    assert methods[1:] == [("POST", "https://idp.example/tok")] * 2
    await provider.aclose()


async def test_discovered_plain_http_endpoint_is_refused() -> None:
    clock = FakeClock()
    idp = IdP(clock, lambda _r, _n: httpx.Response(200, json={"token_endpoint": "http://evil.example/token"}))
    provider = make(idp, clock, token_url=None, issuer="https://idp.example")
    with pytest.raises(ConfigError, match="plain http"):
        await provider.get_token()
    await provider.aclose()


async def test_keycloak_realm_url() -> None:
    clock = FakeClock()
    idp = IdP(clock)
    provider = make(idp, clock, token_url=None, base_url="https://auth.redmist.racing/", realm="redmist")
    await provider.get_token()
    assert (
        str(idp.calls[0][1].url) == "https://auth.redmist.racing/realms/redmist/protocol/openid-connect/token"
    )
    await provider.aclose()


async def test_client_secret_basic_is_form_urlencoded() -> None:
    clock = FakeClock()
    idp = IdP(clock)
    provider = make(idp, clock, client_id="svc id:1", client_secret=Secret("p@ss:w/rd+ &"), scope="a b")
    await provider.get_token()
    request = idp.calls[0][1]
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    raw = base64.b64decode(request.headers["authorization"].removeprefix("Basic ")).decode()
    user, _, password = raw.partition(":")
    assert ":" not in password or raw.count(":") == 1
    assert (unquote_plus(user), unquote_plus(password)) == ("svc id:1", "p@ss:w/rd+ &")
    assert idp.form() == {"grant_type": "client_credentials", "scope": "a b"}
    await provider.aclose()


async def test_client_secret_post_body() -> None:
    clock = FakeClock()
    idp = IdP(clock)
    provider = make(idp, clock, client_auth="client_secret_post", audience="api")
    await provider.get_token()
    assert "authorization" not in idp.calls[0][1].headers
    assert idp.form() == {
        "grant_type": "client_credentials",
        "client_id": "svc",
        "client_secret": SECRET,
        "audience": "api",
    }
    await provider.aclose()


async def test_token_exchange_form_body() -> None:
    clock = FakeClock()
    idp = IdP(clock)
    provider = make(
        idp,
        clock,
        env={"SUBJECT": "subject-token-value"},
        grant="token_exchange",
        subject_token_env="SUBJECT",
        requested_subject="alice",
        audience="redmist-api",
        client_auth="client_secret_post",
    )
    await provider.get_token()
    assert idp.form() == {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": "subject-token-value",
        "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "requested_subject": "alice",
        "audience": "redmist-api",
        "client_id": "svc",
        "client_secret": SECRET,
    }
    info = provider.last_token_info
    assert info is not None and info.grant == "token_exchange"
    await provider.aclose()


async def test_token_exchange_subject_from_another_provider() -> None:
    clock = FakeClock()
    upstream_idp = IdP(clock, lambda _r, n: ok(f"upstream-{n}"))
    upstream = make(upstream_idp, clock)
    idp = IdP(clock)
    provider = build_token_provider(
        AuthConfig(grant="token_exchange", token_url=URL, client_id="x", client_secret=Secret(SECRET)),
        http=idp.client(),
        clock=clock,
        env={},
        subject_provider=upstream,
    )
    await provider.get_token()
    assert idp.form()["subject_token"] == "upstream-1"
    await provider.aclose()
    await upstream.aclose()


async def test_refresh_token_grant_body_and_rotation() -> None:
    clock = FakeClock()
    idp = IdP(clock, lambda _r, n: ok(f"t{n}", refresh_token=f"rotated-refresh-{n}"))
    provider = make(
        idp,
        clock,
        env={"RT": "initial-refresh-token"},
        grant="refresh_token",
        refresh_token_env="RT",
        client_secret=None,
    )
    first = await provider.get_token()
    assert idp.form(0) == {
        "grant_type": "refresh_token",
        "refresh_token": "initial-refresh-token",
        "client_id": "svc",
    }
    provider.invalidate(first)
    await provider.get_token()
    assert idp.form(1)["refresh_token"] == "rotated-refresh-1"  # the response's refresh token is used
    await provider.aclose()


async def test_password_grant_falls_back_when_refresh_token_is_rejected() -> None:
    clock = FakeClock()

    def respond(request: httpx.Request, n: int) -> httpx.Response:
        form = dict(parse_qsl(request.content.decode()))
        if form["grant_type"] == "refresh_token":
            return httpx.Response(400, json={"error": "invalid_grant"})
        return ok(f"t{n}", refresh_token="refresh-me-please")

    idp = IdP(clock, respond)
    provider = make(
        idp, clock, env={"PW": "the-password"}, grant="password", username="bob", password_env="PW"
    )
    first = await provider.get_token()
    provider.invalidate(first)
    second = await provider.get_token()
    assert second == "t3"
    assert [idp.form(i)["grant_type"] for i in range(3)] == ["password", "refresh_token", "password"]
    assert idp.form(0)["password"] == "the-password" and idp.form(0)["username"] == "bob"
    await provider.aclose()
