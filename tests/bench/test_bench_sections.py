"""The issue-7 sections after throughput run end to end in their tiny (smoke) form: latency, reconnect
gap, token requests per hour, memory, scale. Only that the code paths work and their numbers are
consistent is asserted here; the figures themselves belong to `bench/run.py`, not to timed tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.node


def run_sections(tmp_path: Path, sections: str) -> dict[str, Any]:
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, "bench/run.py", "--smoke", "--only", sections, "--no-readme", "--out", str(out)],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:])
    doc: dict[str, Any] = json.loads(out.read_text())
    assert doc["mode"] == "smoke"
    assert set(doc["section_seconds"]) == set(sections.split(","))
    return doc


def renderer() -> Any:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import render
    finally:
        sys.path.pop(0)
    return render


def test_latency_memory_scale_smoke(tmp_path: Path) -> None:
    doc = run_sections(tmp_path, "latency,memory,scale")

    lat = doc["latency"]
    assert {(c["client"], c["rate"]) for c in lat["cells"]} == {
        (client, rate)
        for client in ("event-consumer", "event-consumer-fsync", "node-signalr")
        for rate in (1000, 5000)
    }
    for cell in lat["cells"]:
        assert "error" not in cell, cell.get("error")
        (run,) = cell["raw"]
        write, lower = run["write"], run["secondary"]
        expected = int(cell["rate"] * lat["seconds_per_run"]) - int(cell["rate"] * lat["warmup_seconds"])
        assert write["n"] == expected  # one sample per message after the warm-up
        assert 0 < write["p50"] <= write["p99"] <= write["p99_9"] <= write["max"]
        # the lower bound (received / handed to the stream) never exceeds the write time's median
        assert lower is not None and lower["p50"] <= write["p50"]
        assert run["hub_send_rate"] > 0
    assert set(lat["target_p99_le_node"]) == {"1000", "5000", "1000-fsync", "5000-fsync"}

    mem = doc["memory"]
    assert "error" not in mem, mem.get("error")
    rss = mem["rss_kib"]
    for cp in mem["checkpoints"]:
        assert rss[str(cp)] > 10_000  # a Python daemon is well above 10 MiB
    assert mem["peak_rss_kib"] >= max(rss[str(cp)] for cp in mem["checkpoints"])
    counts = [n for n, _ in mem["series"]]
    assert counts == sorted(counts) and counts[-1] >= max(mem["checkpoints"])

    sc = doc["scale"]
    count = sc["messages_per_run"]
    assert {(c["mode"], c["n"]) for c in sc["cells"]} == {
        ("events", 1),
        ("events", 10),
        ("hubs", 1),
        ("hubs", 4),
    }
    for cell in sc["cells"]:
        assert "error" not in cell, cell.get("error")
        (run,) = cell["raw"]
        assert run["msgs_per_s"] > 0 and run["cpu_s_per_100k"] > 0
        daemons = cell["n"] if cell["mode"] == "hubs" else 1
        assert run["daemons"] == daemons
        # every message written once, plus one `connected` marker per daemon
        assert run["written"] == count + daemons

    render = renderer()
    table = render.render_latency(doc, "smoke.json")
    assert "| **event-consumer** -> file sink, fsync never | 5,000 |" in table
    assert "| **event-consumer** -> file sink, default fsync (1 s interval) | 1,000 |" in table
    assert f"| {max(mem['checkpoints']):,} messages |" in render.render_memory(doc, "smoke.json")
    assert "| 4 hubs (4 connections) |" in render.render_scale(doc, "smoke.json")


def test_reconnect_and_tokens_smoke(tmp_path: Path) -> None:
    doc = run_sections(tmp_path, "reconnect,tokens")

    rec = doc["reconnect"]
    (rnd,) = rec["rounds"]
    assert rnd["down_s"] >= rec["down_seconds"]  # the hub really was away that long
    assert 0 < rnd["gap_s"] < 60
    # the gap is the two parts: back -> reconnected marker -> first relayed invocation
    assert rnd["to_reconnected_s"] + rnd["reconnected_to_first_s"] == pytest.approx(rnd["gap_s"], abs=1e-6)

    rows = {r["hub_closes_at_expiry"]: r for r in doc["tokens"]["rows"]}
    assert set(rows) == {True, False}
    closing = rows[True]
    # a hub that closes at expiry makes the daemon reconnect with a new token every lifetime
    assert closing["token_requests"] >= 1 and closing["reconnects"] >= 1
    assert rows[False]["reconnects"] == 0
    for row in rows.values():
        assert row["requests_per_hour_300s"] == pytest.approx(row["requests_per_lifetime"] * 12)

    render = renderer()
    assert "(the gap) |" in render.render_reconnect(doc, "smoke.json")
    assert "| closes at token expiry |" in render.render_tokens(doc, "smoke.json")
