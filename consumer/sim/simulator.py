"""The whole simulator on one port: IdP under /realms, hub + REST under /status, admin under /admin.

    async with Simulator(SimConfig(events=2, speed=600)) as sim:
        sim.info()            # URLs and demo credentials (what `event-consumer simulate` prints)
        sim.faults.drop_all() # fault injection, also over HTTP: POST {admin_url}/faults/drop_all

Fault API (Python: `sim.faults.<name>(...)`; HTTP: `POST /admin/faults/<name>` with a JSON object of
the same keyword arguments; loopback clients only):
  drop_all, close_all(allow_reconnect), half_open(seconds=None), end_half_open,
  refuse_upgrades(status=401|503, seconds), expire_tokens, idp_fail(status=429|503, seconds),
  idp_slow(delay, seconds), malformed, oversized(size), restart(down_seconds=0), reset_event(event_id)
  (ReceiveReset), new_session(event_id) (the next session: new sessionId, no ReceiveReset),
  flap(mode=close|malformed|invalid_utf8, seconds) (every new connection ended right after its
  handshake), clear.
`GET /admin/state` returns counters and the connection list.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from consumer.logs import get_logger
from consumer.sim.faults import FAULT_NAMES, Faults
from consumer.sim.hub import HubSettings, RedMistHub, SimEvent
from consumer.sim.idp import Idp, IdpConfig
from consumer.sim.race import PACKAGED_REPLAYS, RaceEngine, load_replay, synthetic_replay
from consumer.sim.serving import Site

log = get_logger(__name__)

DEMO_CLIENT_ID = "relay-svc"


@dataclass(slots=True)
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 0
    replays: list[str] = field(default_factory=lambda: list(PACKAGED_REPLAYS))
    events: int | None = None  # number of events: replays first, then synthetic ones
    synthetic_cars: int = 30
    synthetic_duration_ms: int = 2 * 3_600_000
    seed: int = 1
    private_events: dict[int, str] = field(default_factory=dict)  # event id -> access code
    token_lifetime: float = 300.0
    idp_rate_limit: float = 50.0
    clients_file: str | None = None
    hub: HubSettings = field(default_factory=HubSettings)
    autostart: bool = True  # drive the races in the background


def build_events(config: SimConfig) -> list[SimEvent]:
    """Replays first (each at its recorded event id), then seeded synthetic events up to `events`."""
    replays = [load_replay(r) for r in config.replays]
    wanted = config.events if config.events is not None else len(replays)
    events: list[SimEvent] = []
    used: set[int] = set()
    for replay in replays[:wanted]:
        engine = RaceEngine(replay)
        used.add(engine.event_id)
        events.append(SimEvent(engine))
    next_id = 1000
    while len(events) < wanted:
        while next_id in used:
            next_id += 1
        data = synthetic_replay(
            config.seed + next_id,
            event_id=next_id,
            cars=config.synthetic_cars,
            duration_ms=config.synthetic_duration_ms,
        )
        events.append(SimEvent(RaceEngine(data)))
        used.add(next_id)
    for event in events:
        event.access_code = config.private_events.get(event.event_id)
    return events


class Simulator:
    """IdP + RedMist hub + REST + admin API on one aiohttp app and one port."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        c = self.config
        idp_config = IdpConfig.load(
            c.clients_file, token_lifetime=c.token_lifetime, rate_limit=c.idp_rate_limit
        )
        self.idp = Idp(idp_config)
        self.hub = RedMistHub(build_events(c), idp=self.idp, settings=c.hub, seed=c.seed)
        self.faults = Faults(self)
        self.app = web.Application()
        self.idp.add_routes(self.app)
        self.hub.add_routes(self.app)
        self.app.router.add_get("/admin/state", self._admin_state)
        self.app.router.add_post("/admin/faults/{name}", self._admin_fault)
        self.site = Site(self.app, c.host, c.port)
        self._driver: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.site.start()
        self.idp.base_url = self.site.base_url
        if self.config.autostart:
            self._driver = asyncio.get_running_loop().create_task(self.hub.run(), name="sim-driver")
        log.info("sim.started", url=self.site.base_url, events=sorted(self.hub.events))

    async def close(self) -> None:
        if self._driver is not None:
            self._driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._driver
            self._driver = None
        await self.hub.close()
        await self.site.close()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- URLs ----------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.site.base_url

    @property
    def issuer(self) -> str:
        return self.idp.issuer()

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/token"

    @property
    def hub_url(self) -> str:
        return f"{self.base_url}/status/event-status"

    @property
    def rest_url(self) -> str:
        return f"{self.base_url}/status/v2/Events"

    @property
    def admin_url(self) -> str:
        return f"{self.base_url}/admin"

    @property
    def client_id(self) -> str:
        return DEMO_CLIENT_ID

    @property
    def client_secret(self) -> str:
        secret = self.idp.config.clients[DEMO_CLIENT_ID].client_secret
        assert secret is not None
        return secret

    @property
    def event_ids(self) -> list[int]:
        return list(self.hub.events)

    def info(self) -> dict[str, Any]:
        """The one JSON line `event-consumer simulate` prints."""
        return {
            "issuer": self.issuer,
            "token_url": self.token_url,
            "hub_url": self.hub_url,
            "rest_url": self.rest_url,
            "admin_url": self.admin_url,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "event_ids": self.event_ids,
        }

    # --- admin API (loopback only) -------------------------------------------------------------------

    @staticmethod
    def _loopback_only(request: web.Request) -> None:
        try:
            if ipaddress.ip_address(request.remote or "").is_loopback:
                return
        except ValueError:
            pass
        raise web.HTTPForbidden(text="admin API is loopback only")

    async def _admin_state(self, request: web.Request) -> web.Response:
        self._loopback_only(request)
        srv = self.hub.server
        return web.json_response(
            {
                "connections": srv.connection_ids,
                "connections_total": srv.stats.connections_total,
                "messages_sent": dict(srv.stats.messages_sent),
                "hub": dict(self.hub.stats),
                "idp": dict(self.idp.stats),
                "events": {str(e.event_id): e.engine.race_ms for e in self.hub.events.values()},
            }
        )

    async def _admin_fault(self, request: web.Request) -> web.Response:
        self._loopback_only(request)
        name = request.match_info["name"]
        if name not in FAULT_NAMES:
            return web.json_response(
                {"error": f"unknown fault {name!r}", "faults": list(FAULT_NAMES)}, status=404
            )
        params: dict[str, Any] = {}
        if request.can_read_body:
            try:
                params = json.loads(await request.text() or "{}")
            except json.JSONDecodeError:
                return web.json_response({"error": "body must be a JSON object"}, status=400)
            if not isinstance(params, dict):
                return web.json_response({"error": "body must be a JSON object"}, status=400)
        fn: Callable[..., int | Awaitable[int]] = getattr(self.faults, name)
        try:
            if name == "restart":
                # answer first: the restart drops this very listener
                asyncio.get_running_loop().create_task(self.faults.restart(**params))
                return web.json_response({"fault": name, "affected": None})
            result = fn(**params)
            if asyncio.iscoroutine(result):
                result = await result
        except (TypeError, ValueError) as err:
            return web.json_response({"error": str(err)}, status=400)
        log.info("sim.fault", fault=name, params=params)
        return web.json_response({"fault": name, "affected": result})


def replay_path_or_name(value: str) -> str:
    """CLI helper: a packaged replay name or an existing file path."""
    if value in PACKAGED_REPLAYS or Path(value).is_file():
        return value
    raise ValueError(f"no such replay: {value} (packaged: {', '.join(PACKAGED_REPLAYS)})")
