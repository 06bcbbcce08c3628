"""Issue 10 item 8: `check-config --online` against the simulator (its IdP, hub and REST API)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from consumer.commands.check_config import preflight
from consumer.config import load_config
from consumer.errors import EXIT_CREDENTIALS, EXIT_OK, EXIT_UNAVAILABLE
from consumer.sim.simulator import Simulator

from .conftest import ACCESS_CODE, PRIVATE_EVENT


def write_config(
    sim: Simulator,
    tmp_path: Path,
    *,
    secret: str,
    events: list[int],
    code: str = ACCESS_CODE,
    hub_extra: str = "",
) -> Path:
    creds = tmp_path / "creds"
    creds.mkdir(exist_ok=True)
    for name, value in (("client-secret", secret), ("code", code)):
        (creds / name).write_text(value + "\n")
        (creds / name).chmod(0o600)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[auth]\ntoken_url = "{sim.token_url}"\nclient_id = "{sim.client_id}"\n'
        'client_secret_file = "client-secret"\n'
        f'[hub]\nurl = "{sim.hub_url}"\n{hub_extra}'
        f"[redmist]\nevents = {events}\n"
        f'[redmist.access_codes_file]\n"{PRIVATE_EVENT}" = "code"\n'
        f'[[sinks]]\ntype = "file"\npath = "{tmp_path / "events.jsonl"}"\n'
    )
    config.chmod(0o600)
    return config


def env_for(tmp_path: Path) -> dict[str, str]:
    return {"CREDENTIALS_DIRECTORY": str(tmp_path / "creds")}


@pytest.mark.parametrize(
    ("hub_extra", "steps"),
    [
        ("", "WebSocket + handshake (json)"),
        (
            'skip_negotiation = false\nprotocol = "messagepack"\n',
            "negotiate + WebSocket + handshake (messagepack)",
        ),
    ],
)
async def test_online_preflight_passes(sim: Simulator, tmp_path: Path, hub_extra: str, steps: str) -> None:
    public = next(e for e in sim.event_ids if e != PRIVATE_EVENT)
    config = write_config(
        sim, tmp_path, secret=sim.client_secret, events=[public, PRIVATE_EVENT], hub_extra=hub_extra
    )
    cfg = load_config(config, env={})
    report = await preflight(cfg, online=True, step_timeout=10, env=env_for(tmp_path))
    text = report.render()
    assert report.exit_code == EXIT_OK, text
    by_check = {(line.check, line.status) for line in report.lines}
    for check in ("schema", "urls", "secrets", "sinks", "token", "hub"):
        assert (check, "ok") in by_check, text
    snapshots = [line for line in report.lines if line.check == "snapshot"]
    assert [s.status for s in snapshots] == ["ok", "ok"], text
    assert f"event {PRIVATE_EVENT}: GetCurrentSessionStateJson HTTP 200" in text
    assert f"{sim.hub_url}: {steps}" in text
    assert sim.client_secret not in text and ACCESS_CODE not in text
    assert len(text.splitlines()) <= 24  # one screen
    assert not (tmp_path / "events.jsonl").exists()  # a preflight writes nothing


async def test_online_wrong_secret_exits_77(sim: Simulator, tmp_path: Path) -> None:
    config = write_config(sim, tmp_path, secret="wrong-secret", events=[sim.event_ids[0]])
    report = await preflight(load_config(config, env={}), online=True, step_timeout=10, env=env_for(tmp_path))
    assert report.exit_code == EXIT_CREDENTIALS, report.render()
    assert "wrong-secret" not in report.render()
    assert any(line.check == "token" and line.status == "FAIL" for line in report.lines)


async def test_online_wrong_access_code_exits_77(sim: Simulator, tmp_path: Path) -> None:
    config = write_config(sim, tmp_path, secret=sim.client_secret, events=[PRIVATE_EVENT], code="bad-code")
    report = await preflight(load_config(config, env={}), online=True, step_timeout=10, env=env_for(tmp_path))
    text = report.render()
    assert report.exit_code == EXIT_CREDENTIALS, text
    assert "bad-code" not in text
    assert [line.status for line in report.lines if line.check == "snapshot"] == ["FAIL"], text


async def test_online_hub_refusing_upgrades_exits_69(sim: Simulator, tmp_path: Path) -> None:
    config = write_config(sim, tmp_path, secret=sim.client_secret, events=[sim.event_ids[0]])
    sim.faults.refuse_upgrades(503, seconds=30)
    report = await preflight(load_config(config, env={}), online=True, step_timeout=5, env=env_for(tmp_path))
    text = report.render()
    assert report.exit_code == EXIT_UNAVAILABLE, text
    assert [line.status for line in report.lines if line.check == "hub"] == ["FAIL"], text
    assert "not attempted" in text  # no snapshot without a hub


async def test_cli_online_report_and_exit_code(sim: Simulator, tmp_path: Path) -> None:
    config = write_config(sim, tmp_path, secret=sim.client_secret, events=[sim.event_ids[0]])
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer",
        "check-config",
        "--config",
        str(config),
        "--online",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env_for(tmp_path)},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 0, (text, err.decode())
    assert text.startswith(f"check-config {config}\n") and text.rstrip().endswith("result: ok")
    assert "  ok    token" in text and "  ok    hub" in text and "  ok    snapshot" in text
