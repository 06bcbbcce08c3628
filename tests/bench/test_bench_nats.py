"""bench/nats_sink.py runs end to end (tiny form): nats-server, both cells, results file, table.
Speed is not asserted (figures belong to bench/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_nats_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "nats.json"
    proc = subprocess.run(
        [
            *(sys.executable, "bench/nats_sink.py", "--messages", "500", "--runs", "1", "--out", str(out)),
            *("--baseline", "HEAD"),  # a cell with the committed sink, loaded from git beside this one
        ],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert set(doc["cells"]) == {"file", "file + nats", "file + nats @HEAD"} and doc["messages"] == 500
    for cell in doc["cells"].values():
        assert cell["msgs_per_s"] > 0 and cell["cpu_per_100k"] > 0
    assert "| file + nats |" in proc.stdout


def test_nats_ceiling_bench_smoke(tmp_path: Path) -> None:
    """bench/nats_ceiling.py (nats-server alone, minimal publisher): every variant stores every line
    (the script checks the stream's count after each run), results file and table."""
    out = tmp_path / "ceiling.json"
    proc = subprocess.run(
        [sys.executable, "bench/nats_ceiling.py", "--messages", "300", "--runs", "1", "--out", str(out)],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert set(doc["variants"]) == {
        *("full", "msgid", "none", "full-window10s", "full-memory", "full-async", "full-gogc400")
    }
    for variant in doc["variants"].values():  # 300 lines may take less than one clock tick of CPU
        assert variant["msgs_per_s"] > 0 and variant["server_cpu_per_100k"] >= 0
    assert "| full |" in proc.stdout
