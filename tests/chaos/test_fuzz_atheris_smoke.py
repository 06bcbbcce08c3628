"""Smoke test of the atheris targets in tests/chaos/fuzz/ (the 1M-run form is `make chaos`).

Each target runs 2,000 libFuzzer executions as a subprocess, exactly as `make chaos` invokes it (seed
corpus written by the target itself); it must exit 0 and report the runs done. A target that lets an
unexpected exception escape exits non-zero, so a regression in a reader or the config loader, or a
broken target, fails here in `make test`.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.chaos

FUZZ_DIR = Path(__file__).resolve().parent / "fuzz"
RUNS = 2000

if importlib.util.find_spec("atheris") is None:
    pytest.skip(
        "atheris is not installed (pip install 'atheris>=2.3', part of the test and chaos extras)",
        allow_module_level=True,
    )


@pytest.mark.parametrize("target", ["fuzz_protocol.py", "fuzz_config.py"])
def test_atheris_target_runs_clean(target: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(FUZZ_DIR / target), f"-runs={RUNS}", f"-artifact_prefix={tmp_path}/"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        cwd=tmp_path,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert f"Done {RUNS} runs" in output, output[-4000:]
    assert "files found in" in output, "the seed corpus was not loaded:\n" + output[-4000:]
    assert not list(tmp_path.glob("crash-*")), output[-4000:]
