from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.systemd import Notifier


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    yield sock, path
    sock.close()


async def recv(sock: socket.socket) -> str:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(5):
        data = await loop.sock_recv(sock, 4096)
    return data.decode()


async def test_messages_arrive_on_a_real_datagram_socket(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert n.ready("connected")
    assert n.status("connected, 10 messages")
    assert n.stopping()
    assert [await recv(sock) for _ in range(3)] == [
        "READY=1\nSTATUS=connected",
        "STATUS=connected, 10 messages",
        "STOPPING=1",
    ]
    n.close()


async def test_abstract_socket_names() -> None:
    name = f"event-consumer-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.setblocking(False)
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert await recv(sock) == "READY=1"
        n.close()
    finally:
        sock.close()


def test_without_notify_socket_everything_is_a_noop() -> None:
    n = Notifier.from_env({})
    assert not n.enabled
    assert not n.ready()
    assert n.watchdog_interval is None


def test_send_failure_does_not_raise(tmp_path: Path) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "missing.sock")})
    assert n.ready() is False
    n.close()


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "3000000"}
    assert Notifier.from_env(env).watchdog_interval == 1.5
    assert Notifier.from_env({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 1.5
    assert Notifier.from_env({**env, "WATCHDOG_PID": "1"}).watchdog_interval is None  # not for us


async def test_watchdog_pings_only_while_healthy(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "40000"})  # ping every 20 ms
    healthy = [True]
    task = asyncio.create_task(n.run_watchdog(lambda: healthy[0]))
    try:
        assert await recv(sock) == "WATCHDOG=1"
        assert await recv(sock) == "WATCHDOG=1"
        healthy[0] = False
        # drain anything sent before the flip, then make sure nothing more arrives for a few intervals
        await asyncio.sleep(0.05)
        while True:
            try:
                sock.recv(4096)
            except BlockingIOError:
                break
        sent_before = len(n.sent)
        await asyncio.sleep(0.1)  # 5 intervals with an unhealthy loop: no ping may be sent
        assert len(n.sent) == sent_before
        healthy[0] = True
        assert await recv(sock) == "WATCHDOG=1"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        n.close()


async def test_watchdog_skips_ping_when_loop_lags(notify_socket: tuple[socket.socket, str]) -> None:
    _sock, path = notify_socket
    now = [0.0]
    n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})  # 1 s interval

    def clock() -> float:
        now[0] += 5.0  # every reading jumps: the loop appears stuck for longer than the interval
        return now[0]

    task = asyncio.create_task(n.run_watchdog(lambda: True, clock=clock))
    for _ in range(20):
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert "WATCHDOG=1" not in n.sent
    n.close()


async def test_no_watchdog_ping_after_stopping(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000"})  # 10 ms interval
    task = asyncio.create_task(n.run_watchdog(lambda: True))
    try:
        assert await recv(sock) == "WATCHDOG=1"
        n.stopping("draining")
        # The watchdog task keeps running while the daemon drains; it must not ping any more.
        for _ in range(5):
            await asyncio.sleep(n.watchdog_interval or 0)
        assert n.watchdog() is False
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        n.close()
    after = n.sent[n.sent.index("STOPPING=1\nSTATUS=draining") :]
    assert after == ["STOPPING=1\nSTATUS=draining"]
