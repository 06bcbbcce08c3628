"""Subscriptions that survive reconnects: hub invocations performed after every (re)connect.

`Subscriber.connected()` is called (synchronously, from the connection's callbacks) after every
connect and reconnect. Its task then performs the configured calls **in order, each awaited**. A call
the hub rejects (HubError) is logged with the hub's message and retried with capped exponential
backoff in the background, without holding up or tearing down the others. A connection loss aborts
the round; the next `connected()` starts a new round (older retries are cancelled — group membership
belonged to the old connection). After each round `after_round()` runs (RedMist: fetch snapshots).

The invocations run in this task, not inside the connection's reconnected callback: the client
dispatches callbacks and invocations through one ordered queue, so a callback that awaited a whole
subscription round (and its snapshot fetches) would hold back every message behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from consumer.backoff import Backoff
from consumer.errors import describe_error
from consumer.logs import get_logger
from consumer.relay.stats import RelayStats

log = get_logger(__name__)

Invoke = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class HubCall:
    method: str
    arguments: tuple[Any, ...] = ()
    # Shown in logs instead of the arguments (which may hold access codes).
    label: str = field(default="", compare=False)

    def describe(self) -> str:
        return self.label or self.method


class Subscriber:
    def __init__(
        self,
        invoke: Invoke,
        calls: Callable[[], Sequence[HubCall]],
        *,
        after_round: Callable[[], Awaitable[None] | None] | None = None,
        is_hub_error: Callable[[BaseException], bool] = lambda exc: False,
        retry_initial: float = 1.0,
        retry_max: float = 30.0,
        stats: RelayStats | None = None,
    ) -> None:
        self._invoke = invoke
        self._calls = calls
        self._after_round = after_round
        self._is_hub_error = is_hub_error
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.stats = stats
        self.generation = 0
        self.rounds_completed = 0
        self._wake = asyncio.Event()
        self._retries: set[asyncio.Task[None]] = set()
        self._round_done = asyncio.Event()

    def connected(self) -> None:
        """A (re)connect happened: (re)subscribe everything. Safe to call from any callback."""
        self.generation += 1
        for task in self._retries:
            task.cancel()
        self._retries.clear()
        self._round_done.clear()
        self._wake.set()

    async def wait_round(self) -> None:
        """Until the round started by the latest `connected()` has finished (tests, readiness)."""
        await self._round_done.wait()

    async def run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                generation = self.generation
                try:
                    await self._round(generation)
                except Exception as exc:  # connection lost mid-round: the next connected() redoes it
                    log.warning("relay.subscribe_round_aborted", error=describe_error(exc))
                    continue
                if generation == self.generation:
                    self.rounds_completed += 1
                    if self._after_round is not None:
                        result = self._after_round()
                        if result is not None:
                            await result
                    self._round_done.set()
        finally:
            for task in self._retries:
                task.cancel()
            await asyncio.gather(*self._retries, return_exceptions=True)

    async def _round(self, generation: int) -> None:
        for call in self._calls():
            if generation != self.generation:
                return
            try:
                await self._invoke(call.method, *call.arguments)
            except Exception as exc:
                if not self._is_hub_error(exc):
                    raise
                self._failed(call, exc)
                task = asyncio.create_task(self._retry(call, generation), name=f"resubscribe:{call.method}")
                self._retries.add(task)
                task.add_done_callback(self._retries.discard)
            else:
                log.info("relay.subscribed", call=call.describe())

    def _failed(self, call: HubCall, exc: BaseException) -> None:
        if self.stats is not None:
            self.stats.subscribe_failures += 1
        log.error("relay.subscribe_failed", call=call.describe(), hub_error=str(exc))

    async def _retry(self, call: HubCall, generation: int) -> None:
        backoff = Backoff(self.retry_initial, self.retry_max, floor=0.5)
        failures = 1  # the round's own call failed
        while generation == self.generation:
            await asyncio.sleep(backoff.delay(failures))
            if generation != self.generation:
                return
            try:
                await self._invoke(call.method, *call.arguments)
            except Exception as exc:
                if not self._is_hub_error(exc):
                    return  # connection trouble: the next round resubscribes
                self._failed(call, exc)
                failures += 1
                continue
            log.info("relay.subscribed_after_retry", call=call.describe())
            return

    async def aclose(self) -> None:
        for task in list(self._retries):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._retries, return_exceptions=True)
