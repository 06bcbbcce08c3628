"""Shared test helpers. Area-specific fixtures live in tests/<area>/conftest.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "node_modules"
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def node() -> str:
    """Path to node; the npm peers are installed by `make test` (npm ci)."""
    exe = shutil.which("node")
    if exe is None or not (NODE_MODULES / "@microsoft" / "signalr").is_dir():
        pytest.fail("node and the npm test peers are required: run `make test` (it runs npm ci)")
    return exe
