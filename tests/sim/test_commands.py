"""`event-consumer simulate` and `event-consumer demo` as processes: ready line, live output, signals."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import httpx

from consumer.cli import main as cli_main

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


async def test_demo_shows_live_car_patches_and_exits_0_on_ctrl_c() -> None:
    proc = await _spawn("demo", "--speed", "600")
    assert proc.stdout is not None
    seen: list[str] = []
    async with asyncio.timeout(60):
        while not any(" car " in line and " lap " in line for line in seen):
            raw = await proc.stdout.readline()
            assert raw, "demo ended early"
            seen.append(raw.decode())
    code, _, err = await _finish(proc, signal.SIGINT)
    assert code == 0, err.decode()[-2000:]


def test_simulate_rejects_bad_arguments() -> None:
    assert cli_main(["simulate", "--protocols", "xml"]) == 78
    assert cli_main(["simulate", "--replay", "/nonexistent/replay.json"]) == 78
    assert cli_main(["simulate", "--private", "nonsense"]) == 78
