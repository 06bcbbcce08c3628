"""A change counter readers can wait on, shared by the board sources (the live state in
`consumer.redmist.state`, the KV-fed board in `consumer.kvboard`): `version` goes up by one per
change, `wait_changed(since)` returns once it passed `since` (one Event per round of waiters, set and
dropped on the next change: no polling, nothing kept while nobody waits)."""

from __future__ import annotations

import asyncio

__all__ = ["Versioned"]


class Versioned:
    def __init__(self) -> None:
        self.version = 0
        self._waiters: asyncio.Event | None = None

    def _touch(self) -> None:
        """One change: bump the version and wake whoever waits."""
        self.version += 1
        if self._waiters is not None:
            self._waiters.set()
            self._waiters = None

    async def wait_changed(self, since_version: int) -> int:
        """Wait until `version > since_version`; returns the new version."""
        while self.version <= since_version:
            if self._waiters is None:
                self._waiters = asyncio.Event()
            await self._waiters.wait()
        return self.version
