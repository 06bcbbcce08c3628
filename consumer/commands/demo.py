"""`event-consumer demo`: the simulator in-process and the real daemon against it, live on this terminal.

One code path: the configuration is built from the simulator's URLs (token endpoint, demo client,
hub, event ids) and handed to `consumer.daemon.Daemon`, exactly what `event-consumer run` runs. The
demo client's secret reaches the daemon only through `client_secret_env` (an environment mapping
given to the daemon, never printed or logged). The hub requires a bearer token, so the whole auth
path is exercised.

Output: the daemon's stdout sink — the compact human view on a TTY, JSON lines otherwise (or with
`--json`): connection markers, snapshots, car and session patches. Logs (WARNING and up unless
`--log-level`) go to stderr. Ctrl-C or SIGTERM: the daemon drains and stops (within its 3 s
shutdown grace), then the simulator; exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
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
            daemon = Daemon(demo_config(sim, args), env={SECRET_ENV: sim.client_secret})
            events = ", ".join(str(e) for e in sim.event_ids)
            print(
                f"demo: simulator at {sim.base_url} (events {events}, {args.speed:g}x); "
                f"daemon over {args.protocol}; Ctrl-C to stop",
                file=sys.stderr,
                flush=True,
            )
            if args.duration is not None:
                loop.call_later(args.duration, daemon.stop)
            return await daemon.run()
        finally:
            await sim.close()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        if watching_stdout:
            loop.remove_reader(STDOUT_FD)


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

    if args.speed <= 0:
        raise ConfigError("--speed must be positive")
    if args.events is not None and args.events < 1:
        raise ConfigError("--events must be at least 1")
    setup_logging(args.log_level)
    code = asyncio.run(run_demo(args))
    with contextlib.suppress(BrokenPipeError, ValueError):  # the reader went away (e.g. `| head`)
        sys.stdout.flush()
    return code
