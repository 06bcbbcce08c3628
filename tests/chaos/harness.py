"""Chaos harness: the simulator in-process, numbered traffic with a send log, the REAL daemon process.

The simulator runs with its race driver off; `Traffic` broadcasts `ReceiveCarPatches` to the event's
group every `interval` seconds, each carrying a unique `chaosSeq`, and logs for every message whether
the hub queued it for a connection (`send_to_group` > 0: "sent while connected"). The daemon is
`event-consumer run --config FILE` as a subprocess writing a file sink; its JSON logs go to a file.

Counts (`Tally`): sent = messages queued for the daemon's connection; relayed = distinct sequence
numbers in the sink file; lost = sent but never written; dup = lines beyond the first per sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consumer.sim.hub import HubSettings
from consumer.sim.simulator import SimConfig, Simulator

TARGET = "ReceiveCarPatches"


async def until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition that nothing can be awaited for (a file another process writes)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def sink_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    data = path.read_bytes()
    assert not data or data.endswith(b"\n") or b"\n" in data
    complete = data[: data.rfind(b"\n") + 1]
    return [json.loads(line) for line in complete.splitlines()]


def seqs_of(records: list[dict[str, Any]]) -> list[int]:
    out = []
    for r in records:
        if r.get("kind") == "invocation" and r.get("target") == TARGET:
            patches = r["arguments"][0]
            if patches and "chaosSeq" in patches[0]:
                out.append(int(patches[0]["chaosSeq"]))
    return out


@dataclass
class Traffic:
    sim: Simulator
    event_id: int
    interval: float = 0.01
    log: list[tuple[int, float, int]] = field(default_factory=list)  # (seq, monotonic, queued)
    _task: asyncio.Task[None] | None = None
    seq: int = 0

    def send_one(self) -> int:
        self.seq += 1
        patch = {
            "eventId": str(self.event_id),
            "sessionId": "1",
            "number": str(self.seq % 60),
            "chaosSeq": self.seq,
        }
        queued = self.sim.hub.server.send_to_group(f"evt{self.event_id}-sub", TARGET, [patch])
        self.log.append((self.seq, time.monotonic(), queued))
        return queued

    async def _run(self) -> None:
        while True:
            self.send_one()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def burst(self, n: int) -> None:
        for _ in range(n):
            self.send_one()

    @property
    def sent(self) -> set[int]:
        return {s for s, _, q in self.log if q > 0}

    def first_connected_after(self, t: float) -> float | None:
        for _, when, queued in self.log:
            if when >= t and queued > 0:
                return when
        return None


@dataclass
class Tally:
    sent: int
    relayed: int
    lost: int
    dup: int
    lost_seqs: list[int]

    def row(self, scenario: str, recover: float | str | None, verdict: str) -> dict[str, Any]:
        return {
            "scenario": scenario,
            "sent": self.sent,
            "relayed": self.relayed,
            "lost": self.lost,
            "dup": self.dup,
            "recover_seconds": recover,
            "verdict": verdict,
        }


class DaemonProc:
    def __init__(self, proc: asyncio.subprocess.Process, out: Path, log: Path) -> None:
        self.proc = proc
        self.out = out
        self.log_path = log

    def seqs(self) -> list[int]:
        return seqs_of(sink_records(self.out))

    def logs(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    out.append(obj)
        return out

    def tally(self, traffic: Traffic) -> Tally:
        got = self.seqs()
        unique = set(got)
        sent = traffic.sent
        lost = sorted(sent - unique)
        return Tally(len(sent), len(unique), len(lost), len(got) - len(unique), lost[:20])

    async def terminate(self, timeout: float = 10.0) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                return await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError("the daemon did not exit after SIGTERM") from None


def daemon_toml(sim: Simulator, out: Path, *, secret_env: str, stateful: bool = False, **hub: Any) -> str:
    hub_values = {
        "url": sim.hub_url,
        "protocol": "json",
        "keepalive_interval_seconds": 0.5,
        "server_timeout_seconds": 3.0,
        "handshake_timeout_seconds": 2.0,
        "reconnect_max_delay_seconds": 0.5,
        "stateful_reconnect": stateful,
        **hub,
    }

    def value(v: Any) -> str:
        return json.dumps(v) if not isinstance(v, bool) else ("true" if v else "false")

    lines = [
        "[auth]",
        'grant = "client_credentials"',
        f"token_url = {value(sim.token_url)}",
        f"client_id = {value(sim.client_id)}",
        f"client_secret_env = {value(secret_env)}",
        "timeout_seconds = 2",
        "[hub]",
        *(f"{k} = {value(v)}" for k, v in hub_values.items() if v is not None),  # None: the default
        "[redmist]",
        f"events = [{sim.event_ids[0]}]",
        "snapshot_min_interval_seconds = 0.05",
        "[[sinks]]",
        'type = "file"',
        f"path = {value(str(out))}",
        'fsync = "never"',
        "[logging]",
        'level = "INFO"',
        'format = "json"',
        "[service]",
        "shutdown_grace_seconds = 5.0",
        "subscribe_retry_initial_seconds = 0.05",
        "subscribe_retry_max_seconds = 0.5",
    ]
    return "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def simulator(
    *, token_lifetime: float = 300.0, stateful: bool = False, require_auth: bool = False
) -> AsyncIterator[Simulator]:
    settings = HubSettings(
        keepalive_interval=0.5,
        client_timeout=5.0,
        stateful_reconnect=stateful,
        require_auth=require_auth,
        snapshot_window_token=0.01,
        snapshot_bucket_size=1000.0,
        snapshot_bucket_rate=1000.0,
        global_rate_token=1000.0,
        global_burst=1000.0,
    )
    config = SimConfig(events=1, autostart=False, token_lifetime=token_lifetime, hub=settings)
    async with Simulator(config) as sim:
        yield sim


async def start_daemon(
    sim: Simulator,
    tmp: Path,
    *,
    secret: str | None = None,
    stateful: bool = False,
    extra_toml: str = "",
    **hub: Any,
) -> DaemonProc:
    out = tmp / "sink.jsonl"
    log = tmp / "daemon.log"
    cfg = tmp / "daemon.toml"
    cfg.write_text(
        daemon_toml(sim, out, secret_env="CHAOS_CLIENT_SECRET", stateful=stateful, **hub) + extra_toml
    )
    env = {**os.environ, "CHAOS_CLIENT_SECRET": secret if secret is not None else sim.client_secret}
    with log.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "consumer",
            "run",
            "--config",
            str(cfg),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log_file,
            env=env,
        )
    return DaemonProc(proc, out, log)


async def wait_relaying(daemon: DaemonProc, traffic: Traffic, timeout: float = 15.0) -> None:
    """Until a message sent from now on shows up in the sink (subscribed and relaying)."""
    mark = traffic.seq
    await until(
        lambda: any(s > mark for s in daemon.seqs()) or daemon.proc.returncode is not None,
        timeout,
        "the daemon to relay",
    )
    assert daemon.proc.returncode is None, f"daemon exited {daemon.proc.returncode}"


async def settle(daemon: DaemonProc, traffic: Traffic, timeout: float = 5.0) -> None:
    """Stop the traffic and wait (bounded) until everything sent has been written."""
    await traffic.stop()
    with contextlib.suppress(AssertionError):
        await until(lambda: traffic.sent <= set(daemon.seqs()), timeout, "the sink to catch up")
