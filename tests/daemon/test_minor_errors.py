"""Issue 10 item 14a/b: no false asyncio ERROR on a SIGTERM before the first connect; error
descriptions never empty (`ReadError: `)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest

from consumer.logs import redact_processor
from consumer.redmist import PAYLOADS


def _closed_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("stuck_at", ["token", "hub"])
async def test_sigterm_before_first_connect_logs_no_error(tmp_path: Path, stuck_at: str) -> None:
    dead = _closed_port()
    config = tmp_path / "config.toml"
    if stuck_at == "token":  # the first connect waits for a token the IdP never gives
        auth = f'token_url = "http://127.0.0.1:{dead}/token"\nclient_id = "svc"\nclient_secret_env = "S14"\n'
        waited_for = "auth.token_failing_retrying"
    else:  # a static token: the first connect retries against a hub that refuses connections
        auth = 'grant = "static"\nstatic_token_env = "S14"\n'
        waited_for = "signalr.connect_failed"
    config.write_text(
        f'[auth]\n{auth}[hub]\nurl = "http://127.0.0.1:{dead}/hub"\n'
        '[logging]\nformat = "json"\nlevel = "DEBUG"\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer",
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "S14": "secret-value-14"},
    )
    assert proc.stdout is not None
    lines: list[dict[str, object]] = []
    try:
        async with asyncio.timeout(30):
            while True:  # wait until the daemon is visibly retrying its first connect
                raw = await proc.stdout.readline()
                assert raw, f"daemon exited early: {lines}"
                if raw.startswith(b"{"):
                    lines.append(json.loads(raw))
                    if lines[-1]["event"] == waited_for:
                        break
            proc.send_signal(signal.SIGTERM)
            rest = await proc.stdout.read()
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines += [json.loads(line) for line in rest.splitlines() if line.startswith(b"{")]
    errors = [r for r in lines if r["level"] == "error"]
    assert errors == [], errors
    assert code == 0
    assert any(r["event"] == "daemon.stopped" for r in lines)


def test_describe_error_never_empty() -> None:
    from consumer.errors import describe_error

    # httpx.ReadError() after a TCP reset carries no text: that printed as "ReadError: ".
    bare = httpx.ReadError("")
    assert describe_error(bare) == "ReadError: connection reset or closed while reading the response"
    # The cause's text is used when there is one.
    try:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError as cause:
            raise httpx.ReadError("") from cause
    except httpx.ReadError as err:
        chained = err
    assert describe_error(chained) == "ReadError: [Errno 104] Connection reset by peer"
    assert describe_error(RuntimeError()) == "RuntimeError"
    assert (
        describe_error(ValueError("bad"), "fetching the snapshot")
        == "ValueError: bad (while fetching the snapshot)"
    )
    assert describe_error(httpx.ConnectTimeout("")) == "ConnectTimeout: timed out connecting"


def test_logged_exception_values_are_never_empty() -> None:
    event = redact_processor(None, "error", {"event": "snapshot failed", "error": httpx.ReadError("")})
    assert event["error"] == "ReadError: connection reset or closed while reading the response"


async def test_snapshot_failure_after_reset_has_a_description() -> None:
    """The RedMist profile's snapshot log line after a TCP reset (the issue's `ReadError: `)."""
    from consumer.errors import describe_error  # the one description helper (the daemon's copy is gone)

    text = describe_error(httpx.ReadError(""))
    assert text == "ReadError: connection reset or closed while reading the response"


async def test_snapshot_after_tcp_reset_logs_a_non_empty_error() -> None:
    """The issue's case: a snapshot request ended by a TCP reset logged `error="ReadError: "`."""
    import logging

    import structlog

    from consumer.config import RedMistConfig
    from consumer.logs import setup_logging
    from consumer.redmist.profile import RedMistProfile
    from consumer.relay.relay import Relay

    answers: list[Exception | None] = [httpx.ReadError(""), None]

    def handler(request: httpx.Request) -> httpx.Response:
        fault = answers.pop(0)
        if fault is not None:
            raise fault
        return httpx.Response(200, json={"eventId": 1, "sessionId": 1, "carPositions": []})

    stream = io.StringIO()
    setup_logging("INFO", fmt="json", stream=stream)
    now = [0.0]

    async def fake_sleep(seconds: float) -> None:
        now[0] += seconds
        await asyncio.sleep(0)

    relay = Relay([], hub="h", profile=PAYLOADS)
    try:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            profile = RedMistProfile(
                RedMistConfig(events=[1]),
                relay,
                http,
                hub_url="http://h/s/e",
                clock=lambda: now[0],
                sleep=fake_sleep,
            )
            task = asyncio.create_task(profile.run())
            try:
                profile.request_snapshots()
                async with asyncio.timeout(5):
                    await profile.wait_idle()
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    finally:
        root = logging.getLogger()
        for handler_ in list(root.handlers):
            if getattr(handler_, "_event_consumer", False):
                root.removeHandler(handler_)
        structlog.reset_defaults()
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    failed = [r for r in records if r.get("event") == "redmist.snapshot_failed"]
    assert len(failed) == 1
    assert failed[0]["error"] == "ReadError: connection reset or closed while reading the response"
