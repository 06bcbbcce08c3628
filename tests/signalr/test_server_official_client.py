"""HubServer driven by Microsoft's official @microsoft/signalr client (Node), results asserted here."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.node

VARIANTS = [
    pytest.param("json", False, id="json-negotiate"),
    pytest.param("json", True, id="json-skipNegotiation"),
    pytest.param("messagepack", False, id="msgpack-negotiate"),
    pytest.param("messagepack", True, id="msgpack-skipNegotiation"),
]


@pytest.mark.parametrize(("protocol", "skip"), VARIANTS)
async def test_invoke_errors_groups_and_streams(
    hub, official_client, until, protocol: str, skip: bool
) -> None:
    server, url = hub
    client = await official_client()
    started = await client.ok(
        "start", url=url, protocol=protocol, skipNegotiation=skip, token="tok-abcdef", listen=["News"]
    )
    assert started["connectionId"] in server.connection_ids or skip  # skipNegotiation: the client has no id
    assert len(server.connection_ids) == 1
    cid = server.connection_ids[0]
    assert server.protocol_of(cid) == protocol
    assert server.stats.negotiations == ({} if skip else {1: 1})

    assert (await client.ok("invoke", method="Add", args=[40, 2]))["result"] == 42
    assert (await client.ok("invoke", method="Echo", args=[{"a": [1, "x", None]}]))["result"] == {
        "a": [1, "x", None]
    }
    assert "result" not in await client.ok("invoke", method="Void")  # void: Completion without result

    failed = await client.request("invoke", method="Fail", args=["no such event"])
    assert failed == {
        "id": failed["id"],
        "ok": False,
        "error": "An unexpected error occurred invoking 'Fail' on the server. HubException: no such event",
    }
    crashed = await client.request("invoke", method="Crash")
    assert crashed["error"] == "An unexpected error occurred invoking 'Crash' on the server."
    wrong = await client.request("invoke", method="Add", args=[1])
    assert wrong["error"] == "Failed to invoke 'Add' due to an error on the server."
    unknown = await client.request("invoke", method="Nope")  # ASP.NET: a binding failure
    assert unknown["error"] == (
        "Failed to invoke 'Nope' due to an error on the server. HubException: Method does not exist."
    )

    await client.ok("invoke", method="JoinGroup", args=["g1"])
    assert server.group_members("g1") == {cid}
    assert server.send_to_group("g1", "News", 1, "one") == 1
    assert server.send_to_group("g2", "News", 2, "nobody") == 0
    server.send_to_all("News", 3, "all")
    await client.wait_event(lambda e: e.get("method") == "News" and e["args"][0] == 3)
    assert client.messages("News") == [[1, "one"], [3, "all"]]
    assert server.stats.messages_sent["News"] == 2

    streamed = await client.ok("stream", method="Count", args=[5])
    assert streamed["items"] == [0, 1, 2, 3, 4]

    # dispose after 3 items sends CancelInvocation; the server's generator must stop
    taken = await client.ok("stream", method="Forever", args=[], take=3)
    assert taken["items"] == [0, 1, 2]
    await until(lambda: getattr(server, "stream_state", None) == "stopped")

    await client.ok("stop")
    await until(lambda: not server.connection_ids)
    assert server.stats.connections_current == 0


async def test_two_clients_group_broadcast_encoded_once_per_protocol(hub, official_client) -> None:
    server, url = hub
    a, b = await official_client(), await official_client()
    await a.ok("start", url=url, protocol="json", listen=["Tick"])
    await b.ok("start", url=url, protocol="messagepack", listen=["Tick"])
    await a.ok("invoke", method="JoinGroup", args=["race"])
    await b.ok("invoke", method="JoinGroup", args=["race"])
    for i in range(50):
        assert server.send_to_group("race", "Tick", i, {"lap": i}) == 2
    for client in (a, b):
        await client.wait_event(lambda e: e.get("method") == "Tick" and e["args"][0] == 49)
        assert client.messages("Tick") == [[i, {"lap": i}] for i in range(50)]
    await b.ok("invoke", method="LeaveGroup", args=["race"])
    assert server.send_to_group("race", "Tick", 50, {"lap": 50}) == 1


async def test_client_results(hub, official_client) -> None:
    server, url = hub
    client = await official_client()
    await client.ok("start", url=url, protocol="messagepack", results={"GetVersion": "v42"})
    (cid,) = server.connection_ids
    assert await server.invoke_client(cid, "GetVersion", 1, timeout=5) == "v42"


async def test_close_with_allow_reconnect_reconnects_automatically(hub, official_client) -> None:
    server, url = hub
    client = await official_client()
    await client.ok("start", url=url, protocol="json", automaticReconnect=[0, 50, 100], listen=["News"])
    (first,) = server.connection_ids
    assert await server.close_all(error="maintenance", allow_reconnect=True) == 1
    reconnecting = await client.wait_event(lambda e: e.get("event") == "reconnecting")
    assert reconnecting["error"] == "Server returned an error on close: maintenance"
    reconnected = await client.wait_event(lambda e: e.get("event") == "reconnected")
    assert reconnected["connectionId"] != first
    assert server.connection_ids == [reconnected["connectionId"]]
    assert (await client.ok("invoke", method="Add", args=[1, 2]))["result"] == 3


async def test_close_without_allow_reconnect_stops_the_client(hub, official_client) -> None:
    server, url = hub
    client = await official_client()
    await client.ok("start", url=url, protocol="messagepack", automaticReconnect=[0])
    await server.close_all(error="go away", allow_reconnect=False)
    closed = await client.wait_event(lambda e: e.get("event") == "closed")
    assert closed["error"] == "Server returned an error on close: go away"
    assert not any(e.get("event") == "reconnecting" for e in client.events)


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
async def test_stateful_reconnect_across_forced_drop_loses_and_duplicates_nothing(
    official_client, make_hub, until, protocol: str
) -> None:
    server = make_hub(keepalive_interval=0.5, client_timeout=5.0, reconnect_window=10.0, ack_interval=0.05)
    async with server.serve() as url:
        client = await official_client()
        await client.ok("start", url=url, protocol=protocol, statefulReconnect=True, listen=["Seq"])
        (cid,) = server.connection_ids
        await client.ok("invoke", method="JoinGroup", args=["g"])
        for i in range(20):
            server.send_to_group("g", "Seq", i)
        await client.wait_event(lambda e: e.get("method") == "Seq" and e["args"] == [19])
        for i in range(5):
            await client.ok("send", method="Record", args=[i])
        # drop the TCP connection and keep broadcasting while the client is away; the client keeps sending
        assert server.drop_all() == 1
        for i in range(20, 40):
            server.send_to_group("g", "Seq", i)
        for i in range(5, 10):
            await client.ok("send", method="Record", args=[i])
        await client.wait_event(lambda e: e.get("method") == "Seq" and e["args"] == [39])
        for i in range(40, 60):
            server.send_to_group("g", "Seq", i)
        await client.wait_event(lambda e: e.get("method") == "Seq" and e["args"] == [59])
        assert client.messages("Seq") == [[i] for i in range(60)]
        await until(lambda: len(server.recorded) >= 10)
        assert server.recorded == list(range(10))  # client→server: nothing lost, nothing twice
        # same logical connection: no reconnecting/reconnected events, same id, hub calls still work
        assert server.connection_ids == [cid]
        assert server.stats.reconnects >= 1
        assert not any(e.get("event") in ("reconnecting", "closed") for e in client.events)
        assert (await client.ok("invoke", method="Add", args=[2, 3]))["result"] == 5


async def test_idle_healthy_connection_survives_keepalive(official_client, make_hub, until) -> None:
    server = make_hub(keepalive_interval=0.3, client_timeout=1.5)
    async with server.serve() as url:
        client = await official_client()
        await client.ok("start", url=url, protocol="json", serverTimeoutMs=1500, keepAliveMs=300)
        pings_before = server.stats.pings_sent
        # Idle for well over both timeouts; only keepalive pings flow in either direction.
        await until(lambda: server.stats.pings_sent >= pings_before + 10, timeout=10)
        state = await client.ok("state")
        assert state["state"] == "Connected"
        assert not any(e.get("event") == "closed" for e in client.events)
        assert len(server.connection_ids) == 1


async def test_client_timeout_closes_a_silent_client(official_client, make_hub, until) -> None:
    server = make_hub(keepalive_interval=0.2, client_timeout=0.8)
    async with server.serve() as url:
        client = await official_client()
        # the client pings only every 60 s, so the server's 0.8 s client timeout fires
        await client.ok("start", url=url, protocol="json", serverTimeoutMs=30000, keepAliveMs=60000)
        closed = await client.wait_event(lambda e: e.get("event") == "closed", timeout=10)
        assert "Server timeout elapsed without receiving a message from the client." in closed["error"]
        await until(lambda: not server.connection_ids)


async def test_half_open_server_is_detected_by_server_timeout_and_reconnected(
    official_client, make_hub, until
) -> None:
    server = make_hub(keepalive_interval=0.2, client_timeout=30)
    async with server.serve() as url:
        client = await official_client()
        await client.ok(
            "start",
            url=url,
            protocol="messagepack",
            serverTimeoutMs=1000,
            keepAliveMs=200,
            automaticReconnect=[0],
        )
        (first,) = server.connection_ids
        assert server.half_open() == 1
        reconnecting = await client.wait_event(lambda e: e.get("event") == "reconnecting")
        assert "Server timeout elapsed without receiving a message from the server." in reconnecting["error"]
        reconnected = await client.wait_event(lambda e: e.get("event") == "reconnected")
        assert reconnected["connectionId"] != first
        assert (await client.ok("invoke", method="Add", args=[2, 2]))["result"] == 4
