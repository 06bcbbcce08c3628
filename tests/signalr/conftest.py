"""Fixtures for the SignalR tests: a demo hub on HubServer and a driver for Microsoft's official client."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from consumer.sim.hubhost import HubCallContext, HubError, HubServer

NODE_DRIVER = Path(__file__).resolve().parent.parent / "node" / "official_client.mjs"


def build_demo_hub(**options: Any) -> HubServer:
    """A small hub exercising every feature the tests need."""
    server = HubServer("/hub", **options)

    @server.method("Add")
    async def add(ctx: HubCallContext, x: int, y: int) -> int:
        return x + y

    @server.method("Echo")
    def echo(ctx: HubCallContext, value: Any) -> Any:
        return value

    @server.method("Fail")
    async def fail(ctx: HubCallContext, text: str) -> None:
        raise HubError(text)

    @server.method("Crash")
    async def crash(ctx: HubCallContext) -> None:
        raise RuntimeError("secret internals")

    @server.method("Void")
    async def void(ctx: HubCallContext) -> None:
        ctx.server.stats.messages_received += 0

    recorded: list[Any] = []
    server.recorded = recorded  # type: ignore[attr-defined]

    @server.method("Record")
    async def record(ctx: HubCallContext, value: Any) -> None:
        recorded.append(value)

    @server.method("JoinGroup")
    async def join(ctx: HubCallContext, group: str) -> None:
        await ctx.add_to_group(group)

    @server.method("LeaveGroup")
    async def leave(ctx: HubCallContext, group: str) -> None:
        await ctx.remove_from_group(group)

    @server.method("Whoami")
    async def whoami(ctx: HubCallContext) -> Any:
        return getattr(ctx.principal, "subject", None)

    @server.method("Count")
    async def count(ctx: HubCallContext, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i
            await asyncio.sleep(0.01)

    @server.method("Forever")
    async def forever(ctx: HubCallContext) -> AsyncIterator[int]:
        server.stream_state = "running"  # type: ignore[attr-defined]
        try:
            for i in itertools.count():
                yield i
                await asyncio.sleep(0.01)
        finally:
            server.stream_state = "stopped"  # type: ignore[attr-defined]

    return server


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll a condition nothing can await (e.g. state inside the server) until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


class NodeClient:
    """One `node official_client.mjs` process: send commands, await their replies and events."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._changed = asyncio.Condition()
        self._ids = itertools.count(1)
        self._pump = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = json.loads(raw)
            reply_to = line.get("id")
            if reply_to is not None and "ok" in line:
                future = self._replies.pop(reply_to, None)
                if future is not None and not future.done():
                    future.set_result(line)
            else:
                self.events.append(line)
            async with self._changed:
                self._changed.notify_all()

    async def request(self, op: str, timeout: float = 15.0, **fields: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        cid = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[cid] = future
        self.proc.stdin.write((json.dumps({"id": cid, "op": op, **fields}) + "\n").encode())
        await self.proc.stdin.drain()
        async with asyncio.timeout(timeout):
            return await future

    async def ok(self, op: str, **fields: Any) -> dict[str, Any]:
        reply = await self.request(op, **fields)
        assert reply["ok"], reply
        return reply

    async def wait_event(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        async with asyncio.timeout(timeout), self._changed:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                await self._changed.wait()

    def messages(self, method: str) -> list[list[Any]]:
        return [e["args"] for e in self.events if e.get("event") == "message" and e["method"] == method]

    async def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            async with asyncio.timeout(5):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump


@pytest.fixture
async def official_client(node: str) -> AsyncIterator[Callable[[], Any]]:
    """Factory: `client = await official_client()` starts one Node driver process (closed at teardown)."""
    clients: list[NodeClient] = []

    async def spawn() -> NodeClient:
        proc = await asyncio.create_subprocess_exec(
            node,
            str(NODE_DRIVER),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=str(NODE_DRIVER.parent),
        )
        client = NodeClient(proc)
        clients.append(client)
        return client

    yield spawn
    for client in clients:
        await client.close()


@pytest.fixture
def make_hub() -> Callable[..., HubServer]:
    """`make_hub(**HubServer options)` builds the demo hub; start it with `async with h.serve() as url`."""
    return build_demo_hub


@pytest.fixture
def until() -> Callable[..., Any]:
    """`await until(lambda: condition, timeout=10)`: poll server-side state nothing can await."""
    return wait_for


@pytest.fixture
async def hub() -> AsyncIterator[tuple[HubServer, str]]:
    """The demo hub with short test intervals, running on 127.0.0.1:0."""
    server = build_demo_hub(keepalive_interval=0.5, client_timeout=5.0, handshake_timeout=2.0)
    async with server.serve() as url:
        yield server, url
