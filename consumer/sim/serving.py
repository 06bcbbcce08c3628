"""Run an aiohttp application on a loopback port (port 0 = pick one), restartable on the same port."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web


class Site:
    """An aiohttp app bound to host:port. `restart()` stops the listener and binds the same port again."""

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        if self._runner is None:
            self._runner = web.AppRunner(
                self.app, handle_signals=False, access_log=None, shutdown_timeout=1.0
            )
            await self._runner.setup()
        await self._bind()

    async def _bind(self) -> None:
        assert self._runner is not None
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.port = int(sock.getsockname()[1])
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()

    async def stop_listening(self) -> None:
        """Close the listening socket (new connections are refused); established ones are untouched."""
        if self._site is not None:
            site, self._site = self._site, None
            await site.stop()

    async def restart(self) -> None:
        await self.stop_listening()
        await self._bind()

    async def close(self) -> None:
        self._site = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


@asynccontextmanager
async def serve(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[Site]:
    site = Site(app, host, port)
    await site.start()
    try:
        yield site
    finally:
        await site.close()
