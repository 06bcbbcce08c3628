from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from consumer.redmist import PAYLOADS, contract
from consumer.redmist.state import LiveState
from consumer.relay.relay import Relay
from consumer.relay.subscriptions import HubCall, Subscriber
from consumer.sinks import SinkWorker


class MemorySink:
    sync_interval: float | None = None

    def __init__(self, name: str = "mem") -> None:
        self.name = name
        self.lines: list[bytes] = []

    async def open(self) -> None: ...

    async def write(self, lines: Sequence[bytes]) -> None:
        self.lines.extend(lines)

    async def flush(self) -> None: ...

    async def reopen(self) -> None: ...

    async def close(self) -> None: ...

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


CAR_PATCHES = [
    [
        {
            "eventId": "1187",
            "sessionId": "14",
            "number": "42",
            "overallPosition": 3,
            "lastLapTime": "00:01:41.872",
        },
        {"eventId": "1187", "sessionId": "14", "number": "7X", "isInPit": True, "pitStopCount": 3},
    ]
]
SESSION_PATCH = [{"eventId": 1187, "sessionId": 14, "timeToGo": "00:21:47", "currentFlag": 2}]


def full_json_args(target: str, args: list[Any]) -> list[Any]:
    """What RedMist's JSON protocol carries: every confirmed key present, null = unchanged."""
    return contract.arguments_from_msgpack(target, contract.arguments_to_msgpack(target, args))


async def run_relay(protocol: str, messages: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    sink = MemorySink()
    worker = SinkWorker(sink)
    await worker.start()
    relay = Relay([worker], hub="redmist", profile=PAYLOADS, protocol=protocol)  # type: ignore[arg-type]
    for target, args in messages:
        if protocol == "json":
            raw = msgspec.Raw(msgspec.json.encode(full_json_args(target, args)))
        else:
            raw = msgspec.Raw(msgspec.msgpack.encode(contract.arguments_to_msgpack(target, args)))
        await relay.on_raw(target, raw)
    await worker.close(grace=5)
    return sink.records()


async def test_json_and_messagepack_give_identical_records() -> None:
    messages = [
        ("ReceiveCarPatches", CAR_PATCHES),
        ("ReceiveSessionPatch", SESSION_PATCH),
        ("ReceiveReset", []),
        # extra trailing elements from a newer server version are ignored, not fatal
    ]
    via_json = await run_relay("json", messages)
    via_msgpack = await run_relay("messagepack", messages)
    assert len(via_json) == 3

    def strip(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k not in ("received_at", "seq")} for r in recs]

    assert strip(via_json) == strip(via_msgpack)
    assert via_json[0]["event_id"] == 1187 and via_json[1]["event_id"] == 1187
    assert via_json[0]["arguments"][0][0]["overallPosition"] == 3
    assert "event_id" not in via_json[2]


async def test_messagepack_extra_trailing_elements_are_ignored() -> None:
    sink = MemorySink()
    worker = SinkWorker(sink)
    await worker.start()
    relay = Relay([worker], hub="h", profile=PAYLOADS, protocol="messagepack")
    arr = contract.arguments_to_msgpack("ReceiveSessionPatch", SESSION_PATCH)
    arr[0] = [*arr[0], "from-a-newer-server", 99]
    await relay.on_raw("ReceiveSessionPatch", msgspec.Raw(msgspec.msgpack.encode(arr)))
    await worker.close(grace=5)
    (rec,) = sink.records()
    assert rec["arguments"][0]["timeToGo"] == "00:21:47"


async def test_filters_route_by_target_and_markers_go_everywhere() -> None:
    a, b = MemorySink("a"), MemorySink("b")
    wa = SinkWorker(a, include=["ReceiveCarPatches"])
    wb = SinkWorker(b, exclude=["ReceiveCarPatches"])
    await wa.start()
    await wb.start()
    relay = Relay([wa, wb], hub="h", profile=PAYLOADS)
    await relay.emit_connection("connected")
    await relay.on_raw("ReceiveCarPatches", msgspec.Raw(b"[[]]"))
    await relay.on_raw("ReceiveSessionPatch", msgspec.Raw(b'[{"eventId":1}]'))
    await relay.emit_connection("reconnecting", "lost")
    await wa.close(grace=5)
    await wb.close(grace=5)
    assert [r["target"] for r in a.records()] == ["connected", "ReceiveCarPatches", "reconnecting"]
    assert [r["target"] for r in b.records()] == ["connected", "ReceiveSessionPatch", "reconnecting"]
    seqs = sorted({r["seq"] for r in a.records() + b.records()})
    assert seqs == [1, 2, 3, 4]  # one number per record, shared by the sinks that got it
    assert relay.stats.received == {"ReceiveCarPatches": 1, "ReceiveSessionPatch": 1}


async def test_block_policy_awaits_space_on_the_hot_path() -> None:
    sink = MemorySink()
    worker = SinkWorker(sink, queue_size=2, overflow="block")  # not started: nothing drains yet
    relay = Relay([worker], hub="h", profile=PAYLOADS)
    await relay.on_raw("T", msgspec.Raw(b"[1]"))
    await relay.on_raw("T", msgspec.Raw(b"[2]"))
    third = asyncio.create_task(relay.on_raw("T", msgspec.Raw(b"[3]")))
    await asyncio.sleep(0)
    assert not third.done()
    await worker.start()
    async with asyncio.timeout(5):
        await third
    await worker.close(grace=5)
    assert [r["arguments"] for r in sink.records()] == [[1], [2], [3]]


async def test_on_invocation_matches_on_raw() -> None:
    sink = MemorySink()
    worker = SinkWorker(sink)
    await worker.start()
    relay = Relay([worker], hub="h", profile=PAYLOADS)
    await relay.on_invocation("ReceiveSessionPatch", *SESSION_PATCH)
    await relay.on_raw("ReceiveSessionPatch", msgspec.Raw(msgspec.json.encode(SESSION_PATCH)))
    await worker.close(grace=5)
    one, two = sink.records()
    assert one["arguments"] == two["arguments"] and one["event_id"] == two["event_id"] == 1187


class HubError(Exception):
    pass


async def test_subscriber_orders_calls_and_retries_only_the_failed_one() -> None:
    log: list[tuple[str, tuple[Any, ...]]] = []
    failures = {"SubscribeToEventV2WithCode": 2}

    async def invoke(method: str, *args: Any) -> None:
        log.append((method, args))
        if failures.get(method, 0) > 0:
            failures[method] -= 1
            raise HubError("Access code required or invalid for this event.")

    calls = [
        HubCall("SubscribeToEventV2", (1,)),
        HubCall("SubscribeToEventV2WithCode", (2, "code")),
        HubCall("SubscribeToEventV2", (3,)),
    ]
    rounds: list[int] = []
    sub = Subscriber(
        invoke,
        lambda: calls,
        after_round=lambda: rounds.append(1),
        is_hub_error=lambda e: isinstance(e, HubError),
        retry_initial=0.01,
        retry_max=0.02,
    )
    task = asyncio.create_task(sub.run())
    try:
        sub.connected()
        async with asyncio.timeout(5):
            await sub.wait_round()
        # in order; the failing call did not stop the third
        assert [m for m, _ in log[:3]] == [c.method for c in calls]
        async with asyncio.timeout(5):
            while failures["SubscribeToEventV2WithCode"] > 0 or len(log) < 5:
                await asyncio.sleep(0.005)
        assert log[3:] == [("SubscribeToEventV2WithCode", (2, "code"))] * 2
        # a reconnect resubscribes everything again
        log.clear()
        sub.connected()
        async with asyncio.timeout(5):
            await sub.wait_round()
        assert [m for m, _ in log] == [c.method for c in calls]
        assert len(rounds) == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_subscriber_round_aborted_by_connection_loss_is_redone_on_reconnect() -> None:
    lost = [True]
    done: list[str] = []

    async def invoke(method: str, *args: Any) -> None:
        if lost[0]:
            raise ConnectionError("connection lost")
        done.append(method)

    sub = Subscriber(invoke, lambda: [HubCall("A"), HubCall("B")])
    task = asyncio.create_task(sub.run())
    try:
        sub.connected()
        await asyncio.sleep(0.01)
        assert sub.rounds_completed == 0
        lost[0] = False
        sub.connected()
        async with asyncio.timeout(5):
            await sub.wait_round()
        assert done == ["A", "B"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_live_state_merges_snapshot_and_patches(tmp_path: Any) -> None:
    path = tmp_path / "state.json"
    st = LiveState(path)
    st.on_snapshot(
        {"eventId": 1187, "sessionId": 14, "timeToGo": "01:00:00", "carPositions": [{"n": "42", "ovp": 5}]},
        1187,
    )
    st.on_session_patch([{"eventId": 1187, "timeToGo": "00:59:00", "eventName": None}], 1187)
    st.on_car_patches(
        [[{"eventId": "1187", "number": "42", "overallPosition": 3, "lastLapTime": None}]], 1187
    )
    st.on_car_patches([[{"eventId": "1187", "number": "7", "overallPosition": 1}]], 1187)
    st.write_now()
    board = json.loads(path.read_text())
    ev = board["events"]["1187"]
    assert ev["timeToGo"] == "00:59:00"
    cars = {c["n"]: c for c in ev["carPositions"]}
    assert cars["42"]["ovp"] == 3 and "ltm" not in cars["42"]  # null = unchanged, mapped to short names
    assert cars["7"]["ovp"] == 1
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    st.reset()
    st.write_now()
    assert json.loads(path.read_text())["events"] == {}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".state.json.")]  # no temp left


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
async def test_watchers_get_decoded_arguments(protocol: str) -> None:
    seen: list[tuple[list[Any], Any]] = []
    relay = Relay([], hub="h", profile=PAYLOADS, protocol=protocol)  # type: ignore[arg-type]
    relay.watch("ReceiveSessionPatch", lambda args, ev: seen.append((args, ev)))
    payload = (
        msgspec.json.encode(full_json_args("ReceiveSessionPatch", SESSION_PATCH))
        if protocol == "json"
        else msgspec.msgpack.encode(contract.arguments_to_msgpack("ReceiveSessionPatch", SESSION_PATCH))
    )
    await relay.on_raw("ReceiveSessionPatch", msgspec.Raw(payload))
    assert seen[0][0][0]["timeToGo"] == "00:21:47" and seen[0][1] == 1187
