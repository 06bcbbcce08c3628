"""The HA lease against a real nats-server: one leader, hand-over on hub trouble and on release."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from consumer.config import HaConfig, NatsSinkConfig
from consumer.ha import HaController
from consumer.redmist import PAYLOADS
from consumer.relay.relay import Relay
from consumer.sinks.nats import NatsSink

from .natsserver import NatsServer


async def until(cond: Callable[[], bool], timeout: float = 20.0) -> float:
    start = time.monotonic()
    while not cond():
        assert time.monotonic() - start < timeout, "timed out"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def controller(server: NatsServer, node: str, health: dict[str, bool]) -> HaController:
    sink = NatsSink(NatsSinkConfig(), {"servers": [server.url]}, hub="redmist")
    return HaController(
        HaConfig(enabled=True, node_id=node, lease_ttl_seconds=2.0),
        {"servers": [server.url]},
        hub="redmist",
        sinks=[sink],
        relay=Relay([], hub="redmist", profile=PAYLOADS),
        healthy=lambda: health[node],
        settle=0.0,
    )


async def test_one_leader_hub_trouble_hands_over_release_hands_over(nats_server: NatsServer) -> None:
    health = {"a": True, "b": False}
    a, b = controller(nats_server, "a", health), controller(nats_server, "b", health)
    tasks = [asyncio.create_task(c.run()) for c in (a, b)]
    try:
        await until(a.is_leader)
        assert not b.is_leader() and a.sinks[0].role == "takeover"  # takeover ends at its failover line
        health["b"] = True
        health["a"] = False  # the leader's hub connection drops: it hands over at once, not after the TTL
        took = await until(lambda: b.is_leader() and not a.is_leader())
        assert took < 2.0 and a.sinks[0].role == "standby"
        health["a"] = True
        await asyncio.sleep(0.5)  # a healthy standby does not steal a renewed lease
        assert b.is_leader() and not a.is_leader()
        await b.release()  # SIGTERM path: delete the key, a takes over without waiting for the TTL
        took = await until(a.is_leader)
        assert took < 1.5 and not b.is_leader()
        assert a.takeovers == 2 and b.takeovers == 1
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
