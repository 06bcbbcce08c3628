"""The RedMist hub and Status API of the simulator: subscriptions, payload shapes, REST, limits, auth."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
import httpx
import msgspec
import pytest
from pysignalr.client import SignalRClient
from signalrcore.hub_connection_builder import HubConnectionBuilder

from consumer.redmist.contract import CONTRACT, format_time_only, from_msgpack_array, value_from_msgpack
from consumer.signalr import protocol as p
from consumer.sim.race import format_lap_time
from consumer.sim.simulator import SimConfig, Simulator

from .conftest import ACCESS_CODE, PRIVATE_EVENT, fast_settings
from .rawclient import raw_client, ws_url


async def _token(sim: Simulator) -> str:
    return sim.idp.issue_token(sim.client_id)


async def test_subscribe_receives_patches_and_unsubscribe_stops_them(sim: Simulator) -> None:
    async with raw_client(sim.hub_url) as client:
        done = await client.invoke("SubscribeToEventV2", 244)
        assert done.error is None and not done.has_result
        targets: set[str] = set()
        while not {"ReceiveCarPatches", "ReceiveSessionPatch"} <= targets:
            message = await client.next_message()
            if isinstance(message, p.Invocation):
                targets.add(message.target)
                if message.target == "ReceiveCarPatches":
                    assert message.arguments[0], "only non-empty batches are sent"
        done = await client.invoke("UnsubscribeFromEventV2", 244)
        assert done.error is None
        assert not any(sim.hub.server.group_members("evt244-sub"))


async def test_wrong_argument_count_and_private_events_are_hub_errors(sim: Simulator) -> None:
    async with raw_client(sim.hub_url, "messagepack") as client:
        short = await client.invoke("SubscribeToControlLogs", 244)
        assert short.error and "Failed to invoke 'SubscribeToControlLogs'" in short.error
        denied = await client.invoke("SubscribeToEventV2", PRIVATE_EVENT)
        assert denied.error and "Access code required or invalid for this event." in denied.error
        ok = await client.invoke("SubscribeToEventV2WithCode", PRIVATE_EVENT, ACCESS_CODE)
        assert ok.error is None
        assert (await client.invoke("SubscribeToControlLogs", 244, None)).error is None
        assert (await client.invoke("SubscribeToCarControlLogs", 244, "55", None)).error is None
        assert (await client.invoke("SubscribeToInCarDriverEventV2", PRIVATE_EVENT, "47", "bad")).error
        assert (await client.invoke("SubscribeToInCarDriverEventV2", 244, "55", None)).error is None


async def test_messagepack_control_log_and_in_car_payloads_match_the_contract(sim: Simulator) -> None:
    sim.hub.settings.control_log_interval = 0.2
    async with raw_client(sim.hub_url, "messagepack") as client:
        assert (await client.invoke("SubscribeToControlLogs", 244, None)).error is None
        assert (await client.invoke("SubscribeToInCarDriverEventV2", 244, "55", None)).error is None
        seen: dict[str, Any] = {}
        while not {"ReceiveControlLog", "ReceiveInCarUpdateV2"} <= set(seen):
            message = await client.next_message(timeout=20)
            if isinstance(message, p.Invocation):
                seen[message.target] = message.arguments
        (log_arr,) = seen["ReceiveControlLog"]
        assert isinstance(log_arr, list) and log_arr[0] == ""  # whole-event log: carNumber ""
        assert value_from_msgpack("CarControlLogs", log_arr)["cn"] == ""
        (in_car,) = seen["ReceiveInCarUpdateV2"]
        assert len(in_car) == CONTRACT.type("InCarPayload").array_length
        assert value_from_msgpack("InCarPayload", in_car)["n"] == "55"


async def test_replay_through_the_hub_reproduces_the_recording() -> None:
    """At a huge speed with a virtual clock (the test steps the races), every car's final lap count and
    best lap in the emitted MessagePack patches equal the recording's."""
    config = SimConfig(replays=["244-6"], autostart=False, hub=fast_settings(loop_races=False))
    async with Simulator(config) as sim, raw_client(sim.hub_url, "messagepack") as client:
        assert (await client.invoke("SubscribeToEventV2", 244)).error is None
        cars: dict[str, dict[str, Any]] = {}
        engine = sim.hub.events[244].engine
        for row in engine.snapshot()["carPositions"]:
            cars[row["n"]] = {}

        async def consume() -> None:
            while True:
                message = await client.next_message()
                if isinstance(message, p.Invocation) and message.target == "ReceiveCarPatches":
                    for arr in message.arguments[0]:
                        patch = from_msgpack_array("CarPositionPatch", arr)
                        cars[patch["number"]].update({k: v for k, v in patch.items() if v is not None})
                elif isinstance(message, p.Invocation) and message.target == "ReceiveSessionPatch":
                    assert len(message.arguments[0]) == 36

        consumer = asyncio.create_task(consume())
        try:
            while not engine.finished:
                sim.hub.step(300.0)  # five race minutes per step
                await asyncio.sleep(0.002)
            sent = sim.hub.server.stats.messages_sent["ReceiveCarPatches"]
            assert sent > 50
            expected_laps = {str(c["n"]): c["laps"][-1][0] for c in engine.replay["cars"]}
            async with asyncio.timeout(20):
                while {n: c.get("lastLapCompleted") for n, c in cars.items()} != expected_laps:
                    await asyncio.sleep(0.02)
        finally:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await consumer
        best = {str(c["n"]): format_lap_time(min(lap[1] for lap in c["laps"])) for c in engine.replay["cars"]}
        assert {n: c["bestTime"] for n, c in cars.items()} == best


async def test_rest_endpoints_prefixes_limits_and_auth(sim: Simulator) -> None:
    token = await _token(sim)
    base = sim.base_url
    async with httpx.AsyncClient() as http:
        for prefix in ("/status/v2/Events", "/status/v1/Events", "/status/Events"):
            live = await http.get(f"{base}{prefix}/LoadLiveEvents")
            assert live.status_code == 200
            assert {e["eid"] for e in live.json()} == {244, 390}
            assert {e["eid"]: e["priv"] for e in live.json()}[PRIVATE_EVENT] is True
        packed = await http.get(
            f"{base}/status/v2/Events/LoadLiveEvents", headers={"Accept": "application/x-msgpack"}
        )
        rows = value_from_msgpack("List<EventListSummary>", msgspec.msgpack.decode(packed.content))
        assert rows[0]["eid"] == 244

        snap = await http.get(f"{base}/status/v2/Events/GetCurrentSessionState", params={"eventId": 244})
        assert snap.status_code == 200 and snap.headers["Content-Type"].startswith("application/x-msgpack")
        state = value_from_msgpack("SessionState", msgspec.msgpack.decode(snap.content))
        assert state["eventId"] == 244 and state["carPositions"][0]["ovp"] == 1

        anonymous = await http.get(
            f"{base}/status/v2/Events/GetCurrentSessionStateJson", params={"eventId": 244}
        )
        assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Bearer")
        auth = {"Authorization": f"Bearer {token}"}
        js = await http.get(
            f"{base}/status/v2/Events/GetCurrentSessionStateJson", params={"eventId": 244}, headers=auth
        )
        assert js.status_code == 200
        row = js.json()["carPositions"][0]
        assert "n" in row and "ovp" in row and "number" not in row  # snapshot rows use the short names

        private = await http.get(
            f"{base}/status/v2/Events/GetCurrentSessionState", params={"eventId": PRIVATE_EVENT}
        )
        assert private.status_code == 401
        with_code = await http.get(
            f"{base}/status/v2/Events/LoadEvent",
            params={"eventId": PRIVATE_EVENT},
            headers={"X-Event-Access-Code": ACCESS_CODE},
        )
        assert with_code.status_code == 200 and with_code.json()["e"] == PRIVATE_EVENT
        missing = await http.get(f"{base}/status/v2/Events/LoadEvent", params={"eventId": 1})
        assert missing.status_code == 404


async def test_require_auth_and_the_opt_in_token_expiry_close() -> None:
    config = SimConfig(hub=fast_settings(require_auth=True, close_on_token_expiry=True), token_lifetime=1.5)
    async with Simulator(config) as sim:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await session.ws_connect(ws_url(sim.hub_url))
            assert info.value.status == 401
        token = sim.idp.issue_token(sim.client_id)
        async with raw_client(sim.hub_url, "json", token=token) as client:
            assert (await client.invoke("SubscribeToEventV2", 244)).error is None
            while True:
                message = await client.next_message(timeout=10)
                if isinstance(message, p.Close):
                    break
            assert message.allow_reconnect is True and "expired" in (message.error or "")


async def test_pysignalr_receives_car_patches(sim: Simulator) -> None:
    received: asyncio.Queue[Any] = asyncio.Queue()
    opened = asyncio.Event()
    client = SignalRClient(sim.hub_url, access_token_factory=lambda: sim.idp.issue_token(sim.client_id))

    async def on_cars(args: Any) -> None:
        await received.put(args)

    async def on_open() -> None:
        opened.set()

    client.on("ReceiveCarPatches", on_cars)
    client.on_open(on_open)
    runner = asyncio.create_task(client.run())
    try:
        async with asyncio.timeout(10):
            await opened.wait()
        await client.send("SubscribeToEventV2", [244])
        args = await asyncio.wait_for(received.get(), 15)
        assert args[0] and {"number", "eventId", "sessionId"} <= set(args[0][0])
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def test_signalrcore_receives_car_patches(sim: Simulator) -> None:
    loop = asyncio.get_running_loop()
    received: asyncio.Queue[Any] = asyncio.Queue()
    opened = asyncio.Event()
    token = sim.idp.issue_token(sim.client_id)
    connection = (
        HubConnectionBuilder()
        .with_url(sim.hub_url, options={"access_token_factory": lambda: token})
        .configure_logging(logging.CRITICAL)
        .build()
    )
    connection.on_open(lambda: loop.call_soon_threadsafe(opened.set))
    connection.on("ReceiveCarPatches", lambda args: loop.call_soon_threadsafe(received.put_nowait, args))
    await asyncio.to_thread(connection.start)
    try:
        async with asyncio.timeout(10):
            await opened.wait()
        await asyncio.to_thread(connection.send, "SubscribeToEventV2", [244])
        args = await asyncio.wait_for(received.get(), 15)
        assert args[0] and args[0][0]["eventId"] == "244" and "overallPosition" in args[0][0]
    finally:
        await asyncio.to_thread(connection.stop)


def test_time_only_ticks_helper_matches_race_format() -> None:
    assert format_time_only(((19 * 60 + 42) * 60 + 8) * 10_000_000 + 5_310_000) == "19:42:08.5310000"
