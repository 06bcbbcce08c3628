"""Optional HTTP endpoint (loopback by default): /healthz, /readyz, /metrics (Prometheus text), and
the board API + live page (`consumer.web`) when the daemon keeps live state.

- `/healthz`: 200 when connected, or disconnected for less than `reconnect_grace` seconds (including
  the start-up period before the first connect); 503 otherwise. Docker's HEALTHCHECK uses it.
- `/readyz`: 200 only while connected to the hub; 503 otherwise.
- `/metrics`: prometheus-client exposition of a private registry (no process-global state), fed by
  a collector that reads plain counters at scrape time (`RelayStats`, sink stats, token counters).

Metric names (prefix `event_consumer_`): `messages_received_total{target}`,
`messages_relayed_total{target}`, `reconnects_total{reason}`, `token_requests_total{outcome}`,
`snapshots_total{outcome}`, `seconds_since_last_message`, `sink_queue_depth{sink}`,
`sink_queue_bytes{sink}`, `sink_records_written_total{sink}`, `sink_write_errors_total{sink}`,
`sink_blocked_total{sink}`,
`dropped_records_total{sink,reason}`, `connection_state{state}` (1 for the current state),
`connected`, `contract_extra_slots_total{type}` (RedMist objects with more slots than the contract:
kept as `key<n>`), `contract_unexpected_values_total{type}` (values passed through as received),
`buffer_bytes{buffer}` / `buffer_limit_bytes{buffer}` (memory the hub connection holds:
`dispatch` = decoded, not yet relayed invocations, `replay` = the stateful-reconnect buffer),
`dispatch_queue_invocations` / `dispatch_queue_limit_invocations`, `hub_connections_total` (handshakes),
`hub_short_lived_connections_total` (lost before `healthy_after_seconds`), `hub_flapping` (1 while flapping).

Cardinality: every label value comes from a bounded set — targets are the known ones or `other` (see
consumer.relay.relay), reasons are exception class names, contract types and sinks come from the code
and the configuration — so the body stays small whatever target names a hub sends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from consumer.redmist.contract import STATS as CONTRACT_STATS
from consumer.relay.stats import CONNECTION_STATES, RelayStats
from consumer.signalr.connection import BufferUsage
from consumer.sinks import SinkWorker
from consumer.web import (
    BoardService,
    HttpServer,
    Request,
    Response,
    Router,
    Stream,
    add_page_routes,
    json_response,
)

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
        if s.buffer_usage is not None:
            yield from _buffer_metrics(s.buffer_usage())
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
        depth_bytes = GaugeMetricFamily(
            PREFIX + "sink_queue_bytes", "Bytes of the lines queued or held for retry", labels=["sink"]
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
            depth_bytes.add_metric([w.name], float(w.depth_bytes))
            written.add_metric([w.name], float(w.stats.written))
            errors.add_metric([w.name], float(w.stats.errors))
            blocked.add_metric([w.name], float(w.stats.blocked))
            for reason, n in w.stats.dropped.items():
                dropped.add_metric([w.name, reason], float(n))
        yield from (depth, depth_bytes, written, errors, blocked, dropped)
        yield _counter(
            "contract_extra_slots",
            "RedMist objects with more slots than the contract knows (kept as key<n>), by type",
            ["type"],
            dict(CONTRACT_STATS.extra_slots),
        )
        yield _counter(
            "contract_unexpected_values",
            "RedMist values in a form the contract does not expect (passed through), by type",
            ["type"],
            dict(CONTRACT_STATS.unexpected_values),
        )


def _counter(name: str, doc: str, labels: list[str], values: Mapping[str, int]) -> CounterMetricFamily:
    fam = CounterMetricFamily(PREFIX + name, doc, labels=labels)
    for key, n in sorted(values.items()):
        fam.add_metric([key], float(n))
    return fam


def _buffer_metrics(usage: BufferUsage) -> Iterator[Metric]:
    in_use = GaugeMetricFamily(
        PREFIX + "buffer_bytes", "Bytes held by the hub connection, by buffer", labels=["buffer"]
    )
    in_use.add_metric(["dispatch"], float(usage.dispatch_bytes))
    in_use.add_metric(["replay"], float(usage.replay_bytes))
    limit = GaugeMetricFamily(
        PREFIX + "buffer_limit_bytes", "Byte bound of each hub connection buffer", labels=["buffer"]
    )
    limit.add_metric(["dispatch"], float(usage.dispatch_limit_bytes))
    limit.add_metric(["replay"], float(usage.replay_limit_bytes))
    count = GaugeMetricFamily(
        PREFIX + "dispatch_queue_invocations", "Invocations decoded and not yet relayed"
    )
    count.add_metric([], float(usage.dispatch_invocations))
    count_limit = GaugeMetricFamily(
        PREFIX + "dispatch_queue_limit_invocations", "Bound on invocations decoded and not yet relayed"
    )
    count_limit.add_metric([], float(usage.dispatch_limit_invocations))
    yield from (in_use, limit, count, count_limit)


def build_registry(collector: DaemonCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def healthy(stats: RelayStats, reconnect_grace: float) -> bool:
    if stats.connection_state == "connected":
        return True
    return stats.clock() - stats.state_since < reconnect_grace


class ObservabilityServer:
    """The daemon's HTTP endpoint (consumer.web): health, metrics and, with a `board`, the board
    API and the live page at `/`. CORS is off unless `cors_origins` lists origins (or "*")."""

    def __init__(
        self,
        stats: RelayStats,
        registry: CollectorRegistry,
        *,
        host: str = "127.0.0.1",
        port: int = 9464,
        reconnect_grace: float = 60.0,
        board: BoardService | None = None,
        cors_origins: Sequence[str] = (),
        max_connections: int = 1100,
    ) -> None:
        self.stats = stats
        self.registry = registry
        self.host = host
        self.port = port
        self.reconnect_grace = reconnect_grace
        self.board = board
        self.cors_origins = frozenset(cors_origins)
        self.router = Router()
        self.router.add("/healthz", self._healthz)
        self.router.add("/readyz", self._readyz)
        self.router.add("/metrics", self._metrics)
        if board is not None:
            board.add_routes(self.router)
            add_page_routes(self.router)
        self._server: HttpServer | None = None
        self._max_connections = max_connections

    async def _handle(self, request: Request) -> Response | Stream:
        if request.method == "OPTIONS" and self.cors_origins:
            return Response(
                204,
                headers=[
                    ("access-control-allow-methods", "GET, HEAD"),
                    ("access-control-allow-headers", "Last-Event-ID, If-None-Match"),
                    ("access-control-max-age", "600"),
                ],
            )
        return await self.router(request)

    def _cors(self, request: Request) -> list[tuple[str, str]]:
        origin = request.headers.get("origin")
        if not self.cors_origins or origin is None:
            return []
        if "*" in self.cors_origins:
            return [("access-control-allow-origin", "*")]
        if origin in self.cors_origins:
            return [("access-control-allow-origin", origin), ("vary", "Origin")]
        return []

    async def start(self) -> None:
        self._server = HttpServer(
            self._handle,
            host=self.host,
            port=self.port,
            max_connections=self._max_connections,
            extra_headers=self._cors,
        )
        await self._server.start()
        self.port = self._server.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def _healthz(self, _request: Request) -> Response:
        ok = healthy(self.stats, self.reconnect_grace)
        return json_response(
            {"status": "ok" if ok else "unhealthy", "state": self.stats.connection_state},
            status=200 if ok else 503,
        )

    async def _readyz(self, _request: Request) -> Response:
        ok = self.stats.connection_state == "connected"
        return json_response(
            {"status": "ready" if ok else "not ready", "state": self.stats.connection_state},
            status=200 if ok else 503,
        )

    async def _metrics(self, _request: Request) -> Response:
        return Response(200, generate_latest(self.registry), CONTENT_TYPE)
