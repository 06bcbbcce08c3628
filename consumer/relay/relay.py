"""The relay: hub invocations in, envelope lines out to the sink workers.

Hot path per invocation (`on_raw(target, raw_args)`, registered with `HubConnection.on_raw` on a
connection built with `raw_arguments=True`):

    count → route (per-target cached tuple of sink workers) → JSON: the profile's cheap event id peek
    and the raw argument bytes spliced into the envelope | MessagePack: the profile names the decoded
    arguments (its cheapest encodable form; dicts only when a watcher reads the target) → encode the
    envelope once → `offer()` the same bytes to each worker (await only when a `block` queue is full)

No per-message logging, task creation or awaiting of a sink. Payloads are decoded only for targets a
feature needs (`watch()`: e.g. a profile's resets and live state).

What depends on the hub's payloads (event ids, MessagePack names, compact form, known targets) comes
from the injected `HubProfile` (consumer.relay.profile; default `PlainProfile`, RedMist's is
`consumer.redmist.payloads.PAYLOADS`).

Per event (`track_events`, a profile's configured events): the monotonic time of the last message is
kept in `last_message_by_event` (a quiet-hub resync), and a message for an event in `wake_events` calls
`on_event_message(event_id)` (e.g. a "not live" hold lifted).

Filters (`include` / `exclude` per sink) apply to invocation targets. Snapshot and connection records
go to every sink: they are what makes the stream interpretable (gaps, fresh baselines).

Cardinality: target names come from the hub, so nothing keyed by them grows without bound. Every
invocation is relayed whatever its target, but the per-target counters (`stats.received`,
`stats.relayed`, hence the metric labels) name only known targets — the profile's, the
`known_targets` given (`[hub] known_targets`), the sinks' include/exclude lists and watched targets —
and count every other target as `other`. The route cache holds at most `MAX_ROUTES` targets of at most
`MAX_TARGET_LENGTH` characters (longer ones are routed, never cached) and starts over when full.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Container, Iterable, Sequence
from typing import Any, Literal

import msgspec

from consumer.relay.envelope import EnvelopeEncoder
from consumer.relay.profile import HubProfile, PlainProfile
from consumer.relay.stats import OTHER_TARGET, RelayStats
from consumer.signalr.connection import MAX_TARGET_LENGTH
from consumer.sinks import SinkWorker

Watcher = Callable[[list[Any], "int | str | None"], None]
_Cached = tuple[tuple[SinkWorker, ...], str]  # the sink workers a target goes to, its counter key

MAX_ROUTES = 1024  # route cache entries; the cache starts over when full


class Relay:
    def __init__(
        self,
        workers: Sequence[SinkWorker],
        *,
        hub: str,
        protocol: Literal["json", "messagepack"] = "json",
        stats: RelayStats | None = None,
        known_targets: Iterable[str] = (),
        encoder: EnvelopeEncoder | None = None,
        peek_event_id: bool = True,
        clock: Callable[[], float] = time.monotonic,
        compact_patches: bool = False,
        profile: HubProfile | None = None,
    ) -> None:
        self.workers = tuple(workers)
        self.profile = profile = profile or PlainProfile()
        self.known_targets: set[str] = {*profile.known_targets, *known_targets}
        for worker in self.workers:
            self.known_targets.update(worker.include, worker.exclude)
        self.protocol = protocol
        self.stats = stats or RelayStats(clock=clock)
        self.encoder = encoder or EnvelopeEncoder(hub)
        self.peek_event_id = peek_event_id
        self._clock = clock
        self._routes: dict[str, _Cached] = {}
        self._watch: dict[str, list[Watcher]] = {}
        self._json = protocol == "json"
        self.compact_patches = compact_patches  # the profile's compact form (e.g. `[redmist] patches`)
        self.track_events: Container[int | str] = frozenset()
        self.last_message_by_event: dict[int | str, float] = {}
        self.wake_events: Container[int | str] = frozenset()
        self.on_event_message: Callable[[int | str], None] | None = None

    def _seen(self, event_id: int | str, now: float) -> None:
        """A message for a tracked event (not called for others: the hot path pays one `in`)."""
        self.last_message_by_event[event_id] = now
        if event_id in self.wake_events and self.on_event_message is not None:
            self.on_event_message(event_id)

    def watch(self, target: str, callback: Watcher) -> None:
        """Call `callback(decoded_args, event_id)` for every invocation of `target` (after relaying)."""
        self._watch.setdefault(target, []).append(callback)
        self.known_targets.add(target)
        self._routes.clear()

    @property
    def cached_targets(self) -> Collection[str]:
        """The targets the route cache holds now (a live view; at most `MAX_ROUTES`)."""
        return self._routes.keys()

    def _route(self, target: str) -> _Cached:
        cached = self._routes.get(target)
        if cached is None:
            route = tuple(w for w in self.workers if w.accepts(target))
            cached = (route, target if target in self.known_targets else OTHER_TARGET)
            if len(target) <= MAX_TARGET_LENGTH:
                if len(self._routes) >= MAX_ROUTES:
                    self._routes.clear()
                self._routes[target] = cached
        return cached

    # -- hot path ------------------------------------------------------------------------------

    async def on_raw(self, target: str, raw: Any) -> None:
        """`HubConnection.on_raw` handler: `raw` is a msgspec.Raw of the arguments array."""
        stats = self.stats
        stats.last_message = now = self._clock()
        cached = self._routes.get(target)
        if cached is None:
            cached = self._route(target)
        route, key = cached
        received = stats.received
        received[key] = received.get(key, 0) + 1
        watchers = self._watch.get(target)
        if not route and not watchers:
            return
        decoded: list[Any] | None = None
        compact = self.compact_patches
        profile = self.profile
        if self._json:
            arguments: Any = raw
            event_id = profile.json_event_id(raw) if self.peek_event_id else None
            if compact and route:
                arguments = profile.compact_json(target, raw) or raw
        elif watchers:  # the watchers read fields: they get the dict form (always faithful)
            decoded, arguments = profile.msgpack_decoded(target, raw, compact)
            event_id = profile.event_id(decoded) if self.peek_event_id else None
        else:  # only encoded: the profile's cheapest form that encodes to the same bytes
            arguments = profile.msgpack_encodable(target, raw, compact)
            event_id = profile.event_id(arguments) if self.peek_event_id else None
        if event_id in self.track_events:
            self._seen(event_id, now)  # type: ignore[arg-type]
        if route:
            line = self.encoder.invocation(target, arguments, event_id)
            for worker in route:
                if not worker.offer(line):
                    await worker.put(line)
            relayed = stats.relayed
            relayed[key] = relayed.get(key, 0) + 1
        if watchers:
            if decoded is None:
                decoded = list(msgspec.json.decode(raw))
            for watcher in watchers:
                watcher(decoded, event_id)

    async def on_invocation(self, target: str, *args: Any) -> None:
        """Decoded-arguments entry point (an `on()` handler); output identical to `on_raw`."""
        stats = self.stats
        stats.last_message = now = self._clock()
        route, key = self._route(target)
        stats.received[key] = stats.received.get(key, 0) + 1
        decoded = list(args)
        event_id = self.profile.event_id(decoded) if self.peek_event_id else None
        if event_id in self.track_events:
            self._seen(event_id, now)  # type: ignore[arg-type]
        if route:
            out = self.profile.compact_decoded(target, decoded) if self.compact_patches else decoded
            line = self.encoder.invocation(target, out, event_id)
            await self._fan_out(line, route)
            stats.relayed[key] = stats.relayed.get(key, 0) + 1
        for watcher in self._watch.get(target, ()):
            watcher(decoded, event_id)

    # -- other records -------------------------------------------------------------------------

    async def _fan_out(self, line: bytes, route: Sequence[SinkWorker]) -> None:
        for worker in route:
            if not worker.offer(line):
                await worker.put(line)

    async def emit_snapshot(self, target: str, state: Any, event_id: int | str | None) -> None:
        """A session snapshot (`state` may be a msgspec.Raw of the REST body: spliced as is)."""
        await self._fan_out(self.encoder.snapshot(target, state, event_id), self.workers)

    async def emit_ha(self, target: str, info: dict[str, Any], event_id: int | str | None = None) -> None:
        """A hot-standby pair marker (`failover`) to every sink."""
        await self._fan_out(self.encoder.encode("ha", target, [info], event_id), self.workers)

    async def emit_connection(self, state: str, error: str | None = None) -> None:
        """A connection marker (connected / reconnecting / reconnected / closed)."""
        await self._fan_out(self.encoder.connection(state, error), self.workers)
