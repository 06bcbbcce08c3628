"""Shared runner for the atheris targets in this directory (plain scripts, not collected by pytest).

`python tests/chaos/fuzz/fuzz_X.py [libFuzzer flags...]` writes the target's seed inputs into a fresh
temporary corpus directory, re-runs itself on that corpus as a child process (libFuzzer ends the process
with exit() when the runs are done, so the parent is what removes the directory) and returns the child's
exit code: 0 when every run passed; non-zero on a crash, with the crashing input written by libFuzzer
(`crash-<sha1>` in the working directory, or under `-artifact_prefix=`).
Passing a corpus directory yourself skips the seeding and runs in-process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
_CHILD = "EVENT_CONSUMER_FUZZ_CHILD"


def hexbytes(text: str) -> bytes:
    """`"0x96 0x01"` (the spec vectors' byte lists) -> b"\\x96\\x01"."""
    return bytes(int(tok, 16) for tok in text.split())


def run(target: Callable[[bytes], None], seeds: Callable[[], Mapping[str, bytes]]) -> int:
    import atheris

    args = sys.argv[1:]
    if os.environ.get(_CHILD) or any(not a.startswith("-") for a in args):
        atheris.Setup([sys.argv[0], *args], target)
        atheris.Fuzz()  # does not return when the runs complete; a crash exits non-zero
        return 0
    corpus = Path(tempfile.mkdtemp(prefix="event-consumer-fuzz-"))
    try:
        for name, data in seeds().items():
            (corpus / name).write_bytes(data)
        env = {**os.environ, _CHILD: "1"}
        rc = subprocess.run(
            [sys.executable, sys.argv[0], *args, str(corpus)], env=env, check=False
        ).returncode
    finally:
        shutil.rmtree(corpus, ignore_errors=True)
    if rc != 0:
        print(
            f"FUZZ FAILURE: {Path(sys.argv[0]).name} exited {rc}; the crashing input was written by "
            "libFuzzer (crash-<sha1>, see 'Test unit written to' above)",
            file=sys.stderr,
        )
    return rc
