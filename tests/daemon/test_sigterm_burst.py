"""Issue 6 acceptance, with a real process and a real signal.

`event-consumer run --config ...` (file sink) against the simulator, which floods ReceiveCarPatches as
fast as this machine lets it; SIGTERM arrives mid-burst. Then: exit 0, every line parses, seq is
1..n with no gap, the file ends with a newline (no torn line), and the number of invocation records
in the file equals the number of invocations the daemon says (its `stopped` log line) it decoded.

The achieved rate (the daemon's own `received_at` stamps, first to last invocation) is printed, not
asserted: speed targets belong in bench/.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from consumer.redmist.contract import arguments_to_msgpack
from consumer.sim.hubhost import ProtocolArgs
from consumer.sim.simulator import SimConfig, Simulator

from .helpers import sim_settings, until

EXE = str(Path(sys.executable).with_name("event-consumer"))

TOTAL = 200_000  # queued at the hub as fast as it can; far more than the daemon takes before the signal
SIGNAL_AFTER = 30_000  # records in the file before SIGTERM
CHUNK = 2_000  # broadcasts between yields of the producer (so the hub's writer starts at once)


def write_config(path: Path, sim: Simulator, out: Path, protocol: str) -> Path:
    path.write_text(
        f"""
[auth]
grant = "client_credentials"
token_url = "{sim.token_url}"
client_id = "{sim.client_id}"
client_secret_env = "TEST_CLIENT_SECRET"

[hub]
url = "{sim.hub_url}"
protocol = "{protocol}"
keepalive_interval_seconds = 1.0
server_timeout_seconds = 10.0

[redmist]
events = {json.dumps(sim.event_ids)}

[[sinks]]
type = "file"
path = "{out}"
fsync = "interval"

[logging]
level = "INFO"
format = "json"

[service]
shutdown_grace_seconds = 10.0
"""
    )
    return path


def count_lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def log_events(stderr: str) -> list[dict[str, Any]]:
    events = []
    for line in stderr.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            events.append(rec)
    return events


def _ts(rec: dict[str, Any]) -> float:
    return datetime.fromisoformat(rec["received_at"].replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
async def test_sigterm_mid_burst_every_decoded_invocation_is_in_the_file(
    tmp_path: Path, protocol: str
) -> None:
    out = tmp_path / "out.jsonl"
    err_path = tmp_path / "stderr.jsonl"
    async with Simulator(SimConfig(events=1, hub=sim_settings(), autostart=False)) as sim:
        # The burst outruns the daemon on purpose; the hub's per-connection queue must hold it all
        # (the default 4096 would close the connection as too slow, which is another test).
        sim.hub.server.outbound_queue_size = TOTAL + 1_000
        ev = sim.event_ids[0]
        group = f"evt{ev}-sub"
        cfg = write_config(tmp_path / "c.toml", sim, out, protocol)
        with err_path.open("wb") as err_file:
            proc = await asyncio.create_subprocess_exec(
                EXE,
                "run",
                "--config",
                str(cfg),
                env={"PATH": os.environ.get("PATH", ""), "TEST_CLIENT_SECRET": sim.client_secret},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err_file,
            )
        sent = queued = 0  # broadcasts made / queued for the daemon's connection
        try:
            await until(lambda: len(sim.hub.server.group_members(group)) == 1, timeout=30, what="subscribed")
            patch = [[{"eventId": str(ev), "sessionId": "1", "number": "42", "overallPosition": 1}]]
            # JSON gets the named fields, MessagePack RedMist's integer-keyed arrays (the contract)
            args = ProtocolArgs(json=patch, messagepack=arguments_to_msgpack("ReceiveCarPatches", patch))

            async def flood() -> None:
                nonlocal sent, queued
                while sent < TOTAL:
                    for _ in range(CHUNK):
                        queued += sim.hub.server.send_to_group(group, "ReceiveCarPatches", arguments=args)
                    sent += CHUNK
                    await asyncio.sleep(0)  # let the hub's writer put frames on the socket

            producer = asyncio.create_task(flood())
            try:
                await until(lambda: count_lines(out) >= SIGNAL_AFTER, timeout=60, what="burst flowing")
                proc.send_signal(signal.SIGTERM)
                async with asyncio.timeout(30):
                    code = await proc.wait()
                    await producer  # bounded: TOTAL broadcasts (no-ops once the daemon is gone)
            finally:
                producer.cancel()
                await asyncio.gather(producer, return_exceptions=True)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    stderr = err_path.read_text()
    assert code == 0, stderr[-3000:]

    data = out.read_bytes()
    assert data.endswith(b"\n"), "torn last line"
    recs = [msgspec.json.decode(line) for line in data.splitlines()]  # every line parses
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))  # strictly increasing, no gap
    assert (recs[0]["target"], recs[-1]["target"]) == ("connected", "closed")
    invocations = [r for r in recs if r["kind"] == "invocation"]
    assert all(r["target"] == "ReceiveCarPatches" for r in invocations)
    first = invocations[0]["arguments"][0][0]
    assert (first["eventId"], first["number"], first["overallPosition"]) == (str(ev), "42", 1)
    assert all(r["event_id"] == ev for r in invocations)

    stopped = [e for e in log_events(stderr) if e.get("event") == "daemon.stopped"]
    assert len(stopped) == 1, stderr[-3000:]
    line = stopped[0]
    assert line["decoded"] == len(invocations), line  # every invocation decoded before the signal
    assert line["abandoned"] == 0, line
    assert line["received"] == len(invocations), line
    assert sum(line["written"].values()) == len(recs), line
    assert not line.get("dropped"), line
    # the signal really came mid-burst: the hub had queued more for the daemon than it took
    assert SIGNAL_AFTER - 10 <= len(invocations) < queued

    span = _ts(invocations[-1]) - _ts(invocations[0])
    rate = (len(invocations) - 1) / span if span > 0 else float("inf")
    print(f"\n[{protocol}] {len(invocations)} invocations in {span:.2f} s: {rate:,.0f} msg/s decoded+written")
