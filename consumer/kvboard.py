"""The live board in a NATS KV bucket (issue 14): one key per hub/event, at most `board_max_hz` writes.

`KvBoard(state, connect_kwargs, bucket=, hub=, max_hz=)` follows a `LiveState`: after a change it
writes the value of every event whose value changed to key `<hub>.<event id>` (tokens sanitised),
then waits `1 / max_hz` seconds before looking again, so a burst of patches costs one write per event
per period. Dashboards read a key with `get` and follow it with `watch`; the KV revision changes when
the value did. An event that disappeared (ReceiveReset) gets its key deleted.

The value (`BoardValue`, JSON, version 1) carries what a board server needs to serve the board API
without a hub connection (`event-consumer board`, `KvBoardSource` below):

    {"v": 1,                       # format version
     "hub": "connected",           # the writing daemon's hub connection state
     "epoch": 0,                   # goes up on every reset of the event's board (ReceiveReset, new session)
     "status": "live",             # "live" | "not_live" | "unknown" (the snapshot endpoint's answer)
     "last_message_at": 1765012345.678,   # wall-clock time of the event's last hub message (or null)
     "board": {...}}               # the merged board: exactly the board API's /v1/events/{id}/board JSON

A change of the hub state rewrites every key (a board server shows "reconnecting" from it).

The bucket is created when missing (history 1, file storage). A lost connection is retried with the
daemon's capped exponential backoff; nothing is lost meanwhile, since the next write carries the
whole current board. `is_leader` (HA pair) gates the writes: a standby keeps its state but does not
write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from consumer.backoff import Backoff
from consumer.errors import CredentialsRejected, describe_error
from consumer.logs import get_logger
from consumer.natsconn import NatsUnavailable, close_quietly, connect, sanitize_token, server_label
from consumer.versioned import Versioned

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.js.kv import KeyValue

    from consumer.redmist.state import LiveState

__all__ = ["BoardValue", "KvBoard", "KvBoardSource", "KvSourceCollector", "board_key", "open_bucket"]

log = get_logger(__name__)


class BoardValue(msgspec.Struct, kw_only=True):
    """One event's KV value (see the module doc); unknown fields are ignored (newer writers)."""

    v: int = 1
    hub: str = "connected"
    epoch: int = 0
    status: str = "unknown"
    last_message_at: float | None = None
    board: dict[str, Any]


_DECODE_VALUE = msgspec.json.Decoder(BoardValue).decode


def board_key(hub: str, event_id: int | str) -> str:
    return f"{sanitize_token(hub)}.{sanitize_token(event_id)}"


async def open_bucket(nc: NATS, bucket: str, *, ttl: float | None = None, history: int = 1) -> KeyValue:
    """The KV bucket, created (file storage) when missing."""
    import nats.js.errors

    js = nc.jetstream()
    try:
        return await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        return await js.create_key_value(bucket=bucket, history=history, ttl=ttl)


class KvBoard:
    def __init__(
        self,
        state: LiveState,
        connect_kwargs: Mapping[str, Any],
        *,
        bucket: str,
        hub: str,
        max_hz: float = 2.0,
        is_leader: Callable[[], bool] = lambda: True,
    ) -> None:
        self.state = state
        self._kwargs = dict(connect_kwargs)
        self.bucket = bucket
        self.hub = hub
        self.period = 1.0 / max_hz
        self.is_leader = is_leader
        self._written: dict[str, bytes] = {}  # key -> the value last written
        self.writes = 0
        self._encode = msgspec.json.Encoder().encode
        self.hub_state = "connecting"
        self._hub_changed = asyncio.Event()

    def set_hub_state(self, state: str) -> None:
        """The daemon's hub connection state: carried in every value (a change rewrites them)."""
        if state != self.hub_state:
            self.hub_state = state
            self._hub_changed.set()

    def value(self, event_id: str, board: dict[str, Any]) -> bytes:
        last = self.state.last_message_at(event_id)
        return self._encode(
            BoardValue(
                hub=self.hub_state,
                epoch=self.state.epoch(event_id),
                status=self.state.event_status(event_id),
                # monotonic -> wall clock (another machine reads it)
                last_message_at=None if last is None else round(time.time() - (time.monotonic() - last), 3),
                board=board,
            )
        )

    def _pending(self) -> dict[str, bytes | None]:
        """Keys whose value differs from what was last written (None = delete)."""
        out: dict[str, bytes | None] = {}
        current = set()
        for ev in self.state.events():
            key = board_key(self.hub, ev)
            current.add(key)
            board = self.state.event_state(ev)
            if board is None:
                continue
            value = self.value(ev, board)
            if self._written.get(key) != value:
                out[key] = value
        for key in self._written.keys() - current:
            out[key] = None
        return out

    async def _write(self, kv: KeyValue) -> None:
        for key, value in self._pending().items():
            if value is None:
                await kv.delete(key)
                self._written.pop(key, None)
            else:
                await kv.put(key, value)
                self._written[key] = value
            self.writes += 1

    async def _wait_changed(self, version: int) -> None:
        """Until the live state or the hub state changed."""
        if self._hub_changed.is_set():
            return
        waits = [
            asyncio.ensure_future(self.state.wait_changed(version)),
            asyncio.ensure_future(self._hub_changed.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def run(self) -> None:
        """Until cancelled: follow the state, write changes, reconnect with backoff."""
        import nats.errors

        backoff = Backoff(cap=10.0, floor=0.5)
        failures = 0
        servers = server_label(list(self._kwargs["servers"]))
        while True:
            nc: NATS | None = None
            try:
                nc = await connect(self._kwargs)
                kv = await open_bucket(nc, self.bucket)
                if failures:
                    log.info("kvboard.reconnected", bucket=self.bucket, servers=servers)
                failures = 0
                self._written.clear()  # unknown after a reconnect: rewrite what differs from nothing
                while True:
                    version = self.state.version
                    self._hub_changed.clear()
                    if self.is_leader():
                        await self._write(kv)
                    await self._wait_changed(version)
                    await asyncio.sleep(self.period)  # the rate limit (coalescing), not synchronisation
            except (NatsUnavailable, CredentialsRejected, nats.errors.Error, OSError) as err:
                failures += 1
                delay = backoff.delay(failures)
                log.warning(
                    "kvboard.write_failed",
                    bucket=self.bucket,
                    servers=servers,
                    error=describe_error(err),
                    retry_in=round(delay, 2),
                )
                await asyncio.sleep(delay)
            finally:
                await close_quietly(nc, event="kvboard.nats_close_failed")


class KvBoardSource(Versioned):
    """The board API's source (`consumer.web.BoardSource`) read from the KV bucket: no hub connection.

    `run()` connects, opens the bucket, and watches `<hub>.*` (the watch first delivers every current
    value, then each change: get + watch in one ordered consumer); a lost connection is retried with
    the daemon's capped backoff, and the watch starts over (it delivers the current values again).
    `on_hub_state(state)` is called whenever the state the web layer shows changes: the writer's hub
    state from the values, or "reconnecting" while this process has no NATS connection. A value that
    does not decode is logged and counted (`invalid`), and the event keeps its previous board.
    """

    def __init__(
        self,
        connect_kwargs: Mapping[str, Any],
        *,
        bucket: str,
        hub: str,
        on_hub_state: Callable[[str], None] | None = None,
        on_connection: Callable[[bool], None] | None = None,
    ) -> None:
        super().__init__()
        self._kwargs = dict(connect_kwargs)
        self.bucket = bucket
        self.prefix = sanitize_token(hub) + "."
        self.on_hub_state = on_hub_state
        self.on_connection = on_connection
        self.values: dict[str, BoardValue] = {}
        self.writer_hub_state = "connecting"
        self.connected = False
        self.updates = 0
        self.invalid = 0
        self.reconnects = 0

    # -- BoardSource ---------------------------------------------------------------------------

    def events(self) -> list[str]:
        return sorted(self.values)

    def event_state(self, event_id: str) -> dict[str, Any] | None:
        value = self.values.get(str(event_id))
        return None if value is None else value.board

    def epoch(self, event_id: str) -> int:
        value = self.values.get(str(event_id))
        return 0 if value is None else value.epoch

    def event_status(self, event_id: str) -> str:
        value = self.values.get(str(event_id))
        return "unknown" if value is None else value.status

    def last_message_at(self, event_id: str) -> float | None:
        """Monotonic time (the board API's clock) of the writer's last hub message for the event."""
        value = self.values.get(str(event_id))
        if value is None or value.last_message_at is None:
            return None
        return time.monotonic() - (time.time() - value.last_message_at)

    def hub_state(self) -> str:
        """What the board shows as the hub state: the writer's, or "reconnecting" without NATS."""
        return self.writer_hub_state if self.connected else "reconnecting"

    # -- following the bucket ------------------------------------------------------------------

    def _set_connected(self, connected: bool) -> None:
        before = self.hub_state()
        self.connected = connected
        if self.on_connection is not None:
            self.on_connection(connected)
        self._hub_changed(before)

    def _hub_changed(self, before: str) -> None:
        if self.hub_state() != before and self.on_hub_state is not None:
            self.on_hub_state(self.hub_state())

    def apply(self, key: str, value: bytes | None) -> None:
        """One KV entry (None: deleted or purged)."""
        if not key.startswith(self.prefix):
            return
        event_id = key[len(self.prefix) :]
        self.updates += 1
        if value is None:
            if self.values.pop(event_id, None) is not None:
                self._touch()
            return
        try:
            decoded = _DECODE_VALUE(value)
        except msgspec.ValidationError as err:
            self.invalid += 1
            log.warning("kvboard.value_ignored", bucket=self.bucket, key=key, error=str(err))
            return
        except msgspec.DecodeError:
            self.invalid += 1
            log.warning("kvboard.value_ignored", bucket=self.bucket, key=key, error="not JSON")
            return
        before = self.hub_state()
        self.values[event_id] = decoded
        self.writer_hub_state = decoded.hub
        self._touch()
        self._hub_changed(before)

    async def run(self) -> None:
        """Until cancelled: follow the bucket, reconnect with backoff."""
        import nats.errors

        backoff = Backoff(cap=10.0, floor=0.5)
        failures = 0
        servers = server_label(list(self._kwargs["servers"]))
        while True:
            nc: NATS | None = None
            lost = asyncio.Event()
            try:
                nc = await connect(self._kwargs, on_disconnect=lost.set)
                kv = await open_bucket(nc, self.bucket)
                watcher = await kv.watch(self.prefix + "*")
                log.info("kvboard.followed", bucket=self.bucket, servers=servers, reconnect=bool(failures))
                failures = 0
                follow = asyncio.ensure_future(self._follow(watcher))
                gone = asyncio.ensure_future(lost.wait())
                try:
                    await asyncio.wait([follow, gone], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for t in (follow, gone):
                        t.cancel()
                    await asyncio.gather(follow, gone, return_exceptions=True)
                raise NatsUnavailable(f"connection to NATS server {servers} lost")
            except (NatsUnavailable, CredentialsRejected, nats.errors.Error, OSError) as err:
                if self.connected:
                    self._set_connected(False)
                failures += 1
                self.reconnects += 1
                delay = backoff.delay(failures)
                log.warning(
                    "kvboard.unavailable",
                    bucket=self.bucket,
                    servers=servers,
                    error=describe_error(err),
                    retry_in=round(delay, 2),
                )
                await asyncio.sleep(delay)
            finally:
                await close_quietly(nc, event="kvboard.nats_close_failed")

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        seen: set[str] = set()
        initial = True
        async for entry in watcher:
            if entry is None:  # every current value delivered
                if initial:
                    initial = False
                    # keys deleted while this process was away
                    for event_id in [e for e in self.values if self.prefix + e not in seen]:
                        self.values.pop(event_id)
                        self._touch()
                    self._set_connected(True)
                continue
            deleted = entry.operation in ("DEL", "PURGE") or entry.value is None
            if initial:
                seen.add(entry.key)
            self.apply(entry.key, None if deleted else entry.value)


class KvSourceCollector(Collector):
    """`/metrics` of a board server: the KV source's connection and counters."""

    def __init__(self, source: KvBoardSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        s = self.source
        up = GaugeMetricFamily("event_consumer_board_kv_connected", "1 while the board KV is followed")
        up.add_metric([], 1.0 if s.connected else 0.0)
        yield up
        events = GaugeMetricFamily("event_consumer_board_kv_events", "Events with a board in the KV bucket")
        events.add_metric([], float(len(s.values)))
        yield events
        for name, doc, n in (
            ("board_kv_updates", "KV entries received (values and deletes)", s.updates),
            ("board_kv_invalid_values", "KV values that did not decode (ignored)", s.invalid),
            ("board_kv_reconnects", "Board KV connection losses and failed attempts", s.reconnects),
        ):
            fam = CounterMetricFamily("event_consumer_" + name, doc)
            fam.add_metric([], float(n))
            yield fam
