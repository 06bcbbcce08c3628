"""The benchmark hub: the project's own `HubServer` on loopback pushing pre-encoded car-patch payloads.

Run as its own process (`python bench/hub.py`); it prints one JSON line `{"url": ..., "pool": ...}`
when ready, then one JSON line per finished stream (hub-side timings). Hub methods:

- `BenchStream(count, rate, close_when_done)`: send `count` `ReceiveCarPatches` invocations to the
  caller. `rate == 0`: as fast as the client reads. `rate > 0`: paced at `rate` msgs/s, JSON only,
  each payload carrying a second argument `{"sentAtNs": <time.time_ns() at send>}` (latency runs).

- `SubscribeToEvent(event_id)`: adds the caller to group `evt-<id>` (the events-scale runs).
- `BenchEvents(count, close_when_done)`: `count` invocations round-robin over the groups of the events
  the caller subscribed to (in subscription order), each payload's `eventId` rewritten to that event
  (JSON only; the daemon's envelope `event_id` follows the payload), as fast as the client reads.

`--hubs N` serves N independent HubServers (N ports) from this one process; the ready line carries
`urls` (all) and `url` (the first). The hubs-scale runs connect one client connection to each.

Flow control (`rate == 0`): `HubServer.send_to_connection` never blocks (it queues, and a full
outbound queue closes the connection), so the feeder keeps at most `--window` bytes queued but not yet
written to the socket, measured through the public `stats.bytes_sent` counter. When the window is
full it re-checks every 0.5 ms (HubServer exposes no awaitable "drained" signal). The arguments are
`msgspec.Raw` pre-encoded per protocol; the server only wraps them in the invocation envelope.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from payloads import TARGET, Payload, build_pool, describe

from consumer.signalr import protocol as p
from consumer.sim.hubhost import HubCallContext, HubError, HubServer, ProtocolArgs

POLL = 0.0005
EVENT_POOL = 64  # distinct payloads per event in BenchEvents (the rewritten copies are cached)
_EVENT_ID = re.compile(rb'"eventId":"[^"]*"')


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class BenchHub:
    def __init__(self, pool: list[Payload], window: int) -> None:
        self.pool = pool
        self.window = window
        self.server = HubServer(
            "/bench",
            keepalive_interval=300.0,
            client_timeout=600.0,
            stateful_reconnect=False,
            outbound_queue_size=65536,
            max_message_size=16 * 1024 * 1024,
        )
        self.args = [ProtocolArgs(json=x.json_args, messagepack=x.msgpack_args) for x in pool]
        # Frame sizes exactly as the server will write them (for the in-flight window).
        self.sizes = {
            name: [
                len(p.get_protocol(name).encode(p.Invocation(target=TARGET, arguments=a.for_protocol(name))))
                for a in self.args
            ]
            for name in ("json", "messagepack")
        }
        self.tasks: set[asyncio.Task[None]] = set()
        self.subscribed: dict[str, list[int]] = {}  # connection id -> event ids, in order
        self._event_args: dict[tuple[int, int], msgspec.Raw] = {}
        self.server.register("BenchStream", self._bench_stream)
        self.server.register("SubscribeToEvent", self._subscribe)
        self.server.register("BenchEvents", self._bench_events)

    async def _subscribe(self, ctx: HubCallContext, event_id: int) -> None:
        await ctx.add_to_group(f"evt-{int(event_id)}")
        self.subscribed.setdefault(ctx.connection_id, []).append(int(event_id))

    async def _bench_events(self, ctx: HubCallContext, count: int, close_when_done: bool) -> None:
        events = list(self.subscribed.get(ctx.connection_id, ()))
        if not events:
            raise HubError("BenchEvents: subscribe to at least one event first")
        task = asyncio.get_running_loop().create_task(
            self._feed(ctx.connection_id, int(count), 0.0, bool(close_when_done), events=events)
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def event_args(self, k: int, event_id: int) -> msgspec.Raw:
        """Payload `k` (of the first EVENT_POOL) with every car's eventId set to `event_id` (cached)."""
        key = (k, event_id)
        raw = self._event_args.get(key)
        if raw is None:
            raw = msgspec.Raw(_EVENT_ID.sub(b'"eventId":"%d"' % event_id, bytes(self.pool[k].json_args)))
            self._event_args[key] = raw
        return raw

    async def _bench_stream(
        self, ctx: HubCallContext, count: int, rate: float, close_when_done: bool
    ) -> None:
        task = asyncio.get_running_loop().create_task(
            self._feed(ctx.connection_id, int(count), float(rate), bool(close_when_done))
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _feed(
        self, cid: str, count: int, rate: float, close_when_done: bool, events: list[int] | None = None
    ) -> None:
        server = self.server
        proto = server.protocol_of(cid) or "json"
        stats = server.stats
        sizes = self.sizes[proto]
        n = len(self.args)
        await asyncio.sleep(0)  # let the BenchStream completion go out first
        base = stats.bytes_sent
        queued = 0
        sent = 0
        t0 = time.perf_counter()
        if events is not None:
            json_proto = p.get_protocol("json")
            groups = [f"evt-{e}" for e in events]
            m = len(events)
            pool_n = min(n, EVENT_POOL)
            for i in range(count):
                while queued - (stats.bytes_sent - base) > self.window:
                    await asyncio.sleep(POLL)
                j = i % m
                raw = self.event_args((i // m) % pool_n, events[j])
                if not server.send_to_group(groups[j], TARGET, arguments=raw):
                    break
                queued += len(json_proto.encode(p.Invocation(target=TARGET, arguments=raw)))
                sent += 1
        elif rate <= 0:
            for i in range(count):
                while queued - (stats.bytes_sent - base) > self.window:
                    await asyncio.sleep(POLL)
                k = i % n
                if not server.send_to_connection(cid, TARGET, arguments=self.args[k]):
                    break
                queued += sizes[k]
                sent += 1
        else:
            interval = 1.0 / rate
            start = time.perf_counter()
            for i in range(count):
                due = start + i * interval
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                k = i % n
                payload = self.pool[k].json_args
                stamp = f',{{"sentAtNs":{time.time_ns()}}}]'.encode()
                raw = msgspec.Raw(bytes(payload)[:-1] + stamp)
                if not server.send_to_connection(cid, TARGET, arguments=raw):
                    break
                queued += len(raw) + 40  # approximately the invocation envelope
                sent += 1
        t_enqueued = time.perf_counter()
        while stats.bytes_sent - base < queued and cid in server.connection_ids:
            await asyncio.sleep(POLL)
        t_flushed = time.perf_counter()
        _emit(
            {
                "stream": cid,
                "protocol": proto,
                "count": sent,
                "rate": rate,
                "enqueue_seconds": t_enqueued - t0,
                "flush_seconds": t_flushed - t0,
                "bytes": stats.bytes_sent - base,
            }
        )
        if close_when_done and cid in server.connection_ids:
            await server.close_connection(cid)


async def _main(window: int, pool_size: int, hubs: int) -> None:
    pool = build_pool(pool_size)
    benches = [BenchHub(pool, window) for _ in range(hubs)]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(hub.server.serve()) for hub in benches]
        _emit({"url": urls[0], "urls": urls, "pool": describe(pool)})
        await stop.wait()
    for hub in benches:
        for task in list(hub.tasks):
            task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--window", type=int, default=2 * 1024 * 1024, help="max bytes queued, not written")
    parser.add_argument("--pool", type=int, default=512, help="distinct payloads")
    parser.add_argument("--hubs", type=int, default=1, help="independent hub servers (ports)")
    args = parser.parse_args()
    asyncio.run(_main(args.window, args.pool, max(1, args.hubs)))


if __name__ == "__main__":
    main()
