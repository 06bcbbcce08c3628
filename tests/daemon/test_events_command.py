from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from consumer.commands.events import fetch_live_events, table
from consumer.sim.simulator import SimConfig, Simulator

from .helpers import sim_settings


async def test_load_live_events_from_the_simulator() -> None:
    async with Simulator(SimConfig(events=2, hub=sim_settings())) as sim:
        body = await fetch_live_events(sim.base_url + "/status")
    events = json.loads(body)
    assert sorted(e["eid"] for e in events) == sorted(sim.event_ids)
    text = table(events)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["id", "date", "live"]
    assert len(lines) == 1 + len(events)
    assert all(str(e["eid"]) in text and e["en"] in text for e in events)


def test_events_cli_prints_json_when_not_a_tty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    from consumer.cli import main

    ready = threading.Event()
    stop = threading.Event()
    info: dict[str, object] = {}

    def serve() -> None:
        async def run() -> None:
            async with Simulator(SimConfig(events=1, hub=sim_settings())) as sim:
                info["hub_url"] = sim.hub_url
                info["ids"] = sim.event_ids
                ready.set()
                while not stop.is_set():
                    await asyncio.sleep(0.02)

        asyncio.run(run())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        assert ready.wait(20)
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[hub]\nurl = "{info["hub_url"]}"\n')
        assert main(["events", "--config", str(cfg)]) == 0
    finally:
        stop.set()
        t.join(20)
    out = capsys.readouterr().out.strip().splitlines()  # the simulator thread may log to stdout too
    assert [e["eid"] for e in json.loads(out[-1])] == info["ids"]


def test_events_cli_unreachable_exit_69(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from consumer.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text('[hub]\nurl = "http://127.0.0.1:1/status/event-status"\n')
    assert main(["events", "--config", str(cfg), "--timeout", "2"]) == 69
    assert capsys.readouterr().err.count("\n") == 1
