"""Bearer auth at negotiate and at the upgrade, and the token-expiry Close, against real HTTP/WebSocket peers
(httpx, websockets, and the official client)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from consumer.sim.hubhost import HubServer, Principal

GOOD = "good-token-123456"


def _authenticator(lifetime: float | None = None) -> Any:
    async def authenticate(token: str | None, request: web.Request) -> Principal | None:
        if token != GOOD:
            return None
        expires = time.time() + lifetime if lifetime is not None else None
        return Principal(subject="relay-svc", expires_at=expires)

    return authenticate


@pytest.fixture
async def secured(make_hub) -> AsyncIterator[tuple[HubServer, str]]:
    server = make_hub(authenticate=_authenticator(), require_auth=True)
    async with server.serve() as url:
        yield server, url


def _ws(url: str) -> str:
    return url.replace("http://", "ws://", 1)


@pytest.mark.parametrize(
    ("headers", "query", "challenge"),
    [
        pytest.param({}, "", "Bearer", id="missing"),
        pytest.param(
            {"Authorization": "Bearer wrong-token"}, "", 'Bearer error="invalid_token"', id="bad-header"
        ),
        pytest.param({}, "&access_token=wrong-token", 'Bearer error="invalid_token"', id="bad-query"),
    ],
)
async def test_negotiate_and_upgrade_reject_missing_or_invalid_bearer(
    secured, headers: dict[str, str], query: str, challenge: str
) -> None:
    server, url = secured
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{url}/negotiate?negotiateVersion=1{query}", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == challenge

    with pytest.raises(InvalidStatus) as caught:
        async with connect(f"{_ws(url)}?x=1{query}", additional_headers=headers):
            pass
    assert caught.value.response.status_code == 401
    assert caught.value.response.headers["WWW-Authenticate"] == challenge
    assert server.connection_ids == []


async def test_valid_bearer_in_header_or_query_is_accepted(secured) -> None:
    _server, url = secured
    async with httpx.AsyncClient() as http:
        by_header = await http.post(
            f"{url}/negotiate?negotiateVersion=1", headers={"Authorization": f"Bearer {GOOD}"}
        )
        by_query = await http.post(f"{url}/negotiate?negotiateVersion=1&access_token={GOOD}")
    assert by_header.status_code == by_query.status_code == 200
    token = by_header.json()["connectionToken"]
    # the upgrade needs its own bearer, too
    with pytest.raises(InvalidStatus) as caught:
        async with connect(f"{_ws(url)}?id={token}"):
            pass
    assert caught.value.response.status_code == 401
    async with connect(f"{_ws(url)}?id={token}&access_token={GOOD}") as ws:
        await ws.send('{"protocol":"json","version":1}\x1e')
        assert await ws.recv() == "{}\x1e"
        await ws.send('{"type":1,"invocationId":"1","target":"Whoami","arguments":[]}\x1e')
        assert await ws.recv() == '{"type":3,"invocationId":"1","result":"relay-svc"}\x1e'


@pytest.mark.node
async def test_official_client_with_token_factory_and_without(secured, official_client) -> None:
    server, url = secured
    anonymous = await official_client()
    refused = await anonymous.request("start", url=url, protocol="json")
    assert refused["ok"] is False
    assert "401" in refused["error"]
    refused_skip = await anonymous.request("start", url=url, protocol="json", skipNegotiation=True)
    assert refused_skip["ok"] is False
    authed = await official_client()
    await authed.ok("start", url=url, protocol="messagepack", token=GOOD)
    assert (await authed.ok("invoke", method="Whoami"))["result"] == "relay-svc"
    assert len(server.connection_ids) == 1


@pytest.mark.node
async def test_expired_token_closes_with_close_message_allowing_reconnect(make_hub, official_client) -> None:
    server = make_hub(authenticate=_authenticator(lifetime=0.6), require_auth=True)
    async with server.serve() as url:
        client = await official_client()
        await client.ok("start", url=url, protocol="json", token=GOOD, automaticReconnect=[0, 0, 0])
        (first,) = server.connection_ids
        reconnecting = await client.wait_event(lambda e: e.get("event") == "reconnecting")
        assert (
            reconnecting["error"]
            == "Server returned an error on close: Unauthorized: the access token expired."
        )
        reconnected = await client.wait_event(lambda e: e.get("event") == "reconnected")
        assert reconnected["connectionId"] != first


async def test_expired_token_close_message_on_the_wire(make_hub) -> None:
    server = make_hub(authenticate=_authenticator(lifetime=0.3), require_auth=True)
    async with server.serve() as url:
        async with connect(f"{_ws(url)}?access_token={GOOD}") as ws:
            await ws.send('{"protocol":"json","version":1}\x1e')
            assert await ws.recv() == "{}\x1e"
            frames = [frame async for frame in ws]  # until the server closes the socket
        assert (
            frames[-1]
            == '{"type":7,"error":"Unauthorized: the access token expired.","allowReconnect":true}\x1e'
        )
        assert ws.close_code == 1000
        assert server.connection_ids == []
