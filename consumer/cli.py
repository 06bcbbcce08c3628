"""`event-consumer` entry point: a thin dispatcher over consumer/commands/<name>.py.

Each command module exposes `HELP: str`, `add_arguments(parser)` and `main(args) -> int`; modules are
imported lazily so that `event-consumer token` does not pay for the simulator's imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from consumer import __version__
from consumer.errors import EXIT_USAGE, ConsumerError

COMMANDS: dict[str, str] = {
    "run": "consumer.commands.run",
    "demo": "consumer.commands.demo",
    "simulate": "consumer.commands.simulate",
    "token": "consumer.commands.token",
    "check-config": "consumer.commands.check_config",
    "events": "consumer.commands.events",
    "board": "consumer.commands.board",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="event-consumer",
        description="Relay a SignalR hub's live events, on behalf of a service account, to sinks.",
    )
    parser.add_argument("--version", action="version", version=f"event-consumer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    try:
        code: int = args._module.main(args)
    except ConsumerError as err:
        print(f"event-consumer {args.command}: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
