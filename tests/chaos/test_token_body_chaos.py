"""Chaos acceptance (issue 10): a 300 MB token response is rejected without reading it whole.

Two real processes: the hostile token endpoint (tests/auth/idp/hostile_idp.py, streaming 300 MB as
fast as the client takes them) and `event-consumer token`. Asserted: the server could hand over at
most the 1 MiB limit plus what the loopback socket buffers hold, the client's peak RSS stays far below
the body size, it gives up at its --timeout with exit 69 and an error naming client id and token URL
(never the secret).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.chaos

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = ROOT / "tests" / "auth" / "idp" / "hostile_idp.py"
MiB = 1024 * 1024
BODY = 300 * 1000 * 1000
SECRET = "chaos-hostile-client-secret"
TIMEOUT = 4.0

# The child's own peak RSS: VmHWM of its address space, written at exit. Not ru_maxrss from wait4: on
# Linux that carries the parent's RSS at fork time over exec (a full pytest run is ~300 MiB itself).
RUN_AND_REPORT_HWM = """
import atexit, runpy, sys
hwm_path = sys.argv.pop(1)
def report():
    with open("/proc/self/status") as f:
        hwm = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    with open(hwm_path, "w") as out:
        out.write(hwm)
atexit.register(report)
runpy.run_module("consumer", run_name="__main__", alter_sys=True)
"""


class Hostile:
    def __init__(self, mode: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HOSTILE), json.dumps({"mode": mode, "bytes": BODY})],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = json.loads(self.proc.stdout.readline())["ready"]
        self.conns: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.conns.append(json.loads(line)["token"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._thread.join(5)


@pytest.mark.parametrize("mode", ["chunked", "declared"])
def test_300mb_token_response_rejected_without_reading_it(tmp_path: Path, mode: str) -> None:
    server = Hostile(mode)
    try:
        config = tmp_path / "config.toml"
        config.write_text(
            f'[auth]\ntoken_url = "{server.url}/token"\nclient_id = "svc-chaos"\n'
            'client_secret_env = "CHAOS_SECRET"\n'
        )
        env = {**os.environ, "CHAOS_SECRET": SECRET}
        t0 = time.monotonic()
        with open(tmp_path / "out", "wb") as out_f, open(tmp_path / "err", "wb") as err_f:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    RUN_AND_REPORT_HWM,
                    str(tmp_path / "hwm"),
                    "token",
                    "--config",
                    str(config),
                    "--timeout",
                    str(TIMEOUT),
                ],
                stdout=out_f,
                stderr=err_f,
                env=env,
                cwd=ROOT,
            )
            killer = threading.Timer(60, proc.kill)
            killer.start()
            code = proc.wait()
            killer.cancel()
        elapsed = time.monotonic() - t0
        peak_mib = int((tmp_path / "hwm").read_text()) / 1024  # VmHWM is in KiB
    finally:
        server.stop()
    stderr = (tmp_path / "err").read_text()
    stdout = (tmp_path / "out").read_text()
    sent = max(c["sent"] for c in server.conns) if server.conns else None
    print(f"{mode}: exit {code}, {len(server.conns)} requests, max sent {sent}, peak RSS {peak_mib:.0f} MiB")
    assert code == 69, (code, stderr[-2000:])
    assert "svc-chaos" in stderr and f"{server.url}/token" in stderr
    assert ("exceeded 1048576 bytes" if mode == "chunked" else "declares 300000000 bytes") in stderr
    assert SECRET not in stderr and SECRET not in stdout
    assert server.conns, "the client never connected"
    assert all(c["client_closed"] and c["sent"] < 16 * MiB for c in server.conns), server.conns
    assert peak_mib < 150, f"peak RSS {peak_mib:.0f} MiB for a {BODY} byte body"
    assert elapsed < TIMEOUT + 5, elapsed
