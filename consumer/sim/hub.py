"""The RedMist event-status hub and Status API on top of `consumer.sim.hubhost.HubServer`.

Behaves like the real hub by default (each point has a test in tests/sim):
- Hub at `/status/event-status` (negotiate and skipNegotiation; JSON and MessagePack) with RedMist's
  settings (keepalive 15 s, client timeout 60 s, handshake 30 s, 1 MiB), anonymous allowed unless
  `require_auth`, bearer validated in-process against the sim IdP's key. A connection is **not**
  closed when its token expires (`close_on_token_expiry = True` is the opt-in fault).
- Server methods of the contract, names matched case-insensitively, bound by exact argument count and
  the contract's parameter types (a mismatch or an unknown method gets ASP.NET's binding-failure
  text); private events need the access code (HubException "Access code required or invalid for this
  event.").
- A finished race is followed (after `restart_delay`) by the event's **next session**: a new
  `sessionId` and no ReceiveReset, as RedMist does (`restart_mode = "reset"`: the old replay-again with
  ReceiveReset). `lastUpdated` is always null. `extra_slots = n` plays a newer server: every car and
  session patch carries n more trailing slots (JSON names `key<n>`, the daemon's generic names).
- Client methods with contract payloads: one broadcast per tick per event, shaped per protocol
  (JSON: RedMist's names with every key present, nulls for "unchanged"; MessagePack: integer-keyed
  arrays) via `ProtocolArgs`, so each protocol is encoded once per broadcast.
- REST under `/status/Events`, `/status/v1/Events`, `/status/v2/Events`. Rate limiting comes first
  (before the token check and the event lookup). Snapshot endpoints: a token bucket per client IP
  (15, refilling 3/s, 429 with Retry-After; `snapshot_limit = "window"` selects the old fixed window),
  exempt from the global limiter; 404 when the event is not live (unknown, or its session finished).
  List endpoints answer `[]` for an unknown event.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from aiohttp import web

from consumer.logs import get_logger
from consumer.redmist.contract import (
    CLIENT_METHOD_ARGS,
    CONTRACT,
    EXTRA_SLOT_PREFIX,
    format_datetime,
    json_names,
    value_to_msgpack,
)
from consumer.sim.hubhost import HubCallContext, HubError, HubServer, Principal, ProtocolArgs
from consumer.sim.idp import Idp, InvalidToken
from consumer.sim.race import RaceEngine, Update
from consumer.sim.ratelimit import FixedWindow, TokenBucket, retry_after_header

log = get_logger(__name__)

HUB_PATH = "/status/event-status"
REST_PREFIXES = ("/status/v2/Events", "/status/v1/Events", "/status/Events")
ACCESS_DENIED = "Access code required or invalid for this event."
MSGPACK = "application/x-msgpack"

_PATCH_NAMES = json_names("CarPositionPatch")
_SESSION_PATCH_NAMES = json_names("SessionStatePatch")


@dataclass(slots=True)
class HubSettings:
    keepalive_interval: float = 15.0
    client_timeout: float = 60.0
    handshake_timeout: float = 30.0
    max_message_size: int = 1024 * 1024
    require_auth: bool = False
    close_on_token_expiry: bool = False  # the real hub never closes on expiry: an opt-in fault
    stateful_reconnect: bool = False
    protocols: tuple[str, ...] = ("json", "messagepack")
    speed: float = 60.0  # race seconds per real second
    tick_interval: float = 0.2  # real seconds between broadcasts
    restart_delay: float = 5.0  # real seconds between a finished race and the next session
    restart_mode: Literal["new_session", "reset"] = "new_session"
    loop_races: bool = True
    extra_slots: int = 0  # > 0: a newer server (patches with this many slots beyond the contract)
    skip_idle_start: bool = True  # start each race a few seconds before its first line crossing
    control_log_interval: float = 60.0
    # REST limits. Snapshots: a token bucket per client IP (upstream now) or the old fixed window per
    # IP (anonymous) / per user (token); other endpoints: the global token buckets.
    snapshot_limit: Literal["bucket", "window"] = "bucket"
    snapshot_bucket_size: float = 15.0
    snapshot_bucket_rate: float = 3.0
    snapshot_window_anonymous: float = 3.0
    snapshot_window_token: float = 0.9
    global_rate_anonymous: float = 1 / 1.1
    global_rate_token: float = 1 / 0.25
    global_burst: float = 30.0


@dataclass(slots=True)
class SimEvent:
    """One live event: its race engine, privacy and control log."""

    engine: RaceEngine
    access_code: str | None = None  # set -> private event
    control_log: list[dict[str, Any]] = field(default_factory=list)
    car_logs_changed: set[str] = field(default_factory=set)
    race_ms: float = 0.0
    finished_at: float | None = None

    @property
    def event_id(self) -> int:
        return self.engine.event_id

    @property
    def private(self) -> bool:
        return self.access_code is not None


def _json_patch(names: list[str], patch: dict[str, Any]) -> dict[str, Any]:
    """SignalR's JSON writes every member: unchanged ones as null."""
    full = dict.fromkeys(names)
    full.update(patch)
    return full


def _bearer_header(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


class RedMistHub:
    """The hub + REST for a set of simulated events. `add_routes(app)`, then `run()` drives the races."""

    def __init__(
        self,
        events: Iterable[SimEvent],
        *,
        idp: Idp | None = None,
        settings: HubSettings | None = None,
        seed: int = 0,
    ) -> None:
        self.settings = settings or HubSettings()
        self.idp = idp
        self.events: dict[int, SimEvent] = {e.event_id: e for e in events}
        self._rng = random.Random(seed)
        s = self.settings
        self.server = HubServer(
            HUB_PATH,
            protocols=s.protocols,
            keepalive_interval=s.keepalive_interval,
            client_timeout=s.client_timeout,
            handshake_timeout=s.handshake_timeout,
            max_message_size=s.max_message_size,
            authenticate=self._authenticate,
            require_auth=s.require_auth,
            stateful_reconnect=s.stateful_reconnect,
            close_on_token_expiry=s.close_on_token_expiry,
        )
        self._register_methods()
        self._snapshot_anon = FixedWindow(1, s.snapshot_window_anonymous)
        self._snapshot_token = FixedWindow(1, s.snapshot_window_token)
        self._snapshot_bucket = TokenBucket(s.snapshot_bucket_rate, s.snapshot_bucket_size)
        self._global_anon = TokenBucket(s.global_rate_anonymous, s.global_burst)
        self._global_token = TokenBucket(s.global_rate_token, s.global_burst)
        self.stats: dict[str, int] = {
            "car_patch_batches": 0,
            "session_patches": 0,
            "resets": 0,
            "session_changes": 0,
            "rest_429": 0,
        }
        self.paused = False
        for event in self.events.values():
            event.race_ms = self._start_ms(event)

    # --- auth ----------------------------------------------------------------------------------------

    def verify(self, token: str | None) -> Principal | None:
        if token is None or self.idp is None:
            return None
        try:
            claims = self.idp.verify(token)
        except InvalidToken:
            return None
        return Principal(subject=str(claims.get("sub")), claims=claims, expires_at=float(claims["exp"]))

    async def _authenticate(self, token: str | None, request: web.Request) -> Principal | None:
        return self.verify(token)

    # --- hub methods ---------------------------------------------------------------------------------

    def _event(self, event_id: Any, access_code: Any = None, *, check: bool = True) -> int:
        """The event id (the binder already checked it is an int) after the private-event check."""
        eid = int(event_id)
        if check and eid > 0:
            event = self.events.get(eid)
            if event is not None and event.private and access_code != event.access_code:
                raise HubError(ACCESS_DENIED)
        return eid

    def _register_methods(self) -> None:
        srv = self.server

        async def subscribe(ctx: HubCallContext, event_id: Any) -> None:
            await ctx.add_to_group(f"evt{self._event(event_id)}-sub")

        async def subscribe_with_code(ctx: HubCallContext, event_id: Any, access_code: Any) -> None:
            await ctx.add_to_group(f"evt{self._event(event_id, access_code)}-sub")

        async def unsubscribe(ctx: HubCallContext, event_id: Any) -> None:
            await ctx.remove_from_group(f"evt{self._event(event_id, check=False)}-sub")

        async def control_logs(ctx: HubCallContext, event_id: Any, access_code: Any) -> None:
            await ctx.add_to_group(f"{self._event(event_id, access_code)}-cl")

        async def unsubscribe_control_logs(ctx: HubCallContext, event_id: Any) -> None:
            await ctx.remove_from_group(f"{self._event(event_id, check=False)}-cl")

        async def car_control_logs(ctx: HubCallContext, event_id: Any, car: Any, access_code: Any) -> None:
            await ctx.add_to_group(f"{self._event(event_id, access_code)}-{car}")

        async def unsubscribe_car_control_logs(ctx: HubCallContext, event_id: Any, car: Any) -> None:
            await ctx.remove_from_group(f"{self._event(event_id, check=False)}-{car}")

        async def in_car_v2(ctx: HubCallContext, event_id: Any, car: Any, access_code: Any) -> None:
            await ctx.add_to_group(f"in-car-evt-{self._event(event_id, access_code)}-car-{car}v2")

        async def unsubscribe_in_car_v2(ctx: HubCallContext, event_id: Any, car: Any) -> None:
            await ctx.remove_from_group(f"in-car-evt-{self._event(event_id, check=False)}-car-{car}v2")

        async def in_car_v1(ctx: HubCallContext, event_id: Any, car: Any, access_code: Any) -> None:
            await ctx.add_to_group(f"in-car-evt-{self._event(event_id, access_code)}-car-{car}")

        async def unsubscribe_in_car_v1(ctx: HubCallContext, event_id: Any, car: Any) -> None:
            await ctx.remove_from_group(f"in-car-evt-{self._event(event_id, check=False)}-car-{car}")

        handlers: dict[str, Callable[..., Any]] = {
            "SubscribeToEvent": subscribe,
            "SubscribeToEventV2": subscribe,
            "SubscribeToEventV2WithCode": subscribe_with_code,
            "UnsubscribeFromEvent": unsubscribe,
            "UnsubscribeFromEventV2": unsubscribe,
            "SubscribeToControlLogs": control_logs,
            "UnsubscribeFromControlLogs": unsubscribe_control_logs,
            "SubscribeToCarControlLogs": car_control_logs,
            "UnsubscribeFromCarControlLogs": unsubscribe_car_control_logs,
            "SubscribeToInCarDriverEventV2": in_car_v2,
            "UnsubscribeFromInCarDriverEventV2": unsubscribe_in_car_v2,
            "SubscribeToInCarDriverEvent": in_car_v1,
            "UnsubscribeFromInCarDriverEvent": unsubscribe_in_car_v1,
        }
        params = {m["name"]: [str(p["type"]) for p in m["params"]] for m in CONTRACT.raw["serverMethods"]}
        for name, fn in handlers.items():
            srv.register(name, fn, arg_types=params[name])

    # --- broadcasting --------------------------------------------------------------------------------

    def send(self, group: str, target: str, json_args: list[Any]) -> int:
        """Broadcast with per-protocol shaping: the MessagePack form is derived from the JSON form.
        Every broadcast goes through here (tests wrap it to record what the hub sent)."""
        if not self.server.group_members(group):
            return 0
        types = CLIENT_METHOD_ARGS.get(target, [])
        packed = [value_to_msgpack(t, a) for t, a in zip(types, json_args, strict=True)]
        return self.server.send_to_group(
            group, target, arguments=ProtocolArgs(json=json_args, messagepack=packed)
        )

    def _extras(self, names: list[str], race_ms: int) -> dict[str, Any]:
        """What a newer server adds after the contract's slots (`extra_slots`): `key<n>` values."""
        n = self.settings.extra_slots
        return {f"{EXTRA_SLOT_PREFIX}{len(names) + i}": race_ms + i for i in range(n)} if n > 0 else {}

    def publish(self, event: SimEvent, update: Update) -> None:
        """Broadcast one engine update to the event's subscribers."""
        eid = event.event_id
        group = f"evt{eid}-sub"
        if update.session_patch is not None:
            patch = {**update.session_patch, **self._extras(_SESSION_PATCH_NAMES, update.race_ms)}
            self.send(group, "ReceiveSessionPatch", [_json_patch(_SESSION_PATCH_NAMES, patch)])
            self.stats["session_patches"] += 1
        if update.car_patches:  # only non-empty batches
            extras = self._extras(_PATCH_NAMES, update.race_ms)
            patches = [{**p, **extras} for p in update.car_patches] if extras else update.car_patches
            self.send(group, "ReceiveCarPatches", [[_json_patch(_PATCH_NAMES, p) for p in patches]])
            self.stats["car_patch_batches"] += 1
            for p in patches:
                car = p["number"]
                in_car_group = f"in-car-evt-{eid}-car-{car}v2"
                if self.server.group_members(in_car_group):
                    self.send(in_car_group, "ReceiveInCarUpdateV2", [event.engine.in_car(car)])
        if update.flag_changed and update.session_patch is not None:
            self._log_flag(event, int(update.session_patch.get("currentFlag") or 0), update.race_ms)

    def _log_flag(self, event: SimEvent, flag: int, race_ms: int) -> None:
        engine = event.engine
        when = format_datetime(engine.session_start + dt.timedelta(milliseconds=race_ms))
        names = {1: "Green", 2: "Yellow", 3: "Red", 4: "White", 5: "Checkered"}
        cars = list(engine.final_laps) or [""]
        car = self._rng.choice(cars) if flag == 2 else ""
        event.control_log.append(
            {
                "o": len(event.control_log) + 1,
                "t": when,
                "cor": f"T{self._rng.randint(1, 12)}" if car else "S/F",
                "c1": car,
                "c1h": bool(car),
                "c2": "",
                "c2h": False,
                "n": f"{names.get(flag, 'Flag')} flag" + (f", car {car} off track" if car else ""),
                "s": "Reviewed" if car else "",
                "a": "",
                "on": "",
            }
        )
        if car:
            event.car_logs_changed.add(car)

    def send_control_logs(self) -> None:
        """ReceiveControlLog: the whole log to `{eventId}-cl`, per-car logs to changed cars' groups."""
        for event in self.events.values():
            eid = event.event_id
            whole = {"cn": "", "entries": list(event.control_log)}
            self.send(f"{eid}-cl", "ReceiveControlLog", [whole])
            for car in sorted(event.car_logs_changed):
                logs = {"cn": car, "entries": [e for e in event.control_log if car in (e["c1"], e["c2"])]}
                self.send(f"{eid}-{car}", "ReceiveControlLog", [logs])
            event.car_logs_changed.clear()

    def _start_ms(self, event: SimEvent) -> float:
        if not self.settings.skip_idle_start:
            return 0.0
        return float(max(0, event.engine.first_lap_ms - 10_000))

    def reset_event(self, event_id: int) -> None:
        """Restart an event's session and send ReceiveReset (clients must re-fetch the snapshot)."""
        event = self.events[event_id]
        event.engine.session_start = dt.datetime.now(dt.UTC)
        event.engine.reset()
        event.race_ms = (
            float(max(0, event.engine.first_lap_ms - 10_000)) if self.settings.skip_idle_start else 0.0
        )
        event.finished_at = None
        event.control_log.clear()
        self.server.send_to_group(f"evt{event_id}-sub", "ReceiveReset")
        self.stats["resets"] += 1

    def new_session(self, event_id: int) -> None:
        """Start the event's next session: a new sessionId and NO ReceiveReset (RedMist's way); the
        first patches of the new session carry the new id."""
        event = self.events[event_id]
        event.engine.new_session()
        event.race_ms = self._start_ms(event)
        event.finished_at = None
        event.control_log.clear()
        self.stats["session_changes"] += 1
        self.publish(event, event.engine.session_started())

    def step(self, race_seconds: float) -> None:
        """Advance every event by `race_seconds` of race time and broadcast (the driver's tick)."""
        now = time.monotonic()
        for event in self.events.values():
            engine = event.engine
            if engine.finished:
                if not self.settings.loop_races:
                    continue
                if event.finished_at is None:
                    event.finished_at = now
                elif now - event.finished_at >= self.settings.restart_delay:
                    if self.settings.restart_mode == "reset":
                        self.reset_event(event.event_id)
                    else:
                        self.new_session(event.event_id)
                continue
            event.race_ms += race_seconds * 1000.0
            self.publish(event, engine.advance_to(int(event.race_ms)))

    async def run(self) -> None:
        """Drive the races against the loop clock until cancelled."""
        s = self.settings
        loop = asyncio.get_running_loop()
        last = loop.time()
        next_log = last + s.control_log_interval
        while True:
            await asyncio.sleep(s.tick_interval)
            now = loop.time()
            if not self.paused:
                self.step((now - last) * s.speed)
            last = now
            if now >= next_log:
                self.send_control_logs()
                next_log = now + s.control_log_interval

    # --- REST ----------------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        self.server.add_routes(app)
        routes = {
            "LoadLiveEvents": self._live_events,
            "LoadLiveAndRecentEvents": self._live_events,
            "LoadEvent": self._load_event,
            "GetCurrentSessionState": self._session_state,
            "GetCurrentSessionStateJson": self._session_state_json,
            "LoadSessions": self._sessions,
            "LoadFlags": self._flags,
            "LoadControlLog": self._control_log,
            "LoadCarControlLogs": self._car_control_logs,
            "LoadInCarPayload": self._in_car_payload,
        }
        exempt = {"GetCurrentSessionState", "GetCurrentSessionStateJson"}  # their own policy only
        for prefix in REST_PREFIXES:
            for action, handler in routes.items():
                app.router.add_get(
                    f"{prefix}/{action}", self._guard(handler, global_limit=action not in exempt)
                )

    def _guard(self, handler: Callable[[web.Request, Principal | None], Any], *, global_limit: bool) -> Any:
        async def guarded(request: web.Request) -> web.StreamResponse:
            principal = self.verify(_bearer_header(request))  # identifies; rejections come later
            if global_limit:  # the rate limiter runs before authorization and the lookup
                ip = request.remote or "?"
                limiter = self._global_token if principal else self._global_anon
                wait = limiter.acquire(principal.subject if principal else ip)
                if wait > 0:
                    return self._too_many(wait)
            response: web.StreamResponse = await handler(request, principal)
            return response

        return guarded

    def _too_many(self, wait: float) -> web.Response:
        self.stats["rest_429"] += 1
        return web.Response(status=429, headers={"Retry-After": retry_after_header(wait)})

    @staticmethod
    def _wants_msgpack(request: web.Request) -> bool:
        accept = request.headers.get("Accept", "")
        return MSGPACK in accept and "application/json" not in accept

    def _reply(self, request: web.Request, type_expr: str, value: Any) -> web.Response:
        if self._wants_msgpack(request):
            body = msgspec.msgpack.encode(value_to_msgpack(type_expr, value))
            return web.Response(body=body, content_type=MSGPACK)
        return web.json_response(value, dumps=lambda v: msgspec.json.encode(v).decode())

    def _lookup(self, request: web.Request) -> SimEvent:
        try:
            eid = int(request.query.get("eventId", ""))
        except ValueError:
            raise web.HTTPBadRequest(text="eventId is required") from None
        event = self.events.get(eid)
        if event is None:
            raise web.HTTPNotFound(text="event")
        if event.private and request.headers.get("X-Event-Access-Code") != event.access_code:
            raise web.HTTPUnauthorized(text=ACCESS_DENIED)
        return event

    @staticmethod
    def _require_token(principal: Principal | None) -> None:
        if principal is None:
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": "Bearer"})

    def _snapshot_limit(self, request: web.Request, principal: Principal | None) -> float:
        if self.settings.snapshot_limit == "bucket":  # upstream now: per client IP, token or not
            return self._snapshot_bucket.acquire(request.remote or "?")
        if principal is not None:
            return self._snapshot_token.acquire(principal.subject)
        return self._snapshot_anon.acquire(request.remote or "?")

    def _live(self, request: web.Request) -> SimEvent:
        """The event for a snapshot: 404 unless it is live (no timing processor otherwise)."""
        event = self._lookup(request)
        if event.engine.finished:
            raise web.HTTPNotFound()
        return event

    def _known(self, request: web.Request) -> SimEvent | None:
        """For list endpoints: None for an unknown event (they answer [] then), else as `_lookup`."""
        try:
            eid = int(request.query.get("eventId", ""))
        except ValueError:
            raise web.HTTPBadRequest(text="eventId is required") from None
        if eid not in self.events:
            return None
        return self._lookup(request)

    async def _live_events(self, request: web.Request, principal: Principal | None) -> web.Response:
        rows = [e.engine.summary(is_private=e.private) for e in self.events.values()]
        return self._reply(request, "List<EventListSummary>", rows)

    async def _session_state(self, request: web.Request, principal: Principal | None) -> web.Response:
        wait = self._snapshot_limit(request, principal)  # the limiter first, as the real middleware order
        if wait > 0:
            return self._too_many(wait)
        event = self._live(request)
        body = msgspec.msgpack.encode(value_to_msgpack("SessionState", event.engine.snapshot()))
        return web.Response(body=body, content_type=MSGPACK)

    async def _session_state_json(self, request: web.Request, principal: Principal | None) -> web.Response:
        wait = self._snapshot_limit(request, principal)
        if wait > 0:
            return self._too_many(wait)
        self._require_token(principal)
        event = self._live(request)
        return web.json_response(event.engine.snapshot(), dumps=lambda v: msgspec.json.encode(v).decode())

    async def _load_event(self, request: web.Request, principal: Principal | None) -> web.Response:
        event = self._lookup(request)
        e = event.engine
        body = {
            "e": e.event_id,
            "n": e.event_name,
            "d": e.session_start.strftime("%Y-%m-%d"),
            "u": "",
            "s": [self._session_row(event)],
            "on": e.organization_name,
            "ow": None,
            "l": None,
            "sc": None,
            "t": e.track_name,
            "cc": "",
            "di": "",
            "b": None,
            "hc": True,
            "il": not e.finished,
            "isSimulation": e.is_simulation,
            "isArchived": False,
            "organizationId": 1,
            "priv": event.private,
            "hn": False,
        }
        return self._reply(request, "Event", body)

    @staticmethod
    def _session_row(event: SimEvent) -> dict[str, Any]:
        e = event.engine
        return {
            "sid": e.session_id,
            "eid": e.event_id,
            "n": e.session_name,
            "st": format_datetime(e.session_start),
            "et": None,
            "tz": 0.0,
            "lu": None,
            "il": not e.finished,
            "pq": False,
        }

    async def _sessions(self, request: web.Request, principal: Principal | None) -> web.Response:
        event = self._known(request)
        return self._reply(request, "List<Session>", [self._session_row(event)] if event else [])

    async def _flags(self, request: web.Request, principal: Principal | None) -> web.Response:
        event = self._known(request)
        flags = [dict(f) for f in event.engine.flag_durations] if event else []
        return self._reply(request, "List<FlagDuration>", flags)

    async def _control_log(self, request: web.Request, principal: Principal | None) -> web.Response:
        event = self._known(request)
        return self._reply(request, "List<ControlLogEntry>", list(event.control_log) if event else [])

    async def _car_control_logs(self, request: web.Request, principal: Principal | None) -> web.Response:
        event = self._lookup(request)
        car = request.query.get("car", "")
        entries = [e for e in event.control_log if car in (e["c1"], e["c2"])]
        return self._reply(request, "CarControlLogs?", {"cn": car, "entries": entries} if entries else None)

    async def _in_car_payload(self, request: web.Request, principal: Principal | None) -> web.Response:
        self._require_token(principal)
        event = self._lookup(request)
        return self._reply(request, "InCarPayload?", event.engine.in_car(request.query.get("car", "")))

    # --- lifecycle -----------------------------------------------------------------------------------

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.server.shutdown()
