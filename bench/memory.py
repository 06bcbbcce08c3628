"""Memory: RSS of the real daemon process after N relayed messages (flat is the goal).

The daemon is `python -m consumer run --config FILE` (its own process, as in production) against the
bench hub, JSON protocol, `[[hub.on_connect]] BenchStream(TOTAL, 0, false)` (as fast as it reads), one
file sink at /dev/null (the sink code path runs in full; nothing accumulates on disk), `[http]` on a
random loopback port. Every SAMPLE_S seconds this harness reads the daemon's relayed count from its own
`/metrics` (`event_consumer_messages_relayed_total{target="ReceiveCarPatches"}`) and VmRSS / VmHWM
from /proc/PID/status. Reported: RSS at the first sample with >= 1,000 messages (warm: connected,
first batches through), RSS at the first sample at or past each checkpoint, the peak (VmHWM) at the
end, and the whole (messages, RSS) series. Checkpoints: quick 20k / 100k, full 100k / 1M.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from harness import ROOT, Hub

SAMPLE_S = 0.25
WARM = 1_000
_RELAYED = re.compile(r'^event_consumer_messages_relayed_total\{target="ReceiveCarPatches"\} (\S+)$', re.M)


def daemon_toml(url: str, total: int) -> str:
    q = json.dumps
    return (
        "\n".join(
            [
                "[auth]",
                'grant = "none"',
                "[hub]",
                f"url = {q(url)}",
                'name = "bench"',
                'protocol = "json"',
                "skip_negotiation = true",
                "allow_insecure_http = true",
                f"max_message_bytes = {16 * 1024 * 1024}",
                "[[hub.on_connect]]",
                'method = "BenchStream"',
                f"arguments = [{total}, 0, false]",
                "[[sinks]]",
                'type = "file"',
                'path = "/dev/null"',
                'fsync = "never"',
                "[http]",
                "enabled = true",
                "port = 0",
                "[logging]",
                'level = "INFO"',
                'format = "json"',
            ]
        )
        + "\n"
    )


def proc_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def metrics_url(log_path: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> str:
    """The daemon logs its observability URL at start (port 0 -> a random port)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited {proc.returncode}: {log_path.read_text()[-500:]}")
        for line in log_path.read_text(errors="replace").splitlines():
            if "daemon.observability_listening" in line:
                return str(json.loads(line)["url"]) + "/metrics"
        time.sleep(0.05)  # a file another process writes: nothing to await
    raise TimeoutError("the daemon did not report its metrics URL")


def relayed(client: httpx.Client, url: str) -> int:
    m = _RELAYED.search(client.get(url).text)
    return int(float(m.group(1))) if m else 0


def run(hub: Hub, *, checkpoints: tuple[int, ...], tmp: Path, log: Any = print) -> dict[str, Any]:
    total = max(checkpoints)
    cfg = tmp / "memory.toml"
    cfg.write_text(daemon_toml(hub.url, total))
    log_path = tmp / "memory.log"
    hub.drain()
    series: list[tuple[int, int]] = []
    at: dict[str, int] = {}
    timeout = 60 + total / 2_000  # >= 500 msgs/s or it is reported as failed
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run", "--config", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            cwd=ROOT,
            env=os.environ.copy(),
        )
    error = None
    t0 = time.monotonic()
    try:
        url = metrics_url(log_path, proc)
        pending = sorted(checkpoints)
        with httpx.Client(timeout=5) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the daemon exited {proc.returncode}")
                n = relayed(client, url)
                rss = proc_kib(proc.pid)["VmRSS"]
                series.append((n, rss))
                if n >= WARM and "warm" not in at:
                    at["warm"] = rss
                    at["warm_messages"] = n
                while pending and n >= pending[0]:
                    at[str(pending.pop(0))] = rss
                if not pending:
                    break
                if time.monotonic() - t0 > timeout:
                    raise TimeoutError(f"{n:,} of {total:,} messages after {timeout:.0f} s")
                time.sleep(SAMPLE_S)
        seconds = time.monotonic() - t0
        hwm = proc_kib(proc.pid)["VmHWM"]
    except (RuntimeError, TimeoutError, httpx.HTTPError) as err:
        error = f"{type(err).__name__}: {err}"
        seconds, hwm = time.monotonic() - t0, None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    result: dict[str, Any] = {
        "checkpoints": list(checkpoints),
        "rss_kib": at,
        "peak_rss_kib": hwm,
        "seconds": seconds,
        "series": series,
        "method": (
            "Real daemon process (python -m consumer run), JSON, file sink at /dev/null, bench hub as fast "
            f"as it reads; every {SAMPLE_S} s: relayed count from the daemon's /metrics, VmRSS from "
            "/proc/PID/status; RSS at the first sample at or past each count; peak = VmHWM."
        ),
    }
    if error:
        result["error"] = error
        log(f"  memory: FAILED {error}")
    else:
        growth = at[str(max(checkpoints))] - at["warm"]
        result["growth_kib_warm_to_last"] = growth
        log(
            "  memory: "
            + ", ".join(f"{k}: {v / 1024:.1f} MiB" for k, v in at.items() if k != "warm_messages")
            + f"; peak {hwm / 1024 if hwm else 0:.1f} MiB; {seconds:.1f} s"
        )
    return result
