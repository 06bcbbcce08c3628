"""The live page in headless Chromium (Debian's chromium via npm playwright-core) against the real
daemon process (`event-consumer run`) following the simulator (in this process, so the test can step
the race and read the truth).

Screenshots go to `test-artifacts/` (git-ignored)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from daemon.helpers import sim_settings, until

from consumer.sim.simulator import SimConfig, Simulator

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
EXE = str(Path(sys.executable).with_name("event-consumer"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

pytestmark = pytest.mark.timeout(240)


class Browser:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.n = 0

    async def __call__(self, cmd: str, timeout: float = 30.0, **args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.n += 1
        self.proc.stdin.write((json.dumps({"id": self.n, "cmd": cmd, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        async with asyncio.timeout(timeout + 10):
            line = await self.proc.stdout.readline()
        assert line, "the browser driver exited"
        reply = json.loads(line)
        assert reply["id"] == self.n
        if not reply["ok"]:
            raise AssertionError(f"{cmd}: {reply['error']}")
        return reply["result"]

    async def wait(self, fn: str, arg: Any = None, timeout: float = 10.0) -> Any:
        return await self("wait", timeout=timeout, fn=fn, arg=arg, ms=int(timeout * 1000))


@pytest.fixture
async def browser(node: str) -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is required: `make test` installs Debian's chromium when root")
    proc = await asyncio.create_subprocess_exec(
        node,
        str(Path(__file__).with_name("browser.mjs")),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=str(ROOT),
        env={**os.environ, "CHROMIUM": CHROMIUM},
    )
    try:
        yield Browser(proc)
    finally:
        if proc.stdin is not None:
            proc.stdin.write(b'{"cmd": "quit"}\n')
            with contextlib.suppress(Exception):
                await proc.stdin.drain()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, sim: Simulator, port: int, nats_url: str | None = None) -> Path:
    nats = (
        ""
        if nats_url is None
        else f"""
[nats]
servers = ["{nats_url}"]
board_bucket = "board"
board_max_hz = 10.0
"""
    )
    path.write_text(
        nats
        + f"""
[auth]
grant = "client_credentials"
token_url = "{sim.token_url}"
client_id = "{sim.client_id}"
client_secret_env = "TEST_CLIENT_SECRET"

[hub]
url = "{sim.hub_url}"
keepalive_interval_seconds = 0.3
server_timeout_seconds = 2.0
reconnect_max_delay_seconds = 0.3

[redmist]
events = {json.dumps(sim.event_ids)}
snapshot_min_interval_seconds = 0.02

[[sinks]]
type = "file"
path = "{path.with_suffix(".jsonl")}"
fsync = "never"

[http]
enabled = true
port = {port}

[logging]
level = "WARNING"
format = "json"

[service]
shutdown_grace_seconds = 3.0
"""
    )
    return path


class DaemonProcess:
    command = "run"

    def __init__(self, cfg: Path, sim: Simulator, port: int) -> None:
        self.cfg, self.sim, self.url = cfg, sim, f"http://127.0.0.1:{port}"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            EXE,
            self.command,
            "--config",
            str(self.cfg),
            env={"PATH": os.environ.get("PATH", ""), "TEST_CLIENT_SECRET": self.sim.client_secret},
            stdout=asyncio.subprocess.DEVNULL,
        )

        async def board_ready() -> bool:
            try:
                async with httpx.AsyncClient(base_url=self.url) as http:
                    events = (await http.get("/v1/events")).json()["events"]
                return bool(events) and all(e["cars"] > 0 for e in events)
            except httpx.HTTPError:
                return False

        await until(board_ready, timeout=60, what="the daemon's board")

    async def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(self.proc.wait(), 15) == 0


class BoardProcess(DaemonProcess):
    """`event-consumer board`: the board served from the NATS KV bucket a daemon writes (issue 14)."""

    command = "board"


@contextlib.asynccontextmanager
async def board_server(mode: str, tmp_path: Path, sim: Simulator) -> AsyncIterator[DaemonProcess]:
    """What the browser talks to: the daemon itself, or a KV-fed board server (the daemon behind it
    writes the board to a real nats-server's KV bucket and serves nothing the browser uses)."""
    port = free_port()
    if mode == "daemon":
        yield DaemonProcess(write_config(tmp_path / "daemon.toml", sim, port), sim, port)
        return
    from jetstream.natsserver import NatsServer

    nats = NatsServer(tmp_path / "jetstream")
    await nats.start()
    writer_port = free_port()
    writer = DaemonProcess(
        write_config(tmp_path / "daemon.toml", sim, writer_port, nats.url), sim, writer_port
    )
    try:
        await writer.start()
        yield BoardProcess(write_config(tmp_path / "board.toml", sim, port, nats.url), sim, port)
    finally:
        if writer.proc is not None and writer.proc.returncode is None:
            await writer.stop()
        await nats.kill()


def truth(sim: Simulator, eid: int) -> dict[str, Any]:
    return sim.hub.events[eid].engine.snapshot()


def order(state: dict[str, Any]) -> list[str]:
    rows = [r for r in state["carPositions"] if r["ovp"] > 0]
    return [r["n"] for r in sorted(rows, key=lambda r: r["ovp"])]


PAGE_ORDER = "() => [...document.querySelectorAll('#rows tr[data-car]')].map(tr => tr.dataset.car)"


@pytest.mark.parametrize("mode", ["daemon", "kv"])
async def test_live_page_in_chromium(tmp_path: Path, browser: Browser, mode: str) -> None:
    """`daemon`: the page from the daemon's own endpoint; `kv`: from `event-consumer board` fed by the
    NATS KV bucket (stopping and restarting it is then what the page lives through in step 5)."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = "board" if mode == "daemon" else "board-kv"
    async with (
        Simulator(SimConfig(events=1, hub=sim_settings(speed=30.0))) as sim,
        board_server(mode, tmp_path, sim) as daemon,
    ):
        eid = sim.event_ids[0]
        await daemon.start()
        try:
            # 1. the cars of the race within 5 s of the page's navigation start (the page's own clock:
            # a loaded machine's browser start-up is not the page's time)
            await browser("open", url=daemon.url + "/", width=1280, height=900)
            shown_at = await browser.wait(
                "() => document.querySelectorAll('#rows tr[data-car]').length > 0 && performance.now()",
                timeout=15,
            )
            assert shown_at < 5000, f"cars shown {shown_at:.0f} ms after navigation start"
            cars = await browser("eval", fn="() => document.querySelectorAll('#rows tr[data-car]').length")
            assert cars == len(truth(sim, eid)["carPositions"])
            await browser("eval", fn="() => { window.__sameDocument = true; }")

            # 2. a position change and a flag change in the simulator: on the page within 2 s
            sim.hub.paused = True
            before = order(truth(sim, eid))
            await browser.wait(
                f"(want) => JSON.stringify(({PAGE_ORDER})()) === JSON.stringify(want)", arg=before, timeout=10
            )
            for _ in range(600):  # race forward until the order changes
                sim.hub.step(0.5)
                if order(truth(sim, eid)) != before:
                    break
            after = order(truth(sim, eid))
            assert after != before
            t_change = time.monotonic()
            await browser.wait(
                f"(want) => JSON.stringify(({PAGE_ORDER})()) === JSON.stringify(want)", arg=after, timeout=2
            )
            assert time.monotonic() - t_change <= 2.5  # the wait's own bound is 2 s

            engine = sim.hub.events[eid].engine
            flag = engine.flag
            for _ in range(2000):
                sim.hub.step(2.0)
                if engine.flag != flag:
                    break
            assert engine.flag != flag, "the replay has no further flag change"
            t_flag = time.monotonic()
            shown = await browser.wait(
                "(want) => document.getElementById('flag').dataset.flag === String(want) && want",
                arg=engine.flag,
                timeout=2,
            )
            assert shown == engine.flag and time.monotonic() - t_flag <= 2.5
            await browser("screenshot", path=str(ARTIFACTS / f"{shot}-desktop.png"))

            # 3. grouped by class, then search
            await browser("check", selector="#grouped", value=True)
            state = truth(sim, eid)
            classes = sorted({r["class"] for r in state["carPositions"]})
            groups = await browser.wait(
                "(n) => { const g = [...document.querySelectorAll('#rows tr.group')]"
                ".map(tr => tr.textContent); return g.length === n && g; }",
                arg=len(classes),
            )
            assert sorted(groups) == classes
            rows_per_group = await browser(
                "eval",
                fn="() => { const out = {}; let cur = null;"
                " for (const tr of document.querySelectorAll('#rows tr')) {"
                " if (tr.classList.contains('group')) { cur = tr.textContent; out[cur] = []; }"
                " else out[cur].push(tr.querySelector('.c-class').textContent); } return out; }",
            )
            assert all(set(v) == {k} for k, v in rows_per_group.items())
            await browser("check", selector="#grouped", value=False)
            car = state["carPositions"][3]["n"]
            names = {e["no"]: e["nm"].lower() for e in state["eventEntries"]}
            drivers = {r["n"]: (r.get("dn") or "").lower() for r in state["carPositions"]}
            expected = sorted(
                n for n in drivers if car in n or car.lower() in names.get(n, "") or car.lower() in drivers[n]
            )
            assert car in expected and len(expected) < len(state["carPositions"])
            await browser("fill", selector="#search", value=car)
            await browser.wait(
                f"(want) => JSON.stringify(({PAGE_ORDER})().sort()) === JSON.stringify(want)", arg=expected
            )
            await browser("fill", selector="#search", value="")

            # 4. phone-sized: the page fits the width (the table scrolls inside <main>)
            sim.hub.paused = False
            await browser("open", url=daemon.url + "/", width=390, height=844)
            await browser.wait("() => document.querySelectorAll('#rows tr[data-car]').length > 0")
            overflow = await browser(
                "eval", fn="() => document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0
            await browser("screenshot", path=str(ARTIFACTS / f"{shot}-phone.png"))
            await browser("eval", fn="() => { window.__sameDocument = true; }")

            # 5. the daemon stops: the banner; it restarts: the board comes back without a reload
            await daemon.stop()
            await browser.wait(
                "() => { const b = document.getElementById('banner'); return !b.hidden && b.textContent; }",
                timeout=10,
            )
            await browser("screenshot", path=str(ARTIFACTS / f"{shot}-daemon-down.png"))
            await daemon.start()
            await browser.wait(
                "() => document.getElementById('banner').hidden"
                " && document.querySelectorAll('#rows tr[data-car]').length > 0 && window.__sameDocument",
                timeout=15,
            )
            assert await browser("errors") == []
        finally:
            if daemon.proc is not None and daemon.proc.returncode is None:
                await daemon.stop()
