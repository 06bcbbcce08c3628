"""RedMist profile against httpx.MockTransport (429/Retry-After and timing shapes); the real REST peer
(the simulator) is exercised in test_e2e.py."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from typing import Any

import httpx
import msgspec
import pytest
import structlog

from consumer.config import InCar, RedMistConfig
from consumer.redmist import PAYLOADS, contract
from consumer.redmist.profile import RedMistProfile, default_rest_url
from consumer.redmist.state import LiveState
from consumer.relay.relay import Relay
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
    relay = Relay([], hub="h", profile=PAYLOADS)
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
    relay = Relay([worker], hub="h", profile=PAYLOADS)
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
    relay = Relay([worker], hub="h", profile=PAYLOADS)
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

    relay = Relay([], hub="h", profile=PAYLOADS)
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


# -- keeping the board right: session changes, quiet-hub resync, "not live", read limits ------------


class HoldableTime(FakeTime):
    """FakeTime whose long sleeps (the profile's idle waits) block while `hold` is set, so that a
    test can act at a fixed virtual time; short sleeps (the rate limit) still pass instantly."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self._never = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        if self.hold and seconds >= 5:
            await self._never.wait()
        await super().sleep(seconds)


def session_body(ev: int, sid: int, cars: list[str]) -> dict[str, Any]:
    return {
        "eventId": ev,
        "sessionId": sid,
        "sessionName": f"session {sid}",
        "eventEntries": [{"no": n, "nm": f"team {n}", "t": "", "c": "A"} for n in cars],
        "carPositions": [{"n": n, "sid": str(sid), "ovp": i + 1} for i, n in enumerate(cars)],
    }


def car_patch_raw(ev: int, sid: int, number: str, **fields: Any) -> msgspec.Raw:
    return msgspec.Raw(
        msgspec.json.encode([[{"eventId": str(ev), "sessionId": str(sid), "number": number, **fields}]])
    )


async def started(profile: RedMistProfile) -> asyncio.Task[None]:
    task = asyncio.create_task(profile.run())
    profile.after_subscribe()
    async with asyncio.timeout(5):
        await profile.wait_idle()
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_new_session_without_reset_drops_old_cars_and_fetches_a_snapshot() -> None:
    t = FakeTime()
    live = {"sid": 1}
    hits: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hits.append(live["sid"])
        cars = ["42", "7"] if live["sid"] == 1 else ["99", "5"]
        return httpx.Response(200, json=session_body(390, live["sid"], cars))

    sink = MemorySink()
    worker = SinkWorker(sink)
    await worker.start()
    relay = Relay([worker], hub="h", profile=PAYLOADS)
    state = LiveState(None)
    cfg = RedMistConfig(events=[390], resync_quiet_seconds=0, resync_every_seconds=0)
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
        task = await started(profile)
        try:
            board = state.event_state("390")
            assert board is not None and [c["n"] for c in board["carPositions"]] == ["42", "7"]
            assert state.epoch("390") == 0 and state.event_status("390") == "live"
            await relay.on_raw("ReceiveCarPatches", car_patch_raw(390, 1, "42", overallPosition=2))
            # RedMist starts the next session: a session patch with a new sessionId, no ReceiveReset
            live["sid"] = 2
            patch = {"eventId": 390, "sessionId": 2, "sessionName": "session 2", "timeToGo": "00:30:00"}
            await relay.on_raw("ReceiveSessionPatch", msgspec.Raw(msgspec.json.encode([patch])))
            board = state.event_state("390")
            assert board is not None and board["carPositions"] == []  # the old session's cars are gone
            assert board["sessionId"] == 2 and "eventEntries" not in board
            assert state.epoch("390") == 1
            async with asyncio.timeout(5):
                await profile.wait_idle()
            board = state.event_state("390")
            assert board is not None and [c["n"] for c in board["carPositions"]] == ["99", "5"]
            # a patch for a car that is not entered in this session: skipped on the board, relayed
            await relay.on_raw("ReceiveCarPatches", car_patch_raw(390, 2, "42", overallPosition=1))
            await relay.on_raw("ReceiveCarPatches", car_patch_raw(390, 2, "5", overallPosition=1))
        finally:
            await stop(task)
    await worker.close(grace=5)
    assert hits == [1, 2]
    assert state.session_changes == 1 and state.unknown_car_patches == 1
    board = state.event_state("390")
    assert board is not None and {c["n"]: c["ovp"] for c in board["carPositions"]} == {"99": 1, "5": 1}
    recs = [json.loads(line) for line in sink.lines]
    relayed = [r["arguments"][0][0]["number"] for r in recs if r["target"] == "ReceiveCarPatches"]
    assert relayed == ["42", "42", "5"]  # the relayed lines stay complete
    assert [r["arguments"][0]["sessionId"] for r in recs if r["kind"] == "snapshot"] == [1, 2]


async def test_full_entry_list_removes_cars_and_a_snapshot_with_a_new_session_resets() -> None:
    state = LiveState(None)
    state.on_snapshot(session_body(5, 1, ["1", "2", "3"]), 5)
    entries = [{"no": "1"}, {"no": "3"}]
    state.on_session_patch([{"eventId": 5, "sessionId": 1, "eventEntries": entries}], 5)
    board = state.event_state("5")
    assert board is not None and [c["n"] for c in board["carPositions"]] == ["1", "3"]
    state.on_car_patches([[{"eventId": "5", "sessionId": "1", "number": "2", "ovp": 1}]], 5)
    assert state.unknown_car_patches == 1
    # without entries (an empty list tells nothing) every patched car gets a row
    state.on_snapshot(session_body(6, 4, []), 6)
    state.on_car_patches([[{"eventId": "6", "sessionId": "4", "number": "8"}]], 6)
    assert [c["n"] for c in (state.event_state("6") or {})["carPositions"]] == ["8"]
    state.on_snapshot(session_body(5, 2, ["9"]), 5)  # a snapshot of a new session: a reset too
    assert state.epoch("5") == 1 and state.epoch("6") == 0
    state.reset()
    assert state.epoch("5") == 2 and state.epoch("6") == 1 and state.events() == []


async def test_silent_hub_resyncs_within_the_quiet_window_and_messages_postpone_it() -> None:
    t = FakeTime()
    times: list[float] = []
    enough = asyncio.Event()
    relay = Relay([], hub="h", profile=PAYLOADS)
    relay.stats.set_state("connected")

    async def handler(request: httpx.Request) -> httpx.Response:
        times.append(t.now)
        if len(times) == 3:  # between the 3rd and 4th snapshot, hub messages 3 s and 6 s later
            t.now += 3
            await relay.on_raw("ReceiveCarPatches", car_patch_raw(390, 1, "42", overallPosition=1))
            t.now += 3
            await relay.on_raw("ReceiveCarPatches", car_patch_raw(390, 1, "42", overallPosition=2))
        if len(times) >= 5:
            enough.set()
        return httpx.Response(200, json=session_body(390, 1, ["42"]))

    cfg = RedMistConfig(events=[390], resync_quiet_seconds=5, resync_every_seconds=300)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        profile = RedMistProfile(
            cfg, relay, http, hub_url="http://h/status/event-status", clock=t.clock, sleep=t.sleep
        )
        task = await started(profile)
        try:
            async with asyncio.timeout(5):
                await enough.wait()
        finally:
            await stop(task)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] == gaps[1] == 5.0  # silent: one resync per quiet window, right at its end
    assert gaps[2] == 6.0 + 5.0  # the last message (6 s after the 3rd snapshot) + the quiet window
    assert gaps[3] == 5.0
    assert profile.resyncs["quiet"] >= 4 and "periodic" not in profile.resyncs


async def test_busy_hub_resyncs_every_five_minutes_only_while_connected() -> None:
    t = FakeTime()
    times: list[float] = []
    enough = asyncio.Event()
    relay = Relay([], hub="h", profile=PAYLOADS)
    relay.stats.set_state("connected")

    async def handler(request: httpx.Request) -> httpx.Response:
        times.append(t.now)
        if len(times) >= 3:
            enough.set()
        return httpx.Response(200, json=session_body(390, 1, ["42"]))

    cfg = RedMistConfig(events=[390], resync_quiet_seconds=0, resync_every_seconds=300)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        profile = RedMistProfile(
            cfg, relay, http, hub_url="http://h/status/event-status", clock=t.clock, sleep=t.sleep
        )
        task = await started(profile)
        try:
            async with asyncio.timeout(5):
                await enough.wait()
            relay.stats.set_state("reconnecting")
            before = len(times)
            t.now += 3600
            profile.request_snapshots([])  # wake the loop: nothing is due while not connected
            await asyncio.sleep(0.05)
            assert len(times) == before
        finally:
            await stop(task)
    assert [b - a for a, b in itertools.pairwise(times)][:2] == [300.0, 300.0]
    assert profile.resyncs == {"periodic": len(times) - 1}


async def test_not_live_404_is_rechecked_every_30_s_and_a_hub_message_lifts_the_hold() -> None:
    t = HoldableTime()
    live = {"on": False}
    times: list[float] = []
    four = asyncio.Event()
    relay = Relay([], hub="h", profile=PAYLOADS)
    relay.stats.set_state("connected")
    state = LiveState(None, clock=t.clock)

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(t.now)
        if not live["on"]:
            if len(times) == 4:
                t.hold = True  # stop virtual time here: the test sends a hub message now
                four.set()
            return httpx.Response(404, text="")
        return httpx.Response(200, json=session_body(390, 3, ["42"]))

    cfg = RedMistConfig(events=[390])  # defaults: quiet 5 s, every 300 s, recheck 30 s
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
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(profile.run())
            profile.after_subscribe()
            try:
                async with asyncio.timeout(5):
                    await four.wait()
                    while state.event_status("390") != "not_live":
                        await state.wait_changed(state.version)
                held_at = t.now
                live["on"] = True
                await relay.on_raw("ReceiveCarPatches", car_patch_raw(390, 3, "42", overallPosition=1))
                async with asyncio.timeout(5):
                    while state.event_status("390") != "live":
                        await state.wait_changed(state.version)
            finally:
                await stop(task)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[:3] == [30.0, 30.0, 30.0]  # one request per 30 s while not live, no quiet resyncs
    # the hub message lifted the hold at once (after the 1 s minimum interval between two calls)
    assert times[4] - held_at == cfg.snapshot_min_interval_seconds
    assert len(times) == 5 and not profile.is_not_live(390)
    assert relay.stats.snapshots == {"not_live": 4, "ok": 1}  # a 404 is not an error
    hold_lines = [e for e in logs if e["event"] in ("redmist.event_not_live", "redmist.event_live_again")]
    assert len(hold_lines) == 2  # one "on hold" line, one "lifted" line
    assert not [e for e in logs if e["log_level"] == "error"]


@pytest.mark.parametrize("streamed", [False, True])
async def test_snapshot_size_limit_is_a_clear_error_logged_once(streamed: bool) -> None:
    t = FakeTime()
    calls = {"n": 0}
    body = msgspec.json.encode({**snapshot_body(390), "eventName": "x" * 5000})

    async def chunks() -> Any:
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] > 3:
            return httpx.Response(200, json=snapshot_body(390))
        return httpx.Response(200, content=chunks() if streamed else body)

    relay = Relay([], hub="h", profile=PAYLOADS)
    cfg = RedMistConfig(events=[390], snapshot_max_bytes=4096)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        profile = RedMistProfile(
            cfg, relay, http, hub_url="http://h/status/event-status", clock=t.clock, sleep=t.sleep
        )
        with structlog.testing.capture_logs() as logs:
            task = await started(profile)
            await stop(task)
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1 and "snapshot_max_bytes = 4096" in errors[0]["error"]
    assert relay.stats.snapshots == {"error": 3, "ok": 1}


async def test_snapshot_read_has_a_total_deadline() -> None:
    gate = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        if not gate.is_set():
            gate.set()
            await asyncio.Event().wait()  # headers never come
        return httpx.Response(200, json=snapshot_body(390))

    relay = Relay([], hub="h", profile=PAYLOADS)
    cfg = RedMistConfig(events=[390], snapshot_timeout_seconds=0.2)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        profile = RedMistProfile(cfg, relay, http, hub_url="http://h/status/event-status", retry_max=0.1)
        with structlog.testing.capture_logs() as logs:
            task = await started(profile)
            await stop(task)
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1 and "snapshot_timeout_seconds = 0.2" in errors[0]["error"]
    assert relay.stats.snapshots == {"error": 1, "ok": 1}


def test_live_state_is_bounded_whatever_ids_numbers_and_names_the_hub_sends() -> None:
    state = LiveState(None, events=[7], max_cars=3, max_fields=5)
    state.on_car_patches([[{"number": str(n), "eventId": 9, "lastLapTime": "1:00"} for n in range(50)]], 9)
    state.on_session_patch([{"eventId": 9, "sessionId": 1, "currentFlag": 1}], 9)
    state.on_snapshot({"eventId": 9, "sessionId": 1, "carPositions": [{"n": "1"}]}, 9)
    assert state.events() == [] and state.foreign_event_messages == 52  # 50 patches + patch + snapshot

    state.on_car_patches([[{"number": str(n), "lastLapTime": "1:00"} for n in range(50)]], 7)
    assert sorted(state.cars["7"]) == ["0", "1", "2"] and state.over_limit == 47
    state.on_car_patches([[{"number": "0", **{f"extra{i}": i for i in range(20)}}]], 7)
    row = state.cars["7"]["0"]
    assert len(row) == 5 and state.over_limit == 47 + 17  # n, ltm + 3 of the 20 extras; 17 refused
    state.on_session_patch([{f"field{i}": i for i in range(20)}], 7)
    assert len(state.sessions["7"]) == 5
    state.on_snapshot({"sessionId": 1, "carPositions": [{"n": str(n)} for n in range(10)]}, 7)
    assert len(state.cars["7"]) == 3  # a snapshot is bounded too
