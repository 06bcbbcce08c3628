"""Optional HTTP endpoint (loopback by default): /healthz, /readyz, /metrics (Prometheus text).

- `/healthz`: 200 when connected, or disconnected for less than `reconnect_grace` seconds (including
  the start-up period before the first connect); 503 otherwise. Docker's HEALTHCHECK uses it.
- `/readyz`: 200 only while connected to the hub; 503 otherwise.
- `/metrics`: prometheus-client exposition of a private registry (no process-global state), fed by
  a collector that reads plain counters at scrape time (`RelayStats`, sink stats, token counters).

Metric names (prefix `event_consumer_`): `messages_received_total{target}`,
`messages_relayed_total{target}`, `reconnects_total{reason}`, `token_requests_total{outcome}`,
`snapshots_total{outcome}`, `seconds_since_last_message`, `sink_queue_depth{sink}`,
`sink_records_written_total{sink}`, `sink_write_errors_total{sink}`, `sink_blocked_total{sink}`,
`dropped_records_total{sink,reason}`, `connection_state{state}` (1 for the current state),
`connected`, `hub_connections_total` (handshakes), `hub_short_lived_connections_total` (lost before
`healthy_after_seconds`), `hub_flapping` (1 while flapping).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from consumer.relay.stats import CONNECTION_STATES, RelayStats
from consumer.sinks import SinkWorker

PREFIX = "event_consumer_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class DaemonCollector(Collector):
    def __init__(
        self,
        stats: RelayStats,
        workers: Sequence[SinkWorker],
        token_counts: Callable[[], Mapping[str, int]] | None = None,
        hub_counts: Callable[[], Mapping[str, float]] | None = None,
    ) -> None:
        self.stats = stats
        self.workers = workers
        self.token_counts = token_counts
        self.hub_counts = hub_counts

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        yield _counter("messages_received", "Hub invocations received, by target", ["target"], s.received)
        yield _counter(
            "messages_relayed", "Records queued to at least one sink, by target", ["target"], s.relayed
        )
        yield _counter(
            "reconnects", "Connection losses followed by a reconnect attempt", ["reason"], s.reconnects
        )
        yield _counter("snapshots", "Snapshot fetches by outcome", ["outcome"], s.snapshots)
        tokens = dict(self.token_counts()) if self.token_counts else {}
        yield _counter("token_requests", "Token endpoint requests by outcome", ["outcome"], tokens)
        since = s.seconds_since_last_message()
        g = GaugeMetricFamily(
            PREFIX + "seconds_since_last_message",
            "Seconds since the last hub message (-1 before the first)",
        )
        g.add_metric([], -1.0 if since is None else since)
        yield g
        state = GaugeMetricFamily(PREFIX + "connection_state", "1 for the current state", labels=["state"])
        for name in CONNECTION_STATES:
            state.add_metric([name], 1.0 if s.connection_state == name else 0.0)
        yield state
        conn = GaugeMetricFamily(PREFIX + "connected", "1 while connected to the hub")
        conn.add_metric([], 1.0 if s.connection_state == "connected" else 0.0)
        yield conn
        hub = dict(self.hub_counts()) if self.hub_counts else {}
        opened = CounterMetricFamily(PREFIX + "hub_connections", "Hub handshakes completed")
        opened.add_metric([], float(hub.get("connections", 0)))
        short = CounterMetricFamily(
            PREFIX + "hub_short_lived_connections", "Hub connections lost before they were healthy"
        )
        short.add_metric([], float(hub.get("short_lived", 0)))
        flapping = GaugeMetricFamily(PREFIX + "hub_flapping", "1 while hub connections keep dropping early")
        flapping.add_metric([], float(hub.get("flapping", 0)))
        yield from (opened, short, flapping)
        depth = GaugeMetricFamily(
            PREFIX + "sink_queue_depth", "Lines queued or held for retry", labels=["sink"]
        )
        written = CounterMetricFamily(PREFIX + "sink_records_written", "Lines stored", labels=["sink"])
        errors = CounterMetricFamily(PREFIX + "sink_write_errors", "Failed write attempts", labels=["sink"])
        blocked = CounterMetricFamily(
            PREFIX + "sink_blocked", "Times the receive loop waited for queue space", labels=["sink"]
        )
        dropped = CounterMetricFamily(
            PREFIX + "dropped_records", "Records dropped, by sink and reason", labels=["sink", "reason"]
        )
        for w in self.workers:
            depth.add_metric([w.name], float(w.depth))
            written.add_metric([w.name], float(w.stats.written))
            errors.add_metric([w.name], float(w.stats.errors))
            blocked.add_metric([w.name], float(w.stats.blocked))
            for reason, n in w.stats.dropped.items():
                dropped.add_metric([w.name, reason], float(n))
        yield from (depth, written, errors, blocked, dropped)


def _counter(name: str, doc: str, labels: list[str], values: Mapping[str, int]) -> CounterMetricFamily:
    fam = CounterMetricFamily(PREFIX + name, doc, labels=labels)
    for key, n in sorted(values.items()):
        fam.add_metric([key], float(n))
    return fam


def build_registry(collector: DaemonCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def healthy(stats: RelayStats, reconnect_grace: float) -> bool:
    if stats.connection_state == "connected":
        return True
    return stats.clock() - stats.state_since < reconnect_grace


class ObservabilityServer:
    def __init__(
        self,
        stats: RelayStats,
        registry: CollectorRegistry,
        *,
        host: str = "127.0.0.1",
        port: int = 9464,
        reconnect_grace: float = 60.0,
    ) -> None:
        self.stats = stats
        self.registry = registry
        self.host = host
        self.port = port
        self.reconnect_grace = reconnect_grace
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            addr: Any = self._runner.addresses[0]
            self.port = int(addr[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _healthz(self, _request: web.Request) -> web.Response:
        ok = healthy(self.stats, self.reconnect_grace)
        return web.json_response(
            {"status": "ok" if ok else "unhealthy", "state": self.stats.connection_state},
            status=200 if ok else 503,
        )

    async def _readyz(self, _request: web.Request) -> web.Response:
        ok = self.stats.connection_state == "connected"
        return web.json_response(
            {"status": "ready" if ok else "not ready", "state": self.stats.connection_state},
            status=200 if ok else 503,
        )

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
