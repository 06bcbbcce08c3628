"""Every fault of the simulator, through the Python API or the loopback admin HTTP API."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import httpx
import pytest

from consumer.signalr import protocol as p
from consumer.sim.simulator import Simulator

from .rawclient import RawClient, raw_client, ws_url


async def _admin(sim: Simulator, fault: str, **params: object) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(f"{sim.admin_url}/faults/{fault}", json=params)


async def _wait_close_message(client: RawClient) -> p.Close:
    while True:
        message = await client.next_message(timeout=10)
        if isinstance(message, p.Close):
            return message


async def _wait_transport_end(client: RawClient) -> aiohttp.WSMsgType:
    async with asyncio.timeout(10):
        while True:
            frame = await client.next_frame()
            if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return frame.type
            data = frame.data if isinstance(frame.data, bytes) else str(frame.data).encode()
            assert not any(isinstance(m, p.Close) for m in client.reader.feed(data)), "expected no Close"


async def test_drop_all_aborts_without_a_close_message(sim: Simulator) -> None:
    async with raw_client(sim.hub_url) as client:
        response = await _admin(sim, "drop_all")
        assert response.json() == {"fault": "drop_all", "affected": 1}
        assert await _wait_transport_end(client) in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


@pytest.mark.parametrize("allow", [True, False])
async def test_close_all_sends_close_with_allow_reconnect(sim: Simulator, allow: bool) -> None:
    async with raw_client(sim.hub_url, "messagepack") as client:
        assert await sim.faults.close_all(allow_reconnect=allow) == 1
        close = await _wait_close_message(client)
        assert close.allow_reconnect is allow and close.error


async def test_half_open_stops_pings_until_it_ends(sim: Simulator) -> None:
    async with raw_client(sim.hub_url) as client:
        await client.next_frame(timeout=5)  # traffic (pings every 1 s) flows
        assert sim.faults.half_open(seconds=2.5) == 1
        with pytest.raises(TimeoutError):
            await client.next_frame(timeout=2.0)  # nothing for longer than the keepalive interval
        frame = await client.next_frame(timeout=5)  # resumes by itself after 2.5 s
        assert frame.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY)


@pytest.mark.parametrize("status", [401, 503])
async def test_refuse_upgrades_for_n_seconds(sim: Simulator, status: int) -> None:
    response = await _admin(sim, "refuse_upgrades", status=status, seconds=30)
    assert response.status_code == 200
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(ws_url(sim.hub_url))
        assert info.value.status == status
    await _admin(sim, "clear")
    async with raw_client(sim.hub_url) as client:
        assert (await client.invoke("SubscribeToEventV2", 244)).error is None


async def test_expire_tokens_closes_authenticated_connections_and_invalidates_tokens(sim: Simulator) -> None:
    token = sim.idp.issue_token(sim.client_id)
    async with raw_client(sim.hub_url, token=token) as authed, raw_client(sim.hub_url) as anonymous:
        assert (await _admin(sim, "expire_tokens")).json()["affected"] == 1
        close = await _wait_close_message(authed)
        assert close.allow_reconnect and "expired" in (close.error or "")
        assert (await anonymous.invoke("SubscribeToEventV2", 244)).error is None  # untouched
    async with httpx.AsyncClient() as http:
        url = f"{sim.rest_url}/GetCurrentSessionStateJson"
        old = await http.get(url, params={"eventId": 244}, headers={"Authorization": f"Bearer {token}"})
        assert old.status_code == 401
    await asyncio.sleep(0.01)  # a token minted in the same instant as the fault would count as expired
    assert sim.hub.verify(sim.idp.issue_token(sim.client_id)) is not None


@pytest.mark.parametrize("status", [429, 503])
async def test_idp_fail_for_n_seconds_over_admin_api(sim: Simulator, status: int) -> None:
    assert (await _admin(sim, "idp_fail", status=status, seconds=30)).status_code == 200
    async with httpx.AsyncClient() as http:
        resp = await http.post(
            sim.token_url, data={"grant_type": "client_credentials"}, auth=(sim.client_id, sim.client_secret)
        )
        assert resp.status_code == status and int(resp.headers["Retry-After"]) >= 1
        await _admin(sim, "clear")
        resp = await http.post(
            sim.token_url, data={"grant_type": "client_credentials"}, auth=(sim.client_id, sim.client_secret)
        )
        assert resp.status_code == 200


async def test_idp_slow_over_admin_api(sim: Simulator) -> None:
    assert (await _admin(sim, "idp_slow", delay=0.4, seconds=30)).status_code == 200
    async with httpx.AsyncClient() as http:
        started = time.monotonic()
        resp = await http.post(
            sim.token_url, data={"grant_type": "client_credentials"}, auth=(sim.client_id, sim.client_secret)
        )
    assert resp.status_code == 200 and time.monotonic() - started >= 0.4


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
async def test_malformed_frame(sim: Simulator, protocol: str) -> None:
    async with raw_client(sim.hub_url, protocol) as client:
        assert (await _admin(sim, "malformed")).json()["affected"] == 1
        with pytest.raises(p.ProtocolError):
            async with asyncio.timeout(10):
                while True:
                    frame = await client.next_frame()
                    data = frame.data if isinstance(frame.data, bytes) else str(frame.data).encode()
                    client.reader.feed(data)


async def test_oversized_message_exceeds_the_hub_limit(sim: Simulator) -> None:
    limit = sim.hub.settings.max_message_size
    async with raw_client(sim.hub_url) as client:
        assert (await _admin(sim, "oversized", size=limit + 1000)).json()["affected"] == 1
        while True:
            frame = await client.next_frame()
            if len(frame.data) > limit:
                break
        message = client.proto.reader(max_message_size=8 * limit).feed(frame.data.encode())[0]
        assert isinstance(message, p.Invocation) and len(message.arguments[0]) == limit + 1000


async def test_restart_on_the_same_port(sim: Simulator) -> None:
    port = sim.site.port
    async with raw_client(sim.hub_url) as client:
        response = await _admin(sim, "restart", down_seconds=0.3)
        assert response.status_code == 200
        await _wait_transport_end(client)
    async with asyncio.timeout(10):
        while True:
            try:
                async with raw_client(sim.hub_url) as again:
                    assert (await again.invoke("SubscribeToEventV2", 244)).error is None
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)  # the listener is down for 0.3 s
    assert sim.site.port == port


async def test_reset_event_sends_receive_reset(sim: Simulator) -> None:
    async with raw_client(sim.hub_url) as client:
        assert (await client.invoke("SubscribeToEventV2", 244)).error is None
        assert (await _admin(sim, "reset_event", event_id=244)).json()["affected"] == 1
        while True:
            message = await client.next_message()
            if isinstance(message, p.Invocation) and message.target == "ReceiveReset":
                assert message.arguments == []
                break


async def test_admin_api_rejects_unknown_faults_and_bad_parameters(sim: Simulator) -> None:
    assert (await _admin(sim, "explode")).status_code == 404
    assert (await _admin(sim, "refuse_upgrades", status=302, seconds=1)).status_code == 400
    assert (await _admin(sim, "idp_slow", nonsense=1)).status_code == 400
    async with httpx.AsyncClient() as http:
        state = (await http.get(f"{sim.admin_url}/state")).json()
    assert set(state["events"]) == {"244", "390"}
