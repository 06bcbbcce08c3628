"""The benchmark harness runs end to end (tiny form): hub process, clients as processes, results file,
rendered table. Speed is not asserted here (figures belong to bench/, not to timed unit tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.node


def test_quick_bench_smoke_writes_results_and_renders(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, "bench/run.py", "--smoke", "--only", "throughput", "--no-readme", "--out", str(out)],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["kind"] == "throughput" and doc["mode"] == "smoke"
    assert doc["machine"]["cores"] >= 1
    assert doc["versions"]["@microsoft/signalr"] != "not installed"
    cells = {c["client"]: c for c in doc["cells"]}
    assert set(cells) == {"null", "raw", "event-consumer", "node-signalr"}
    for name, cell in cells.items():
        assert "error" not in cell, (name, cell.get("error"))
        assert cell["runs"] == 1
        (run,) = cell["raw"]
        assert run["msgs_per_s"] > 0 and run["cpu_s_per_100k"] > 0
        assert run["hub_msgs_per_s"] > 0  # the hub reported its own send timing for this stream
        if name in ("raw", "node-signalr"):
            assert run["lines_in_file"] == doc["messages_per_run"]
        if name == "event-consumer":
            # every invocation relayed and written after the daemon's `connected` marker line (the
            # file may also end with the `closed` marker written at shutdown)
            assert run["written"] == doc["messages_per_run"] + 1
            assert run["lines_in_file"] in (run["written"], run["written"] + 1)
    assert set(doc["ratios"]["json"]) >= {"throughput_vs_raw", "throughput_vs_node-signalr"}

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import render
    finally:
        sys.path.pop(0)
    table = render.render_throughput(doc, "smoke.json")
    assert "| **event-consumer** -> file sink | json |" in table
    assert "throughput >= 0.9x the bare recv loop" in table
