"""The OAuth 2.0 token provider: one cached token, refreshed early, fetched single-flight.

Schedule (all on the injected monotonic clock, measured from when the request was SENT):
  fresh until  sent + min(expires_in - refresh_before_expiry_seconds, expires_in * refresh_at_fraction)
               (if that is <= 0 — very short tokens — sent + expires_in * refresh_at_fraction)
  valid until  sent + expires_in
While fresh, get_token() returns the cached token without awaiting anything. Between fresh and valid
it returns the cached token at once and starts one background refresh. With no valid token, callers
await the single shared fetch task (through asyncio.shield, so a cancelled caller never cancels it).

The fetch task retries transient failures forever (full-jitter exponential backoff capped at
backoff_cap_seconds; 429 honours Retry-After) and never sends two token requests less than
`min_request_interval` (1 s) apart. Permanent rejections raise TokenRequestRejected and are sticky:
no further request is made by this provider (the cached token, if still valid, is served until it
expires).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import quote_plus

import httpx
import msgspec

from consumer.auth.base import AUTHORIZATION, Outcome, TokenInfo, TokenProvider, TokenStats
from consumer.auth.bounded import (
    BoundedResponse,
    DeadlineExceeded,
    ResponseTooLarge,
    UnsupportedEncoding,
    bounded_request,
)
from consumer.auth.clock import Clock
from consumer.auth.errors import TRANSIENT_OAUTH_ERRORS, TokenRequestRejected, TokenUnavailable
from consumer.auth.jwtinfo import decode_unverified
from consumer.auth.settings import AuthConfig
from consumer.auth.urls import check_url_security, discovery_url
from consumer.backoff import Backoff
from consumer.errors import describe_error
from consumer.logs import get_logger, register_secret, scrub
from consumer.secret import Secret, fingerprint

log = get_logger(__name__)

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
MAX_RETRY_AFTER = 3600.0  # a Retry-After beyond an hour is treated as an hour


class TransientFailure(Exception):
    """A token request that may succeed later (5xx, 429, timeout, network, malformed answer)."""

    def __init__(self, outcome: Outcome, detail: str, retry_after: float | None = None) -> None:
        self.outcome = outcome
        self.detail = scrub(detail)[:300]
        self.retry_after = retry_after
        super().__init__(f"{outcome}: {self.detail}")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date (relative to the wall
    clock `now`). None if absent or unparseable; never negative."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" dates parse naive; HTTP dates are always GMT
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER)


@dataclass(slots=True, repr=False)
class _Cached:
    access: str
    fresh_until: float  # monotonic
    expires_at: float  # monotonic
    info: TokenInfo

    def __repr__(self) -> str:
        return f"_Cached({self.info.fingerprint})"


class TokenEndpoint:
    """The token URL: configured directly, or found once via OIDC discovery and cached."""

    def __init__(
        self,
        *,
        token_url: str | None,
        issuer: str | None,
        allow_insecure: bool,
        source: str,
    ) -> None:
        self._url = token_url
        self._issuer = issuer
        self._allow_insecure = allow_insecure
        self._source = source

    @property
    def known(self) -> str | None:
        """The token URL if already known (for messages), else the discovery URL."""
        if self._url is not None:
            return self._url
        return discovery_url(self._issuer) if self._issuer else None

    def forget(self) -> None:
        """Drop a discovered URL (e.g. after a 404) so the next request re-discovers it."""
        if self._issuer is not None:
            self._url = None

    async def resolve(self, http: httpx.AsyncClient, request_timeout: float, max_bytes: int) -> str:
        if self._url is not None:
            return self._url
        assert self._issuer is not None
        url = discovery_url(self._issuer)
        try:
            resp = await bounded_request(
                http,
                "GET",
                url,
                max_bytes=max_bytes,
                deadline=request_timeout,
                headers={"Accept": "application/json"},
            )
        except (httpx.TimeoutException, DeadlineExceeded):
            raise TransientFailure(
                "network_error", f"discovery {url}: no complete answer within {request_timeout:g} s"
            ) from None
        except (ResponseTooLarge, UnsupportedEncoding) as err:
            raise TransientFailure("malformed", f"discovery {url}: {err}") from None
        except httpx.HTTPError as err:
            raise TransientFailure(
                "network_error", f"discovery failed: {url}: {describe_error(err)}"
            ) from None
        if resp.status_code >= 500 or resp.status_code in (408, 429):
            raise TransientFailure("server_error", f"discovery {url} answered HTTP {resp.status_code}")
        if resp.status_code != 200:
            raise TransientFailure("http_error", f"discovery {url} answered HTTP {resp.status_code}")
        try:
            doc = msgspec.json.decode(resp.content)
        except msgspec.DecodeError:
            raise TransientFailure("malformed", f"discovery document at {url} is not JSON") from None
        endpoint = doc.get("token_endpoint") if isinstance(doc, dict) else None
        if not isinstance(endpoint, str) or not endpoint:
            raise TransientFailure("malformed", f"discovery document at {url} has no token_endpoint")
        if isinstance(doc, dict) and doc.get("issuer") not in (self._issuer, self._issuer.rstrip("/")):
            log.warning("auth.issuer_mismatch", issuer=self._issuer, url=url)
        check_url_security(
            endpoint, self._allow_insecure, "discovered token_endpoint", file=self._source, key="auth.issuer"
        )
        log.debug("auth.endpoint_discovered", token_endpoint=endpoint, issuer=self._issuer)
        self._url = endpoint
        return endpoint


class OAuthTokenProvider:
    """client_credentials, password, refresh_token and token_exchange grants (see module doc)."""

    header_name = AUTHORIZATION

    def __init__(
        self,
        cfg: AuthConfig,
        *,
        endpoint: TokenEndpoint,
        http: httpx.AsyncClient,
        owns_http: bool,
        clock: Clock,
        client_secret: Secret | None = None,
        password: Secret | None = None,
        refresh_token: Secret | None = None,
        subject_token: Secret | None = None,
        subject_provider: TokenProvider | None = None,
        owns_subject_provider: bool = False,
        rng: random.Random | None = None,
        min_request_interval: float = 1.0,
        backoff_base: float = 0.5,
        stats: TokenStats | None = None,
    ) -> None:
        self._cfg = cfg
        self._grant: str = cfg.grant
        self._endpoint = endpoint
        self._http = http
        self._owns_http = owns_http
        self._clock = clock
        self._client_secret = client_secret
        self._password = password
        self._configured_refresh = refresh_token
        self._refresh: Secret | None = refresh_token
        self._refresh_expires_at: float | None = None
        self._subject_token = subject_token
        self._subject_provider = subject_provider
        self._owns_subject = owns_subject_provider
        self._last_subject: str | None = None
        rng = rng or random.Random()
        self._min_interval = max(1.0, min_request_interval)
        self._backoff = Backoff(backoff_base, cfg.backoff_cap_seconds, uniform=rng.uniform)  # full jitter
        self.stats = stats or TokenStats()
        self._token: _Cached | None = None
        self._task: asyncio.Task[_Cached] | None = None
        self._not_before = float("-inf")  # monotonic time before which no request may be sent
        self._streak = 0
        self._streak_warned = False
        self._last_failure: TransientFailure | None = None
        self._rejected: TokenRequestRejected | None = None
        self._closed = False

    def __repr__(self) -> str:
        fp = self._token.info.fingerprint if self._token else None
        return (
            f"OAuthTokenProvider(grant={self._grant}, client_id={self._cfg.client_id!r}, "
            f"token_url={self._endpoint.known!r}, token={fp})"
        )

    # -- public API ---------------------------------------------------------------------------------

    @property
    def last_token_info(self) -> TokenInfo | None:
        return self._token.info if self._token else None

    async def get_token(self, *, max_wait: float | None = None) -> str:
        tok = self._token
        now = self._clock.monotonic()
        if tok is not None and now < tok.fresh_until:
            return tok.access
        if self._closed:
            raise RuntimeError("token provider is closed")
        valid = tok is not None and now < tok.expires_at
        if self._rejected is not None:
            if valid:
                assert tok is not None
                return tok.access
            raise self._rejected
        task = self._ensure_fetch()
        if valid:
            assert tok is not None
            return tok.access  # stale-while-refreshing: the refresh runs in the background
        return (await self._wait(task, max_wait)).access

    def invalidate(self, token: str) -> None:
        tok = self._token
        if tok is not None and hmac.compare_digest(tok.access.encode(), token.encode()):
            self._token = None
            log.info("auth.token_invalidated", token_fingerprint=tok.info.fingerprint)

    async def aclose(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])  # never raises; the result is no longer wanted
        if self._owns_subject and self._subject_provider is not None:
            await self._subject_provider.aclose()
        if self._owns_http:
            await self._http.aclose()

    # -- single flight ------------------------------------------------------------------------------

    def _ensure_fetch(self) -> asyncio.Task[_Cached]:
        task = self._task
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._fetch_loop(), name="token-fetch")
            task.add_done_callback(self._fetch_done)
            self._task = task
        return task

    def _fetch_done(self, task: asyncio.Task[_Cached]) -> None:
        if task.cancelled():
            return
        exc = task.exception()  # marks it retrieved even if no caller awaited
        if isinstance(exc, TokenRequestRejected):
            tok = self._token
            if tok is not None and self._clock.monotonic() < tok.expires_at:
                log.error(
                    "auth.refresh_rejected_serving_cached",
                    error=exc.error,
                    client_id=exc.client_id,
                    grant=exc.grant,
                    token_url=exc.token_url,
                )
        elif exc is not None:
            # Waiters (if any) get the exception; say it once here for background refreshes.
            log.error("auth.token_fetch_failed", error=type(exc).__name__, detail=describe_error(exc))

    async def _wait(self, task: asyncio.Task[_Cached], max_wait: float | None) -> _Cached:
        if max_wait is None:
            return await asyncio.shield(task)
        try:
            async with asyncio.timeout(max_wait):
                return await asyncio.shield(task)
        except TimeoutError:
            last = f"; last error: {self._last_failure}" if self._last_failure else ""
            raise TokenUnavailable(
                f"no token from {self._endpoint.known} within {max_wait:g} s "
                f"(client_id={self._cfg.client_id!r}, grant={self._grant}){last}"
            ) from None

    # -- the fetch loop -----------------------------------------------------------------------------

    async def _fetch_loop(self) -> _Cached:
        subject_retried = False
        while True:
            delay = self._not_before - self._clock.monotonic()
            if delay > 0:
                await self._clock.sleep(delay)
            try:
                cached = await self._request_once()
            except TokenRequestRejected as err:
                if err.error == "invalid_grant" and self._using_response_refresh():
                    # A refresh token we were handed expired or was revoked: re-authenticate with
                    # the configured grant instead (still subject to the rate floor).
                    log.info("auth.refresh_token_rejected", grant=self._grant)
                    self._refresh = None
                    continue
                if (
                    err.error in ("invalid_token", "invalid_grant")
                    and self._subject_provider is not None
                    and self._last_subject is not None
                    and not subject_retried
                ):
                    # The IdP refused the subject token (expired or revoked before our schedule
                    # said so): drop it at its provider and exchange a fresh one, once.
                    subject_retried = True
                    log.info("auth.subject_token_rejected", error=err.error)
                    self._subject_provider.invalidate(self._last_subject)
                    continue
                self._rejected = err
                raise
            except TransientFailure as failure:
                self._on_failure(failure)
                continue
            if self._streak:
                log.info("auth.token_recovered", failures=self._streak)
            self._streak = 0
            self._streak_warned = False
            self._last_failure = None
            self._token = cached
            return cached

    def _on_failure(self, failure: TransientFailure) -> None:
        self._streak += 1
        self._last_failure = failure
        now = self._clock.monotonic()
        retry_after = failure.retry_after
        delay = retry_after if retry_after is not None else self._backoff.delay(self._streak)
        self._not_before = max(self._not_before, now + delay)
        tok = self._token
        serving = tok is not None and now < tok.expires_at
        fields: dict[str, Any] = {
            "outcome": failure.outcome,
            "detail": failure.detail,
            "retry_in": round(max(delay, self._not_before - now), 3),
            "failures": self._streak,
            "client_id": self._cfg.client_id,
            "token_url": self._endpoint.known,
        }
        if not self._streak_warned:
            self._streak_warned = True
            if serving:
                log.warning("auth.refresh_failing_serving_cached", **fields)
            else:
                log.warning("auth.token_failing_retrying", **fields)
        else:
            log.debug("auth.token_request_failed", **fields)

    def _using_response_refresh(self) -> bool:
        return self._refresh is not None and self._refresh is not self._configured_refresh

    # -- one request --------------------------------------------------------------------------------

    async def _form(self) -> tuple[str, dict[str, str]]:
        cfg = self._cfg
        form: dict[str, str] = {}
        self._last_subject = None
        now = self._clock.monotonic()
        if self._refresh_expires_at is not None and now >= self._refresh_expires_at:
            self._refresh = self._configured_refresh
            self._refresh_expires_at = None
        if self._refresh is not None:
            grant = "refresh_token"
            form["refresh_token"] = self._refresh.reveal()
        elif self._grant == "client_credentials":
            grant = "client_credentials"
        elif self._grant == "password":
            assert cfg.username is not None and self._password is not None
            grant = "password"
            form["username"] = cfg.username
            form["password"] = self._password.reveal()
        elif self._grant == "token_exchange":
            grant = TOKEN_EXCHANGE_GRANT
            if self._subject_provider is not None:
                subject = await self._subject_provider.get_token()
                register_secret(subject)
                self._last_subject = subject
            elif self._subject_token is not None:
                subject = self._subject_token.reveal()
            else:
                raise RuntimeError(
                    "token_exchange needs a subject token (subject_token_env or subject_provider)"
                )
            form["subject_token"] = subject
            form["subject_token_type"] = cfg.subject_token_type
            if cfg.requested_subject:
                form["requested_subject"] = cfg.requested_subject
        else:  # pragma: no cover - factory validates the grant
            raise RuntimeError(f"unsupported grant {self._grant}")
        form = {"grant_type": grant, **form}
        if cfg.scope:
            form["scope"] = cfg.scope
        if cfg.audience and grant != "refresh_token":
            form["audience"] = cfg.audience
        return grant, form

    def _client_auth(self, form: dict[str, str]) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        client_id = self._cfg.client_id or ""
        if self._client_secret is None:
            form["client_id"] = client_id  # public client
        elif self._cfg.client_auth == "client_secret_post":
            form["client_id"] = client_id
            form["client_secret"] = self._client_secret.reveal()
        else:
            # RFC 6749 2.3.1: id and secret are form-urlencoded before Basic encoding.
            pair = f"{quote_plus(client_id, safe='')}:{quote_plus(self._client_secret.reveal(), safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        return headers

    async def _request_once(self) -> _Cached:
        url = await self._endpoint.resolve(
            self._http, self._cfg.timeout_seconds, self._cfg.max_response_bytes
        )
        grant, form = await self._form()
        headers = self._client_auth(form)
        # The rate floor counts from the moment a token request is sent.
        sent = self._clock.monotonic()
        sent_wall = self._clock.time()
        self._not_before = sent + self._min_interval
        timeout = self._cfg.timeout_seconds
        try:
            resp = await bounded_request(
                self._http,
                "POST",
                url,
                max_bytes=self._cfg.max_response_bytes,
                deadline=timeout,
                data=form,
                headers=headers,
            )
        except (httpx.TimeoutException, DeadlineExceeded):
            self.stats.count("network_error")
            raise TransientFailure(
                "network_error", f"no complete answer from {url} within {timeout:g} s (timeout_seconds)"
            ) from None
        except (ResponseTooLarge, UnsupportedEncoding) as err:
            self.stats.count("malformed")
            raise TransientFailure(
                "malformed",
                f"token response from {url} refused for client_id={self._cfg.client_id!r}: {err}",
            ) from None
        except httpx.HTTPError as err:
            self.stats.count("network_error")
            raise TransientFailure("network_error", describe_error(err)) from None
        try:
            cached = self._parse(resp, url, grant, sent, sent_wall)
        except TokenRequestRejected:
            self.stats.count("rejected")
            raise
        except TransientFailure as failure:
            self.stats.count(failure.outcome)
            raise
        self.stats.count("ok")
        return cached

    def _parse(self, resp: BoundedResponse, url: str, grant: str, sent: float, sent_wall: float) -> _Cached:
        status = resp.status_code
        if status == 429:
            retry = parse_retry_after(resp.headers.get("Retry-After"), self._clock.time())
            raise TransientFailure("rate_limited", f"HTTP 429 from {url}", retry_after=retry)
        if status >= 500 or status == 408:
            raise TransientFailure("server_error", f"HTTP {status} from {url}")
        body = self._json(resp)
        if status in (400, 401, 403):
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, str) and error in TRANSIENT_OAUTH_ERRORS:
                raise TransientFailure("server_error", f"HTTP {status} {error} from {url}")
            desc = body.get("error_description") if isinstance(body, dict) else None
            raise TokenRequestRejected(
                error=error if isinstance(error, str) and error else f"http_{status}",
                description=desc if isinstance(desc, str) else None,
                status=status,
                client_id=self._cfg.client_id,
                grant=grant,
                token_url=url,
            )
        if not 200 <= status < 300:
            if status == 404:
                self._endpoint.forget()
            raise TransientFailure("http_error", f"HTTP {status} from {url}")
        if not isinstance(body, dict):
            ctype = resp.headers.get("content-type", "none")
            raise TransientFailure(
                "malformed", f"token response from {url} is not a JSON object (HTTP {status}, {ctype})"
            )
        return self._accept(body, url, grant, sent, sent_wall)

    @staticmethod
    def _json(resp: BoundedResponse) -> object:
        try:
            return msgspec.json.decode(resp.content)
        except msgspec.DecodeError:
            return None

    def _accept(
        self, body: Mapping[str, object], url: str, grant: str, sent: float, sent_wall: float
    ) -> _Cached:
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise TransientFailure("malformed", f"token response from {url} has no access_token")
        register_secret(access)
        token_type = body.get("token_type", "Bearer")
        if not isinstance(token_type, str):
            raise TransientFailure("malformed", f"token response from {url} has a non-string token_type")
        scope = body.get("scope")
        scope = scope if isinstance(scope, str) else self._cfg.scope
        claims = decode_unverified(access)
        source: Literal["response", "jwt", "default"]
        raw = body.get("expires_in")
        if raw is not None:
            try:
                lifetime = float(raw)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise TransientFailure(
                    "malformed", f"token response from {url} has a bad expires_in"
                ) from None
            if not lifetime > 0:
                raise TransientFailure("malformed", f"token response from {url} has expires_in <= 0")
            source = "response"
        elif claims is not None and isinstance(claims.get("exp"), int | float):
            lifetime = max(1.0, float(claims["exp"]) - sent_wall)
            source = "jwt"
        else:
            lifetime = self._cfg.default_expires_in_seconds
            source = "default"
        refresh_after = min(
            lifetime - self._cfg.refresh_before_expiry_seconds, lifetime * self._cfg.refresh_at_fraction
        )
        if refresh_after <= 0:
            refresh_after = lifetime * self._cfg.refresh_at_fraction
        new_refresh = body.get("refresh_token")
        if isinstance(new_refresh, str) and new_refresh:
            register_secret(new_refresh)
            self._refresh = Secret(new_refresh)
            rexp = body.get("refresh_expires_in")
            self._refresh_expires_at = (
                sent + float(rexp)
                if isinstance(rexp, int | float) and not isinstance(rexp, bool) and rexp > 0
                else None
            )
        info = TokenInfo(
            grant=grant if grant != TOKEN_EXCHANGE_GRANT else "token_exchange",
            token_type=token_type,
            scope=scope,
            expires_in=lifetime,
            expires_in_source=source,
            obtained_at=sent_wall,
            expires_at=sent_wall + lifetime,
            fingerprint=fingerprint(access),
            is_jwt=claims is not None,
            refresh_token_present=self._refresh is not None,
        )
        log.info(
            "auth.token_obtained",
            grant=info.grant,
            client_id=self._cfg.client_id,
            token_fingerprint=info.fingerprint,
            token_type=token_type,
            expires_in=round(lifetime, 3),
            refresh_in=round(refresh_after, 3),
            scope=scope,
        )
        return _Cached(access=access, fresh_until=sent + refresh_after, expires_at=sent + lifetime, info=info)
