"""Chaos suite options. Quick form (default, inside `make test`); `--chaos-long` for `make chaos`.

`--chaos-results` (implied by `--chaos-long`) writes the summary table to
bench/results/chaos-<date>[-quick].json and re-renders the README block from it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUMMARY: list[dict[str, Any]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaos")
    group.addoption("--chaos-long", action="store_true", help="run the long chaos forms (make chaos)")
    group.addoption(
        "--chaos-results", action="store_true", help="write bench/results/chaos-*.json and the README table"
    )


@pytest.fixture(scope="session")
def chaos_long(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--chaos-long"))


@pytest.fixture(scope="session")
def chaos_summary(request: pytest.FixtureRequest) -> Iterator[list[dict[str, Any]]]:
    yield SUMMARY
    config = request.config
    long = bool(config.getoption("--chaos-long"))
    if not (long or config.getoption("--chaos-results")) or not SUMMARY:
        return
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    doc = {
        "kind": "chaos",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": "long" if long else "quick",
        "machine": {"cores": os.cpu_count()},
        "scenarios": sorted(SUMMARY, key=lambda r: str(r["scenario"])),
    }
    out = ROOT / "bench" / "results" / f"chaos-{today}{'' if long else '-quick'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "render.py"), "--readme", str(ROOT / "README.md")],
        check=False,
        cwd=ROOT,
    )
