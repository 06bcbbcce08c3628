"""Chaos: a hostile hub against the REAL daemon process — memory bounded in bytes and in cardinality.

The hub is a raw WebSocket server in the test process speaking just enough SignalR (JSON protocol,
no negotiate): it answers the handshake and then writes pre-built invocation frames as fast as the
socket takes them. The daemon is `python -m consumer run` with `grant = "none"`, a stdout sink and
`/metrics` on an ephemeral loopback port; its RSS is read from /proc.

- Distinct target names: every name is relayed, but no counter, label or cache keeps it. Quick form
  100,000 names of 200 characters; `--chaos-long` 1,000,000 names. Both: RSS within +20 MB of the
  warmed-up baseline and the `/metrics` body under 1 MB.
- A stalled sink (stdout into a pipe nobody reads) while the hub sends 90 KB invocations (and, second
  case, frames of the largest allowed size: 8 x 1 MB) as fast as it can: the daemon stops reading the
  socket once its byte bounds are reached — RSS stays within the configured bounds + 50 MB — and once
  the pipe is read again every invocation arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.server import ServerConnection, serve

from .harness import until

pytestmark = pytest.mark.chaos

RS = "\x1e"
MB = 1_000_000
MiB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert match, status
    return int(match.group(1)) * 1024


@dataclass
class RawHub:
    """A SignalR JSON hub that writes the frames it is given, as fast as the socket takes them."""

    frames: Iterator[str] | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    sent_frames: int = 0
    sent_bytes: int = 0
    last_progress: float = field(default_factory=time.monotonic)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    stop_sending: bool = False
    connections: int = 0
    more: asyncio.Event = field(default_factory=asyncio.Event)  # set by send(): new frames to write

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        request = await ws.recv()
        assert json.loads(str(request).rstrip(RS)) == {"protocol": "json", "version": 1}
        await ws.send("{}" + RS)
        self.connected.set()
        tasks = [asyncio.create_task(c) for c in (self._read(ws), self._ping(ws), self._send_all(ws))]
        try:
            await ws.wait_closed()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read(self, ws: ServerConnection) -> None:
        with contextlib.suppress(Exception):
            async for _ in ws:  # the daemon's keepalive pings
                pass

    async def _ping(self, ws: ServerConnection) -> None:
        with contextlib.suppress(Exception):
            while True:
                await asyncio.sleep(1.0)
                await ws.send('{"type":6}' + RS)

    async def _send_all(self, ws: ServerConnection) -> None:
        while True:
            await self.more.wait()
            self.more.clear()
            assert self.frames is not None
            for frame in self.frames:
                if self.stop_sending:
                    break
                await ws.send(frame)
                self.sent_frames += 1
                self.sent_bytes += len(frame)
                self.last_progress = time.monotonic()
            self.frames = None
            self.finished.set()

    def send(self, frames: Iterator[str]) -> None:
        self.finished.clear()
        self.frames = frames
        self.more.set()


@contextlib.asynccontextmanager
async def raw_hub() -> AsyncIterator[tuple[RawHub, str]]:
    hub = RawHub()
    # no permessage-deflate (ASP.NET Core SignalR does not compress): the bytes on the wire are the bytes
    async with serve(hub.handler, "127.0.0.1", 0, max_size=None, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield hub, f"http://127.0.0.1:{port}/hub"


def daemon_toml(url: str, *, sink: dict[str, Any] | None = None, **hub: Any) -> str:
    lines = [
        "[auth]",
        'grant = "none"',
        "[hub]",
        f'url = "{url}"',
        "skip_negotiation = true",
        'protocol = "json"',
        "server_timeout_seconds = 30",
        "reconnect_max_delay_seconds = 0.5",
        *(f"{k} = {json.dumps(v)}" for k, v in hub.items()),
        "[[sinks]]",
        'type = "stdout"',
        *(f"{k} = {json.dumps(v)}" for k, v in (sink or {}).items()),
        "[http]",
        "enabled = true",
        "port = 0",
        "[logging]",
        'format = "json"',
        "[service]",
        "shutdown_grace_seconds = 3.0",
    ]
    return "\n".join(lines) + "\n"


@dataclass
class Daemon:
    proc: asyncio.subprocess.Process
    log: Path
    metrics_url: str = ""

    async def wait_listening(self) -> None:
        def found() -> bool:
            for line in self.log.read_text(errors="replace").splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    rec = json.loads(line)
                    if rec.get("event") == "daemon.observability_listening":
                        self.metrics_url = rec["url"] + "/metrics"
                        return True
            return self.proc.returncode is not None

        await until(found, 30, "the observability endpoint")
        assert self.metrics_url, self.log.read_text()

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(15):
                return await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            return await self.proc.wait()


async def start_daemon(tmp: Path, toml: str, *, stdout: int) -> Daemon:
    cfg = tmp / "daemon.toml"
    cfg.write_text(toml)
    log = tmp / "daemon.log"
    with log.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "consumer",
            "run",
            "--config",
            str(cfg),
            stdout=stdout,
            stderr=log_file,
            env=dict(os.environ),
            limit=4 * MiB,  # the stdout reader's line limit: 90 KB records
        )
    daemon = Daemon(proc, log)
    await daemon.wait_listening()
    return daemon


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(body)
        for s in fam.samples
    }


def received_total(values: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return sum(v for (name, _), v in values.items() if name == "event_consumer_messages_received_total")


def name_frames(start: int, count: int, length: int, per_frame: int = 1000) -> Iterator[str]:
    """Invocations of `count` distinct targets `length` characters long, `per_frame` to a frame."""
    for first in range(start, start + count, per_frame):
        yield "".join(
            f'{{"type":1,"target":"n{i:0{length - 1}d}","arguments":[{i}]}}{RS}'
            for i in range(first, min(first + per_frame, start + count))
        )


async def wait_received(http: httpx.AsyncClient, daemon: Daemon, total: int, timeout: float) -> str:
    """Scrape /metrics (every 0.5 s: an unbounded body is expensive) until `total` were received."""
    deadline = time.monotonic() + timeout
    while True:
        body = (await http.get(daemon.metrics_url)).text
        if received_total(samples(body)) >= total:
            return body
        assert daemon.proc.returncode is None, f"daemon exited {daemon.proc.returncode}"
        assert time.monotonic() < deadline, f"only {received_total(samples(body))} of {total} received"
        await asyncio.sleep(0.5)


async def test_distinct_target_names_keep_rss_and_metrics_bounded(
    tmp_path: Path, chaos_long: bool, chaos_summary: list[Any]
) -> None:
    names, length = (1_000_000, 16) if chaos_long else (100_000, 200)
    warmup = 20_000
    async with raw_hub() as (hub, url), httpx.AsyncClient(timeout=60) as http:
        daemon = await start_daemon(tmp_path, daemon_toml(url), stdout=asyncio.subprocess.DEVNULL)
        try:
            await asyncio.wait_for(hub.connected.wait(), 30)
            # warm-up: queues, arenas and the scrape path reach their steady state first
            hub.send(name_frames(0, warmup, length))
            await wait_received(http, daemon, warmup, 60)
            baseline = rss_bytes(daemon.proc.pid)
            t0 = time.monotonic()
            hub.send(name_frames(warmup, names, length))
            await wait_received(http, daemon, warmup + names, 600)
            seconds = time.monotonic() - t0
            body = (await http.get(daemon.metrics_url)).content
            grown = rss_bytes(daemon.proc.pid) - baseline
            values = samples(body.decode())
        finally:
            code = await daemon.stop()
    chaos_summary.append(
        {
            "scenario": f"{names:,} distinct target names ({length} chars)",
            "sent": warmup + names,
            "relayed": int(received_total(values)),
            "lost": warmup + names - int(received_total(values)),
            "dup": 0,
            "recover_seconds": None,
            "verdict": f"RSS {grown / MB:+.1f} MB, /metrics {len(body) / 1000:.1f} kB, {seconds:.1f} s",
        }
    )
    assert grown <= 20 * MB, f"RSS grew {grown / MB:.1f} MB for {names} names; /metrics {len(body)} bytes"
    assert len(body) < 1 * MB, len(body)
    assert code == 0
    assert hub.connections == 1  # no target name is a protocol error: nothing recycled
    labels = {
        dict(lbl).get("target") for name, lbl in values if name == "event_consumer_messages_received_total"
    }
    assert labels == {"other"}
    assert values[("event_consumer_messages_received_total", (("target", "other"),))] == warmup + names


@pytest.mark.parametrize(
    ("record", "per_frame", "queue_size"),
    [
        # the case: 90 KB invocations, one to a frame
        (90_000, 1, 20),
        # the largest frames allowed (8 x max_message_bytes): 8 invocations of 1 MB to a frame
        (1_000_000, 8, 2),
    ],
    ids=["90KB", "8MiB-frames"],
)
async def test_stalled_sink_with_large_invocations_stays_within_the_byte_bounds(
    tmp_path: Path, chaos_summary: list[Any], record: int, per_frame: int, queue_size: int
) -> None:
    dispatch_limit = 16 * MiB  # the default [hub] max_dispatch_bytes
    max_frame = 8 * MiB  # 8 x the default [hub] max_message_bytes
    pad = "x" * record
    message = f'{{"type":1,"target":"ReceiveCarPatches","arguments":[[{{"eventId":"1","pad":"{pad}"}}]]}}{RS}'
    frame = message * per_frame
    line = len(message) + 200  # the envelope line of one invocation
    read_ahead = max(1, min(16, dispatch_limit // max_frame))  # frames the WebSocket library may hold
    # dispatch (+ one frame over it, one waiting), the library's read-ahead (+ one 256 KiB socket
    # read), the sink's queue + the batch in the stalled write + that batch joined into one buffer
    bounds = dispatch_limit + (2 + read_ahead) * len(frame) + 256 * 1024 + 3 * queue_size * line

    def frames() -> Iterator[str]:
        while True:
            yield frame

    async with raw_hub() as (hub, url), httpx.AsyncClient(timeout=60) as http:
        daemon = await start_daemon(
            tmp_path,
            daemon_toml(url, sink={"queue_size": queue_size}, max_dispatch_bytes=dispatch_limit),
            stdout=asyncio.subprocess.PIPE,  # read by nobody until the end: the sink stalls
        )
        try:
            await asyncio.wait_for(hub.connected.wait(), 30)
            baseline = rss_bytes(daemon.proc.pid)
            hub.send(frames())
            peak = baseline
            deadline = time.monotonic() + 120
            # until the hub cannot write any more (the daemon stopped reading) or RSS passes the bound
            while time.monotonic() - hub.last_progress < 3.0 or hub.sent_frames == 0:
                peak = max(peak, rss_bytes(daemon.proc.pid))
                if peak - baseline > bounds + 50 * MB or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            peak = max(peak, rss_bytes(daemon.proc.pid))
            values = samples((await http.get(daemon.metrics_url)).text)
            stalled_at = hub.sent_frames
            # the reader comes back: everything the hub sent arrives, nothing was dropped
            hub.stop_sending = True
            assert daemon.proc.stdout is not None
            lines = 0
            async with asyncio.timeout(120):
                while lines < hub.sent_frames * per_frame or not hub.finished.is_set():
                    line = await daemon.proc.stdout.readline()
                    assert line, "the daemon's stdout ended early"
                    if b'"target":"ReceiveCarPatches"' in line:
                        lines += 1
            sent = hub.sent_frames
        finally:
            code = await daemon.stop()
    grown = peak - baseline
    chaos_summary.append(
        {
            "scenario": f"stalled stdout sink, {record // 1000} KB invocations, {per_frame} to a frame",
            "sent": sent * per_frame,
            "relayed": lines,
            "lost": sent * per_frame - lines,
            "dup": 0,
            "recover_seconds": None,
            "verdict": f"peak RSS {grown / MB:+.1f} MB (bounds {bounds / MB:.0f} + 50 MB), "
            f"stalled after {stalled_at} frames",
        }
    )
    assert grown <= bounds + 50 * MB, f"RSS grew {grown / MB:.0f} MB; bounds {bounds / MB:.0f} MB + 50 MB"
    in_use = values[("event_consumer_buffer_bytes", (("buffer", "dispatch"),))]
    assert values[("event_consumer_buffer_limit_bytes", (("buffer", "dispatch"),))] == dispatch_limit
    assert dispatch_limit <= in_use <= dispatch_limit + 2 * len(frame)  # full: that is why it stopped
    assert values[("event_consumer_dispatch_queue_invocations", ())] < 10_000
    assert lines == sent * per_frame
    assert code == 0
