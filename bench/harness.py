"""Shared by the benchmark sections: the hub process, percentiles, medians, a client-process runner.

Every section module (`latency.py`, `reconnect.py`, `memory.py`, `scale.py`) and `run.py` use these.
"""

from __future__ import annotations

import json
import math
import os
import queue
import resource
import statistics
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
BASELINE_CLIENT = "event-consumer-baseline"


def baseline_tree() -> Path | None:
    """`$BENCH_BASELINE` (or sidebyside's `$SIDEBYSIDE_BASELINE`): a source tree of another commit,
    e.g. `git archive <commit> | tar -x -C DIR`. Its `event-consumer-baseline` client runs that tree's
    own bench client with the tree first on sys.path (cwd and PYTHONPATH): a before/after in one run."""
    value = os.environ.get("BENCH_BASELINE") or os.environ.get("SIDEBYSIDE_BASELINE")
    return Path(value).resolve() if value else None


def baseline_label() -> str:
    """The baseline's name in results: `$BENCH_BASELINE_COMMIT`, else the tree's directory name."""
    tree = baseline_tree()
    return os.environ.get("BENCH_BASELINE_COMMIT") or (tree.name if tree else "")


def client_tree(client: str) -> Path:
    """The source tree a client runs from: the baseline's for `event-consumer-baseline`, else ours."""
    if client != BASELINE_CLIENT:
        return ROOT
    tree = baseline_tree()
    if tree is None:
        raise ValueError(f"{BASELINE_CLIENT} needs $BENCH_BASELINE (a source tree of the baseline commit)")
    return tree


def tree_env(tree: Path) -> dict[str, str]:
    """The environment of a client process running from `tree` (its modules before the installed ones)."""
    env = {**os.environ}
    if tree != ROOT:
        env["PYTHONPATH"] = str(tree)
    return env


class Hub:
    """The hub process (bench/hub.py, or `script`: bench/wirehub.py); its stdout lines (ready line, one
    per finished stream) arrive on a queue. `hubs` > 1 serves that many independent HubServers (`urls`)."""

    def __init__(self, hubs: int = 1, script: str = "hub.py") -> None:
        args = ["--hubs", str(hubs)] if script == "hub.py" else []
        self.proc = subprocess.Popen(
            [PY, str(HERE / script), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        ready = self.next(60)
        if ready is None or "url" not in ready:
            self.close()
            raise RuntimeError("bench hub did not start")
        self.url: str = ready["url"]
        self.urls: list[str] = ready.get("urls", [self.url])
        self.pool: dict[str, Any] = ready["pool"]

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.strip()
            if line.startswith("{"):
                self.lines.put(json.loads(line))

    def next(self, timeout: float) -> dict[str, Any] | None:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def drain(self) -> list[dict[str, Any]]:
        out = []
        while True:
            try:
                out.append(self.lines.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


TOLERANCE = 0.05  # issue 11: each figure within 5 % of the baseline, or better


def compare(ours: list[float], base: list[float], *, lower_is_better: bool) -> dict[str, Any] | None:
    """One figure against the baseline, from the per-run values of both clients in run order (the
    runs alternate, so run i of each saw about the same machine). `change` is the median of the
    paired changes ours[i] / base[i] - 1 (negative is less; the pairs cancel the slow swings of a
    shared machine that medians of each side keep), with their min and max as `change_range`; when
    the runs do not pair up (a failed run), the change of the two medians. Verdict: "better",
    "within 5 %" (worse by at most TOLERANCE) or "worse"."""
    if not ours or not base:
        return None
    if len(ours) == len(base) and all(base):
        changes = sorted(o / b - 1.0 for o, b in zip(ours, base, strict=True))
        change = statistics.median(changes)
        change_range = [changes[0], changes[-1]]
    else:
        change = statistics.median(ours) / statistics.median(base) - 1.0
        change_range = None
    worse_by = change if lower_is_better else -change
    verdict = "better" if worse_by < 0 else "within 5 %" if worse_by <= TOLERANCE else "worse"
    return {
        "ours": summarise(ours),
        "baseline": summarise(base),
        "change": change,
        "change_range": change_range,
        "paired_runs": len(ours) if change_range else 0,
        "verdict": verdict,
    }


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def summarise(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending list: the smallest value with at least
    q% of the values at or below it."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def run_client(cmd: list[str], result_file: Path, timeout: float, tree: Path = ROOT) -> dict[str, Any]:
    """Run one client process (from source `tree`); its last JSON result line (written to
    $BENCH_RESULT) or {"error"}."""
    result_file.unlink(missing_ok=True)
    try:
        proc = subprocess.run(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
            cwd=tree,
            check=False,
            env={**tree_env(tree), "BENCH_RESULT": str(result_file)},
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        tail = (err.strip().splitlines() or ["no output"])[-1]
        return {"error": f"timed out after {timeout:.0f} s; stderr: {tail[:300]}"}
    text = result_file.read_text() if result_file.exists() else ""
    lines = [x for x in text.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:300]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result
