"""The RedMist profile: what a correct RedMist consumer does on every connect, reconnect and reset.

- `calls()`: per configured event `SubscribeToEventV2(eventId)`, or
  `SubscribeToEventV2WithCode(eventId, code)` when an access code is configured; with `control_logs`
  `SubscribeToControlLogs(eventId, code|None)`; per `in_car` entry
  `SubscribeToInCarDriverEventV2(eventId, car, code|None)` (SignalR binds by count: null is explicit).
- After every subscribe round and on `ReceiveReset`, a session snapshot per event is fetched over REST
  and emitted as a `snapshot` record: `GetCurrentSessionStateJson` (bearer via the token factory's
  httpx.Auth; the body is spliced into the record undecoded) or, with `snapshot_format =
  "messagepack"`, `GetCurrentSessionState` decoded through the contract's MessagePack keys.
- Snapshot requests are **coalesced per event** (a storm of reconnects/resets asks once per event)
  and **rate limited** process-wide: at least `snapshot_min_interval` seconds between two calls
  (RedMist: about one per 0.9 s per IP with a token), and a 429's `Retry-After` is honoured before the
  next call. Transient failures are retried with backoff; the request stays pending meanwhile.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec

from consumer.auth import parse_retry_after
from consumer.config import RedMistConfig
from consumer.errors import describe_error
from consumer.logs import get_logger
from consumer.relay import contract
from consumer.relay.relay import Relay
from consumer.relay.state import LiveState
from consumer.relay.subscriptions import HubCall

log = get_logger("consumer.relay.redmist")

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
        self._pending: dict[int, None] = {}  # insertion-ordered set of events awaiting a snapshot
        self._wake = asyncio.Event()
        self._next_call = 0.0  # monotonic time before which no snapshot call may start
        self.calls_made = 0
        self.snapshots_emitted = 0
        self._idle = asyncio.Event()
        self._idle.set()
        relay.watch("ReceiveReset", self._on_reset)
        if state is not None:
            relay.watch("ReceiveCarPatches", state.on_car_patches)
            relay.watch("ReceiveSessionPatch", state.on_session_patch)

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
        for ev in self.cfg.events if events is None else events:
            if ev in self._pending:
                self.relay.stats.count_snapshot("coalesced")
            self._pending[ev] = None
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

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def run(self) -> None:
        """The snapshot task: one call at a time, rate limited, until cancelled."""
        delay = 1.0
        while True:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
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
                log.warning("snapshot rate limited", event_id=ev, retry_after=rl.retry_after)
                continue
            except (httpx.HTTPError, SnapshotError, msgspec.DecodeError, ValueError) as exc:
                self.relay.stats.count_snapshot("error")
                log.error("snapshot failed; retrying", event_id=ev, error=describe_error(exc))
                self._pending.setdefault(ev, None)
                self._next_call = max(self._next_call, self._clock() + delay * (0.5 + random.random() / 2))
                delay = min(self.retry_max, delay * 2)
                continue
            delay = 1.0

    async def _fetch_and_emit(self, ev: int) -> None:
        json_format = self.cfg.snapshot_format == "json"
        action = JSON_ACTION if json_format else MSGPACK_ACTION
        headers = {"Accept": "application/json" if json_format else "application/x-msgpack"}
        code = self._code(ev)
        if code is not None:
            headers["X-Event-Access-Code"] = code
        url = f"{self.rest_url}/v2/Events/{action}"
        self.calls_made += 1
        async with asyncio.timeout(self.cfg.snapshot_timeout_seconds):
            resp = await self.http.get(url, params={"eventId": str(ev)}, headers=headers)
        if resp.status_code == 429:
            raise _RateLimited(parse_retry_after(resp.headers.get("Retry-After"), time.time()) or 1.0)
        if resp.status_code != 200:
            raise SnapshotError(f"{action} answered HTTP {resp.status_code}")
        body = resp.content
        state: Any
        if json_format:
            decoded = msgspec.json.decode(body)  # validates; the record carries the body as sent
            if not isinstance(decoded, dict):
                raise SnapshotError(f"{action} did not return an object")
            state = msgspec.Raw(body)
        else:
            decoded = contract.value_from_msgpack("SessionState", msgspec.msgpack.decode(body))
            state = decoded
        if self.state is not None:
            self.state.on_snapshot(decoded, ev)
        await self.relay.emit_snapshot(action, state, ev)
        self.snapshots_emitted += 1
        self.relay.stats.count_snapshot("ok")


class _RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited for {retry_after} s")
        self.retry_after = retry_after
