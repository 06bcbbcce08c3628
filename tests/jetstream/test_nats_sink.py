"""The `type = "nats"` sink against a real `nats-server -js` (issue 14, acceptance: sink)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from consumer.config import Config, NatsSinkConfig, parse_config
from consumer.natsconn import connect_kwargs
from consumer.redmist import PAYLOADS
from consumer.relay.relay import Relay
from consumer.sinks import FileSink, SinkWorker, build_worker
from consumer.sinks.nats import NatsSink, msg_id

from .natsserver import NatsServer
from .replay import cycled


def nats_config(server: NatsServer, **nats: Any) -> Config:
    return parse_config({"nats": {"servers": [server.url], **nats}}, source="test.toml")


def nats_worker(server: NatsServer, *, stream: str = "EVENTS", hub: str = "redmist", **kw: Any) -> SinkWorker:
    cfg = nats_config(server)
    sink = NatsSink(
        NatsSinkConfig(stream=stream, create_stream=True, **kw),
        connect_kwargs(cfg.nats, source="test.toml", env={}),
        hub=hub,
    )
    return SinkWorker(sink, retry_initial=0.05, retry_max=0.5)


async def stream_messages(server: NatsServer, stream: str = "EVENTS") -> list[Any]:
    """Every message of the stream in stream order (direct gets by sequence)."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        sub = await js.pull_subscribe("", stream=stream, config=ConsumerConfig(ack_policy=AckPolicy.NONE))
        out: list[Any] = []
        while len(out) < info.state.messages:
            out.extend(await sub.fetch(min(1000, info.state.messages - len(out)), timeout=10))
        return out
    finally:
        await nc.close()


async def relay_invocations(relay: Relay, invocations: list[tuple[str, msgspec.Raw]]) -> None:
    for target, raw in invocations:
        await relay.on_raw(target, raw)


async def test_100k_replayed_invocations_stream_equals_file_sink(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    file_worker = SinkWorker(FileSink(path, fsync="never"))
    nworker = nats_worker(nats_server)
    for w in (file_worker, nworker):
        await w.start()
    relay = Relay([file_worker, nworker], hub="redmist", profile=PAYLOADS)
    await relay_invocations(relay, cycled(100_000))
    await file_worker.close(grace=60)
    await nworker.close(grace=120)
    lines = path.read_bytes().splitlines()
    msgs = await stream_messages(nats_server)
    assert len(lines) == 100_000
    assert len(msgs) == len(lines)
    assert [m.data for m in msgs] == lines  # byte-equal, same order (so the same order per event)
    assert nworker.stats.written == 100_000 and not any(nworker.stats.dropped.values())
    events = set()
    for m in msgs[:500]:
        rec = json.loads(m.data)
        assert m.subject == f"redmist.{rec['event_id']}.{rec['target']}"
        assert m.headers["Nats-Msg-Id"] == msg_id(m.data)
        assert m.headers["Event-Consumer-Seq"] == str(rec["seq"])
        assert m.headers["Content-Type"] == "application/json"
        events.add(rec["event_id"])
    assert events == {244, 390}


async def test_subject_tokens_are_sanitised(nats_server: NatsServer) -> None:
    worker = nats_worker(nats_server, subject="{hub}.{kind}.{event_id}.{target}", hub="red mist.v2")
    await worker.start()
    relay = Relay([worker], hub="red mist.v2", profile=PAYLOADS)
    await relay.on_raw("Receive.Car*Patches", msgspec.Raw(b'[{"eventId":"a.b c>"}]'))
    await relay.emit_connection("connected")
    await worker.close(grace=10)
    subjects = [m.subject for m in await stream_messages(nats_server)]
    assert subjects == [
        "red_mist_v2.invocation.a_b_c_.Receive_Car_Patches",
        "red_mist_v2.connection.none.connected",
    ]


async def test_server_killed_and_restarted_mid_run_nothing_lost_no_duplicate(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    file_worker = SinkWorker(FileSink(path, fsync="never"))
    nworker = nats_worker(nats_server, ack_timeout_seconds=2.0)
    sink = nworker.sink
    assert isinstance(sink, NatsSink)
    for w in (file_worker, nworker):
        await w.start()
    relay = Relay([file_worker, nworker], hub="redmist", profile=PAYLOADS)
    invocations = cycled(30_000)
    feeder = asyncio.create_task(relay_invocations(relay, invocations))
    while sink.published < 8_000:  # mid-run: some acked, more coming
        await asyncio.sleep(0.01)
    await nats_server.kill()
    while not nworker.failing:  # the sink noticed and keeps the records
        await asyncio.sleep(0.01)
    await feeder
    assert nworker.depth > 0
    await nats_server.start()  # same port, same store dir
    await file_worker.close(grace=30)
    await nworker.close(grace=60)
    lines = path.read_bytes().splitlines()
    msgs = await stream_messages(nats_server)
    assert len(lines) == 30_000
    assert [m.data for m in msgs] == lines  # nothing lost, no duplicate, same order
    assert sink.connects >= 2
    assert nworker.stats.errors >= 1 and not any(nworker.stats.dropped.values())


async def test_bounded_while_down_oldest_dropped_and_counted(nats_server: NatsServer) -> None:
    worker = nats_worker(nats_server, ack_timeout_seconds=1.0)
    worker.max_pending = worker.max_batch = 100
    worker.queue_size = 50
    await worker.start()
    await nats_server.kill()
    relay = Relay([worker], hub="redmist", profile=PAYLOADS)
    await relay_invocations(relay, cycled(1_000))
    while worker.stats.dropped["sink_error"] < 1_000 - 150:
        await asyncio.sleep(0.01)
    await nats_server.start()
    await worker.close(grace=30)
    msgs = await stream_messages(nats_server)
    seqs = [json.loads(m.data)["seq"] for m in msgs]
    assert len(msgs) == 1_000 - worker.stats.dropped["sink_error"] - worker.stats.dropped["overflow"]
    assert seqs == sorted(seqs) and seqs[-1] == 1_000  # the newest kept, the oldest dropped


async def test_missing_stream_is_a_config_error_naming_it(nats_server: NatsServer) -> None:
    from consumer.errors import ConfigError

    cfg = parse_config(
        {"nats": {"servers": [nats_server.url]}, "sinks": [{"type": "nats", "nats": {"stream": "NOPE"}}]},
        source="cfg.toml",
    )
    worker = build_worker(cfg.sinks[0], config=cfg, index=0, env={})
    with pytest.raises(ConfigError) as err:
        await worker.start()
    assert err.value.exit_code == 78
    assert "'NOPE'" in str(err.value) and "sinks.0.nats.stream" in str(err.value)
    assert nats_server.url.removeprefix("nats://") in str(err.value)


@pytest.mark.parametrize("how", ["password", "token"])
async def test_wrong_credentials_exit_77_naming_the_server_never_the_secret(tmp_path: Path, how: str) -> None:
    right, wrong = "right-secret-value-1", "wrong-secret-value-2"
    server = NatsServer(
        tmp_path / "js", args=["--user", "svc", "--pass", right] if how == "password" else ["--auth", right]
    )
    await server.start()
    try:
        auth = 'user = "svc"\npassword_env = "NATS_PW"' if how == "password" else 'token_file = "nats.token"'
        (tmp_path / "nats.token").write_text(wrong + "\n")
        (tmp_path / "nats.token").chmod(0o600)
        conf = tmp_path / "c.toml"
        conf.write_text(
            f"""
[auth]
grant = "none"
[hub]
url = "http://127.0.0.1:9/hub"
[nats]
servers = ["{server.url}"]
{auth}
[[sinks]]
type = "nats"
"""
        )
        env = {**os.environ, "NATS_PW": wrong}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "consumer",
            "run",
            "--config",
            str(conf),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
        text = (out + err).decode()
        assert proc.returncode == 77, text
        assert f"NATS server {server.url} rejected the credentials" in text
        assert wrong not in text and right not in text
    finally:
        await server.kill()


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"sinks": [{"type": "nats", "nats": {"subject": "{hub}.{car}"}}]}, "sinks.0.nats.subject"),
        ({"sinks": [{"type": "nats", "nats": {"subject": "{hub}..x"}}]}, "sinks.0.nats.subject"),
        ({"sinks": [{"type": "nats", "nats": {"stream": "a.b"}}]}, "sinks.0.nats.stream"),
        ({"nats": {"servers": ["http://x"]}}, "nats.servers"),
    ],
)
def test_nats_config_mistakes_name_the_key(data: dict[str, Any], key: str) -> None:
    from consumer.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_config(data, source="c.toml")
    assert err.value.key == key


def test_secret_sources_and_methods_are_checked(tmp_path: Path) -> None:
    from consumer.errors import ConfigError

    cfg = parse_config({"nats": {"token": "abcdefgh", "token_env": "X"}}, source="c.toml")
    with pytest.raises(ConfigError, match=r"set only one of nats\.token, nats\.token_env"):
        connect_kwargs(cfg.nats, source="c.toml", env={})
    cfg = parse_config({"nats": {"token_env": "T", "user": "u"}}, source="c.toml")
    with pytest.raises(ConfigError, match="choose one authentication method") as err:
        connect_kwargs(cfg.nats, source="c.toml", env={"T": "secret-token-1"})
    assert "secret-token-1" not in str(err.value)
    cfg = parse_config({"nats": {"password_env": "P", "user": "u"}}, source="c.toml")
    kwargs = connect_kwargs(cfg.nats, source="c.toml", env={"P": "pw-123456"})
    assert kwargs["user"] == "u" and kwargs["password"] == "pw-123456"
    assert "pw-123456" not in repr(cfg)


@pytest.mark.parametrize("fast", [True, False])
async def test_fast_and_public_publish_paths_store_the_same(
    nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool
) -> None:
    import consumer.sinks.nats as nats_module

    monkeypatch.setattr(nats_module, "_FAST", fast)
    path = tmp_path / "events.jsonl"
    file_worker = SinkWorker(FileSink(path, fsync="never"))
    nworker = nats_worker(nats_server, max_in_flight=64)  # the in-flight window fills many times
    for w in (file_worker, nworker):
        await w.start()
    await relay_invocations(Relay([file_worker, nworker], hub="redmist", profile=PAYLOADS), cycled(3_000))
    await file_worker.close(grace=30)
    await nworker.close(grace=60)
    msgs = await stream_messages(nats_server)
    assert [m.data for m in msgs] == path.read_bytes().splitlines()
    assert all(m.headers["Nats-Msg-Id"] == msg_id(m.data) for m in msgs)
    assert {m.headers["Content-Type"] for m in msgs} == {"application/json"}


def envelope_lines(n: int, *, big: int | None = None) -> list[bytes]:
    """Envelope-shaped lines (what the sink reads of them: seq, hub, kind, target, event_id)."""
    out = []
    for seq in range(1, n + 1):
        pad = "x" * (4096 if seq - 1 == big else 10)
        out.append(
            b'{"seq":%d,"hub":"redmist","kind":"invocation","target":"T","event_id":7,"arguments":["%s"]}'
            % (seq, pad.encode())
        )
    return out


async def test_acks_per_run_prove_storage_and_unproven_runs_are_published_again(
    nats_server: NatsServer,
) -> None:
    """Fast path: acks only for the ends of each run of ACK_EVERY lines. A run whose end acks are not
    exactly that many stream sequences apart is not counted stored: here every line is already in the
    stream (duplicate acks), so each run is published again with an ack per line."""
    import consumer.sinks.nats as nats_module

    sink = nats_worker(nats_server).sink
    assert isinstance(sink, NatsSink)
    await sink.open()
    lines = envelope_lines(1000)
    try:
        await sink.write(lines)
        assert (sink.published, sink.duplicates, sink.unproven) == (1000, 0, 0)
        await sink.write(lines)  # again: the stream has them all
        assert sink.published == 2000 and sink.duplicates == 1000
        runs = -(-1000 // nats_module.ACK_EVERY)
        assert sink.unproven == 1000 - 2 * runs  # all but the ends (their acks said duplicate)
    finally:
        await sink.close()
    msgs = await stream_messages(nats_server)
    assert [m.data for m in msgs] == lines


async def test_a_line_the_stream_rejects_without_an_ack_is_not_counted_stored(
    nats_server: NatsServer,
) -> None:
    """A line in the middle of a run (no ack asked for it) that the stream refuses (too big): the run's
    end acks are one sequence short, the run is published again with an ack per line, and the write
    stops at that line (PartialWrite: the 30 before it stored)."""
    import nats
    from nats.js.api import StreamConfig

    from consumer.sinks.base import PartialWrite

    nc = await nats.connect(nats_server.url)
    await nc.jetstream().add_stream(StreamConfig(name="SMALL", subjects=["redmist.>"], max_msg_size=1024))
    await nc.close()
    sink = NatsSink(NatsSinkConfig(stream="SMALL"), {"servers": [nats_server.url]}, hub="redmist")
    await sink.open()
    lines = envelope_lines(100, big=30)
    try:
        with pytest.raises(PartialWrite) as err:
            await sink.write(lines)
        assert err.value.done == 30 and "JetStream error" in str(err.value.cause)
        assert sink.published == 30 and sink.unproven > 0
    finally:
        await sink.close()
    stored = [m.data for m in await stream_messages(nats_server, "SMALL")]
    assert lines[30] not in stored and stored[:30] == lines[:30]
