"""`event-consumer board --config PATH`: a board server fed from the NATS KV bucket, no hub connection.

It serves what the daemon's HTTP endpoint serves for the board — `/v1/events`,
`/v1/events/{id}/board`, `/v1/events/{id}/stream` (SSE), the live page at `/`, `/healthz`, `/readyz`
and `/metrics` — from the values the daemon (the leader of an HA pair) writes to `[nats] board_bucket`
(consumer.kvboard): any number of these run behind a load balancer while one pair holds the hub.

It reads the same configuration file as the daemon: `[nats]` (servers, auth, `board_bucket`), `[hub]
name` (the key prefix), `[redmist] events` (listed even before their first board) and `[http]` (host,
port, board_* limits, CORS; it always listens, whatever `http.enabled` says). The hub's credentials are
never read. `/healthz` and `/readyz` report the KV connection (`state`: connected / reconnecting);
the hub state the page shows is the writing daemon's, from the values, or "reconnecting" while this
server has no NATS connection.

SIGTERM / SIGINT: stop listening, close the streams, exit 0. Exit 78 on configuration errors.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Mapping

from prometheus_client import CollectorRegistry

from consumer.config import Config, load_config
from consumer.errors import ConfigError
from consumer.logs import get_logger, setup_logging
from consumer.relay.stats import RelayStats

HELP = "serve the live board (API, stream, page) from the NATS KV bucket the daemon writes"

log = get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="PATH", help="TOML configuration file")


async def serve(cfg: Config, stop: asyncio.Event, env: Mapping[str, str] | None = None) -> int:
    """Serve until `stop` is set."""
    from consumer.kvboard import KvBoardSource, KvSourceCollector
    from consumer.natsconn import connect_kwargs, require_nats
    from consumer.observability import ObservabilityServer
    from consumer.web import BoardCollector, BoardService

    if not cfg.nats.board_bucket:
        raise ConfigError(
            "the board server needs the KV bucket the daemon writes", file=cfg.source, key="nats.board_bucket"
        )
    require_nats(cfg.source, "nats.board_bucket")
    kwargs = connect_kwargs(cfg.nats, source=cfg.source, env=os.environ if env is None else env)
    stats = RelayStats()  # /healthz, /readyz: the KV connection's state
    stats.set_state("connecting")
    board: BoardService | None = None

    def on_hub_state(state: str) -> None:
        if board is not None:
            board.set_hub_state(state)

    def on_connection(connected: bool) -> None:
        stats.set_state("connected" if connected else "reconnecting")

    source = KvBoardSource(
        kwargs,
        bucket=cfg.nats.board_bucket,
        hub=cfg.hub.name,
        on_hub_state=on_hub_state,
        on_connection=on_connection,
    )
    board = BoardService(
        source,
        events=cfg.redmist.events,
        max_hz=cfg.http.board_max_hz,
        max_clients=cfg.http.board_max_clients,
        client_buffer_bytes=cfg.http.board_client_buffer_bytes,
        heartbeat=cfg.http.board_heartbeat_seconds,
    )
    board.set_hub_state(source.hub_state())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BoardCollector(board))
    registry.register(KvSourceCollector(source))
    server = ObservabilityServer(
        stats,
        registry,
        host=cfg.http.host,
        port=cfg.http.port,
        reconnect_grace=cfg.http.reconnect_grace_seconds,
        board=board,
        cors_origins=cfg.http.cors_origins,
        max_connections=cfg.http.board_max_clients + 100,
    )
    try:
        await server.start()
    except OSError as err:
        raise ConfigError(f"cannot listen: {err.strerror}", file=cfg.source, key="http.port") from None
    log.info("board.listening", url=server.url, bucket=cfg.nats.board_bucket)
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(source.run(), name="board-kv"),
                tg.create_task(board.run(), name="board"),
            ]
            await stop.wait()
            for task in tasks:
                task.cancel()
    finally:
        await server.stop()
    log.info("board.stopped")
    return 0


async def _main(cfg: Config) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await serve(cfg, stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    setup_logging(cfg.logging.level, fmt=cfg.logging.format)
    return asyncio.run(_main(cfg))
