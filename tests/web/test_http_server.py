"""consumer.web.server on raw sockets: keep-alive, HEAD, JSON errors, limits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from consumer.web import HttpServer, Request, Response, Router, Stream, StreamSink, json_response


async def hello(request: Request) -> Response:
    return json_response({"path": request.path, "q": request.query})


async def ticks(_request: Request) -> Stream:
    def on_open(sink: StreamSink) -> None:
        for i in range(3):
            sink.write(f"data: {i}\n\n".encode())
        sink.close()

    return Stream(on_open)


async def flood(_request: Request) -> Stream:
    def on_open(sink: StreamSink) -> None:
        sink.write(b"x" * 4_000_000)  # far more than a client that never reads will take

    return Stream(on_open)


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    router = Router()
    router.add("/hello", hello)
    router.add("/items/{id}", hello)
    router.add("/ticks", ticks)
    router.add("/flood", flood)
    srv = HttpServer(router, port=0, max_header_bytes=2048, max_body_bytes=100, max_connections=3)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def exchange(srv: HttpServer, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(srv.host, srv.port)
    writer.write(raw)
    await writer.drain()
    data = await reader.read()  # until the server closes
    writer.close()
    return data


def split(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


async def test_keep_alive_serves_two_requests_on_one_connection(server: HttpServer) -> None:
    data = await exchange(
        server,
        b"GET /hello?a=1 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /items/7 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert data.count(b"HTTP/1.1 200") == 2
    assert b'{"path":"/hello","q":{"a":"1"}}' in data and b'"path":"/items/7"' in data


async def test_head_has_headers_and_no_body(server: HttpServer) -> None:
    data = await exchange(server, b"HEAD /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, headers, body = split(data)
    assert status == 200 and int(headers["content-length"]) > 0 and body == b""


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404),
        (b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 405),
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n", 431),
        (b"GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n" + b"x" * 500, 413),
    ],
)
async def test_errors_have_json_bodies(server: HttpServer, raw: bytes, status: int) -> None:
    got, headers, body = split(await exchange(server, raw))
    assert got == status
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["status"] == status
    if status == 405:
        assert headers["allow"] == "GET, HEAD"


async def test_stream_is_chunked_and_ends(server: HttpServer) -> None:
    data = await exchange(server, b"GET /ticks HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = split(data)
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert headers["content-type"] == "text/event-stream"
    assert b"data: 0" in body and b"data: 2" in body and body.endswith(b"0\r\n\r\n")


async def test_connection_limit_answers_503(server: HttpServer) -> None:
    held = [await asyncio.open_connection(server.host, server.port) for _ in range(3)]
    try:
        # the three idle connections are accepted; a fourth gets 503 and is closed
        async with asyncio.timeout(10):
            while server.connections < 3:
                await asyncio.sleep(0.01)
        status, _, body = split(await exchange(server, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"))
        assert status == 503 and json.loads(body)["error"]["message"] == "too many connections"
    finally:
        for _, w in held:
            w.close()


async def test_a_trickled_request_head_is_cut_off() -> None:
    router = Router()
    router.add("/hello", hello)
    srv = HttpServer(router, port=0, idle_timeout=0.5)
    await srv.start()
    try:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
        started = asyncio.get_running_loop().time()

        async def trickle() -> None:
            for i in range(100):
                writer.write(f"X-{i}: y\r\n".encode())
                await asyncio.sleep(0.1)  # a slow client's pace, not synchronisation

        sending = asyncio.create_task(trickle())
        try:
            assert await asyncio.wait_for(reader.read(), 10) == b""  # closed without an answer
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            writer.close()
        assert asyncio.get_running_loop().time() - started < 5  # the 0.5 s bound, not 10 s of headers
    finally:
        await srv.stop()


async def test_stop_does_not_wait_for_a_client_that_stopped_reading(server: HttpServer) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"GET /flood HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")  # the stream started; now never read again
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(server.stop(), 20)
    assert loop.time() - started < server.idle_timeout  # aborted, not flushed for idle_timeout
    writer.close()
