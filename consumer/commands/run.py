"""`event-consumer run --config PATH`: the daemon.

Signals: SIGTERM / SIGINT → graceful shutdown (stop receiving, drain, fsync, close; exit 0 within
`[service] shutdown_grace_seconds`, whatever the sinks do); a second SIGINT/SIGTERM logs the `stopped`
accounting line (everything unwritten counted as abandoned) and exits at once (130). SIGHUP → reopen
file sinks (logrotate). When a sink's thread is still stuck in the kernel after the shutdown (a stdout
reader that stopped reading), the process leaves with `os._exit` once everything is logged: nothing
may wait for that thread. Exit 77 on rejected credentials and 78 on configuration errors, each with one
line on stderr (printed by consumer.cli).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys

from consumer.config import load_config
from consumer.daemon import Daemon
from consumer.logs import get_logger, setup_logging
from consumer.sinks import stuck_threads

HELP = "run the daemon: relay the hub's live events to the configured sinks"

log = get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="PATH", help="TOML configuration file")
    parser.add_argument("--pretty", action="store_true", help="stdout sinks: compact human view on a TTY")


async def run_daemon(daemon: Daemon) -> int:
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_stop(signame: str) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.info("daemon.signal", signal=signame)
            daemon.stop()
        else:
            log.warning("daemon.second_signal", signal=signame)
            daemon.abort(signame)
            _exit_now(130)

    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop, sig.name)
        installed.append(sig)
    loop.add_signal_handler(signal.SIGHUP, daemon.reopen)
    installed.append(signal.SIGHUP)
    try:
        return await daemon.run()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.pretty:
        for sink in cfg.sinks:
            if sink.type == "stdout":
                sink.pretty = True
    setup_logging(cfg.logging.level, fmt=cfg.logging.format)
    code = asyncio.run(run_daemon(Daemon(cfg)))
    if stuck_threads():
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """Leave without waiting for anything (threads, buffers): the accounting is already logged."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os._exit(code)
