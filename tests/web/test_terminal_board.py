"""`event-consumer demo` under a pseudo-terminal: the live board redrawn in place, sized to the terminal,
following a resize, serving the page, Ctrl-C exits 0."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import httpx

from consumer.redmist.board_view import render

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
HOME = "\x1b[H"


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def frames(text: str) -> list[list[str]]:
    """Complete frames (each ends where the next starts), as visible lines."""
    parts = text.split(HOME)[1:-1]
    return [ANSI.sub("", p.replace("\r", "")).rstrip("\n").split("\n") for p in parts]


def test_demo_board_under_a_pty(tmp_path: Path) -> None:
    master, slave = os.openpty()
    set_size(slave, 30, 100)
    err_path = tmp_path / "stderr.txt"

    with err_path.open("wb") as err_file:
        proc = subprocess.Popen(
            # setsid -c: a new session whose controlling terminal is the pty, so ^C there is a SIGINT
            ["setsid", "-c", sys.executable, "-m", "consumer", "demo", "--speed", "600"],
            stdin=slave,
            stdout=slave,
            stderr=err_file,
        )
    os.close(slave)
    text = ""

    def read_until(done, deadline: float) -> None:  # type: ignore[no-untyped-def]
        nonlocal text
        while not done(text):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; terminal so far:\n{text[-3000:]}"
            ready, _, _ = select.select([master], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            if not chunk:
                return
            text += chunk.decode("utf-8", "replace")

    def has_cars(f: list[str]) -> bool:
        return sum(bool(re.match(r"^\s+\d+\s", line)) for line in f) >= 5

    try:
        read_until(lambda t: sum(has_cars(f) for f in frames(t)) >= 3, time.monotonic() + 60)
        boards = [f for f in frames(text) if has_cars(f)]
        for f in boards:
            assert len(f) <= 30 and max(len(line) for line in f) <= 100, f
        assert "Ctrl-C to stop" in boards[-1][0]
        assert not any(line.lstrip().startswith("{") for f in boards for line in f)  # no JSON lines
        # the page is served at the printed URL
        url = re.search(r"live page (http://127\.0\.0\.1:\d+/)", err_path.read_text())
        assert url is not None
        page = httpx.get(url.group(1), timeout=10)
        assert page.status_code == 200 and "<title>Live board" in page.text
        # a smaller terminal: the next frames fit it
        seen = len(text)
        set_size(master, 12, 60)

        def fits_small(f: list[str]) -> bool:
            return (
                len(f) <= 12 and max(len(line) for line in f) <= 60 and any(re.search(r"#\d+", x) for x in f)
            )

        read_until(lambda t: any(fits_small(f) for f in frames(t[seen:])), time.monotonic() + 30)
        after = frames(text[seen:])
        # frames drawn after the resize are the small ones (the first may predate the SIGWINCH)
        assert all(fits_small(f) for f in after[after.index(next(f for f in after if fits_small(f))) :])
        # Ctrl-C on the terminal: a clean stop, cursor shown again, exit 0
        os.write(master, b"\x03")
        read_until(lambda _: False, time.monotonic() + 20)  # to EOF
        code = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    err = err_path.read_text()
    assert code == 0, err[-2000:]
    assert text.rstrip().endswith("\x1b[?25h")
    assert "Traceback" not in err


def test_render_fits_and_colours_the_flag() -> None:
    state = {
        "eventName": "A very long event name that does not fit",
        "sessionName": "Race",
        "currentFlag": 2,
        "timeToGo": "01:00:00",
        "runningRaceTime": "00:10:00",
        "carPositions": [
            {"n": str(i), "ovp": 11 - i, "llp": 3, "ltm": "00:01:35.123", "og": "1.2", "bt": "00:01:34.001"}
            for i in range(1, 11)
        ],
    }
    lines = render([("1", state)], width=40, height=8, title="demo", hub="connected")
    assert len(lines) == 8
    assert all(len(ANSI.sub("", line)) <= 40 for line in lines)
    assert "\x1b[43;30m[Yellow]\x1b[0m" in lines[1]
    assert lines[3].split()[:2] == ["1", "#10"] and lines[4].split()[:2] == ["2", "#9"]
    assert "L3 1:35.123" in ANSI.sub("", render([("1", state)], width=120, height=8, title="t", hub="x")[3])


def test_demo_rejects_bad_board_arguments() -> None:
    from consumer.cli import main as cli_main

    assert cli_main(["demo", "--top", "0"]) == 78
    assert cli_main(["demo", "--http-port", "70000"]) == 78
    assert cli_main(["demo", "--http-port", "x"]) == 2
