"""Issue 10 item 10 in the daemon: the client secret and a private event's access code from files in
$CREDENTIALS_DIRECTORY (systemd LoadCredential=), against the simulator."""

from __future__ import annotations

import asyncio
from pathlib import Path

from consumer.config import parse_config
from consumer.daemon import Daemon
from consumer.sim.simulator import SimConfig, Simulator

from .helpers import records, sim_settings, until

PRIVATE = 390
CODE = "private-code-390"


async def test_daemon_reads_secret_and_access_code_files(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    creds = tmp_path / "creds"
    creds.mkdir()
    async with Simulator(SimConfig(hub=sim_settings(), private_events={PRIVATE: CODE})) as sim:
        for name, value in (("client_secret", sim.client_secret), ("code-390", CODE)):
            (creds / name).write_text(value + "\n")
            (creds / name).chmod(0o600)
        cfg = parse_config(
            {
                "auth": {
                    "token_url": sim.token_url,
                    "client_id": sim.client_id,
                    "client_secret_file": "client_secret",
                },
                "hub": {"url": sim.hub_url, "handshake_timeout_seconds": 2.0},
                "redmist": {
                    "events": [PRIVATE],
                    "access_codes_file": {str(PRIVATE): "code-390"},
                    "snapshot_min_interval_seconds": 0.02,
                },
                "sinks": [{"type": "file", "path": str(out), "fsync": "never"}],
                "service": {"shutdown_grace_seconds": 5.0},
            },
            source=str(tmp_path / "config.toml"),
        )
        daemon = Daemon(cfg, env={"CREDENTIALS_DIRECTORY": str(creds)})
        task = asyncio.create_task(daemon.run())
        try:
            await until(
                lambda: task.done() or any(r["kind"] == "snapshot" for r in records(out)),
                what="private snapshot",
            )
            assert not task.done(), task.exception() if task.done() else None
        finally:
            daemon.stop()
            code = await asyncio.wait_for(task, 10)
    assert code == 0
    snaps = [r for r in records(out) if r["kind"] == "snapshot"]
    assert [r["event_id"] for r in snaps] == [PRIVATE]
    assert CODE not in out.read_text()
