"""`event-consumer simulate`: the RedMist simulator (Keycloak-compatible IdP + event-status hub)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import TYPE_CHECKING

from consumer.errors import ConfigError

if TYPE_CHECKING:
    from consumer.sim.simulator import SimConfig

HELP = "run the simulator (IdP + RedMist hub); prints one JSON line with its URLs and demo credentials"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0 = pick a free one)")
    parser.add_argument("--speed", type=float, default=60.0, help="race seconds per real second (default 60)")
    parser.add_argument(
        "--replay",
        action="append",
        metavar="FILE",
        help="redmist-replay/laps@2 file or packaged name (244-6, 390-13); repeatable",
    )
    parser.add_argument(
        "--events", type=int, default=None, help="number of events (extra ones are synthetic)"
    )
    parser.add_argument("--cars", type=int, default=30, help="cars per synthetic event (default 30)")
    parser.add_argument(
        "--protocols", default="json,messagepack", help="hub protocols (default json,messagepack)"
    )
    parser.add_argument(
        "--token-lifetime", type=float, default=300.0, help="access token lifetime in seconds"
    )
    parser.add_argument("--require-auth", action="store_true", help="reject hub connections without a token")
    parser.add_argument("--private", action="append", metavar="EVENT=CODE", help="make an event private")
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic events")
    parser.add_argument(
        "--close-on-token-expiry",
        action="store_true",
        help="fault: close connections when their token expires (the real hub never does)",
    )
    parser.add_argument(
        "--extra-slots", type=int, default=0, help="play a newer server: N more slots in every patch"
    )


def build_config(args: argparse.Namespace) -> SimConfig:
    from consumer.sim.hub import HubSettings
    from consumer.sim.race import ReplayError, load_replay
    from consumer.sim.simulator import SimConfig

    protocols = tuple(p.strip() for p in str(args.protocols).split(",") if p.strip())
    unknown = [p for p in protocols if p not in ("json", "messagepack")]
    if not protocols or unknown:
        raise ConfigError(f"--protocols: unknown protocol(s) {unknown or protocols}; use json,messagepack")
    if args.speed <= 0:
        raise ConfigError("--speed must be positive")
    if args.events is not None and args.events < 1:
        raise ConfigError("--events must be at least 1")
    private: dict[int, str] = {}
    for item in args.private or []:
        eid, sep, code = str(item).partition("=")
        if not sep or not eid.isdigit() or not code:
            raise ConfigError(f"--private expects EVENT=CODE, got {item!r}")
        private[int(eid)] = code
    replays = list(args.replay) if args.replay else None
    for replay in replays or []:
        try:
            load_replay(replay)
        except ReplayError as err:
            raise ConfigError(str(err), key="--replay") from err
    config = SimConfig(
        host=args.host,
        port=args.port,
        events=args.events,
        synthetic_cars=args.cars,
        seed=args.seed,
        private_events=private,
        token_lifetime=args.token_lifetime,
        hub=HubSettings(
            speed=args.speed,
            protocols=protocols,
            require_auth=args.require_auth,
            close_on_token_expiry=args.close_on_token_expiry,
            extra_slots=max(0, args.extra_slots),
        ),
    )
    if replays is not None:
        config.replays = replays
    return config


async def _serve(config: SimConfig) -> None:
    from consumer.sim.simulator import Simulator

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Simulator(config) as sim:
            sys.stdout.write(json.dumps(sim.info()) + "\n")
            sys.stdout.flush()
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def main(args: argparse.Namespace) -> int:
    from consumer.logs import setup_logging
    from consumer.sim import require_extra

    require_extra("simulate")
    setup_logging()
    config = build_config(args)
    try:
        asyncio.run(_serve(config))
    except OSError as err:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {err.strerror}") from err
    return 0
