"""The lease and the roles of a hot-standby pair.

Two daemons with the same config both connect to the hub, subscribe and relay; only the holder of the
lease publishes to JetStream. The lease is key `[ha] key` (default: the hub name) in KV bucket
`[ha] bucket`, whose TTL is `lease_ttl_seconds`:

- **acquire**: `create` (succeeds only when the key is absent: never held, deleted by a clean stop,
  or expired because its holder stopped renewing). The standby tries at once when its watch shows a
  delete and otherwise every `min(0.5, ttl / 10)` seconds (expiry leaves no marker to watch).
- **renew**: `update(last=revision)` every `ttl / 3`: a compare-and-set, so a leader that lost the key
  to another node learns it on its next renew and stops publishing at once. A leader that cannot reach
  NATS for `0.8 * ttl` demotes itself (it cannot publish anyway, and the standby will take over).
- **takeover**: after `settle` seconds (lines the old leader received just before it died reach the
  standby too), every NATS sink is told `begin_takeover()` and a `failover` marker is relayed; when the
  marker reaches a sink, it publishes what the stream lacks from its buffer (see consumer.sinks.nats)
  and from then on publishes as the leader. Events whose continuity could not be proven get a `gap`
  marker and a snapshot request.
- **release** (SIGTERM): after the sinks drained, the key is deleted (compare-and-set on the
  revision), so the standby takes over at once and without a gap.
- **hub health** (`healthy`, the daemon's "connected" state, and `hub_lost()`, called on every
  connection loss so a reconnect faster than the check still counts): a leader whose hub connection
  dropped hands the lease over at once (what the hub sends meanwhile only the standby receives; its takeover
  publishes it), and a node without a hub connection never acquires the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from consumer.backoff import Backoff
from consumer.errors import CredentialsRejected, describe_error
from consumer.kvboard import open_bucket
from consumer.logs import get_logger
from consumer.natsconn import NatsUnavailable, close_quietly, connect, sanitize_token, server_label

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.js.kv import KeyValue

    from consumer.config import HaConfig
    from consumer.relay.relay import Relay
    from consumer.sinks.nats import NatsSink

__all__ = ["HaController"]

log = get_logger(__name__)


class HaController:
    def __init__(
        self,
        cfg: HaConfig,
        connect_kwargs: Mapping[str, Any],
        *,
        hub: str,
        sinks: Sequence[NatsSink],
        relay: Relay,
        request_snapshots: Callable[[list[int]], None] = lambda _events: None,
        settle: float = 0.25,
        healthy: Callable[[], bool] = lambda: True,
    ) -> None:
        self.cfg = cfg
        self.node = cfg.node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.key = sanitize_token(cfg.key or hub)
        self.ttl = cfg.lease_ttl_seconds
        self.poll = min(0.5, self.ttl / 10)
        self.settle = settle
        self._healthy = healthy
        self._hub_lost = False
        self._wake = asyncio.Event()
        self._kwargs = dict(connect_kwargs)
        self._servers = server_label(list(connect_kwargs["servers"]))
        self.sinks = list(sinks)
        self.relay = relay
        self._request_snapshots = request_snapshots
        self.leader = False
        self.revision: int | None = None
        self._renewed_at = 0.0
        self._kv: KeyValue | None = None
        self._stopping = asyncio.Event()
        self.takeovers = 0
        for sink in self.sinks:
            sink.enable_ha(
                buffer_records=cfg.buffer_records,
                make_marker=self._marker,
                on_gap=self._on_gap,
                node=self.node,
            )

    def is_leader(self) -> bool:
        return self.leader

    def hub_lost(self) -> None:
        """The hub connection was lost (even if it comes back at once): a leader hands over, since
        what the hub sent meanwhile reached only the standby."""
        self._hub_lost = True
        self._wake.set()

    def _marker(self, target: str, info: dict[str, Any], event_id: int | str | None) -> bytes:
        return self.relay.encoder.encode("ha", target, [info], event_id)

    def _on_gap(self, events: list[int | str]) -> None:
        self._request_snapshots([int(e) for e in events if str(e).isdigit()])

    def _value(self) -> bytes:
        return msgspec.json.encode({"node": self.node, "pid": os.getpid()})

    # -- roles ---------------------------------------------------------------------------------

    async def _promote(self, revision: int) -> None:
        self.leader = True
        self.revision = revision
        self._renewed_at = time.monotonic()
        self.takeovers += 1
        log.warning("ha.lease_acquired", node=self.node, key=self.key, revision=revision)
        await asyncio.sleep(self.settle)  # let lines still in flight from the hub reach the buffer
        for sink in self.sinks:
            sink.begin_takeover()
        await self.relay.emit_ha("failover", {"node": self.node, "lease_revision": revision})

    def _demote(self, why: str) -> None:
        if not self.leader:
            return
        self.leader = False
        self.revision = None
        for sink in self.sinks:
            sink.demote()
        log.error("ha.lease_lost", node=self.node, key=self.key, reason=why)

    # -- run -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Until cancelled: hold or wait for the lease; reconnect to NATS with backoff."""
        import nats.errors

        backoff = Backoff(cap=self.ttl, floor=0.5)
        failures = 0
        while True:
            nc: NATS | None = None
            try:
                nc = await connect(self._kwargs)
                kv = await open_bucket(nc, self.cfg.bucket, ttl=self.ttl)
                self._kv = kv
                failures = 0
                await self._cycle(kv)
            except (NatsUnavailable, CredentialsRejected, nats.errors.Error, OSError) as err:
                self._kv = None
                failures += 1
                if self.leader and time.monotonic() - self._renewed_at > 0.8 * self.ttl:
                    self._demote("NATS unreachable")
                delay = min(backoff.delay(failures), self.ttl / 5)
                log.warning(
                    "ha.nats_error",
                    servers=self._servers,
                    error=describe_error(err),
                    retry_in=round(delay, 2),
                )
                await asyncio.sleep(delay)
            finally:
                await close_quietly(nc, event="ha.nats_close_failed")

    async def _cycle(self, kv: KeyValue) -> None:
        import nats.errors
        import nats.js.errors

        watcher = await kv.watch(self.key)
        try:
            while True:
                if self._stopping.is_set():
                    await asyncio.Future()  # released: never acquire again; cancelled by the daemon
                if self.leader:
                    assert self.revision is not None
                    if self._hub_lost or not self._healthy():  # the standby has what we miss now
                        self._hub_lost = False
                        await self._step_down(kv, self.revision)
                        continue
                    if time.monotonic() - self._renewed_at > 0.8 * self.ttl:
                        self._demote("renewal overdue")
                        continue
                    if time.monotonic() - self._renewed_at >= self.ttl / 3:
                        try:
                            self.revision = await kv.update(self.key, self._value(), last=self.revision)
                            self._renewed_at = time.monotonic()
                        except nats.js.errors.KeyWrongLastSequenceError:
                            self._demote("another node holds the lease")
                            continue
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):  # renewal period; hub_lost() wakes us
                        await asyncio.wait_for(self._wake.wait(), self.poll)
                    continue
                if not self._healthy():  # never lead without a hub connection
                    await asyncio.sleep(self.poll)
                    continue
                try:
                    revision = await kv.create(self.key, self._value())
                except nats.js.errors.KeyWrongLastSequenceError:
                    # Held by someone: wake on a delete (clean handover) or poll for expiry.
                    with contextlib.suppress(nats.errors.TimeoutError):
                        await watcher.updates(timeout=self.poll)  # type: ignore[no-untyped-call]
                    continue
                self._hub_lost = False  # a blip before we led is not ours to hand over
                await self._promote(revision)
        finally:
            try:
                await watcher.stop()  # type: ignore[no-untyped-call]
            except Exception as err:
                log.debug("ha.watch_stop_failed", error=type(err).__name__)

    async def _step_down(self, kv: KeyValue, revision: int) -> None:
        """Give the lease to the standby now (delete on our revision), and stand by ourselves."""
        import nats.errors

        self._demote("hub connection down; handing over")
        with contextlib.suppress(nats.errors.Error, OSError):
            await kv.delete(self.key, last=revision)

    async def release(self) -> None:
        """Give the lease up (after the sinks drained; `run()` still running): the standby takes over
        without waiting for the TTL. This node never acquires it again."""
        import nats.errors

        self._stopping.set()
        kv, revision = self._kv, self.revision
        self.leader = False
        if kv is None or revision is None:
            return
        try:
            await asyncio.wait_for(kv.delete(self.key, last=revision), 2.0)
            log.info("ha.lease_released", node=self.node, key=self.key)
        except (nats.errors.Error, OSError, TimeoutError) as err:
            log.warning("ha.lease_release_failed", error=f"{type(err).__name__}")
