"""A minimal SignalR WebSocket peer for the simulator tests (aiohttp client + our protocol codec), used
where a test must see exact frames: Close messages, malformed bytes, oversized messages, refusals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from consumer.signalr import protocol as p


class RawClient:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, name: str, max_message_size: int) -> None:
        self.ws = ws
        self.proto = p.get_protocol(name)
        self.reader = self.proto.reader(max_message_size=max_message_size)
        self.pending: list[p.HubMessage] = []
        self.invocations = 0

    async def handshake(self) -> None:
        await self.ws.send_str(p.encode_handshake_request(p.HandshakeRequest(self.proto.name, 1)).decode())
        buffer = b""
        while True:
            frame = await self.ws.receive(timeout=10)
            data = frame.data if isinstance(frame.data, bytes) else str(frame.data).encode()
            response, rest = p.parse_handshake_response(buffer + data)
            if response is not None:
                assert response.error is None, response.error
                if rest:
                    self.pending.extend(self.reader.feed(rest))
                return
            buffer += data

    async def invoke(self, target: str, *args: Any) -> p.Completion:
        self.invocations += 1
        invocation_id = str(self.invocations)
        data = self.proto.encode(
            p.Invocation(target=target, arguments=list(args), invocation_id=invocation_id)
        )
        if self.proto.transfer_format == "text":
            await self.ws.send_str(data.decode())
        else:
            await self.ws.send_bytes(data)
        while True:
            message = await self.next_message()
            if isinstance(message, p.Completion) and message.invocation_id == invocation_id:
                return message
            self.pending.append(message)

    async def next_frame(self, timeout: float = 10.0) -> aiohttp.WSMessage:
        return await self.ws.receive(timeout=timeout)

    async def next_message(self, timeout: float = 10.0) -> p.HubMessage:
        if self.pending:
            return self.pending.pop(0)
        async with asyncio.timeout(timeout):
            while not self.pending:
                frame = await self.ws.receive()
                if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    raise ConnectionError(f"websocket ended: {frame.type!r}")
                data = frame.data if isinstance(frame.data, bytes) else str(frame.data).encode()
                self.pending.extend(m for m in self.reader.feed(data) if not isinstance(m, p.Ping))
        return self.pending.pop(0)


def ws_url(hub_url: str) -> str:
    return hub_url.replace("http://", "ws://", 1)


@asynccontextmanager
async def raw_client(
    hub_url: str, protocol: str = "json", token: str | None = None, max_message_size: int = 4 * 1024 * 1024
) -> AsyncIterator[RawClient]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(ws_url(hub_url), headers=headers, max_msg_size=0, autoping=True) as ws,
    ):
        client = RawClient(ws, protocol, max_message_size)
        await client.handshake()
        yield client
