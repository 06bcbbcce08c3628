"""HubServer at the HTTP/WebSocket level with raw peers (httpx, websockets): negotiate shapes, ids, handshake
errors and timeout, invocation semantics, per-protocol broadcasts, fault hooks and overflow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from consumer.signalr import protocol as p
from consumer.sim.hubhost import HubServer, ProtocolArgs

RS = "\x1e"


def _ws(url: str) -> str:
    return url.replace("http://", "ws://", 1)


async def _negotiate(url: str, query: str = "negotiateVersion=1") -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{url}/negotiate?{query}")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


async def _json_client(url: str, query: str = "") -> AsyncIterator[ClientConnection]:
    async with connect(f"{_ws(url)}{query}") as ws:
        await ws.send('{"protocol":"json","version":1}' + RS)
        assert await ws.recv() == "{}" + RS
        yield ws


async def _recv_messages(ws: ClientConnection, reader: p.MessageReader, count: int) -> list[p.HubMessage]:
    out: list[p.HubMessage] = []
    while len(out) < count:
        frame = await asyncio.wait_for(ws.recv(), 5)
        data = frame.encode() if isinstance(frame, str) else frame
        out.extend(m for m in reader.feed(data) if not isinstance(m, p.Ping))
    return out


async def test_negotiate_v1_v0_and_stateful_echo(hub) -> None:
    _, url = hub
    v1 = await _negotiate(url)
    assert set(v1) == {"negotiateVersion", "connectionId", "connectionToken", "availableTransports"}
    assert v1["negotiateVersion"] == 1
    assert v1["connectionId"] != v1["connectionToken"]
    assert v1["availableTransports"] == [{"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}]
    v0 = await _negotiate(url, "")
    assert set(v0) == {"negotiateVersion", "connectionId", "availableTransports"}
    assert v0["negotiateVersion"] == 0
    newer = await _negotiate(url, "negotiateVersion=7")
    assert newer["negotiateVersion"] == 1
    stateful = await _negotiate(url, "negotiateVersion=1&useStatefulReconnect=true")
    assert stateful["useStatefulReconnect"] is True


async def test_stateful_reconnect_not_offered_when_disabled(make_hub) -> None:
    server = make_hub(stateful_reconnect=False)
    async with server.serve() as url:
        body = await _negotiate(url, "negotiateVersion=1&useStatefulReconnect=true")
    assert "useStatefulReconnect" not in body


async def test_unknown_id_is_404_and_second_socket_is_409(hub) -> None:
    server, url = hub
    with pytest.raises(InvalidStatus) as unknown:
        async with connect(f"{_ws(url)}?id=nope"):
            pass
    assert unknown.value.response.status_code == 404
    v1 = await _negotiate(url)
    with pytest.raises(InvalidStatus) as by_connection_id:  # v1 sockets attach by token, not by id
        async with connect(f"{_ws(url)}?id={v1['connectionId']}"):
            pass
    assert by_connection_id.value.response.status_code == 404
    async for _ws1 in _json_client(url, f"?id={v1['connectionToken']}"):
        assert server.connection_ids == [v1["connectionId"]]
        with pytest.raises(InvalidStatus) as second:
            async with connect(f"{_ws(url)}?id={v1['connectionToken']}"):
                pass
        assert second.value.response.status_code == 409
    v0 = await _negotiate(url, "negotiateVersion=0")
    async for _ws0 in _json_client(url, f"?id={v0['connectionId']}"):
        assert v0["connectionId"] in server.connection_ids


async def test_unknown_protocol_gets_handshake_error_then_close(hub) -> None:
    server, url = hub
    async with connect(_ws(url)) as ws:
        await ws.send('{"protocol":"xml","version":1}' + RS)
        assert await ws.recv() == '{"error":"The protocol \'xml\' is not supported."}' + RS
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert server.connection_ids == []
    assert server.stats.connections_total == 0


async def test_handshake_timeout_closes_the_socket(make_hub) -> None:
    server = make_hub(handshake_timeout=0.2)
    async with server.serve() as url, connect(_ws(url)) as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert server.stats.connections_total == 0


async def test_messagepack_handshake_response_and_messages_are_binary_frames(hub) -> None:
    _, url = hub
    msgpack = p.get_protocol("messagepack")
    async with connect(_ws(url)) as ws:
        await ws.send('{"protocol":"messagepack","version":1}' + RS)
        assert await ws.recv() == b"{}\x1e"
        await ws.send(msgpack.encode(p.Invocation("Add", [40, 2], invocation_id="7")))
        (done,) = await _recv_messages(ws, msgpack.reader(), 1)
    assert done == p.Completion("7", result=42, has_result=True)


async def test_invocation_semantics(make_hub) -> None:
    server = make_hub(detailed_errors=True)
    async with server.serve() as url:
        async for ws in _json_client(url):
            reader = p.get_protocol("json").reader()
            # non-blocking: no Completion; the next blocking call is the first reply
            await ws.send('{"type":1,"target":"Add","arguments":[1,2]}' + RS)
            await ws.send('{"type":1,"invocationId":"2","target":"Add","arguments":[1]}' + RS)
            await ws.send('{"type":4,"invocationId":"3","target":"Add","arguments":[1,2]}' + RS)
            await ws.send('{"type":1,"invocationId":"4","target":"Count","arguments":[1]}' + RS)
            await ws.send('{"type":1,"invocationId":"5","target":"Crash","arguments":[]}' + RS)
            replies = await _recv_messages(ws, reader, 4)
    assert replies == [
        p.Completion(
            "2",
            error="Failed to invoke 'Add' due to an error on the server. "
            "InvalidDataException: Invocation provides 1 argument(s) but target expects 2.",
        ),
        p.Completion(
            "3",
            error="The client attempted to invoke the non-streaming 'Add' method "
            "with a streaming invocation.",
        ),
        p.Completion(
            "4",
            error="The client attempted to invoke the streaming 'Count' method "
            "with a non-streaming invocation.",
        ),
        p.Completion(
            "5",
            error="An unexpected error occurred invoking 'Crash' on the server. "
            "RuntimeError: secret internals",
        ),
    ]


async def test_malformed_client_data_closes_with_error(hub, until) -> None:
    server, url = hub
    async for ws in _json_client(url):
        await ws.send('{"type":1,"target":' + RS)
        frame = await asyncio.wait_for(ws.recv(), 5)
        (close,) = p.get_protocol("json").reader().feed(frame.encode())
        assert isinstance(close, p.Close)
        assert close.error is not None
        assert close.error.startswith("Connection closed with an error.")
        assert close.allow_reconnect is False
    await until(lambda: not server.connection_ids)


async def test_per_protocol_and_raw_broadcast_arguments(hub, until) -> None:
    server, url = hub
    msgpack = p.get_protocol("messagepack")
    async for text_ws in _json_client(url):
        async with connect(_ws(url)) as bin_ws:
            await bin_ws.send('{"protocol":"messagepack","version":1}' + RS)
            assert await bin_ws.recv() == b"{}\x1e"
            await until(lambda: len(server.connection_ids) == 2)
            for cid in server.connection_ids:
                server.add_to_group(cid, "evt")
            shaped = ProtocolArgs(json=msgspec.Raw(b'[{"number":"7","lap":3}]'), messagepack=[["7", 3]])
            assert server.send_to_group("evt", "Patch", arguments=shaped) == 2
            assert server.send_to_group("evt", "Plain", {"x": 1}) == 2
            text = await _recv_messages(text_ws, p.get_protocol("json").reader(), 2)
            binary = await _recv_messages(bin_ws, msgpack.reader(), 2)
    assert text == [p.Invocation("Patch", [{"number": "7", "lap": 3}]), p.Invocation("Plain", [{"x": 1}])]
    assert binary == [p.Invocation("Patch", [["7", 3]]), p.Invocation("Plain", [{"x": 1}])]
    assert server.stats.messages_sent["Patch"] == 2


async def test_refuse_upgrades_until_deadline(hub) -> None:
    server, url = hub
    server.refuse_upgrades(503, 30)
    body = await _negotiate(url)  # negotiate still answers
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{_ws(url)}?id={body['connectionToken']}"):
            pass
    assert refused.value.response.status_code == 503
    assert int(refused.value.response.headers["Retry-After"]) >= 1
    server.refuse_upgrades(401, 30)
    with pytest.raises(InvalidStatus) as unauthorized:
        async with connect(_ws(url)):
            pass
    assert unauthorized.value.response.status_code == 401
    server.refuse_upgrades(503, 0)  # deadline already passed
    async for _ws1 in _json_client(url):
        assert len(server.connection_ids) == 1
    assert server.stats.rejected_upgrades == 2


async def test_fault_frames_malformed_and_oversized(make_hub, until) -> None:
    server = make_hub(keepalive_interval=60)
    async with server.serve() as url:
        async for ws in _json_client(url):
            await until(lambda: len(server.connection_ids) == 1)
            assert server.send_oversized(200_000) == 1
            big = await asyncio.wait_for(ws.recv(), 5)
            assert len(big) > 200_000
            assert big.startswith('{"type":1,"target":"Oversized","arguments":["xxx')
            assert server.send_malformed() == 1
            bad = await asyncio.wait_for(ws.recv(), 5)
            with pytest.raises(p.ProtocolError):
                p.get_protocol("json").reader().feed(bad.encode())


async def test_half_open_stops_pings_and_overflow_closes_a_slow_connection(make_hub, until) -> None:
    server = make_hub(keepalive_interval=0.05, client_timeout=30, outbound_queue_size=8)
    async with server.serve() as url:
        async for ws in _json_client(url):
            assert await asyncio.wait_for(ws.recv(), 5) == '{"type":6}' + RS  # keepalive ping
            assert server.half_open() == 1
            with pytest.raises(TimeoutError):  # frozen: nothing at all for many keepalive intervals
                await asyncio.wait_for(ws.recv(), 0.5)
            server.end_half_open()
            assert await asyncio.wait_for(ws.recv(), 5) == '{"type":6}' + RS
            (cid,) = server.connection_ids
            server.add_to_group(cid, "g")
            server.half_open()
            sent = [server.send_to_group("g", "Flood", i) for i in range(20)]
            assert sent.count(1) <= 8
            assert server.stats.queue_overflows >= 1
            await until(lambda: not server.connection_ids)


async def test_drop_all_ends_plain_connections_and_stateful_ones_after_the_window(make_hub, until) -> None:
    server = make_hub(reconnect_window=0.3)
    async with server.serve() as url:
        plain = await _negotiate(url)
        stateful = await _negotiate(url, "negotiateVersion=1&useStatefulReconnect=true")
        async for _a in _json_client(url, f"?id={plain['connectionToken']}"):
            async with connect(f"{_ws(url)}?id={stateful['connectionToken']}") as b:
                await b.send('{"protocol":"json","version":2}' + RS)
                assert await b.recv() == "{}" + RS
                await until(lambda: len(server.connection_ids) == 2)
                assert server.drop_all() == 2
                await until(lambda: server.connection_ids == [stateful["connectionId"]])
                await until(lambda: server.connection_ids == [], timeout=5)
    assert server.stats.connections_current == 0


async def test_hub_server_mounts_on_an_existing_app(until) -> None:
    from aiohttp import web

    app = web.Application()

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app.router.add_get("/health", health)
    server = HubServer("/status/event-status")
    server.register("Ping2", lambda ctx: "pong")
    server.add_routes(app)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{base}/health")).json() == {"ok": True}
        async for ws in _json_client(f"{base}/status/event-status"):
            await ws.send('{"type":1,"invocationId":"1","target":"Ping2","arguments":[]}' + RS)
            assert await ws.recv() == '{"type":3,"invocationId":"1","result":"pong"}' + RS
    finally:
        await runner.cleanup()
    await until(lambda: not server.connection_ids)
