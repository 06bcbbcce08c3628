"""`event-consumer events` (not implemented yet; see the issue that introduces it)."""

from __future__ import annotations

import argparse
import sys

HELP = "events (not implemented yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="TOML configuration file")


def main(args: argparse.Namespace) -> int:
    print("event-consumer events: not implemented yet", file=sys.stderr)
    return 1
