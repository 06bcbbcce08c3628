"""`event-consumer run` as a real process: signals, sd_notify, exit codes, stderr, no secrets in logs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer.sim.simulator import SimConfig, Simulator

from .helpers import records, sim_settings, until

EXE = str(Path(sys.executable).with_name("event-consumer"))


def write_config(path: Path, sim: Simulator, out: Path, *, level: str = "INFO", **extra: str) -> Path:
    text = f"""
[auth]
grant = "client_credentials"
token_url = "{sim.token_url}"
client_id = "{sim.client_id}"
client_secret_env = "TEST_CLIENT_SECRET"

[hub]
url = "{sim.hub_url}"
keepalive_interval_seconds = 0.3
server_timeout_seconds = 2.0
reconnect_max_delay_seconds = 0.3

[redmist]
events = {json.dumps(sim.event_ids)}
snapshot_min_interval_seconds = 0.02

[[sinks]]
type = "file"
path = "{out}"
fsync = "always"

[logging]
level = "{level}"
format = "json"

[service]
shutdown_grace_seconds = 5.0
{extra.get("service", "")}
"""
    path.write_text(text)
    return path


async def spawn(cfg: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        EXE,
        "run",
        "--config",
        str(cfg),
        env={"PATH": os.environ.get("PATH", ""), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    yield sock, path
    sock.close()


def drain(sock: socket.socket) -> list[str]:
    out: list[str] = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


async def test_sigterm_drains_and_exits_0_with_notify_in_order(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, sock_path = notify_socket
    out = tmp_path / "out.jsonl"
    async with Simulator(SimConfig(events=1, hub=sim_settings())) as sim:
        cfg = write_config(tmp_path / "c.toml", sim, out)
        proc = await spawn(
            cfg,
            {"TEST_CLIENT_SECRET": sim.client_secret, "NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "200000"},
        )
        try:
            await until(
                lambda: sum(r["target"] == "ReceiveCarPatches" for r in records(out)) >= 3, what="patches"
            )
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(15):
                _, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    msgs = drain(sock)
    kinds = [m.split("\n")[0].split("=")[0] for m in msgs]
    # WATCHDOG=1 may come before READY=1 (systemd's watchdog runs from the start; a slow first connect
    # on a loaded machine takes longer than the 100 ms ping interval); nothing else may.
    assert next(k for k in kinds if k != "WATCHDOG") == "READY"
    assert "WATCHDOG" in kinds
    assert kinds[-1] == "STOPPING"
    assert any(m.startswith("STATUS=connected") or "\nSTATUS=connected" in m for m in msgs)
    data = out.read_bytes()
    assert data.endswith(b"\n")
    recs = [json.loads(line) for line in data.splitlines()]
    assert recs[-1]["target"] == "closed"
    assert sim.client_secret not in err.decode()


async def test_sighup_after_logrotate_rename_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    rotated = tmp_path / "out.jsonl.1"
    async with Simulator(SimConfig(events=2, hub=sim_settings())) as sim:
        cfg = write_config(tmp_path / "c.toml", sim, out)
        proc = await spawn(cfg, {"TEST_CLIENT_SECRET": sim.client_secret})
        try:
            await until(lambda: len(records(out)) >= 20, what="records before rotation")
            out.rename(rotated)  # logrotate: rename, then signal
            proc.send_signal(signal.SIGHUP)
            await until(lambda: len(records(out)) >= 20, what="records in the new file")
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(15):
                _, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    seqs = [r["seq"] for r in records(rotated) + records(out)]
    assert seqs == list(range(1, len(seqs) + 1))  # no filters: contiguous, nothing lost or doubled


async def test_config_error_exit_78_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[hub]\nkeepalive_interval_seconds = "soon"\n')
    proc = await spawn(cfg, {})
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    assert proc.returncode == 78
    text = err.decode()
    assert text.count("\n") == 1
    assert str(cfg) in text and "hub.keepalive_interval_seconds" in text and "expected float" in text


async def test_unopenable_sink_is_a_config_error(tmp_path: Path) -> None:
    async with Simulator(SimConfig(events=1, hub=sim_settings())) as sim:
        cfg = write_config(tmp_path / "c.toml", sim, tmp_path / "missing-dir" / "out.jsonl")
        proc = await spawn(cfg, {"TEST_CLIENT_SECRET": sim.client_secret})
        async with asyncio.timeout(30):
            _, err = await proc.communicate()
    assert proc.returncode == 78
    last = err.decode().strip().splitlines()[-1]
    assert "sinks.0.path" in last and "cannot open sink" in last


async def test_rejected_credentials_exit_77_and_no_secret_at_debug(tmp_path: Path) -> None:
    wrong = "definitely-wrong-secret-value"
    async with Simulator(SimConfig(events=1, hub=sim_settings())) as sim:
        cfg = write_config(tmp_path / "c.toml", sim, tmp_path / "out.jsonl", level="DEBUG")
        proc = await spawn(cfg, {"TEST_CLIENT_SECRET": wrong})
        async with asyncio.timeout(30):
            _, err = await proc.communicate()
    assert proc.returncode == 77
    text = err.decode()
    lines = [line for line in text.splitlines() if line.strip()]
    non_log = [line for line in lines if not line.startswith("{")]
    assert len(non_log) == 1 and non_log[0].startswith("event-consumer run:")  # one clear line
    assert wrong not in text


async def test_debug_logs_of_a_working_run_hold_no_secret_or_token(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    async with Simulator(SimConfig(events=1, hub=sim_settings())) as sim:
        cfg = write_config(tmp_path / "c.toml", sim, out, level="DEBUG")
        proc = await spawn(cfg, {"TEST_CLIENT_SECRET": sim.client_secret})
        try:
            await until(lambda: any(r["kind"] == "snapshot" for r in records(out)), what="snapshot")
            await sim.faults.expire_tokens()  # a reconnect with a fresh token, also logged at DEBUG
            await until(
                lambda: sum(r["target"] == "reconnected" for r in records(out)) >= 1, what="reconnect"
            )
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(15):
                _, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        issued: list[Any] = list(getattr(sim.idp, "issued_tokens", []))
    text = err.decode()
    assert proc.returncode == 0, text[-2000:]
    assert len(text.splitlines()) > 10  # DEBUG really logged things
    assert sim.client_secret not in text
    assert "eyJ" not in text  # no JWT (header always starts with eyJ) in any line
    for token in issued:
        assert str(token) not in text
