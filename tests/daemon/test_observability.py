from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from consumer.observability import DaemonCollector, ObservabilityServer, build_registry
from consumer.relay.stats import RelayStats
from consumer.sinks import SinkWorker, StdoutSink


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


async def test_health_ready_and_metrics_endpoints() -> None:
    clock = FakeClock()
    stats = RelayStats(clock=clock)
    worker = SinkWorker(StdoutSink(name="stdout"), queue_size=5, overflow="drop_oldest")
    for i in range(7):
        worker.offer(str(i).encode())  # never started: 5 queued, 2 dropped
    registry = build_registry(DaemonCollector(stats, [worker], lambda: {"ok": 3, "error": 1}))
    server = ObservabilityServer(stats, registry, port=0, reconnect_grace=30)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            # starting up: not connected yet but within the grace -> healthy, not ready
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/readyz")).status_code == 503
            stats.set_state("connected")
            stats.received["ReceiveCarPatches"] = 41
            stats.relayed["ReceiveCarPatches"] = 40
            stats.count_reconnect("transport_closed")
            stats.last_message = clock.t - 2.5
            assert (await http.get("/readyz")).status_code == 200
            clock.t += 1000  # connected for a long time is still healthy
            assert (await http.get("/healthz")).status_code == 200
            stats.set_state("reconnecting")
            clock.t += 29
            assert (await http.get("/healthz")).status_code == 200
            clock.t += 2  # past the reconnect grace
            r = await http.get("/healthz")
            assert r.status_code == 503 and r.json()["state"] == "reconnecting"
            m = await http.get("/metrics")
            assert m.status_code == 200
            assert m.headers["content-type"].startswith("text/plain")
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(m.text)
                for s in fam.samples
            }
    finally:
        await server.stop()
    assert samples[("event_consumer_messages_received_total", (("target", "ReceiveCarPatches"),))] == 41
    assert samples[("event_consumer_messages_relayed_total", (("target", "ReceiveCarPatches"),))] == 40
    assert samples[("event_consumer_reconnects_total", (("reason", "transport_closed"),))] == 1
    assert samples[("event_consumer_token_requests_total", (("outcome", "ok"),))] == 3
    assert samples[("event_consumer_sink_queue_depth", (("sink", "stdout"),))] == 5
    assert (
        samples[("event_consumer_dropped_records_total", (("reason", "overflow"), ("sink", "stdout")))] == 2
    )
    assert samples[("event_consumer_connection_state", (("state", "reconnecting"),))] == 1
    assert samples[("event_consumer_connection_state", (("state", "connected"),))] == 0
    assert samples[("event_consumer_seconds_since_last_message", ())] == 1033.5
    assert samples[("event_consumer_connected", ())] == 0
