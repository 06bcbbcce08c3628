"""Acceptance: Microsoft's @microsoft/signalr (JSON and MessagePack) against the simulator's RedMist hub."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.redmist.contract import CONTRACT, from_msgpack_array, json_names
from consumer.sim.simulator import Simulator

from .conftest import ACCESS_CODE, PRIVATE_EVENT, run_node

pytestmark = pytest.mark.node


def _config(sim: Simulator, protocol: str, skip: bool, **extra: Any) -> dict[str, Any]:
    return {
        "hubUrl": sim.hub_url,
        "tokenUrl": sim.token_url,
        "clientId": sim.client_id,
        "clientSecret": sim.client_secret,
        "protocol": protocol,
        "skipNegotiation": skip,
        "eventId": 244,
        "carBatches": 3,
        "sessionPatches": 2,
        **extra,
    }


@pytest.mark.parametrize("skip", [True, False], ids=["skipNegotiation", "negotiate"])
async def test_json_patches_use_the_contract_names(sim: Simulator, node: str, skip: bool) -> None:
    lines = await run_node(node, "redmist_client.mjs", _config(sim, "json", skip))
    assert any(e["event"] == "token" and e["status"] == 200 for e in lines)
    car_batches = [e["args"] for e in lines if e["event"] == "ReceiveCarPatches"]
    sessions = [e["args"] for e in lines if e["event"] == "ReceiveSessionPatch"]
    assert len(car_batches) == 3 and len(sessions) == 2
    patch_names = set(json_names("CarPositionPatch"))
    for args in car_batches:
        assert len(args) == 1 and isinstance(args[0], list) and args[0]  # one array argument, non-empty
        numbers = [p["number"] for p in args[0]]
        assert len(numbers) == len(set(numbers))  # at most one patch per car per send
        for patch in args[0]:
            assert set(patch) == patch_names  # every key present (nulls = unchanged), camelCase names
            assert patch["eventId"] == "244" and patch["sessionId"] == "6"
            assert any(v is not None for k, v in patch.items() if k not in ("eventId", "sessionId", "number"))
    for (session,) in sessions:
        assert set(session) == set(json_names("SessionStatePatch"))
        assert session["eventId"] == 244 and session["sessionId"] == 6


async def test_messagepack_patches_use_the_contract_keys(sim: Simulator, node: str) -> None:
    lines = await run_node(node, "redmist_client.mjs", _config(sim, "messagepack", True))
    car_batches = [e["args"] for e in lines if e["event"] == "ReceiveCarPatches"]
    sessions = [e["args"] for e in lines if e["event"] == "ReceiveSessionPatch"]
    assert len(car_batches) == 3 and len(sessions) == 2
    car_len = CONTRACT.type("CarPositionPatch").array_length
    for (batch,) in car_batches:
        for arr in batch:
            assert isinstance(arr, list) and len(arr) == car_len  # integer-keyed array, not a map
            assert arr[0] == "244" and arr[1] == "6" and isinstance(arr[2], str)
            named = from_msgpack_array("CarPositionPatch", arr)
            assert named["number"] == arr[2]
    for (session,) in sessions:
        assert isinstance(session, list) and len(session) == CONTRACT.type("SessionStatePatch").array_length
        assert session[0] == 244 and session[2] == 6
        assert isinstance(session[7], str)  # runningRaceTime at key 7


async def test_private_event_needs_the_access_code_and_exact_argument_count(
    sim: Simulator, node: str
) -> None:
    lines = await run_node(
        node,
        "redmist_client.mjs",
        _config(
            sim,
            "json",
            True,
            privateEventId=PRIVATE_EVENT,
            accessCode=ACCESS_CODE,
            carBatches=1,
            sessionPatches=1,
        ),
    )
    private = {e["code"]: e for e in lines if e["event"] == "private"}
    assert (
        private[None]["ok"] is False
        and "Access code required or invalid for this event." in private[None]["error"]
    )
    assert private["wrong"]["ok"] is False and "HubException" in private["wrong"]["error"]
    assert private[ACCESS_CODE]["ok"] is True
    short = next(e for e in lines if e["event"] == "short")
    assert short["ok"] is False and "Failed to invoke 'SubscribeToEventV2WithCode'" in short["error"]
