"""Issue 15's side-by-side section end to end in its tiny (smoke) form, and the independent hub's frames.

The frames test decodes what bench/wirehub.py writes with the project's own protocol readers (not with
the code that built them): RedMist-shaped `ReceiveCarPatches` of 12 cars, JSON with every patch key of
the contract present, MessagePack with full-length integer-keyed arrays. The smoke test runs every
client once per protocol and checks the results file and the rendered table; speed is not asserted
(figures belong to bench/, not to timed tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from consumer.redmist import contract
from consumer.signalr import protocol as p

ROOT = Path(__file__).resolve().parents[2]


def bench_module(name: str) -> Any:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def ws_payload(frame: bytes) -> tuple[int, bytes]:
    """(opcode, payload) of one unmasked server frame, checking it is exactly one frame."""
    op, n = frame[0] & 0x0F, frame[1] & 0x7F
    pos = 2
    if n == 126:
        n, pos = int.from_bytes(frame[2:4], "big"), 4
    elif n == 127:
        n, pos = int.from_bytes(frame[2:10], "big"), 10
    assert frame[0] & 0x80 and len(frame) == pos + n
    return op, frame[pos:]


def test_wirehub_frames_are_redmist_shaped() -> None:
    wirehub = bench_module("wirehub")
    frames = wirehub.Frames(20)
    spec = contract.CONTRACT.type("CarPositionPatch")
    names = [f.json_name for f in spec.fields]
    for raw in frames.single["json"]:
        op, payload = ws_payload(raw)
        assert op == 1
        (msg,) = p.get_protocol("json").reader().feed(payload)
        assert isinstance(msg, p.Invocation) and msg.target == "ReceiveCarPatches"
        (patches,) = msg.arguments
        assert len(patches) == 12
        for patch in patches:
            assert list(patch) == names  # every key, in contract order
        assert any(v is None for v in patches[0].values())  # unset keys written as null
    for raw in frames.single["messagepack"]:
        op, payload = ws_payload(raw)
        assert op == 2
        (msg,) = p.get_protocol("messagepack").reader().feed(payload)
        assert isinstance(msg, p.Invocation) and msg.target == "ReceiveCarPatches"
        (patches,) = msg.arguments
        assert len(patches) == 12 and {len(a) for a in patches} == {spec.array_length}
    # a block is BLOCK consecutive single frames
    assert frames.blocks["json"][0] == b"".join(frames.single["json"][: wirehub.BLOCK])
    assert len(frames.single["json"]) == 20 and len(frames.blocks["messagepack"]) == 1
    assert frames.describe["cars"] == 12 and frames.describe["slots"] == spec.array_length
    assert frames.describe["json_frame_bytes_mean"] > 10 * frames.describe["msgpack_frame_bytes_mean"]


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
async def test_floor_client_writes_the_daemons_lines(protocol: str) -> None:
    """The side-by-side floor row is only a floor if it produces the same output: its lines for
    every wirehub frame equal the relay's (same clock, same seq), through the project's reader."""
    from consumer.redmist import PAYLOADS
    from consumer.relay.envelope import Clock, EnvelopeEncoder
    from consumer.relay.relay import Relay
    from consumer.sinks import FileSink, SinkWorker

    wirehub = bench_module("wirehub")
    sys.path.insert(0, str(ROOT / "bench" / "clients"))
    try:
        peers = __import__("peers")
    finally:
        sys.path.pop(0)
    frames = wirehub.Frames(40)

    def encoder() -> EnvelopeEncoder:
        return EnvelopeEncoder("bench", clock=Clock(time_ns=lambda: 1_765_000_000_123_456_789))

    worker = SinkWorker(FileSink("/dev/null"), queue_size=1000)
    relay = Relay([worker], hub="bench", protocol=protocol, profile=PAYLOADS, encoder=encoder())  # type: ignore[arg-type]
    floor = peers.Floor(protocol, encoder())
    reader = p.get_protocol(protocol, raw_arguments=True).reader()
    floor_lines = []
    for raw in frames.single[protocol]:
        _, payload = ws_payload(raw)
        (msg,) = reader.feed(payload)
        await relay.on_raw(msg.target, msg.arguments)
        body = payload[:-1] if protocol == "json" else payload[2:]  # the record: 0x1E / VarInt prefix off
        assert payload[0] >= 0x80 or protocol == "json"  # (a two-byte VarInt prefix: bodies > 127 B)
        floor_lines.append(floor.line(body))
    relay_lines = worker.queued_lines()
    assert len(relay_lines) == 40
    assert floor_lines == relay_lines


@pytest.mark.node
def test_sidebyside_smoke(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, "bench/run.py", "--smoke", "--only", "sidebyside", "--no-readme", "--out", str(out)],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:])
    doc = json.loads(out.read_text())
    sec = doc["sidebyside"]
    assert sec["mode"] == "smoke" and sec["machine"]["cores"] >= 1
    count = sec["messages_per_run"]
    sidebyside = bench_module("sidebyside")
    expected = {
        (c, proto)
        for c in sidebyside.CLIENTS
        for proto in ("json", "messagepack")
        if c != "event-consumer-compact" or sidebyside.compact_supported()
    }
    assert {(c["client"], c["protocol"]) for c in sec["cells"]} == expected
    for cell in sec["cells"]:
        assert "error" not in cell, (cell["client"], cell["protocol"], cell.get("error"))
        (run,) = cell["raw"]
        assert run["messages"] == count
        assert run["msgs_per_s"] > 0 and run["cpu_seconds"] >= 0 and run["seconds"] > 0
        assert run["hub_msgs_per_s"] > 0  # the hub reported its own send time for the stream
        if cell["client"].startswith("event-consumer"):
            # the daemon wrote every frame as a line (plus markers and the sentinel)
            assert run["output_bytes"] > count * 1000
    if sidebyside.compact_supported():
        out_bytes = {
            (c["client"], c["protocol"]): c["raw"][0]["output_bytes"]
            for c in sec["cells"]
            if c["client"].startswith("event-consumer")
        }
        for proto in ("json", "messagepack"):
            # the real process honoured `[redmist] patches = "compact"`: far smaller lines
            assert out_bytes[("event-consumer-compact", proto)] * 2 < out_bytes[("event-consumer", proto)]
    assert set(sec["ratios"]["json"]) == {
        "throughput_vs_pysignalr-decode",
        "throughput_vs_node-decode",
        "throughput_vs_bare",
    }
    assert "cpu_vs_pysignalr-decode" in sec["ratios"]["messagepack"]

    table = bench_module("render").render_sidebyside(doc, "smoke.json")
    assert "| **event-consumer** -> file (faithful) |" in table
    assert "| bare `websockets` recv loop (no parsing) |" in table
    assert f"MessagePack CPU-s / {count:,} |" in table
