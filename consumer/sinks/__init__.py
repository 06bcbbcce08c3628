"""Where relayed records go: stdout, files, and (later) brokers.

Public API:
- `Sink` (protocol: open / write(lines) / flush / reopen / close), `PartialWrite`
- `SinkWorker(sink, queue_size=, overflow=, max_pending=, max_queue_bytes=, max_buffered_bytes=,
  include=, exclude=)`: queue bounded in lines and bytes + writer task; hot path `offer(line) -> bool`
  / `await put(line)`; `start()`, `close(grace)`, `abandon()`, `request_reopen()`, `depth`,
  `depth_bytes`, `stalled_seconds()`, `stats`
- `SinkThread`, `stuck_threads()`: each sink's blocking calls run in its own daemon thread
- `FileSink`, `StdoutSink`, `build_worker(cfg: SinkConfig) -> SinkWorker`
- `FileSink.written_generation` / `.synced_generation`: completed writes vs writes known durable
  (the interval fsync runs beside writes; a write that lands during an fsync counts at the next one)

A broker sink is one new module implementing `Sink` plus a branch in `build_worker`:
- `NatsSink` (consumer.sinks.nats, needs the `nats` extra): JetStream publish with acks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from consumer.sinks.base import PartialWrite, Sink, SinkStats, SinkWorker
from consumer.sinks.file import FileSink
from consumer.sinks.stdout import StdoutSink
from consumer.sinks.threads import SinkThread, stuck_threads

if TYPE_CHECKING:
    from consumer.config import Config, SinkConfig

__all__ = [
    "FileSink",
    "PartialWrite",
    "Sink",
    "SinkStats",
    "SinkThread",
    "SinkWorker",
    "StdoutSink",
    "build_worker",
    "stuck_threads",
]


def build_worker(
    cfg: SinkConfig,
    *,
    config: Config | None = None,
    index: int = 0,
    env: Mapping[str, str] | None = None,
    formatter: Callable[[bytes], str] | None = None,
) -> SinkWorker:
    """A worker for one `[[sinks]]` entry; a `nats` sink also needs the whole `config` ([nats]);
    `formatter`: a stdout sink's human view with `pretty` (a hub profile's, e.g. RedMist's)."""
    from consumer.config import sink_name

    sink: Sink
    if cfg.type == "file":
        assert cfg.path is not None  # validated by the config loader
        sink = FileSink(
            cfg.path,
            name=sink_name(cfg),
            rotate_bytes=cfg.rotate_bytes,
            rotate_daily=cfg.rotate_daily,
            keep=cfg.keep,
            fsync=cfg.fsync,
            fsync_interval=cfg.fsync_interval_seconds,
            create_dirs=cfg.create_dirs,
        )
    elif cfg.type == "nats":
        from consumer.config import Config
        from consumer.natsconn import connect_kwargs, require_nats

        config = config or Config()
        require_nats(config.source, f"sinks.{index}.type")
        from consumer.sinks.nats import NatsSink

        kwargs = connect_kwargs(config.nats, source=config.source, env=os.environ if env is None else env)
        sink = NatsSink(
            cfg.nats,
            kwargs,
            name=sink_name(cfg),
            hub=config.hub.name,
            source=config.source,
            key=f"sinks.{index}.nats",
        )
    else:
        sink = StdoutSink(pretty=cfg.pretty, name=sink_name(cfg), formatter=formatter)
    return SinkWorker(
        sink,
        queue_size=cfg.queue_size,
        overflow=cfg.overflow,
        max_pending=cfg.max_buffered,
        max_queue_bytes=cfg.max_queue_bytes,
        max_buffered_bytes=cfg.max_buffered_bytes,
        include=cfg.include,
        exclude=cfg.exclude,
    )
