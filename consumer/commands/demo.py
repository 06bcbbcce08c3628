"""`event-consumer demo`: the simulator in-process and the real daemon against it, live on this terminal.

One code path: the configuration is built from the simulator's URLs (token endpoint, demo client,
hub, event ids) and handed to `consumer.daemon.Daemon`, exactly what `event-consumer run` runs. The
demo client's secret reaches the daemon only through `client_secret_env` (an environment mapping
given to the daemon, never printed or logged). The hub requires a bearer token, so the whole auth
path is exercised.

Output on a TTY: a live leaderboard (top cars per event, flag, time to go) redrawn in place
(`consumer.redmist.board_view`); `--log` keeps the scrolling view of the daemon's stdout sink (one
line per record: connection markers, snapshots, car and session patches), `--json` (or stdout not a
TTY) the JSON lines. The daemon also serves the board API and the live page on loopback; the page's
URL is printed at start (`--http-port`, default a free port). Logs (WARNING and up unless
`--log-level`) go to stderr. Ctrl-C or SIGTERM: the daemon drains and stops (within its 3 s
shutdown grace), then the simulator; exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import stat
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from consumer.errors import ConfigError

if TYPE_CHECKING:
    from consumer.config import Config
    from consumer.daemon import Daemon
    from consumer.sim.simulator import Simulator

HELP = "simulator + the daemon against it, output on this terminal (Ctrl-C to stop)"

# The environment variable (in the mapping handed to the daemon only) that carries the demo secret.
SECRET_ENV = "EVENT_CONSUMER_DEMO_CLIENT_SECRET"
STDOUT_FD = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--speed", type=float, default=60.0, help="race seconds per real second (default 60)")
    parser.add_argument(
        "--protocol", choices=("json", "messagepack"), default="messagepack", help="hub protocol"
    )
    parser.add_argument("--events", type=int, default=None, help="number of events (default: the replays)")
    parser.add_argument("--json", action="store_true", help="JSON lines even on a terminal")
    parser.add_argument("--log", action="store_true", help="the scrolling record view instead of the board")
    parser.add_argument(
        "--http-port", type=int, default=0, help="port of the live page and board API (default: a free one)"
    )
    parser.add_argument("--top", type=int, default=None, help="cars per event on the terminal board")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument(
        "--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), default="WARNING", help="stderr logs"
    )


def demo_config(sim: Simulator, args: argparse.Namespace) -> Config:
    """The daemon's configuration for this simulator (the secret by reference: `client_secret_env`)."""
    from consumer.config import parse_config

    data: dict[str, Any] = {
        "auth": {
            "grant": "client_credentials",
            "token_url": sim.token_url,
            "client_id": sim.client_id,
            "client_secret_env": SECRET_ENV,
        },
        "hub": {
            "url": sim.hub_url,
            "name": "redmist-sim",
            "protocol": args.protocol,
            "reconnect_max_delay_seconds": 5.0,
        },
        "redmist": {"events": sim.event_ids, "snapshot_min_interval_seconds": 1.0},
        "sinks": [{"type": "stdout", "pretty": not args.json}],
        "http": {"enabled": True, "host": "127.0.0.1", "port": args.http_port},
        "logging": {"level": args.log_level},
        "service": {"shutdown_grace_seconds": 3.0},
    }
    return parse_config(data, source="<demo>")


async def run_demo(args: argparse.Namespace) -> int:
    from consumer.daemon import Daemon
    from consumer.sim.hub import HubSettings
    from consumer.sim.simulator import SimConfig, Simulator

    loop = asyncio.get_running_loop()
    stopping = False
    daemon: Daemon | None = None

    def on_signal() -> None:
        # Repeats are ignored: the daemon's shutdown is bounded by its grace (3 s), and a wrapper may
        # deliver one signal twice (`timeout` signals the process group and `make` forwards SIGTERM).
        nonlocal stopping
        stopping = True
        if daemon is not None:
            daemon.stop()

    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    watching_stdout = _watch_pipe_reader(loop, on_signal)
    try:
        sim_config = SimConfig(events=args.events, hub=HubSettings(speed=args.speed, require_auth=True))
        try:
            sim = Simulator(sim_config)
            await sim.start()
        except OSError as err:
            raise ConfigError(f"simulator cannot listen: {err.strerror or err}") from None
        try:
            if stopping:
                return 0
            board_view = _wants_board(args)
            # The terminal board replaces the stdout sink (the daemon still relays to no sink at all).
            daemon = Daemon(
                demo_config(sim, args),
                env={SECRET_ENV: sim.client_secret},
                workers=[] if board_view else None,
            )
            events = ", ".join(str(e) for e in sim.event_ids)
            page = f"http://127.0.0.1:{args.http_port}/"
            print(
                f"demo: simulator at {sim.base_url} (events {events}, {args.speed:g}x); "
                f"daemon over {args.protocol}; live page {page}; Ctrl-C to stop",
                file=sys.stderr,
                flush=True,
            )
            if args.duration is not None:
                loop.call_later(args.duration, daemon.stop)
            if not board_view:
                return await daemon.run()
            from consumer.redmist.board_view import TerminalBoard

            view = TerminalBoard(
                lambda: daemon.state if daemon is not None else None,
                [str(e) for e in sim.event_ids],
                title=f"event-consumer demo · {page} · Ctrl-C to stop",
                hub=lambda: daemon.stats.connection_state if daemon is not None else "starting",
                out=sys.stdout,
                top=args.top,
            )
            drawing = asyncio.create_task(view.run(), name="terminal-board")
            try:
                return await daemon.run()
            finally:
                drawing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drawing
        finally:
            await sim.close()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        if watching_stdout:
            loop.remove_reader(STDOUT_FD)


def _wants_board(args: argparse.Namespace) -> bool:
    return not (args.json or args.log) and sys.stdout.isatty()


def _free_port() -> int:
    """A free loopback port for the page, so its URL can be printed before the daemon starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _watch_pipe_reader(loop: asyncio.AbstractEventLoop, on_gone: Callable[[], None]) -> bool:
    """When stdout is a pipe, stop like on Ctrl-C once its reader goes away (`demo | head`).

    The write end of a pipe reports an error condition (read-ready to the selector) when the read
    end is closed; the same trick asyncio's pipe transport uses.
    """
    try:
        if not stat.S_ISFIFO(os.fstat(STDOUT_FD).st_mode):
            return False
    except OSError:
        return False

    def gone() -> None:
        loop.remove_reader(STDOUT_FD)
        on_gone()

    loop.add_reader(STDOUT_FD, gone)
    return True


def main(args: argparse.Namespace) -> int:
    from consumer.logs import setup_logging
    from consumer.sim import require_extra

    require_extra("demo")
    if args.speed <= 0:
        raise ConfigError("--speed must be positive")
    if args.events is not None and args.events < 1:
        raise ConfigError("--events must be at least 1")
    if not 0 <= args.http_port <= 65535:
        raise ConfigError("--http-port must be in 0..65535")
    if args.top is not None and args.top < 1:
        raise ConfigError("--top must be at least 1")
    if args.http_port == 0:
        args.http_port = _free_port()
    setup_logging(args.log_level)
    code = asyncio.run(run_demo(args))
    with contextlib.suppress(BrokenPipeError, ValueError):  # the reader went away (e.g. `| head`)
        sys.stdout.flush()
    return code
