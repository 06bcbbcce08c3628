"""Cardinality and byte bounds in the relay, the metrics and the config (issue 10, item 5).

Every invocation is relayed whatever its target; what the hub's target names may not do is grow a
counter, a metric label or a cache. The real-process forms (1M names, a stalled sink with 90 KB
invocations) are in tests/chaos/test_bounds.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumer.config import load_config
from consumer.errors import ConfigError
from consumer.observability import DaemonCollector, build_registry
from consumer.redmist import PAYLOADS, contract
from consumer.relay.relay import MAX_ROUTES, Relay
from consumer.relay.stats import OTHER_TARGET
from consumer.signalr.connection import MAX_TARGET_LENGTH, BufferUsage
from consumer.sinks import SinkWorker


class MemorySink:
    sync_interval: float | None = None

    def __init__(self, name: str = "mem") -> None:
        self.name = name
        self.lines: list[bytes] = []

    async def open(self) -> None: ...

    async def write(self, lines: Sequence[bytes]) -> None:
        self.lines.extend(lines)

    async def flush(self) -> None: ...

    async def reopen(self) -> None: ...

    async def close(self) -> None: ...


ARGS = msgspec.Raw(b'[{"eventId":"1"}]')


async def test_unknown_targets_are_relayed_but_counted_as_other_and_never_cached() -> None:
    sink = MemorySink()
    worker = SinkWorker(sink, queue_size=1_000_000)  # not started: the lines stay queued, countable
    relay = Relay([worker], hub="h", profile=PAYLOADS)
    names = 20_000
    for i in range(names):
        await relay.on_raw(f"Hostile{i}", ARGS)
    long_target = "L" * (MAX_TARGET_LENGTH + 1)
    for _ in range(3):
        await relay.on_raw(long_target, ARGS)
    await relay.on_raw("ReceiveCarPatches", msgspec.Raw(b"[[]]"))
    stats = relay.stats
    assert stats.received == {OTHER_TARGET: names + 3, "ReceiveCarPatches": 1}
    assert stats.relayed == {OTHER_TARGET: names + 3, "ReceiveCarPatches": 1}
    assert len(relay.cached_targets) <= MAX_ROUTES
    assert long_target not in relay.cached_targets
    # nothing lost: every invocation is queued for the sink under its own target
    assert worker.depth == names + 4
    queued = [json.loads(line) for line in worker.queued_lines()]
    assert [r["target"] for r in queued[:3]] == ["Hostile0", "Hostile1", "Hostile2"]
    assert queued[-2]["target"] == long_target


async def test_known_targets_come_from_the_contract_the_config_the_filters_and_watchers() -> None:
    worker = SinkWorker(MemorySink(), queue_size=100, include=["FromInclude"], exclude=["FromExclude"])
    relay = Relay([worker], hub="h", profile=PAYLOADS, known_targets=["FromConfig"])
    seen: list[Any] = []
    relay.watch("Watched", lambda args, event_id: seen.append(args))
    for target in (
        "FromConfig",
        "FromInclude",
        "FromExclude",
        "Watched",
        "Unknown",
        *contract.CLIENT_METHOD_ARGS,
    ):
        await relay.on_raw(target, msgspec.Raw(b"[[]]"))
    expected = {
        t: 1 for t in ("FromConfig", "FromInclude", "FromExclude", "Watched", *contract.CLIENT_METHOD_ARGS)
    }
    assert relay.stats.received == {**expected, OTHER_TARGET: 1}
    assert seen == [[[]]]
    await relay.on_invocation("AlsoUnknown", 1)  # the decoded entry point counts the same way
    assert relay.stats.received[OTHER_TARGET] == 2


async def test_metrics_stay_small_whatever_the_target_names_and_report_the_buffers() -> None:
    relay = Relay(
        [SinkWorker(MemorySink(), queue_size=10, overflow="drop_oldest")], hub="h", profile=PAYLOADS
    )
    for i in range(20_000):
        await relay.on_raw(f"T{i:0200d}", ARGS)  # 200-character names: 8 MB of label text before
    usage = BufferUsage(
        dispatch_bytes=1234,
        dispatch_invocations=5,
        dispatch_limit_bytes=16 * 1024 * 1024,
        dispatch_limit_invocations=10_000,
        replay_bytes=0,
        replay_limit_bytes=100_000,
    )
    relay.stats.buffer_usage = lambda: usage  # the daemon sets the hub connection's buffer_usage
    body = generate_latest(build_registry(DaemonCollector(relay.stats, relay.workers)))
    assert len(body) < 16 * 1024
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(body.decode())
        for s in fam.samples
    }
    assert samples[("event_consumer_messages_received_total", (("target", OTHER_TARGET),))] == 20_000
    assert {labels for name, labels in samples if name == "event_consumer_messages_received_total"} == {
        (("target", OTHER_TARGET),)
    }
    assert samples[("event_consumer_buffer_bytes", (("buffer", "dispatch"),))] == 1234
    assert samples[("event_consumer_buffer_bytes", (("buffer", "replay"),))] == 0
    assert samples[("event_consumer_buffer_limit_bytes", (("buffer", "dispatch"),))] == 16 * 1024 * 1024
    assert samples[("event_consumer_buffer_limit_bytes", (("buffer", "replay"),))] == 100_000
    assert samples[("event_consumer_dispatch_queue_invocations", ())] == 5
    assert samples[("event_consumer_dispatch_queue_limit_invocations", ())] == 10_000


def write(tmp: Path, text: str) -> Path:
    p = tmp / "c.toml"
    p.write_text(text)
    return p


def test_byte_bounds_and_known_targets_are_configurable(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""), env={})
    assert cfg.hub.max_dispatch_bytes == 16 * 1024 * 1024
    assert cfg.hub.max_replay_bytes == 100_000
    assert cfg.hub.known_targets == []
    text = "[hub]\nmax_dispatch_bytes = 1000\nmax_replay_bytes = 2000\nknown_targets = ['A', 'B']\n"
    cfg = load_config(write(tmp_path, text), env={"EVENT_CONSUMER__HUB__MAX_DISPATCH_BYTES": "3000"})
    assert (cfg.hub.max_dispatch_bytes, cfg.hub.max_replay_bytes) == (3000, 2000)
    assert cfg.hub.known_targets == ["A", "B"]


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("[hub]\nmax_dispatch_bytes = 0\n", "hub.max_dispatch_bytes", "an int > 0"),
        ("[hub]\nmax_replay_bytes = -1\n", "hub.max_replay_bytes", "an int > 0"),
        ("[hub]\nknown_targets = ['A', '']\n", "hub.known_targets", "non-empty target names"),
    ],
)
def test_bad_bounds_name_file_and_key(tmp_path: Path, text: str, key: str, expected: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p, env={})
    assert e.value.key == key and str(p) in str(e.value) and expected in str(e.value)
