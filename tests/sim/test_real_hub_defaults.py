"""The simulator behaves like the real RedMist hub by default (issue 12): one test per default."""

from __future__ import annotations

import time
from typing import Any

import httpx
import msgspec

from consumer.redmist.contract import value_from_msgpack
from consumer.signalr import protocol as p
from consumer.sim.ratelimit import TokenBucket
from consumer.sim.simulator import SimConfig, Simulator

from .conftest import PRIVATE_EVENT, fast_settings
from .rawclient import RawClient, raw_client

SNAPSHOT = "/status/v2/Events/GetCurrentSessionState"
SNAPSHOT_JSON = "/status/v2/Events/GetCurrentSessionStateJson"
BINDING_FAILED = "Failed to invoke '{}' due to an error on the server."


async def next_invocation(client: RawClient, target: str, timeout: float = 10.0) -> p.Invocation:
    while True:
        message = await client.next_message(timeout=timeout)
        if isinstance(message, p.Invocation) and message.target == target:
            return message


async def test_token_expiry_does_not_close_the_connection() -> None:
    config = SimConfig(hub=fast_settings(require_auth=True), token_lifetime=1.0, events=1)
    async with Simulator(config) as sim:
        token = sim.idp.issue_token(sim.client_id)
        expires = time.monotonic() + 1.0
        async with raw_client(sim.hub_url, "json", token=token) as client:
            assert (await client.invoke("SubscribeToEventV2", 244)).error is None
            received = 0
            while time.monotonic() < expires + 1.5:  # patches keep coming well past the expiry
                message = await client.next_message(timeout=5)
                assert not isinstance(message, p.Close), message
                received += isinstance(message, p.Invocation)
            assert received > 5
        assert sim.hub.settings.close_on_token_expiry is False


async def test_method_names_are_matched_case_insensitively(sim: Simulator) -> None:
    async with raw_client(sim.hub_url, "messagepack") as client:
        assert (await client.invoke("subscribetoeventv2", 244)).error is None
        patches = await next_invocation(client, "ReceiveCarPatches")
        assert patches.arguments[0][0][0] == "244"
        assert (await client.invoke("UNSUBSCRIBEFROMEVENTV2", 244)).error is None
        assert (await client.invoke("subscribeToControlLogs", 244, None)).error is None


async def test_unknown_methods_and_bad_arguments_get_the_real_hub_texts(sim: Simulator) -> None:
    for protocol in ("json", "messagepack"):
        async with raw_client(sim.hub_url, protocol) as client:
            unknown = await client.invoke("SubscribeToEventV3", 244)
            assert unknown.error == BINDING_FAILED.format("SubscribeToEventV3") + (
                " HubException: Method does not exist."
            )
            for method, args in (
                ("SubscribeToEventV2", ["244"]),  # a string for an int
                ("SubscribeToEventV2", [None]),
                ("SubscribeToEventV2", [True]),
                ("SubscribeToEventV2", [2.5]),
                ("SubscribeToCarControlLogs", [244, 55, None]),  # an int for a string
                ("SubscribeToEventV2WithCode", [244, 1234]),
                ("SubscribeToEventV2", []),  # the count
            ):
                completion = await client.invoke(method, *args)
                assert completion.error == BINDING_FAILED.format(method), (method, args, completion.error)
            # null for a nullable string is fine, as is a private event's HubException text
            assert (await client.invoke("SubscribeToCarControlLogs", 244, "55", None)).error is None
            denied = await client.invoke("SubscribeToEventV2", PRIVATE_EVENT)
            assert denied.error == (
                "An unexpected error occurred invoking 'SubscribeToEventV2' on the server. "
                "HubException: Access code required or invalid for this event."
            )


async def test_last_updated_is_always_null(sim: Simulator) -> None:
    async with raw_client(sim.hub_url, "json") as client:
        assert (await client.invoke("SubscribeToEventV2", 244)).error is None
        for _ in range(3):
            patch = (await next_invocation(client, "ReceiveSessionPatch")).arguments[0]
            assert "lastUpdated" in patch and patch["lastUpdated"] is None
    async with httpx.AsyncClient() as http:
        snap = await http.get(sim.base_url + SNAPSHOT, params={"eventId": 244})
    state = value_from_msgpack("SessionState", msgspec.msgpack.decode(snap.content))
    assert state["lastUpdated"] is None and state["sessionStartTime"]


async def test_snapshot_limit_is_a_15_token_bucket_per_ip_with_retry_after(sim: Simulator) -> None:
    token = sim.idp.issue_token(sim.client_id)
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        codes = []
        for i in range(15):  # the anonymous and the token endpoint share the IP's bucket
            if i % 2:
                r = await http.get(SNAPSHOT, params={"eventId": 244})
            else:
                r = await http.get(
                    SNAPSHOT_JSON, params={"eventId": 244}, headers={"Authorization": f"Bearer {token}"}
                )
            codes.append(r.status_code)
        assert codes == [200] * 15
        limited = await http.get(SNAPSHOT, params={"eventId": 244})
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    assert sim.hub.settings.snapshot_limit == "bucket"


def test_token_bucket_refills_3_per_second() -> None:
    now = [0.0]
    bucket = TokenBucket(3.0, 15.0, clock=lambda: now[0])
    assert [bucket.acquire("ip") for _ in range(15)] == [0.0] * 15
    assert 0.33 < bucket.acquire("ip") <= 1 / 3 + 1e-9
    now[0] += 1.0
    assert [bucket.acquire("ip") for _ in range(3)] == [0.0] * 3
    assert bucket.acquire("ip") > 0 and bucket.acquire("other ip") == 0.0


async def test_the_old_fixed_window_is_selectable() -> None:
    config = SimConfig(hub=fast_settings(snapshot_limit="window"), events=1)
    async with Simulator(config) as sim, httpx.AsyncClient(base_url=sim.base_url) as http:
        assert (await http.get(SNAPSHOT, params={"eventId": 244})).status_code == 200
        again = await http.get(SNAPSHOT, params={"eventId": 244})
        assert again.status_code == 429 and int(again.headers["Retry-After"]) >= 1


async def test_rate_limiting_comes_before_auth_and_lookup() -> None:
    config = SimConfig(
        hub=fast_settings(snapshot_bucket_size=1, global_burst=1, global_rate_anonymous=0.01),
        private_events={PRIVATE_EVENT: "code"},
    )
    async with Simulator(config) as sim, httpx.AsyncClient(base_url=sim.base_url) as http:
        assert (await http.get(SNAPSHOT, params={"eventId": 244})).status_code == 200
        # each of these would be 404 / 401 with tokens left: the limiter answers first
        for path, params in (
            (SNAPSHOT, {"eventId": 1}),
            (SNAPSHOT_JSON, {"eventId": 244}),
            (SNAPSHOT, {"eventId": PRIVATE_EVENT}),
        ):
            assert (await http.get(path, params=params)).status_code == 429, path
        assert (await http.get("/status/v2/Events/LoadLiveEvents")).status_code == 200
        missing = await http.get("/status/v2/Events/LoadEvent", params={"eventId": 1})
        assert missing.status_code == 429  # the global limiter before the lookup's 404


async def test_snapshot_endpoints_are_exempt_from_the_global_limiter() -> None:
    config = SimConfig(hub=fast_settings(global_burst=1, global_rate_anonymous=0.01), events=1)
    async with Simulator(config) as sim, httpx.AsyncClient(base_url=sim.base_url) as http:
        assert (await http.get("/status/v2/Events/LoadLiveEvents")).status_code == 200
        assert (await http.get("/status/v2/Events/LoadLiveEvents")).status_code == 429
        for _ in range(5):
            assert (await http.get(SNAPSHOT, params={"eventId": 244})).status_code == 200


async def test_snapshots_of_events_that_are_not_live_are_404() -> None:
    config = SimConfig(hub=fast_settings(), events=2, autostart=False)
    async with Simulator(config) as sim, httpx.AsyncClient(base_url=sim.base_url) as http:
        engine = sim.hub.events[244].engine
        engine.advance_to(engine.end_ms)
        assert engine.finished
        assert (await http.get(SNAPSHOT, params={"eventId": 244})).status_code == 404
        assert (await http.get(SNAPSHOT, params={"eventId": 390})).status_code == 200
        assert (await http.get(SNAPSHOT, params={"eventId": 77})).status_code == 404
        sim.faults.new_session(244)  # the next session is live again
        assert (await http.get(SNAPSHOT, params={"eventId": 244})).status_code == 200


async def test_lists_of_unknown_events_are_empty(sim: Simulator) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        for action in ("LoadSessions", "LoadFlags", "LoadControlLog"):
            r = await http.get(f"/status/v2/Events/{action}", params={"eventId": 1})
            assert r.status_code == 200 and r.json() == [], action
            packed = await http.get(
                f"/status/v2/Events/{action}",
                params={"eventId": 1},
                headers={"Accept": "application/x-msgpack"},
            )
            assert msgspec.msgpack.decode(packed.content) == []
        known = await http.get("/status/v2/Events/LoadSessions", params={"eventId": 244})
        assert known.json()[0]["eid"] == 244
        assert (await http.get("/status/v2/Events/LoadEvent", params={"eventId": 1})).status_code == 404


async def test_an_event_changes_session_without_receive_reset() -> None:
    config = SimConfig(hub=fast_settings(restart_delay=0.0), events=1, autostart=False)
    async with Simulator(config) as sim:
        engine = sim.hub.events[244].engine
        first = engine.session_id
        async with raw_client(sim.hub_url, "json") as client:
            assert (await client.invoke("SubscribeToEventV2", 244)).error is None
            sim.hub.step(600.0)
            old = await next_invocation(client, "ReceiveCarPatches")
            assert {c["sessionId"] for c in old.arguments[0]} == {str(first)}
            engine.advance_to(engine.end_ms)  # the race ends ...
            sim.hub.step(1.0)  # ... is noticed ...
            sim.hub.step(1.0)  # ... and after restart_delay the next session starts
            seen: list[Any] = []
            while True:
                message = await client.next_message()
                assert not (isinstance(message, p.Invocation) and message.target == "ReceiveReset")
                if isinstance(message, p.Invocation) and message.target == "ReceiveSessionPatch":
                    patch = message.arguments[0]
                    if patch["sessionId"] != first:
                        break
                seen.append(message)
            assert patch["sessionId"] == first + 1 and patch["sessionName"].endswith("(session 2)")
            assert [e["no"] for e in patch["eventEntries"]] == list(engine.entries)
            sim.hub.step(900.0)
            new = await next_invocation(client, "ReceiveCarPatches")
            assert {c["sessionId"] for c in new.arguments[0]} == {str(first + 1)}
        assert sim.hub.stats["session_changes"] == 1 and sim.hub.stats["resets"] == 0


async def test_gps_health_from_replays_with_telemetry_null_otherwise() -> None:
    config = SimConfig(hub=fast_settings(), events=3, autostart=False)  # two recorded, one synthetic
    async with Simulator(config) as sim, httpx.AsyncClient(base_url=sim.base_url) as http:
        synthetic = next(e for e in sim.event_ids if e not in (244, 390))
        for ev in sim.event_ids:
            sim.hub.events[ev].engine.advance_to(1_800_000)
        states = {}
        for ev in sim.event_ids:
            r = await http.get(SNAPSHOT, params={"eventId": ev})
            states[ev] = value_from_msgpack("SessionState", msgspec.msgpack.decode(r.content))
    rows = states[synthetic]["carPositions"]
    assert states[synthetic]["hasTelemetrySource"] is True
    assert all(0 <= r["gh"] <= 5 for r in rows) and len({r["gh"] for r in rows}) > 1
    assert 0 <= states[synthetic]["gpsSourceHealth"] <= 5
    for ev in (244, 390):  # the recordings have no telemetry
        assert states[ev]["hasTelemetrySource"] is False and states[ev]["gpsSourceHealth"] is None
        assert {r["gh"] for r in states[ev]["carPositions"]} == {None}
