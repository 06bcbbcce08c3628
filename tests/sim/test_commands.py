"""`event-consumer simulate` and `event-consumer demo` as processes: ready line, live output, signals."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from consumer.cli import main as cli_main
from consumer.sim.idp import IdpConfig

# The stdout sink's human view of a car patch: "01:07:33.949 ReceiveCarPatches ev=244 #880 P3 L1, ..."
CAR_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} ReceiveCarPatches ev=\d+ #\w+", re.MULTILINE)

READY_KEYS = {
    "issuer",
    "token_url",
    "hub_url",
    "rest_url",
    "admin_url",
    "client_id",
    "client_secret",
    "event_ids",
}


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _finish(proc: asyncio.subprocess.Process, sig: int) -> tuple[int, bytes, bytes]:
    proc.send_signal(sig)
    try:
        async with asyncio.timeout(15):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out, err


async def test_simulate_prints_one_ready_line_serves_and_exits_0_on_sigterm() -> None:
    proc = await _spawn("simulate", "--port", "0", "--speed", "600", "--events", "3")
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        line = await proc.stdout.readline()
    info = json.loads(line)
    assert set(info) == READY_KEYS
    assert info["event_ids"][:2] == [244, 390] and len(info["event_ids"]) == 3
    assert info["issuer"].endswith("/realms/redmist") and info["hub_url"].endswith("/status/event-status")
    async with httpx.AsyncClient() as http:
        token = await http.post(
            info["token_url"],
            data={"grant_type": "client_credentials"},
            auth=(info["client_id"], info["client_secret"]),
        )
        assert token.status_code == 200
        events = await http.get(info["rest_url"] + "/LoadLiveEvents")
        assert [e["eid"] for e in events.json()] == info["event_ids"]
        state = await http.get(info["admin_url"] + "/state")
        assert state.status_code == 200
    code, rest, err = await _finish(proc, signal.SIGTERM)
    assert code == 0, err.decode()[-2000:]
    assert rest == b""  # exactly one line on stdout; logs go to stderr
    assert info["client_secret"].encode() not in err


def _demo_secret() -> str:
    secret = IdpConfig.load().clients["relay-svc"].client_secret
    assert secret
    return secret


@pytest.mark.parametrize(
    ("sig", "protocol"), [(signal.SIGINT, "messagepack"), (signal.SIGTERM, "json")], ids=["ctrl-c", "sigterm"]
)
async def test_demo_runs_the_daemon_live_car_patches_then_exits_0_on_signal(
    sig: signal.Signals, protocol: str
) -> None:
    """Not a TTY: the daemon's JSON lines. Markers, a snapshot and car patches, then a clean stop."""
    proc = await _spawn("demo", "--speed", "600", "--protocol", protocol)
    assert proc.stdout is not None
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(60):
        while not (
            any(r["target"] == "ReceiveCarPatches" for r in seen)
            and any(r["kind"] == "snapshot" for r in seen)
        ):
            raw = await proc.stdout.readline()
            assert raw, "demo ended early"
            seen.append(json.loads(raw))
    code, rest, err = await _finish(proc, sig)
    assert code == 0, err.decode()[-2000:]
    assert rest.endswith(b"\n")
    recs = seen + [json.loads(line) for line in rest.splitlines()]  # every line parses
    assert (recs[0]["kind"], recs[0]["target"]) == ("connection", "connected")
    assert (recs[-1]["kind"], recs[-1]["target"]) == ("connection", "closed")
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    assert all(r["hub"] == "redmist-sim" for r in recs)
    patch = next(r for r in recs if r["target"] == "ReceiveCarPatches")
    # named fields on both protocols (MessagePack goes through the RedMist contract)
    assert patch["kind"] == "invocation" and "number" in patch["arguments"][0][0]
    assert b"Traceback" not in err
    assert _demo_secret().encode() not in err + rest


def test_demo_log_on_a_terminal_shows_the_pretty_view_and_exits_0_on_ctrl_c(tmp_path: Path) -> None:
    """Under a pseudo-terminal with --log: the compact human view (car lines), not JSON."""
    master, slave = pty.openpty()
    err_path = tmp_path / "stderr.txt"
    with err_path.open("wb") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "consumer", "demo", "--speed", "600", "--log"],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=err_file,
        )
    os.close(slave)
    text = ""

    def read_until(done: Callable[[str], bool], deadline: float) -> str:
        nonlocal text
        while not done(text):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; terminal so far:\n{text[-2000:]}"
            ready, _, _ = select.select([master], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            if not chunk:
                break
            text += chunk.decode("utf-8", "replace")
        return text

    try:
        read_until(lambda t: CAR_LINE.search(t) is not None, time.monotonic() + 60)
        proc.send_signal(signal.SIGINT)
        read_until(lambda _: False, time.monotonic() + 15)  # to EOF
        code = proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    err = err_path.read_text()
    assert code == 0, err[-2000:]
    lines = text.replace("\r\n", "\n").splitlines()
    assert any(line.endswith(" -- connected") for line in lines), text[:2000]
    assert lines[-1].endswith(" -- closed"), text[-2000:]
    assert not any(line.startswith("{") for line in lines)  # the human view, not JSON lines
    assert "Traceback" not in err and "Ctrl-C to stop" in err


def test_simulate_rejects_bad_arguments() -> None:
    assert cli_main(["simulate", "--protocols", "xml"]) == 78
    assert cli_main(["simulate", "--replay", "/nonexistent/replay.json"]) == 78
    assert cli_main(["simulate", "--private", "nonsense"]) == 78


def test_demo_rejects_bad_arguments() -> None:
    assert cli_main(["demo", "--speed", "0"]) == 78
    assert cli_main(["demo", "--events", "0"]) == 78
    assert cli_main(["demo", "--protocol", "xml"]) == 2


def test_demo_stops_with_exit_0_when_its_reader_goes_away(tmp_path: Path) -> None:
    """`event-consumer demo | head`: the pipe's reader closes, the demo shuts down by itself."""
    err_path = tmp_path / "stderr.txt"
    with err_path.open("wb") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "consumer", "demo", "--speed", "600"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err_file,
        )
    assert proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "no output within 60 s"
        assert os.read(proc.stdout.fileno(), 65536).startswith(b"{")
        proc.stdout.close()  # as `head` does when it has its lines
        code = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = err_path.read_text()
    assert code == 0, err[-2000:]
    assert "Traceback" not in err
