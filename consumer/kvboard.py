"""The live board in a NATS KV bucket (issue 14): one key per hub/event, at most `board_max_hz` writes.

`KvBoard(state, connect_kwargs, bucket=, hub=, max_hz=)` follows a `LiveState`: after a change it
writes the JSON of every event whose board changed (`state.event_state(id)`, the same document the
board API serves) to key `<hub>.<event id>` (tokens sanitised), then waits `1 / max_hz` seconds
before looking again, so a burst of patches costs one write per event per period. Dashboards read a
key with `get` and follow it with `watch`; the KV revision changes exactly when the board did. An
event that disappeared (ReceiveReset) gets its key deleted.

The bucket is created when missing (history 1, file storage). A lost connection is retried with the
daemon's capped exponential backoff; nothing is lost meanwhile, since the next write carries the
whole current board. `is_leader` (HA pair) gates the writes: a standby keeps its state but does not
write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from consumer.errors import CredentialsRejected
from consumer.logs import get_logger
from consumer.natsconn import NatsUnavailable, connect, sanitize_token, server_label
from consumer.signalr.retry import DaemonRetryPolicy

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.js.kv import KeyValue

    from consumer.relay.state import LiveState

__all__ = ["KvBoard", "board_key", "open_bucket"]

log = get_logger("consumer.kvboard")


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

    def _pending(self) -> dict[str, bytes | None]:
        """Keys whose value differs from what was last written (None = delete)."""
        out: dict[str, bytes | None] = {}
        current = set()
        for ev in self.state.events():
            key = board_key(self.hub, ev)
            current.add(key)
            value = self._encode(self.state.event_state(ev))
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

    async def run(self) -> None:
        """Until cancelled: follow the state, write changes, reconnect with backoff."""
        import nats.errors

        policy = DaemonRetryPolicy(cap=10.0)
        failures = 0
        servers = server_label(list(self._kwargs["servers"]))
        while True:
            nc: NATS | None = None
            try:
                nc = await connect(self._kwargs)
                kv = await open_bucket(nc, self.bucket)
                if failures:
                    log.info("board KV reconnected", bucket=self.bucket, servers=servers)
                failures = 0
                self._written.clear()  # unknown after a reconnect: rewrite what differs from nothing
                while True:
                    version = self.state.version
                    if self.is_leader():
                        await self._write(kv)
                    await self.state.wait_changed(version)
                    await asyncio.sleep(self.period)  # the rate limit (coalescing), not synchronisation
            except (NatsUnavailable, CredentialsRejected, nats.errors.Error, OSError) as err:
                failures += 1
                delay = policy.next_delay(failures, 0.0, err)
                log.warning(
                    "board KV write failed; retrying",
                    bucket=self.bucket,
                    servers=servers,
                    error=f"{type(err).__name__}: {err}",
                    retry_in=round(delay, 2),
                )
                await asyncio.sleep(delay)
            finally:
                if nc is not None and not nc.is_closed:
                    try:
                        await asyncio.wait_for(nc.close(), 2.0)
                    except Exception as err:
                        log.debug("NATS close failed", error=type(err).__name__)
