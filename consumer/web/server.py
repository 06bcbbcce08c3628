"""A small HTTP/1.1 server: asyncio streams + h11 (sans-I/O), no framework.

What it does and bounds:
- keep-alive (HTTP/1.1 persistent connections; HTTP/1.0 closes), HEAD (the GET headers, no body);
- every error is a JSON body `{"error": {"status": N, "message": "..."}}`: 400 malformed request,
  404 unknown path, 405 wrong method (with `Allow`), 413 body or headers too large, 503 too many
  connections;
- request head at most `max_header_bytes`, body at most `max_body_bytes` (the API is read-only);
- a connection idle longer than `idle_timeout`, or taking longer than that to send a whole request,
  is closed;
- at most `max_connections` open connections (beyond: 503 and close);
- per connection at most `write_buffer_bytes` in the transport and as much in the kernel's send
  buffer (SO_SNDBUF; the kernel doubles it);
- streamed responses (`Stream`, Server-Sent Events): chunked transfer encoding; the owner writes to
  a `StreamSink` straight into the transport (no task per client) and bounds what it may buffer;
  the stream ends when the client goes away (EOF on the read side) or the owner closes the sink;
  `StreamSink.abort()` drops the connection without a clean end (slow clients).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
import msgspec

from consumer.logs import get_logger

__all__ = [
    "HttpServer",
    "Request",
    "Response",
    "Route",
    "Router",
    "Stream",
    "StreamSink",
    "error_response",
    "json_response",
]

log = get_logger(__name__)

JSON = "application/json"
_ENCODER = msgspec.json.Encoder()


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    params: dict[str, str] = field(default_factory=dict)  # path parameters set by the router
    http_version: str = "1.1"


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = JSON
    headers: list[tuple[str, str]] = field(default_factory=list)


class StreamSink:
    """The write side of a streamed response: chunk-framed writes straight to the transport (no task
    per client: a publisher writes to every sink in one pass). `buffered()` is what the transport
    still holds for the client, so the caller can bound it and `abort()` a client that falls behind."""

    def __init__(self, transport: asyncio.WriteTransport, *, chunked: bool) -> None:
        self._transport = transport
        self._chunked = chunked
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.aborted = False

    @property
    def closed(self) -> bool:
        return self.done.done() or self._transport.is_closing()

    def buffered(self) -> int:
        return self._transport.get_write_buffer_size()

    def write(self, data: bytes) -> None:
        if self.closed or not data:
            return
        if self._chunked:
            self._transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            self._transport.write(data)

    def close(self) -> None:
        """End the response cleanly (the terminating chunk), then the connection."""
        if not self.done.done():
            self.done.set_result(None)

    def abort(self) -> None:
        """Drop the connection without a clean end (a slow client: what it holds is discarded)."""
        self.aborted = True
        self.close()


class Stream:
    """A streamed response (Server-Sent Events): after the head, `on_open(sink)` is called and the
    owner writes to the sink whenever it likes; `on_close()` is called once the client went away, the
    sink was closed or the server stops. The connection is not reused afterwards."""

    def __init__(
        self,
        on_open: Callable[[StreamSink], None],
        *,
        on_close: Callable[[], None] | None = None,
        content_type: str = "text/event-stream",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.status = 200
        self.on_open = on_open
        self.on_close = on_close
        self.content_type = content_type
        self.headers = list(headers)


Handler = Callable[[Request], Awaitable[Response | Stream]]


def json_response(data: Any, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(status, _ENCODER.encode(data), JSON, list(headers))


def error_response(status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return json_response({"error": {"status": status, "message": message}}, status, headers)


@dataclass(frozen=True, slots=True)
class Route:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    handler: Handler


class Router:
    """Path patterns like `/v1/events/{id}/board` (a parameter matches one path segment)."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, path: str, handler: Handler, methods: Iterable[str] = ("GET",)) -> None:
        methods = {m.upper() for m in methods}
        if "GET" in methods:
            methods.add("HEAD")
        regex = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path)) + "$"
        self.routes.append(Route(frozenset(methods), re.compile(regex), handler))

    async def __call__(self, request: Request) -> Response | Stream:
        allowed: set[str] = set()
        for route in self.routes:
            m = route.pattern.match(request.path)
            if m is None:
                continue
            if request.method not in route.methods:
                allowed |= route.methods
                continue
            request.params = m.groupdict()
            return await route.handler(request)
        if allowed:
            allow = ", ".join(sorted(allowed))
            return error_response(405, f"method {request.method} not allowed", [("allow", allow)])
        return error_response(404, "not found")


class HttpServer:
    def __init__(
        self,
        handler: Handler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_connections: int = 1100,
        max_header_bytes: int = 16 * 1024,
        max_body_bytes: int = 16 * 1024,
        idle_timeout: float = 30.0,
        write_buffer_bytes: int = 64 * 1024,
        extra_headers: Callable[[Request], Iterable[tuple[str, str]]] | None = None,
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.idle_timeout = idle_timeout
        self.write_buffer_bytes = write_buffer_bytes
        self.extra_headers = extra_headers
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.rejected = 0  # connections refused with 503 (max_connections)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def connections(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_client, self.host, self.port, limit=64 * 1024)
        if self.port == 0:
            self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping = True
        server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await server.wait_closed()

    # -- one connection ------------------------------------------------------------------------

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            writer.transport.set_write_buffer_limits(high=self.write_buffer_bytes)
            sock = writer.get_extra_info("socket")
            if sock is not None:  # bound the kernel's share of a slow client too (no autotuning)
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.write_buffer_bytes)
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_header_bytes)
            if len(self._tasks) > self.max_connections:
                self.rejected += 1
                with contextlib.suppress(h11.RemoteProtocolError):
                    await self._next(conn, reader)  # the request head, so the answer is read, not reset
                await self._send(conn, writer, error_response(503, "too many connections"), head=False)
                return
            await self._serve(conn, reader, writer)
        except (ConnectionError, TimeoutError):
            pass
        except asyncio.CancelledError:
            # stop(): this task is the connection's top level; ending it is the cancellation's purpose
            # (re-raising only makes asyncio's stream callback log the cancelled task as an error).
            pass
        except Exception:  # a bug in a handler must not take the server down
            log.exception("web.connection_failed")
        finally:
            self._tasks.discard(task)
            await self._close(writer)

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        """Close after flushing what is buffered, for at most idle_timeout (a client that stopped
        reading cannot keep the connection and its buffer); then abort."""
        transport = writer.transport
        if self._stopping or (transport.is_closing() and not transport.get_write_buffer_size()):
            transport.abort()  # stopping: the daemon's shutdown grace is not the client's to spend
            return
        writer.close()
        try:
            async with asyncio.timeout(self.idle_timeout):
                await writer.wait_closed()
        except (TimeoutError, asyncio.CancelledError):
            transport.abort()
        except Exception:  # the peer reset it: nothing left to flush
            transport.abort()

    async def _drain(self, writer: asyncio.StreamWriter) -> None:
        """Wait for the client to take what was written, at most idle_timeout (TimeoutError)."""
        async with asyncio.timeout(self.idle_timeout):
            await writer.drain()

    async def _next(
        self, conn: h11.Connection, reader: asyncio.StreamReader, deadline: float | None = None
    ) -> Any:
        """The next h11 event; reading stops at `deadline` (loop time; default idle_timeout from now)."""
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self.idle_timeout
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            async with asyncio.timeout_at(deadline):
                data = await reader.read(64 * 1024)
            conn.receive_data(data)  # b"" = EOF -> ConnectionClosed (or an error mid-message)

    async def _serve(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # A whole request (head and body) must arrive within idle_timeout: a client trickling
            # its head a byte at a time cannot hold the connection (slowloris).
            deadline = loop.time() + self.idle_timeout
            try:
                event = await self._next(conn, reader, deadline)
                if isinstance(event, h11.ConnectionClosed):
                    return
                assert isinstance(event, h11.Request)
                size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
                if size > self.max_header_bytes:
                    await self._send(conn, writer, error_response(431, "request head too large"))
                    return
                request = self._request(event)
                body = 0
                while True:
                    part = await self._next(conn, reader, deadline)
                    if isinstance(part, h11.EndOfMessage):
                        break
                    if isinstance(part, h11.Data):
                        body += len(part.data)
                        if body > self.max_body_bytes:
                            await self._send(conn, writer, error_response(413, "request body too large"))
                            return
                    elif isinstance(part, h11.ConnectionClosed):
                        return
            except h11.RemoteProtocolError as err:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    status = err.error_status_hint
                    message = "request head too large" if status == 431 else "malformed HTTP request"
                    await self._send(conn, writer, error_response(status, message), head=False)
                return
            try:
                response = await self.handler(request)
            except Exception:
                log.exception("web.handler_failed", path=request.path)
                response = error_response(500, "internal error")
            if self.extra_headers is not None:
                response.headers.extend(self.extra_headers(request))
            head = request.method == "HEAD"
            if isinstance(response, Stream):
                await self._stream(conn, reader, writer, response, head=head)
                return
            await self._send(conn, writer, response, head=head)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    @staticmethod
    def _request(event: h11.Request) -> Request:
        target = event.target.decode("latin-1")
        parts = urlsplit(target)
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return Request(
            method=event.method.decode("latin-1").upper(),
            path=parts.path or "/",
            query=dict(parse_qsl(parts.query)),
            headers=headers,
            http_version=event.http_version.decode("latin-1"),
        )

    @staticmethod
    def _head(status: int, content_type: str, headers: list[tuple[str, str]], length: int | None) -> Any:
        out = [("content-type", content_type), ("cache-control", "no-cache"), *headers]
        if length is not None:
            out.append(("content-length", str(length)))
        return h11.Response(status_code=status, headers=out)

    async def _send(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, response: Response, *, head: bool = False
    ) -> None:
        try:
            data = conn.send(
                self._head(response.status, response.content_type, response.headers, len(response.body))
            )
            if response.body and not head:
                data = (data or b"") + (conn.send(h11.Data(data=response.body)) or b"")
            data = (data or b"") + (conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            return
        writer.write(data)
        await self._drain(writer)

    async def _stream(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        stream: Stream,
        *,
        head: bool,
    ) -> None:
        headers = [*stream.headers, ("connection", "close")]
        writer.write(conn.send(self._head(stream.status, stream.content_type, headers, None)) or b"")
        if head:
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await self._drain(writer)
            return
        # The body is framed here, not by h11: one chunk encoding shared by every writer of the sink
        # (HTTP/1.0 clients get the bytes as they are, ended by the close).
        chunked = conn.their_http_version != b"1.0"
        transport = writer.transport
        sink = StreamSink(transport, chunked=chunked)
        gone = asyncio.ensure_future(self._until_eof(reader))
        try:
            stream.on_open(sink)
            await asyncio.wait({gone, sink.done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            with contextlib.suppress(BaseException):
                await gone
            if not sink.done.done():
                sink.done.set_result(None)
            if stream.on_close is not None:
                stream.on_close()
        if sink.aborted or transport.is_closing():
            transport.abort()
            return
        if chunked:
            transport.write(b"0\r\n\r\n")
        await self._drain(writer)

    @staticmethod
    async def _until_eof(reader: asyncio.StreamReader) -> None:
        while await reader.read(4096):
            pass  # a client that keeps sending while it streams: read and ignore


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    return headers.get(name.lower())
