"""The standby's takeover in the NATS sink: continuity found by content, gap where unproven."""

from __future__ import annotations

import json
from typing import Any

import msgspec

from consumer.config import NatsSinkConfig
from consumer.relay.envelope import EnvelopeEncoder
from consumer.sinks.nats import NatsSink

from .natsserver import NatsServer
from .test_nats_sink import stream_messages


def invocation(enc: EnvelopeEncoder, n: int, event: int = 244) -> bytes:
    return enc.invocation(
        "ReceiveCarPatches", msgspec.Raw(b'[[{"eventId":"%d","n":%d}]]' % (event, n)), event
    )


async def pair(server: NatsServer) -> tuple[NatsSink, NatsSink, EnvelopeEncoder, EnvelopeEncoder, list[Any]]:
    gaps: list[Any] = []
    sinks = []
    encs = []
    for node in ("a", "b"):
        enc = EnvelopeEncoder("redmist")
        sink = NatsSink(NatsSinkConfig(create_stream=True), {"servers": [server.url]}, hub="redmist")
        await sink.open()
        sink.enable_ha(
            buffer_records=100,
            make_marker=lambda t, info, ev, enc=enc: enc.encode("ha", t, [info], ev),
            on_gap=gaps.extend,
            node=node,
        )
        sinks.append(sink)
        encs.append(enc)
    return sinks[0], sinks[1], encs[0], encs[1], gaps


def contents(msgs: list[Any]) -> list[tuple[str, str, Any]]:
    out = []
    for m in msgs:
        rec = json.loads(m.data)
        out.append(
            (rec["kind"], rec["target"], rec["arguments"][0][0]["n"] if rec["kind"] == "invocation" else None)
        )
    return out


async def test_takeover_publishes_exactly_what_the_stream_lacks(nats_server: NatsServer) -> None:
    a, b, ea, eb, gaps = await pair(nats_server)
    a.begin_takeover()
    await a.write([ea.encode("ha", "failover", [{"node": "a"}])])
    assert a.role == "leader"
    for n in range(1, 21):  # both receive 1..20; the leader published 1..12 when it died
        if n <= 12:
            await a.write([invocation(ea, n)])
        await b.write([invocation(eb, n)])
    b.begin_takeover()
    await b.write([invocation(eb, 21), eb.encode("ha", "failover", [{"node": "b"}]), invocation(eb, 22)])
    got = [c for c in contents(await stream_messages(nats_server)) if c[0] == "invocation"]
    assert [c[2] for c in got] == list(range(1, 23))  # nothing lost, nothing twice
    assert b.takeovers[-1]["events"] == {"244": "continuous"} and not gaps
    kinds = [c[:2] for c in contents(await stream_messages(nats_server))]
    assert kinds.count(("ha", "failover")) == 2 and ("ha", "gap") not in kinds
    for s in (a, b):
        await s.close()


async def test_no_continuity_gives_a_gap_marker_and_a_snapshot_request(nats_server: NatsServer) -> None:
    a, b, ea, eb, gaps = await pair(nats_server)
    a.begin_takeover()
    await a.write([ea.encode("ha", "failover", [{"node": "a"}])])
    for n in range(1, 11):
        await a.write([invocation(ea, n)])
    for n in range(15, 19):  # the standby's buffer starts after the leader's last record (11-14 unseen)
        await b.write([invocation(eb, n)])
    b.begin_takeover()
    await b.write([eb.encode("ha", "failover", [{"node": "b"}])])
    seq = contents(await stream_messages(nats_server))
    assert [c[2] for c in seq if c[0] == "invocation"] == [*range(1, 11), *range(15, 19)]
    gap_at = seq.index(("ha", "gap", None))
    assert seq[gap_at + 1] == ("invocation", "ReceiveCarPatches", 15)
    assert gaps == [244] and b.takeovers[-1]["gap_events"] == ["244"]
    for s in (a, b):
        await s.close()


async def test_repeated_content_needs_a_longer_run_to_match(nats_server: NatsServer) -> None:
    a, b, ea, eb, _gaps = await pair(nats_server)
    a.begin_takeover()
    await a.write([ea.encode("ha", "failover", [{"node": "a"}])])
    pattern = [1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 3, 1, 2]  # "1, 2" alone is ambiguous
    for i, n in enumerate(pattern):
        if i < 20:
            await a.write([invocation(ea, n)])
        await b.write([invocation(eb, n)])
    b.begin_takeover()
    await b.write([eb.encode("ha", "failover", [{"node": "b"}])])
    got = [c[2] for c in contents(await stream_messages(nats_server)) if c[0] == "invocation"]
    assert got == pattern
    assert b.takeovers[-1]["events"] == {"244": "continuous"}
    for s in (a, b):
        await s.close()


async def test_ambiguous_run_continues_after_the_latest_occurrence_with_a_gap(
    nats_server: NatsServer,
) -> None:
    a, b, ea, eb, gaps = await pair(nats_server)
    a.begin_takeover()
    await a.write([ea.encode("ha", "failover", [{"node": "a"}])])
    pattern = [1, 2] * 10 + [5]  # the leader's last 8 (1, 2, 1, 2, ...) occur several times in the buffer
    for n in pattern[:-1][:16]:
        await a.write([invocation(ea, n)])
    for n in pattern:
        await b.write([invocation(eb, n)])
    b.begin_takeover()
    await b.write([eb.encode("ha", "failover", [{"node": "b"}])])
    seq = contents(await stream_messages(nats_server))
    assert b.takeovers[-1]["events"] == {"244": "gap"} and gaps == [244]
    assert seq[-3:] == [("ha", "gap", None), ("invocation", "ReceiveCarPatches", 5), ("ha", "failover", None)]
    for s in (a, b):
        await s.close()
