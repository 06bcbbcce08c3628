"""`event-consumer check-config --config PATH`: validate and print the effective config, secrets masked."""

from __future__ import annotations

import argparse
import sys

import msgspec

from consumer.config import load_config, to_display

HELP = "validate a config file and print the effective configuration with secrets masked"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="PATH", help="TOML configuration file")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(to_display(cfg)), indent=2).decode() + "\n")
    return 0
