"""RedMist profile against httpx.MockTransport (429/Retry-After and timing shapes); the real REST peer
(the simulator) is exercised in test_e2e.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import httpx
import msgspec

from consumer.config import InCar, RedMistConfig
from consumer.relay import contract
from consumer.relay.redmist import RedMistProfile, default_rest_url
from consumer.relay.relay import Relay
from consumer.relay.state import LiveState
from consumer.secret import Secret
from consumer.sinks import SinkWorker


class MemorySink:
    sync_interval: float | None = None
    name = "mem"

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    async def open(self) -> None: ...

    async def write(self, lines: Sequence[bytes]) -> None:
        self.lines.extend(lines)

    async def flush(self) -> None: ...

    async def reopen(self) -> None: ...

    async def close(self) -> None: ...


class FakeTime:
    """A virtual monotonic clock; sleeping advances it instantly (and yields to the loop)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def snapshot_body(ev: int) -> dict[str, Any]:
    return {"eventId": ev, "sessionId": 1, "eventName": f"ev{ev}", "carPositions": [{"n": "42", "ovp": 1}]}


def test_subscription_calls_follow_the_contract() -> None:
    cfg = RedMistConfig(
        events=[390, 410],
        access_codes={"410": Secret("s3cret-code")},
        control_logs=True,
        in_car=[InCar(event=390, car="42")],
    )
    relay = Relay([], hub="h")
    profile = RedMistProfile(cfg, relay, httpx.AsyncClient(), hub_url="https://x/status/event-status")
    calls = profile.calls()
    assert [(c.method, c.arguments) for c in calls] == [
        ("SubscribeToEventV2", (390,)),
        ("SubscribeToControlLogs", (390, None)),
        ("SubscribeToEventV2WithCode", (410, "s3cret-code")),
        ("SubscribeToControlLogs", (410, "s3cret-code")),
        ("SubscribeToInCarDriverEventV2", (390, "42", None)),
    ]
    assert all("s3cret" not in c.describe() for c in calls)


def test_rest_url_is_derived_from_hub_url() -> None:
    assert (
        default_rest_url("https://api.redmist.racing/status/event-status")
        == "https://api.redmist.racing/status"
    )
    assert default_rest_url("ws://127.0.0.1:5000/status/event-status/") == "http://127.0.0.1:5000/status"


async def test_snapshots_coalesced_rate_limited_and_429_honoured() -> None:
    t = FakeTime()
    calls: list[tuple[float, str, str | None]] = []
    limited = {"n": 1}

    def handler(request: httpx.Request) -> httpx.Response:
        ev = int(request.url.params["eventId"])
        calls.append((t.now, request.url.path, request.headers.get("x-event-access-code")))
        if ev == 410 and limited["n"] > 0:
            limited["n"] -= 1
            return httpx.Response(429, headers={"Retry-After": "5"})
        return httpx.Response(200, json=snapshot_body(ev))

    sink = MemorySink()
    worker = SinkWorker(sink)
    await worker.start()
    relay = Relay([worker], hub="h")
    cfg = RedMistConfig(
        events=[390, 410], access_codes={"410": Secret("code-410")}, snapshot_min_interval_seconds=1.0
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        profile = RedMistProfile(
            cfg, relay, http, hub_url="http://127.0.0.1/status/event-status", clock=t.clock, sleep=t.sleep
        )
        task = asyncio.create_task(profile.run())
        try:
            # a reconnect storm: 20 rounds of requests before the task gets to run
            for _ in range(20):
                profile.after_subscribe()
            async with asyncio.timeout(5):
                await profile.wait_idle()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    await worker.close(grace=5)
    # one call per event, plus one retry of the rate-limited one
    assert [(p.rsplit("/", 1)[1], c) for _, p, c in calls] == [
        ("GetCurrentSessionStateJson", None),
        ("GetCurrentSessionStateJson", "code-410"),
        ("GetCurrentSessionStateJson", "code-410"),
    ]
    times = [c[0] for c in calls]
    assert times[1] - times[0] >= 1.0  # min interval between calls
    assert times[2] - times[1] >= 5.0  # Retry-After honoured
    assert relay.stats.snapshots["coalesced"] == 38
    assert relay.stats.snapshots["rate_limited"] == 1
    recs = [json.loads(line) for line in sink.lines]
    assert [(r["kind"], r["target"], r["event_id"]) for r in recs] == [
        ("snapshot", "GetCurrentSessionStateJson", 390),
        ("snapshot", "GetCurrentSessionStateJson", 410),
    ]
    assert recs[0]["arguments"] == [snapshot_body(390)]


async def test_reset_refetches_and_clears_state_messagepack_snapshot() -> None:
    t = FakeTime()
    state_arr = contract.to_msgpack_array("SessionState", snapshot_body(390))
    hits: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hits.append(request.url.path)
        assert request.headers["accept"] == "application/x-msgpack"
        return httpx.Response(200, content=msgspec.msgpack.encode(state_arr))

    sink = MemorySink()
    worker = SinkWorker(sink)
    await worker.start()
    relay = Relay([worker], hub="h")
    state = LiveState(None)
    cfg = RedMistConfig(events=[390], snapshot_format="messagepack")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        profile = RedMistProfile(
            cfg,
            relay,
            http,
            hub_url="http://h/status/event-status",
            state=state,
            clock=t.clock,
            sleep=t.sleep,
        )
        task = asyncio.create_task(profile.run())
        try:
            profile.after_subscribe()
            async with asyncio.timeout(5):
                await profile.wait_idle()
            await relay.on_raw(
                "ReceiveCarPatches", msgspec.Raw(b'[[{"eventId":"390","number":"42","overallPosition":9}]]')
            )
            assert state.cars["390"]["42"]["ovp"] == 9
            await relay.on_raw("ReceiveReset", msgspec.Raw(b"[]"))
            assert state.cars == {}  # cleared until the snapshot arrives
            async with asyncio.timeout(5):
                await profile.wait_idle()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    await worker.close(grace=5)
    assert hits == ["/status/v2/Events/GetCurrentSessionState"] * 2
    assert state.cars["390"]["42"]["ovp"] == 1
    kinds = [json.loads(line)["kind"] for line in sink.lines]
    assert kinds == ["snapshot", "invocation", "invocation", "snapshot"]
    snap = json.loads(sink.lines[0])["arguments"][0]
    assert snap["eventName"] == "ev390" and snap["carPositions"][0]["n"] == "42"


async def test_server_errors_are_retried_with_backoff() -> None:
    t = FakeTime()
    answers = [503, 500, 200]

    def handler(request: httpx.Request) -> httpx.Response:
        status = answers.pop(0)
        return httpx.Response(status, json=snapshot_body(1) if status == 200 else {"error": "x"})

    relay = Relay([], hub="h")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        profile = RedMistProfile(
            RedMistConfig(events=[1]), relay, http, hub_url="http://h/s/e", clock=t.clock, sleep=t.sleep
        )
        task = asyncio.create_task(profile.run())
        try:
            profile.request_snapshots()
            async with asyncio.timeout(5):
                await profile.wait_idle()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert answers == []
    assert relay.stats.snapshots == {"error": 2, "ok": 1}
