"""The RedMist profile: what a correct RedMist consumer does on every connect, reconnect and reset.

- `calls()`: per configured event `SubscribeToEventV2(eventId)`, or
  `SubscribeToEventV2WithCode(eventId, code)` when an access code is configured; with `control_logs`
  `SubscribeToControlLogs(eventId, code|None)`; per `in_car` entry
  `SubscribeToInCarDriverEventV2(eventId, car, code|None)` (SignalR binds by count: null is explicit).
- A session snapshot per event is fetched over REST and emitted as a `snapshot` record:
  `GetCurrentSessionStateJson` (bearer via the token factory's httpx.Auth; the body is spliced into
  the record undecoded) or, with `snapshot_format = "messagepack"`, `GetCurrentSessionState` decoded
  through the contract's MessagePack keys.
- **When** (RedMist's own UI does the same): after every subscribe round (connect, reconnect); on
  `ReceiveReset`; when the live state sees a new `sessionId` (RedMist sends no reset for a new
  session); when the hub has been silent for an event for `resync_quiet_seconds` (default 5: a patch
  lost in transit is otherwise wrong until the next reconnect); and every `resync_every_seconds`
  (default 300). The timed resyncs run only while connected, and are measured from the event's last
  hub message and its last snapshot, so a busy event is resynced every 5 min and a silent one about
  every `resync_quiet_seconds`.
- **Not live**: a 404 from the snapshot endpoint means the event has no timing processor. The event is
  put on hold: one log line, no error count, a recheck every `not_live_recheck_seconds` (30, as
  RedMist's UI), and any hub message for the event lifts the hold at once (snapshot requested).
- Snapshot requests are **coalesced per event** (a storm of reconnects/resets asks once per event)
  and **rate limited** process-wide: at least `snapshot_min_interval` seconds between two calls
  (RedMist: about one per 0.9 s per IP with a token), and a 429's `Retry-After` is honoured before the
  next call. Transient failures are retried with backoff; the request stays pending meanwhile.
- Each snapshot read has a total deadline (`snapshot_timeout_seconds`: connect, headers and the whole
  body) and a size limit (`snapshot_max_bytes`, read in chunks, the read stops at the limit); a
  failure of either is a clear error, logged once per event until a snapshot succeeds again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec

from consumer.auth import parse_retry_after
from consumer.backoff import Backoff
from consumer.config import RedMistConfig
from consumer.errors import describe_error
from consumer.logs import get_logger
from consumer.redmist import contract
from consumer.redmist.state import LiveState
from consumer.relay.relay import Relay
from consumer.relay.subscriptions import HubCall

log = get_logger(__name__)

JSON_ACTION = "GetCurrentSessionStateJson"
MSGPACK_ACTION = "GetCurrentSessionState"


def default_rest_url(hub_url: str) -> str:
    """`https://api.redmist.racing/status/event-status` -> `https://api.redmist.racing/status`."""
    parts = urlsplit(hub_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/").rsplit("/", 1)[0]
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class SnapshotError(Exception):
    pass


class SnapshotTooLarge(SnapshotError):
    pass


class _NotLive(Exception):
    pass


def _check_response(resp: httpx.Response, action: str, limit: int) -> None:
    """Raise for a snapshot response that carries no usable body: 429, 404, not 200, declared too large."""
    if resp.status_code == 429:
        retry = parse_retry_after(resp.headers.get("Retry-After"), time.time())
        raise _RateLimited(retry or 1.0)
    if resp.status_code == 404:
        raise _NotLive()
    if resp.status_code != 200:
        raise SnapshotError(f"{action} answered HTTP {resp.status_code}")
    declared = resp.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise SnapshotTooLarge(
            f"{action} body is {int(declared)} bytes, over redmist.snapshot_max_bytes = {limit}"
        )


class RedMistProfile:
    def __init__(
        self,
        cfg: RedMistConfig,
        relay: Relay,
        http: httpx.AsyncClient,
        *,
        hub_url: str,
        state: LiveState | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        retry_max: float = 30.0,
    ) -> None:
        self.cfg = cfg
        self.relay = relay
        self.http = http
        self.rest_url = (cfg.rest_url or default_rest_url(hub_url)).rstrip("/")
        self.state = state
        self._clock = clock
        self._sleep = sleep
        self.retry_max = retry_max
        self.min_interval = cfg.snapshot_min_interval_seconds
        self.quiet = cfg.resync_quiet_seconds
        self.every = cfg.resync_every_seconds
        self.recheck = cfg.not_live_recheck_seconds
        self._pending: dict[int, None] = {}  # insertion-ordered set of events awaiting a snapshot
        self._wake = asyncio.Event()
        self._next_call = 0.0  # monotonic time before which no snapshot call may start
        self._last_snapshot: dict[int, float] = {}  # last snapshot served or asked for, per event
        self._not_live: dict[int, float] = {}  # events on hold -> when the hold began
        self._failing: set[int] = set()  # events whose failure was logged (once until a success)
        self.calls_made = 0
        self.snapshots_emitted = 0
        self.resyncs: dict[str, int] = {}  # timed resyncs by reason: quiet, periodic
        self._idle = asyncio.Event()
        self._idle.set()
        relay.watch("ReceiveReset", self._on_reset)
        relay.track_events = frozenset(cfg.events)
        relay.wake_events = self._not_live
        relay.on_event_message = self._on_event_message
        if state is not None:
            relay.watch("ReceiveCarPatches", state.on_car_patches)
            relay.watch("ReceiveSessionPatch", state.on_session_patch)
            state.on_resync = self._on_state_resync

    # -- subscriptions -------------------------------------------------------------------------

    def _code(self, event: int) -> str | None:
        code = self.cfg.access_codes.get(str(event))
        return code.reveal() if code is not None else None

    def calls(self) -> list[HubCall]:
        out: list[HubCall] = []
        for ev in self.cfg.events:
            code = self._code(ev)
            if code is None:
                out.append(HubCall("SubscribeToEventV2", (ev,), f"SubscribeToEventV2({ev})"))
            else:
                out.append(
                    HubCall(
                        "SubscribeToEventV2WithCode", (ev, code), f"SubscribeToEventV2WithCode({ev}, ***)"
                    )
                )
            if self.cfg.control_logs:
                out.append(HubCall("SubscribeToControlLogs", (ev, code), f"SubscribeToControlLogs({ev})"))
        for ic in self.cfg.in_car:
            out.append(
                HubCall(
                    "SubscribeToInCarDriverEventV2",
                    (ic.event, ic.car, self._code(ic.event)),
                    f"SubscribeToInCarDriverEventV2({ic.event}, {ic.car})",
                )
            )
        return out

    # -- snapshots -----------------------------------------------------------------------------

    def request_snapshots(self, events: list[int] | None = None) -> None:
        """Ask for a fresh snapshot of these events (default: all); coalesced with pending asks."""
        now = self._clock()
        for ev in self.cfg.events if events is None else events:
            if ev in self._pending:
                self.relay.stats.count_snapshot("coalesced")
            self._pending[ev] = None
            self._last_snapshot[ev] = now
        if self._pending:
            self._idle.clear()
            self._wake.set()

    def after_subscribe(self) -> None:
        self.request_snapshots()

    def _on_reset(self, _args: list[Any], event_id: int | str | None) -> None:
        # ReceiveReset has no arguments: every subscribed event's state is suspect.
        if self.state is not None:
            self.state.reset()
        self.request_snapshots()

    def _on_state_resync(self, event_id: str) -> None:
        """The live state saw a new session for the event (no ReceiveReset comes for that)."""
        ev = int(event_id) if event_id.isdigit() else None
        if ev is not None and ev in self.cfg.events:
            self.request_snapshots([ev])

    def _on_event_message(self, event_id: int | str) -> None:
        """A hub message for an event that is on hold (not live): lift the hold, fetch a snapshot."""
        if isinstance(event_id, int) and self._not_live.pop(event_id, None) is not None:
            log.info("redmist.event_live_again", event_id=event_id)
            if self.state is not None:
                self.state.set_status(event_id, "unknown")
            self.request_snapshots([event_id])

    def is_not_live(self, event_id: int) -> bool:
        return event_id in self._not_live

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def _due(self, now: float) -> float | None:
        """Queue the timed resyncs that are due; return when the next one is (None: nothing timed)."""
        connected = self.relay.stats.connection_state == "connected"
        last_seen = self.relay.last_message_by_event
        nxt: float | None = None
        for ev in self.cfg.events:
            if ev in self._pending:
                continue
            held = self._not_live.get(ev)
            if held is not None:
                at = held + self.recheck
                if now >= at:
                    self._not_live[ev] = now  # the next recheck is a full interval after this one
                    self._pending[ev] = None
                    self.resyncs["not_live_recheck"] = self.resyncs.get("not_live_recheck", 0) + 1
                    continue
                nxt = at if nxt is None else min(nxt, at)
                continue
            last = self._last_snapshot.get(ev)
            if not connected or last is None:
                continue  # the subscribe round after the (re)connect fetches it
            candidates: list[tuple[float, str]] = []
            if self.every > 0:
                candidates.append((last + self.every, "periodic"))
            if self.quiet > 0:
                seen = last_seen.get(ev)
                candidates.append((max(last, seen if seen is not None else last) + self.quiet, "quiet"))
            if not candidates:
                continue
            at, reason = min(candidates)
            if now >= at:
                self._pending[ev] = None
                self._last_snapshot[ev] = now
                self.resyncs[reason] = self.resyncs.get(reason, 0) + 1
                continue
            nxt = at if nxt is None else min(nxt, at)
        return nxt

    async def _wait(self, until: float | None) -> None:
        """Until woken (a request) or the next timed resync is due; no polling."""
        if until is None:
            await self._wake.wait()
            return
        delay = until - self._clock()
        if delay <= 0:
            return
        sleeper = asyncio.ensure_future(self._sleep(delay))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)

    async def run(self) -> None:
        """The snapshot task: one call at a time, rate limited, until cancelled."""
        backoff = Backoff(1.0, self.retry_max, floor=0.5, clock=self._clock)  # transient failures
        failures = 0
        while True:
            nxt = self._due(self._clock())
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wait(nxt)
                continue
            wait = self._next_call - self._clock()
            if wait > 0:
                await self._sleep(wait)
            ev = next(iter(self._pending))
            del self._pending[ev]
            self._next_call = self._clock() + self.min_interval
            try:
                await self._fetch_and_emit(ev)
            except _RateLimited as rl:
                self.relay.stats.count_snapshot("rate_limited")
                self._next_call = max(self._next_call, self._clock() + rl.retry_after)
                self._pending.setdefault(ev, None)
                log.warning("redmist.snapshot_rate_limited", event_id=ev, retry_after=rl.retry_after)
                continue
            except _NotLive:
                self.relay.stats.count_snapshot("not_live")
                if ev not in self._not_live:
                    log.info(
                        "redmist.event_not_live",
                        event_id=ev,
                        recheck_seconds=self.recheck,
                    )
                self._not_live[ev] = self._clock()
                if self.state is not None:
                    self.state.set_status(ev, "not_live")
                failures = 0
                continue
            except (httpx.HTTPError, SnapshotError, msgspec.DecodeError, ValueError, TimeoutError) as exc:
                self.relay.stats.count_snapshot("error")
                if ev not in self._failing:
                    self._failing.add(ev)
                    log.error(
                        "redmist.snapshot_failed",
                        event_id=ev,
                        error=describe_error(exc),
                    )
                self._pending.setdefault(ev, None)
                failures += 1
                self._next_call = max(self._next_call, backoff.deadline(failures))
                continue
            self._failing.discard(ev)
            failures = 0

    async def _fetch_and_emit(self, ev: int) -> None:
        json_format = self.cfg.snapshot_format == "json"
        action = JSON_ACTION if json_format else MSGPACK_ACTION
        headers = {"Accept": "application/json" if json_format else "application/x-msgpack"}
        code = self._code(ev)
        if code is not None:
            headers["X-Event-Access-Code"] = code
        url = f"{self.rest_url}/v2/Events/{action}"
        self.calls_made += 1
        limit = self.cfg.snapshot_max_bytes
        try:
            async with asyncio.timeout(self.cfg.snapshot_timeout_seconds):
                async with self.http.stream("GET", url, params={"eventId": str(ev)}, headers=headers) as resp:
                    _check_response(resp, action, limit)
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in resp.aiter_bytes():
                        size += len(chunk)
                        if size > limit:
                            raise SnapshotTooLarge(
                                f"{action} body exceeds redmist.snapshot_max_bytes = {limit} bytes"
                            )
                        chunks.append(chunk)
        except TimeoutError:
            raise SnapshotError(
                f"{action} did not complete within redmist.snapshot_timeout_seconds = "
                f"{self.cfg.snapshot_timeout_seconds}"
            ) from None
        body = b"".join(chunks)
        state: Any
        if json_format:
            decoded = msgspec.json.decode(body)  # validates; the record carries the body as sent
            if not isinstance(decoded, dict):
                raise SnapshotError(f"{action} did not return an object")
            state = msgspec.Raw(body)
        else:
            decoded = contract.value_from_msgpack("SessionState", msgspec.msgpack.decode(body))
            if not isinstance(decoded, dict):
                raise SnapshotError(f"{action} did not return a SessionState array")
            state = decoded
        self._last_snapshot[ev] = self._clock()
        self._not_live.pop(ev, None)
        if self.state is not None:
            self.state.on_snapshot(decoded, ev)
        await self.relay.emit_snapshot(action, state, ev)
        self.snapshots_emitted += 1
        self.relay.stats.count_snapshot("ok")


class _RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited for {retry_after} s")
        self.retry_after = retry_after
