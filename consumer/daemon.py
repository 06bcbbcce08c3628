"""The daemon: token factory → hub connection → relay → sinks, run as a well-behaved service.

Lifecycle (`Daemon.run()`):
1. Open the sinks (a path that cannot be opened is a configuration error, exit 78), start the
   observability endpoint and, with `ready = "started"`, tell systemd READY=1.
2. Start the hub connection (retried per the reconnect policy). On the first connect: a `connected`
   marker, the subscription round (`[[hub.on_connect]]` then the RedMist profile's), snapshots,
   READY=1. After every reconnect the same again (`reconnected` marker first); `reconnecting` and
   `closed` markers mark the gaps.
3. Until `stop()` (SIGTERM/SIGINT) or the connection closes for good (Close without reconnect, a
   policy that gives up: exit 69; rejected credentials: exit 77).
4. Shutdown within `shutdown_grace_seconds`: STOPPING=1, stop receiving (close the hub connection),
   stop subscriptions and snapshots, drain every sink queue, flush + fsync, write the state file,
   close. Exit 0. The grace is split by `shutdown_budget()`: the hub connection gets at most half
   (its dispatch drain, then the Close message and the WebSocket close, each bounded by the
   connection's `close_timeout`); the sinks get the rest, so at least the other half. The sinks are
   closed together, each given the time left: lines still unwritten then (a stdout reader that stopped
   reading, a hung mount) are abandoned and counted (`dropped.shutdown` in the `stopped` line); a sink
   thread still stuck in the kernel is named in `stuck_sinks` and cannot keep the process alive (it is
   a daemon thread, and `run` leaves with `os._exit`). A second SIGTERM/SIGINT calls `abort()`: the
   same accounting at once (everything unwritten counted as abandoned), then exit 130.

Watchdog (WATCHDOG_USEC): WATCHDOG=1 is sent every half interval only while healthy: the event loop is
not lagging, no sink has had lines waiting `[service] sink_stall_seconds` with no write call returning
(a write hung in the kernel; a sink whose writes fail is retrying, not stuck, and a restart would
lose its retry buffer),
and the hub has not been disconnected for `[service] watchdog_disconnected_seconds` (0: no limit).

`reopen()` (SIGHUP) asks every sink to reopen its file (logrotate).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from consumer.auth import AUTHORIZATION, BearerAuth, TokenProvider, build_token_provider, headers_for
from consumer.config import Config, load_access_codes
from consumer.errors import ConfigError, CredentialsRejected, ServiceUnavailable, describe_error
from consumer.ha import HaController
from consumer.kvboard import KvBoard
from consumer.logs import get_logger, register_secret
from consumer.observability import DaemonCollector, ObservabilityServer, build_registry, healthy
from consumer.redmist.payloads import PAYLOADS
from consumer.redmist.profile import RedMistProfile
from consumer.redmist.state import LiveState
from consumer.redmist.view import human_line
from consumer.relay.relay import Relay
from consumer.relay.stats import RelayStats
from consumer.relay.subscriptions import HubCall, Subscriber
from consumer.signalr.connection import HubConnection, HubError
from consumer.signalr.proxies import httpx_proxy_options
from consumer.signalr.retry import DaemonRetryPolicy, RetryPolicy, retry_policy
from consumer.sinks import SinkWorker, build_worker, stuck_threads
from consumer.sinks.base import CLOSE_TIMEOUT
from consumer.systemd import Notifier
from consumer.web import BoardCollector, BoardService

log = get_logger(__name__)

STATUS_INTERVAL = 10.0
CLOSE_TIMEOUT_MAX = 2.0  # the hub connection's own default


@dataclass(frozen=True, slots=True)
class ShutdownBudget:
    """How `shutdown_grace_seconds` is spent on the hub connection (the sinks get what is left)."""

    connection: float  # upper bound on `connection.stop()` as a whole (a backstop)
    drain: float  # `stop(drain_timeout=)`: dispatching what was decoded (the relay → sink queues)
    close_timeout: float  # the connection's close_timeout: sending Close, then the WebSocket close
    closed_marker: float  # on_closed: queueing the `closed` marker line when a sink queue is full


def shutdown_budget(grace: float) -> ShutdownBudget:
    """Half the grace for the hub connection: the close handshake gets two `close_timeout`s
    (min(2 s, a tenth of the grace) each), the `closed` marker a tenth of the half, a margin as
    much again, and the drain the rest. The other half (at least) is left for the sinks to write
    what the drain handed them, flush and close.

    grace 10 s: connection 5 s = drain 2 s + close 2 x 1 s + marker 0.5 s + margin 0.5 s;
    grace 3 s: 1.5 s = 0.6 s + 2 x 0.3 s + 0.15 s + 0.15 s."""
    connection = max(0.1, grace / 2)
    close_timeout = min(CLOSE_TIMEOUT_MAX, connection / 5)
    closed_marker = connection / 10
    drain = max(0.0, connection - 2 * close_timeout - 2 * closed_marker)
    return ShutdownBudget(
        connection=connection, drain=drain, close_timeout=close_timeout, closed_marker=closed_marker
    )


def _reason(error: BaseException | None) -> str:
    """A bounded metrics label for a reconnect reason: the exception class name."""
    return type(error).__name__ if error is not None else "unknown"


ConnectionFactory = Callable[..., HubConnection]


class Daemon:
    def __init__(
        self,
        cfg: Config,
        *,
        env: Mapping[str, str] | None = None,
        notifier: Notifier | None = None,
        token_provider: TokenProvider | None = None,
        connection_factory: ConnectionFactory = HubConnection,
        workers: list[SinkWorker] | None = None,
        status_interval: float = STATUS_INTERVAL,
    ) -> None:
        self.cfg = cfg
        self.env = env
        self.notifier = notifier or Notifier.from_env(env)
        self.stats = RelayStats()
        self.workers = (
            workers
            if workers is not None
            else [
                build_worker(s, config=cfg, index=i, env=env, formatter=human_line)
                for i, s in enumerate(cfg.sinks)
            ]
        )
        self.relay = Relay(
            self.workers,
            hub=cfg.hub.name,
            protocol=cfg.hub.protocol,
            stats=self.stats,
            compact_patches=cfg.redmist.patches == "compact",
            profile=PAYLOADS,
        )
        self._provider = token_provider
        self._connection_factory = connection_factory
        self._status_interval = status_interval
        self.relay.known_targets.update(cfg.hub.known_targets)  # counted by name in /metrics
        self._stop = asyncio.Event()
        self._fatal: BaseException | None = None
        self._closed_for_good = asyncio.Event()
        self._stopping = False
        self._ready_sent = False
        self.connection: HubConnection | None = None
        self.subscriber: Subscriber | None = None
        self.profile: RedMistProfile | None = None
        self.state: LiveState | None = None
        self.http: httpx.AsyncClient | None = None
        self.observability: ObservabilityServer | None = None
        self.board: BoardService | None = None
        self.kv_board: KvBoard | None = None
        self.exit_code: int | None = None
        self._unhealthy: str | None = None  # why the watchdog is withheld (logged once per episode)
        self.ha: HaController | None = None
        self._ha_task: asyncio.Task[None] | None = None

    # -- control -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Begin a graceful shutdown (SIGTERM / SIGINT)."""
        self._stop.set()

    def reopen(self) -> None:
        """Reopen file sinks (SIGHUP)."""
        for worker in self.workers:
            worker.request_reopen()

    # -- wiring --------------------------------------------------------------------------------

    def _policy(self) -> RetryPolicy:
        hub = self.cfg.hub
        if hub.reconnect == "daemon":
            return DaemonRetryPolicy(cap=hub.reconnect_max_delay_seconds)  # the recovery bound
        return retry_policy(hub.reconnect)

    async def _build_connection(self, provider: TokenProvider) -> HubConnection:
        hub = self.cfg.hub
        kwargs: dict[str, Any] = {}
        if provider.header_name.lower() == AUTHORIZATION.lower():
            kwargs["token_provider"] = provider
        else:  # grant static with a custom header (e.g. RPIAuthKey): a fixed header on every connect
            kwargs["headers"] = headers_for(provider.header_name, await provider.get_token())
        conn = self._connection_factory(
            hub.url,
            protocol=hub.protocol,
            skip_negotiation=hub.skip_negotiation,
            token_transport=hub.token_transport,
            retry_policy=self._policy(),
            retry_initial_start=hub.retry_initial_start,
            stateful_reconnect=hub.stateful_reconnect,
            handshake_timeout=hub.handshake_timeout_seconds,
            keepalive_interval=hub.keepalive_interval_seconds,
            server_timeout=hub.server_timeout_seconds,
            max_message_size=hub.max_message_bytes,
            max_dispatch_bytes=hub.max_dispatch_bytes,
            stateful_buffer_size=hub.max_replay_bytes,
            close_timeout=shutdown_budget(self.cfg.service.shutdown_grace_seconds).close_timeout,
            allow_insecure_http=hub.allow_insecure_http,
            healthy_after=hub.healthy_after_seconds,
            proxy=hub.proxy,
            raw_arguments=True,
            **kwargs,
        )
        conn.on_raw(self.relay.on_raw)
        conn.on_reconnecting(self._on_reconnecting)
        conn.on_reconnected(self._on_reconnected)
        conn.on_closed(self._on_closed)
        return conn

    def _hub_counts(self) -> dict[str, float]:
        """Connection churn for /metrics: handshakes, short-lived connections, flapping (0/1)."""
        conn = self.connection
        if conn is None:
            return {}
        return {
            "connections": conn.stats.connections_opened,
            "short_lived": conn.stats.short_lived_connections,
            "flapping": 1.0 if conn.flapping else 0.0,
        }

    def _calls(self) -> list[HubCall]:
        calls = [HubCall(oc.method, tuple(oc.arguments)) for oc in self.cfg.hub.on_connect]
        if self.profile is not None:
            calls.extend(self.profile.calls())
        return calls

    async def _after_round(self) -> None:
        if self.profile is not None:
            self.profile.after_subscribe()

    # -- connection callbacks ------------------------------------------------------------------
    # Run by the connection's dispatcher, in order with the data: on_reconnecting after every
    # invocation decoded before the loss, on_reconnected before any the new transport brings. The
    # receive loop is up while they run, so awaiting a hub call here would work; the subscription
    # round still runs in the Subscriber's own task (retries with backoff must not hold up the data).

    async def _on_reconnecting(self, error: BaseException | None) -> None:
        if self.ha is not None:
            self.ha.hub_lost()  # a leader hands over: the standby received what we miss now
        self._set_state("reconnecting")
        self.stats.count_reconnect(_reason(error))
        await self.relay.emit_connection("reconnecting", describe_error(error) if error is not None else None)
        self._status()

    async def _on_reconnected(self, _connection_id: str | None = None) -> None:
        self._set_state("connected")
        await self.relay.emit_connection("reconnected")
        if self.subscriber is not None:
            self.subscriber.connected()
        self._status()

    async def _on_closed(self, error: BaseException | None) -> None:
        self._set_state("closed")
        if not self._stopping:
            self._fatal = error or ServiceUnavailable("the hub connection closed")
            self._closed_for_good.set()
            await self.relay.emit_connection("closed", describe_error(error) if error is not None else None)
            return
        # Inside connection.stop(): a sink that stopped taking lines must not hold up the shutdown.
        budget = shutdown_budget(self.cfg.service.shutdown_grace_seconds)
        try:
            async with asyncio.timeout(budget.closed_marker):
                await self.relay.emit_connection(
                    "closed", describe_error(error) if error is not None else None
                )
        except TimeoutError:
            log.warning("daemon.closed_marker_not_queued", waited_seconds=budget.closed_marker)

    def _set_state(self, state: str) -> None:
        """The hub connection's state: metrics/health (stats) and the board's streams."""
        self.stats.set_state(state)
        if self.board is not None:
            self.board.set_hub_state(state)
        if self.kv_board is not None:
            self.kv_board.set_hub_state(state)

    def _status(self) -> None:
        self.notifier.status(
            f"{self.stats.connection_state}; {self.stats.total_received()} messages; "
            f"{(self.stats.reconnects and sum(self.stats.reconnects.values())) or 0} reconnects"
        )

    def _healthy(self) -> bool:
        """For the watchdog: no fatal error, no stalled sink, the hub not disconnected for too long."""
        reason = self._unhealthy_reason()
        if reason != self._unhealthy:
            if reason is not None:
                log.error("daemon.unhealthy", reason=reason)
            else:
                log.warning("daemon.healthy_again", was=self._unhealthy)
            self._unhealthy = reason
        return reason is None

    def _unhealthy_reason(self) -> str | None:
        if self._fatal is not None:
            return "fatal error"
        svc = self.cfg.service
        now = time.monotonic()
        for w in self.workers:
            stalled = w.stalled_seconds(now)
            if stalled > svc.sink_stall_seconds:
                return f"sink {w.name}: no write returned for {stalled:.0f} s with {w.depth} records waiting"
        grace = svc.watchdog_disconnected_seconds
        if grace and not healthy(self.stats, grace):
            return f"hub {self.stats.connection_state} for more than {grace:g} s"
        return None

    def abort(self, signame: str = "") -> None:
        """Exit now (a second signal): count everything not yet written as abandoned, log `stopped`.

        The caller leaves the process right after (nothing here awaits).
        """
        self._stopping = True
        for worker in self.workers:
            worker.abandon()
        self._log_stopped(aborted=signame or True)

    def _log_stopped(self, **extra: Any) -> None:
        dropped = {w.name: dict(w.stats.dropped) for w in self.workers if any(w.stats.dropped.values())}
        conn_stats = self.connection.stats if self.connection is not None else None
        abandoned = 0
        if conn_stats is not None:
            pending = conn_stats.invocations_decoded - conn_stats.invocations_dispatched
            abandoned = max(conn_stats.invocations_abandoned, pending)
        log.info(
            "daemon.stopped",
            # decoded by the hub connection; == received unless a drain was cut short (abandoned)
            decoded=conn_stats.invocations_decoded if conn_stats is not None else 0,
            abandoned=abandoned,
            received=self.stats.total_received(),
            written={w.name: w.stats.written for w in self.workers},
            dropped=dropped or None,
            stuck_sinks=stuck_threads() or None,
            **extra,
        )

    # -- run -----------------------------------------------------------------------------------

    async def run(self) -> int:
        cfg = self.cfg
        provider = self._provider or build_token_provider(cfg.auth, source=cfg.source, env=self.env)
        cfg.redmist.access_codes = load_access_codes(cfg, env=self.env)  # + _env / _file sources
        for code in cfg.redmist.access_codes.values():
            register_secret(code)
        await self._open_sinks()
        background: list[asyncio.Task[Any]] = []
        if cfg.ha.enabled:
            self.ha = self._build_ha()
            self._ha_task = asyncio.create_task(self.ha.run(), name="ha")
        try:
            if cfg.redmist.events and (cfg.redmist.state_path or cfg.http.enabled or cfg.nats.board_bucket):
                # Live state: the state file, the board API + page on the HTTP endpoint, the KV board.
                self.state = LiveState(
                    cfg.redmist.state_path,
                    min_interval=cfg.redmist.state_min_interval_seconds,
                    events=cfg.redmist.events,
                )
                if cfg.http.enabled:
                    self.board = BoardService(
                        self.state,
                        events=cfg.redmist.events,
                        max_hz=cfg.http.board_max_hz,
                        max_clients=cfg.http.board_max_clients,
                        client_buffer_bytes=cfg.http.board_client_buffer_bytes,
                        heartbeat=cfg.http.board_heartbeat_seconds,
                    )
                    background.append(asyncio.create_task(self.board.run(), name="board"))
            if cfg.http.enabled:
                registry = build_registry(
                    DaemonCollector(
                        self.stats, self.workers, lambda: provider.stats.requests, hub_counts=self._hub_counts
                    )
                )
                if self.board is not None:
                    registry.register(BoardCollector(self.board))
                self.observability = ObservabilityServer(
                    self.stats,
                    registry,
                    host=cfg.http.host,
                    port=cfg.http.port,
                    reconnect_grace=cfg.http.reconnect_grace_seconds,
                    board=self.board,
                    cors_origins=cfg.http.cors_origins,
                    max_connections=cfg.http.board_max_clients + 100,
                )
                try:
                    await self.observability.start()
                except OSError as err:
                    raise ConfigError(
                        f"cannot listen: {err.strerror}", file=cfg.source, key="http.port"
                    ) from None
                log.info("daemon.observability_listening", url=self.observability.url)
            if cfg.redmist.events:
                self.http = httpx.AsyncClient(
                    auth=BearerAuth(provider),
                    timeout=cfg.redmist.snapshot_timeout_seconds,
                    **httpx_proxy_options(cfg.hub.proxy),
                )
                self.profile = RedMistProfile(
                    cfg.redmist, self.relay, self.http, hub_url=cfg.hub.url, state=self.state
                )
                background.append(asyncio.create_task(self.profile.run(), name="snapshots"))
                if self.state is not None:
                    background.append(asyncio.create_task(self.state.run(), name="state"))
                if self.state is not None and cfg.nats.board_bucket:
                    self.kv_board = self._kv_board(self.state)
                    background.append(asyncio.create_task(self.kv_board.run(), name="kv-board"))
            conn = await self._build_connection(provider)
            self.connection = conn
            self.stats.buffer_usage = conn.buffer_usage  # /metrics: the hub connection's buffers
            self.subscriber = Subscriber(
                conn.invoke,
                self._calls,
                after_round=self._after_round,
                is_hub_error=lambda exc: isinstance(exc, HubError),
                retry_initial=cfg.service.subscribe_retry_initial_seconds,
                retry_max=cfg.service.subscribe_retry_max_seconds,
                stats=self.stats,
            )
            background.append(asyncio.create_task(self.subscriber.run(), name="subscriptions"))
            background.append(asyncio.create_task(self.notifier.run_watchdog(self._healthy), name="watchdog"))
            background.append(asyncio.create_task(self._status_loop(), name="status"))
            if cfg.service.ready == "started":
                self._ready()
            self._set_state("connecting")
            await self._connect_until_stopped(conn)
        finally:
            await self._shutdown(background, provider)
        if isinstance(self._fatal, CredentialsRejected | ConfigError):
            raise self._fatal
        if self._fatal is not None and not self._stop.is_set():
            raise ServiceUnavailable(
                f"hub connection closed for good: {describe_error(self._fatal) if self._fatal else None}"
            )
        return 0

    def _kv_board(self, state: LiveState) -> KvBoard:
        from consumer.natsconn import connect_kwargs, require_nats

        cfg = self.cfg
        require_nats(cfg.source, "nats.board_bucket")
        assert cfg.nats.board_bucket is not None
        kwargs = connect_kwargs(cfg.nats, source=cfg.source, env=os.environ if self.env is None else self.env)
        return KvBoard(
            state,
            kwargs,
            bucket=cfg.nats.board_bucket,
            hub=cfg.hub.name,
            max_hz=cfg.nats.board_max_hz,
            is_leader=self.is_leader,
        )

    def is_leader(self) -> bool:
        """False only on the standby of an HA pair."""
        return self.ha is None or self.ha.is_leader()

    def _build_ha(self) -> HaController:
        from consumer.ha import HaController
        from consumer.natsconn import connect_kwargs, require_nats
        from consumer.sinks.nats import NatsSink

        cfg = self.cfg
        require_nats(cfg.source, "ha.enabled")
        kwargs = connect_kwargs(cfg.nats, source=cfg.source, env=os.environ if self.env is None else self.env)

        def request_snapshots(events: list[int]) -> None:
            if self.profile is not None:
                self.profile.request_snapshots([e for e in events if e in cfg.redmist.events])

        return HaController(
            cfg.ha,
            kwargs,
            hub=cfg.hub.name,
            sinks=[w.sink for w in self.workers if isinstance(w.sink, NatsSink)],
            relay=self.relay,
            request_snapshots=request_snapshots,
            healthy=lambda: self.stats.connection_state == "connected",
        )

    def _ready(self) -> None:
        if not self._ready_sent:
            self._ready_sent = True
            self.notifier.ready(f"{self.stats.connection_state}; 0 messages")

    async def _connect_until_stopped(self, conn: HubConnection) -> None:
        stop_wait = asyncio.create_task(self._stop.wait())
        start = asyncio.create_task(conn.start())
        try:
            done, _ = await asyncio.wait({stop_wait, start}, return_when=asyncio.FIRST_COMPLETED)
            if start not in done:
                return  # stopped while still connecting; shutdown stops the connection
            exc = start.exception()
            if exc is not None:
                self._fatal = exc
                return
            self._set_state("connected")
            await self.relay.emit_connection("connected")
            log.info("daemon.connected", hub=self.cfg.hub.name)
            assert self.subscriber is not None
            self.subscriber.connected()
            self._ready()
            self._status()
            closed_wait = asyncio.create_task(self._closed_for_good.wait())
            try:
                await asyncio.wait({stop_wait, closed_wait}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed_wait.cancel()
        finally:
            stop_wait.cancel()
            if not start.done():
                start.cancel()
            await asyncio.gather(stop_wait, start, return_exceptions=True)

    async def _open_sinks(self) -> None:
        for i, worker in enumerate(self.workers):
            try:
                await worker.start()
            except OSError as err:
                raise ConfigError(
                    f"cannot open sink {worker.name}: {err.strerror or err}",
                    file=self.cfg.source,
                    key=f"sinks.{i}.path",
                ) from None

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self._status_interval)
            self._status()

    async def _shutdown(self, background: list[asyncio.Task[Any]], provider: TokenProvider) -> None:
        self._stopping = True
        grace = self.cfg.service.shutdown_grace_seconds
        deadline = time.monotonic() + grace
        budget = shutdown_budget(grace)
        self.notifier.stopping("draining")
        log.info("daemon.shutting_down", grace_seconds=grace)
        if self.connection is not None:
            try:
                # The drain ends by its own deadline (what it did not reach is counted as abandoned),
                # leaving time for the Close handshake; the timeout is only a backstop.
                async with asyncio.timeout(budget.connection):
                    await self.connection.stop(drain_timeout=budget.drain)
            except TimeoutError:
                log.error("daemon.hub_close_timeout", budget_seconds=budget.connection)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if self.subscriber is not None:
            await self.subscriber.aclose()
        # All sinks at once, each within what is left of the grace: the drain first, then a reserve
        # for flush + close (bounded too: a thread stuck in write() cannot hold the exit).
        left = max(0.1, deadline - time.monotonic())
        reserve = min(CLOSE_TIMEOUT, left / 4)
        closed = await asyncio.gather(
            *(w.close(grace=left - reserve, close_timeout=reserve) for w in self.workers),
            return_exceptions=True,
        )
        for worker, result in zip(self.workers, closed, strict=True):
            if isinstance(result, Exception):
                log.error("daemon.sink_close_failed", sink=worker.name, error=describe_error(result))
        if self.ha is not None and self._ha_task is not None:
            await self.ha.release()  # after the drain: the standby continues from our last record
            self._ha_task.cancel()
            await asyncio.gather(self._ha_task, return_exceptions=True)
        if self.observability is not None:
            await self.observability.stop()
        if self.http is not None:
            await self.http.aclose()
        with contextlib.suppress(Exception):
            await provider.aclose()
        self.notifier.close()
        self._log_stopped()
