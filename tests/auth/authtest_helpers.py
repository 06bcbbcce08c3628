"""Helpers for the auth tests: a fake clock, a Node IdP process wrapper, condition polling."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

IDP_DIR = Path(__file__).resolve().parent / "idp"


class FakeClock:
    """Injected clock. auto=True: sleep() advances virtual time at once (never sleeps for real).
    auto=False: sleep() blocks until the test calls advance() past its deadline."""

    def __init__(self, *, auto: bool = True, start: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self.auto = auto
        self.now = start
        self._start = start
        self._wall = wall
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self._wall + (self.now - self._start)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.auto:
            self.now += max(0.0, seconds)
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, fut))
        await fut

    @property
    def sleeping(self) -> int:
        return sum(1 for _, f in self._sleepers if not f.done())

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for deadline, fut in self._sleepers:
            if deadline <= self.now and not fut.done():
                fut.set_result(None)
        self._sleepers = [(d, f) for d, f in self._sleepers if not f.done()]


async def until(cond: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll `cond` (yielding to the loop) until true; fail after `timeout` real seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


class NodeIdP:
    """A Node IdP script on 127.0.0.1: prints {"ready": url}, then one {"token": {...}} per request."""

    def __init__(self, node: str, script: str, options: dict[str, Any], log_dir: Path) -> None:
        self._stderr = open(log_dir / f"{script}.{os.getpid()}.{id(self)}.stderr", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [node, str(IDP_DIR / script), json.dumps(options)],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.url = ""
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        if not self._ready.wait(20):
            self.stop()
            raise RuntimeError(f"{script} did not start; see {self._stderr.name}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "ready" in msg:
                self.url = msg["ready"].rstrip("/")
                self._ready.set()
            elif "token" in msg:
                with self._lock:
                    self._events.append(msg["token"])

    def requests(self, client_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            events = list(self._events)
        return [e for e in events if client_id is None or e.get("client_id") == client_id]

    def wait_requests(
        self, n: int, client_id: str | None = None, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """The IdP logs a request just after answering it: poll briefly for the log line."""
        deadline = time.monotonic() + timeout
        while len(self.requests(client_id)) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"IdP saw {len(self.requests(client_id))} token requests, expected {n}")
            time.sleep(0.01)
        return self.requests(client_id)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


# Clients of the oidc-provider IdP. Tests use distinct client ids so that request counts from one
# test never leak into another's assertions (the IdP is shared by the session).
OIDC_SECRET = "s3cr:t/+ &=%-basic-secret-value"
OIDC_CLIENTS: list[dict[str, Any]] = [
    {
        "client_id": cid,
        "client_secret": OIDC_SECRET,
        "grant_types": ["client_credentials"],
        "redirect_uris": [],
        "response_types": [],
        "token_endpoint_auth_method": method,
        "scope": "api:read",
    }
    for cid, method in (
        ("svc-basic", "client_secret_basic"),
        ("svc-post", "client_secret_post"),
        ("svc-discovery", "client_secret_basic"),
        ("svc-wrong", "client_secret_basic"),
        ("svc-scope", "client_secret_basic"),
        ("svc-cli", "client_secret_basic"),
        ("svc-cli-wrong", "client_secret_basic"),
        ("svc-schedule", "client_secret_basic"),
        ("svc-bearer", "client_secret_basic"),
    )
] + [
    {
        "client_id": "svc-exchange",
        "client_secret": OIDC_SECRET,
        "grant_types": ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"],
        "redirect_uris": [],
        "response_types": [],
        "token_endpoint_auth_method": "client_secret_basic",
        "scope": "api:read",
    }
]
OIDC_TTL = 5


class LogCapture:
    """Every log line (JSON, via consumer.logs.setup_logging at DEBUG) written during a test."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]
