"""sd_notify(3) over $NOTIFY_SOCKET, in a few lines, plus the watchdog task.

- `Notifier.from_env()` reads `NOTIFY_SOCKET` (a path, or an abstract name starting with `@`) and
  `WATCHDOG_USEC` / `WATCHDOG_PID`. Without NOTIFY_SOCKET every call is a no-op.
- `ready()`, `status(text)`, `stopping()`, `watchdog()` send `READY=1`, `STATUS=...`, `STOPPING=1`,
  `WATCHDOG=1`. Send errors are logged once and never raised (systemd going away must not kill us).
- `run_watchdog(healthy)` pings at half of WATCHDOG_USEC, but only while `healthy()` is true and the
  event loop is not lagging by more than the interval (a wedged loop must let systemd restart us).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

from consumer.logs import get_logger

log = get_logger(__name__)


class Notifier:
    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._warned = False
        self._stopped = False
        self.sent: list[str] = []  # what was sent (for STATUS/debugging; bounded by callers' use)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        usec: int | None = None
        raw = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if raw and raw.isdigit() and int(raw) > 0 and (not pid or pid == str(os.getpid())):
            usec = int(raw)
        return cls(address, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half of WATCHDOG_USEC (None when not requested)."""
        return self.watchdog_usec / 2_000_000 if self.watchdog_usec else None

    def notify(self, *fields: str) -> bool:
        if self.address is None:
            return False
        target = self.address
        if target.startswith("@"):
            target = "\0" + target[1:]
        payload = "\n".join(fields).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload, target)
        except OSError as err:
            if not self._warned:
                self._warned = True
                log.warning("systemd.notify_failed", socket=self.address, error=str(err))
            return False
        if len(self.sent) < 1000:
            self.sent.append(payload.decode())
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self, status: str | None = None) -> bool:
        # systemd stops the watchdog once the unit leaves the running state; STOPPING=1 is our last word
        # on health, so no WATCHDOG=1 may follow it (the watchdog task may still be winding down).
        self._stopped = True
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        if self._stopped:
            return False
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def run_watchdog(
        self, healthy: Callable[[], bool], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Ping WATCHDOG=1 every `watchdog_interval` while healthy; returns at once if not requested."""
        interval = self.watchdog_interval
        if interval is None or not self.enabled:
            return
        expected = clock() + interval
        while True:
            await asyncio.sleep(max(0.0, expected - clock()))
            lag = clock() - expected
            expected = clock() + interval
            if lag > interval:
                log.warning("systemd.loop_lagging", lag_seconds=round(lag, 3))
                continue
            if healthy():
                self.watchdog()
