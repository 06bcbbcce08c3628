"""`event-consumer demo`: the simulator in-process and a hub client against it, live on this terminal.

The client side is the project's own pieces: the token factory (client_credentials against the sim's
Keycloak-compatible IdP) and the SignalR client (MessagePack by default, decoded through the RedMist
contract into the same named objects the JSON protocol carries). Each car patch prints one compact
line; session patches print the flag and clock. Ctrl-C (or SIGTERM) exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any, TextIO

HELP = "simulator + a live consumer, output on this terminal (Ctrl-C to stop)"

FLAGS = {0: "-", 1: "GREEN", 2: "YELLOW", 3: "RED", 4: "WHITE", 5: "CHECKERED"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--speed", type=float, default=60.0, help="race seconds per real second (default 60)")
    parser.add_argument("--protocol", choices=("json", "messagepack"), default="messagepack")
    parser.add_argument("--events", type=int, default=None, help="number of events (default: the replays)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--config", metavar="PATH", help="unused; the demo needs no configuration")


def format_car(event_id: Any, patch: dict[str, Any]) -> str:
    parts = [f"[{event_id}] car {patch.get('number', '?'):>4}"]
    if patch.get("overallPosition") is not None:
        parts.append(f"P{patch['overallPosition']}")
    if patch.get("lastLapCompleted") is not None:
        parts.append(f"lap {patch['lastLapCompleted']}")
    if patch.get("lastLapTime"):
        parts.append(f"last {patch['lastLapTime']}")
    if patch.get("bestTime"):
        parts.append(f"best {patch['bestTime']}")
    if patch.get("overallGap"):
        parts.append(f"gap {patch['overallGap']}")
    if patch.get("isInPit"):
        parts.append("IN PIT")
    elif patch.get("isExitedPit"):
        parts.append("pit out")
    return " ".join(parts)


def format_session(patch: dict[str, Any]) -> str:
    parts = [f"[{patch.get('eventId')}] session"]
    if patch.get("currentFlag") is not None:
        parts.append(f"flag {FLAGS.get(patch['currentFlag'], patch['currentFlag'])}")
    if patch.get("runningRaceTime"):
        parts.append(f"race {patch['runningRaceTime']}")
    if patch.get("timeToGo"):
        parts.append(f"to go {patch['timeToGo']}")
    return " ".join(parts)


async def run_demo(args: argparse.Namespace, out: TextIO) -> None:
    from consumer.auth.factory import build_token_provider
    from consumer.auth.settings import AuthConfig
    from consumer.relay.contract import arguments_from_msgpack
    from consumer.secret import Secret
    from consumer.signalr.connection import HubConnection
    from consumer.sim.hub import HubSettings
    from consumer.sim.simulator import SimConfig, Simulator

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Simulator(SimConfig(events=args.events, hub=HubSettings(speed=args.speed))) as sim:
            print(f"simulator at {sim.base_url}; events {sim.event_ids}; Ctrl-C to stop", file=sys.stderr)
            auth = AuthConfig(
                grant="client_credentials",
                token_url=sim.token_url,
                client_id=sim.client_id,
                client_secret=Secret(sim.client_secret),
            )
            provider = build_token_provider(auth, source="<demo>", env={})
            conn = HubConnection(
                sim.hub_url, token_provider=provider, protocol=args.protocol, skip_negotiation=True
            )

            def args_of(target: str, raw: tuple[Any, ...]) -> list[Any]:
                return arguments_from_msgpack(target, raw) if args.protocol == "messagepack" else list(raw)

            def emit(lines: list[str]) -> None:
                if not lines or stop.is_set():
                    return
                try:
                    out.write("\n".join(lines) + "\n")
                    out.flush()
                except (BrokenPipeError, ValueError):  # the reader went away (e.g. `| head`)
                    stop.set()

            def on_cars(*raw: Any) -> None:
                (patches,) = args_of("ReceiveCarPatches", raw)
                emit([format_car(p.get("eventId"), p) for p in patches])

            def on_session(*raw: Any) -> None:
                (patch,) = args_of("ReceiveSessionPatch", raw)
                if patch.get("currentFlag") is not None or str(patch.get("runningRaceTime")).endswith(":00"):
                    emit([format_session(patch)])

            def on_reset(*_: Any) -> None:
                emit(["reset: the session restarted"])

            async def subscribe(*_: Any) -> None:
                for event_id in sim.event_ids:
                    await conn.invoke("SubscribeToEventV2", event_id)

            conn.on("ReceiveCarPatches", on_cars)
            conn.on("ReceiveSessionPatch", on_session)
            conn.on("ReceiveReset", on_reset)
            conn.on_reconnected(subscribe)
            try:
                await conn.start()
                await subscribe()
                if args.duration is not None:
                    with_timeout = asyncio.timeout(args.duration)
                    try:
                        async with with_timeout:
                            await stop.wait()
                    except TimeoutError:
                        pass
                else:
                    await stop.wait()
            finally:
                await conn.stop()
                await provider.aclose()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def main(args: argparse.Namespace) -> int:
    from consumer.logs import setup_logging

    setup_logging("WARNING")
    with contextlib.suppress(BrokenPipeError):
        asyncio.run(run_demo(args, sys.stdout))
    with contextlib.suppress(BrokenPipeError, ValueError):
        sys.stdout.flush()
    return 0
