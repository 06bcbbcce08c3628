"""An ASP.NET Core SignalR hub host on aiohttp: the peer the simulator, the client's tests and the benchmarks
talk to. Only transport glue lives here; every byte of the hub protocol goes through `protocol.py`.

What it implements (checked against Microsoft's `@microsoft/signalr` client, see tests/signalr):
- `POST {path}/negotiate?negotiateVersion=0|1` (v1: distinct connectionId/connectionToken; v0: connectionId
  only), WebSockets only (Text and Binary), `useStatefulReconnect` when asked for and allowed.
- WebSocket at `{path}?id=<connectionToken>` (unknown id → 404, second live socket → 409) or without `id`
  (skipNegotiation). Bearer auth from `Authorization: Bearer` or `access_token` (negotiate and upgrade).
- Handshake with protocol selection and timeout, hub methods with ASP.NET-shaped errors (method names
  matched case-insensitively, as DefaultHubDispatcher does; an unknown method is a binding failure:
  "Failed to invoke 'X' due to an error on the server. HubException: Method does not exist."; a wrong
  argument count or, with `register(..., arg_types=)`, a wrong argument type: "Failed to invoke 'X' due
  to an error on the server." as the real binder's InvalidDataException without detailed errors),
  server→client streams with cancellation, groups and broadcasts encoded once per protocol, client
  results, keepalive pings, client timeout, Close with allowReconnect, token-expiry close (opt-in),
  stateful reconnect (Ack/Sequence with a replay buffer and a reconnect window) and fault hooks for
  the simulator's chaos API.

Decisions where ASP.NET Core leaves room:
- Sequence after a stateful reconnect carries the id of the first *unacknowledged* buffered message followed
  by the replay, exactly like the official client's MessageBuffer (the receiver drops duplicates).
- Hub invocations of one connection run one at a time, in arrival order (ASP.NET's default of one parallel
  invocation per client); streams run concurrently. Client results never block the reader.
- A connection whose bounded outbound queue overflows loses its transport: a stateful connection then
  reconnects and gets the replay, any other connection is closed with an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import secrets
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeAlias

import msgspec
from aiohttp import WSMsgType, web

from consumer.logs import get_logger
from consumer.signalr import protocol as p

__all__ = [
    "ClientResultError",
    "ConnectionGone",
    "HubCallContext",
    "HubError",
    "HubServer",
    "Principal",
    "ProtocolArgs",
    "ServerStats",
]

log = get_logger(__name__)

MIB = 1024 * 1024
_TRACKABLE = (p.Invocation, p.StreamItem, p.Completion, p.StreamInvocation, p.CancelInvocation)
_MAX_FRAME_BATCH = 64 * 1024

Authenticate: TypeAlias = Callable[[str | None, web.Request], Awaitable[Any]]
HubMethod: TypeAlias = Callable[..., Any]


class HubError(Exception):
    """Raise from a hub method to send its message to the caller (like ASP.NET Core's HubException)."""


class ClientResultError(Exception):
    """The client answered a server→client invocation with an error."""


class ConnectionGone(Exception):
    """The connection is unknown or closed."""


@dataclass(slots=True, frozen=True)
class Principal:
    """What an `authenticate` hook may return. Any object works; `expires_at` (epoch seconds) is used for
    the token-expiry close when present."""

    subject: str
    claims: Mapping[str, Any] = field(default_factory=dict)
    expires_at: float | None = None


@dataclass(slots=True, frozen=True)
class ProtocolArgs:
    """Per-protocol arguments for one broadcast: each value is a list of arguments (elements may be
    `msgspec.Raw` pre-encoded for that protocol) or a `msgspec.Raw` of the whole arguments array."""

    json: Sequence[Any] | msgspec.Raw
    messagepack: Sequence[Any] | msgspec.Raw

    def for_protocol(self, name: str) -> Any:
        value = self.json if name == "json" else self.messagepack
        return value if isinstance(value, msgspec.Raw) else list(value)


@dataclass(slots=True)
class ServerStats:
    connections_current: int = 0
    connections_total: int = 0
    negotiations: Counter[int] = field(default_factory=Counter)  # per negotiate version answered
    reconnects: int = 0
    messages_sent: Counter[str] = field(default_factory=Counter)  # per target, one per recipient
    messages_received: int = 0
    bytes_sent: int = 0
    queue_overflows: int = 0
    pings_sent: int = 0
    rejected_upgrades: int = 0
    query_tokens: int = 0  # negotiate/upgrade requests carrying `access_token` in the query string


@dataclass(slots=True)
class HubCallContext:
    """Passed as the first argument to every hub method (and to the connect/disconnect hooks)."""

    connection_id: str
    principal: Any
    server: HubServer
    invocation_id: str | None = None

    async def add_to_group(self, group: str) -> None:
        self.server.add_to_group(self.connection_id, group)

    async def remove_from_group(self, group: str) -> None:
        self.server.remove_from_group(self.connection_id, group)


class _State(Enum):
    NEGOTIATED = "negotiated"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"  # stateful: transport lost, waiting for the reconnect window
    CLOSED = "closed"


@dataclass(slots=True)
class _Out:
    seq: int  # 0 for messages that are not sequence-tracked
    data: bytes
    target: str | None = None


@dataclass(slots=True)
class _Method:
    fn: HubMethod
    arity: int | None  # None: *args
    stream: bool
    arg_types: tuple[str, ...] | None = None


def _binds(value: Any, type_name: str) -> bool:
    """Whether System.Text.Json / MessagePack-CSharp would bind `value` to a parameter of this C# type."""
    if type_name == "any":
        return True
    nullable = type_name.endswith("?") or type_name.startswith("string")
    base = type_name.removesuffix("?")
    if value is None:
        return nullable
    if base == "int":
        return isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31
    if base == "string":
        return isinstance(value, str)
    if base == "bool":
        return isinstance(value, bool)
    if base.endswith("[]"):
        return isinstance(value, list) and all(_binds(v, base[:-2]) for v in value)
    return True


class _Transport:
    """One WebSocket attached to a logical connection."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, queue_size: int) -> None:
        self.ws = ws
        self.request = request
        self.queue: asyncio.Queue[_Out | None] = asyncio.Queue(queue_size)
        self.last_sent = time.monotonic()
        self.frozen = False  # half-open fault: no reads, no writes, no pings
        self.thawed = asyncio.Event()
        self.thawed.set()
        self.replay_upto = 0
        self.close_queued = False

    def abort(self) -> None:
        transport = self.request.transport
        if transport is not None:
            transport.abort()
        self.thawed.set()  # a frozen reader/writer must wake up to notice the dead socket


class _Connection:
    def __init__(self, server: HubServer, connection_id: str, token: str, principal: Any) -> None:
        self.server = server
        self.id = connection_id
        self.token = token
        self.principal = principal
        self.state = _State.NEGOTIATED
        self.stateful_allowed = False
        self.stateful = False
        self.protocol: p.HubProtocol | None = None
        self.groups: set[str] = set()
        self.transport: _Transport | None = None
        self.closing = False
        # sequence tracking (stateful reconnect)
        self.send_seq = 0
        self.buffer: deque[_Out] = deque()
        self.buffer_bytes = 0
        self.recv_next = 1
        self.recv_latest = 0
        self.ack_handle: asyncio.TimerHandle | None = None
        self.expiry_handle: asyncio.TimerHandle | None = None
        self.window_handle: asyncio.TimerHandle | None = None
        # invocations
        self.invoke_lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[None]] = set()
        self.streams: dict[str, asyncio.Task[None]] = {}
        self.pending: dict[str, asyncio.Future[Any]] = {}
        self.ended = asyncio.Event()

    # --- outbound ---------------------------------------------------------------------------------------

    def enqueue(self, data: bytes, *, trackable: bool, target: str | None = None) -> bool:
        if self.state is _State.CLOSED or self.closing:
            return False
        seq = 0
        if self.stateful and trackable:
            self.send_seq += 1
            seq = self.send_seq
            out = _Out(seq, data, target)
            self.buffer.append(out)
            self.buffer_bytes += len(data)
            if self.buffer_bytes > self.server.stateful_buffer_size:
                self.server.stats.queue_overflows += 1
                log.warning("signalr.server.replay_buffer_overflow", connection_id=self.id)
                self.server._spawn(
                    self.close(error="Stateful reconnect buffer overflow.", allow_reconnect=True)
                )
                return False
        else:
            out = _Out(seq, data, target)
        transport = self.transport
        if transport is None:
            return self.stateful  # buffered for the replay
        try:
            transport.queue.put_nowait(out)
        except asyncio.QueueFull:
            self.server.stats.queue_overflows += 1
            log.warning("signalr.server.outbound_queue_overflow", connection_id=self.id)
            if self.stateful:
                transport.abort()  # the client reconnects and gets the replay
            else:
                self.server._spawn(self.close(error="Outbound queue overflow: the client is too slow."))
            return False
        return True

    def send(self, message: p.HubMessage) -> bool:
        assert self.protocol is not None
        target = message.target if isinstance(message, p.Invocation) else None
        return self.enqueue(
            self.protocol.encode(message), trackable=isinstance(message, _TRACKABLE), target=target
        )

    def acked(self, sequence_id: int) -> None:
        while self.buffer and self.buffer[0].seq <= sequence_id:
            self.buffer_bytes -= len(self.buffer.popleft().data)

    # --- lifecycle ---------------------------------------------------------------------------------------

    async def close(self, *, error: str | None = None, allow_reconnect: bool = False) -> None:
        """Send Close and end the logical connection (no stateful reconnect afterwards)."""
        if self.state is _State.CLOSED or self.closing:
            return
        self.closing = True
        transport = self.transport
        if transport is not None and self.protocol is not None and not transport.frozen:
            data = self.protocol.encode(p.Close(error=error, allow_reconnect=allow_reconnect))
            with contextlib.suppress(asyncio.QueueFull):
                transport.queue.put_nowait(_Out(0, data))
            with contextlib.suppress(asyncio.QueueFull):
                transport.queue.put_nowait(None)  # writer: flush, then close the socket
                transport.close_queued = True
            if not transport.close_queued:
                transport.abort()
        elif transport is not None:
            transport.abort()
        self.server._end(self)


class HubServer:
    """A SignalR hub host. Mount with `add_routes(app)`; `serve()`."""

    def __init__(
        self,
        path: str = "/hub",
        *,
        protocols: Iterable[str] = ("json", "messagepack"),
        keepalive_interval: float = 15.0,
        client_timeout: float = 30.0,
        handshake_timeout: float = 15.0,
        max_message_size: int = MIB,
        authenticate: Authenticate | None = None,
        require_auth: bool = False,
        stateful_reconnect: bool = True,
        reconnect_window: float = 30.0,
        stateful_buffer_size: int = 16 * MIB,
        ack_interval: float = 1.0,
        outbound_queue_size: int = 4096,
        close_on_token_expiry: bool = True,
        token_expired_message: str = "Unauthorized: the access token expired.",
        detailed_errors: bool = False,
        negotiate_ttl: float = 30.0,
    ) -> None:
        self.path = "/" + path.strip("/") if path.strip("/") else ""
        self.protocol_names = tuple(protocols)
        self._protocols: dict[str, p.HubProtocol] = {}
        self.keepalive_interval = keepalive_interval
        self.client_timeout = client_timeout
        self.handshake_timeout = handshake_timeout
        self.max_message_size = max_message_size
        self.authenticate = authenticate
        self.require_auth = require_auth
        self.stateful_reconnect = stateful_reconnect
        self.reconnect_window = reconnect_window
        self.stateful_buffer_size = stateful_buffer_size
        self.ack_interval = ack_interval
        self.outbound_queue_size = outbound_queue_size
        self.close_on_token_expiry = close_on_token_expiry
        self.token_expired_message = token_expired_message
        self.detailed_errors = detailed_errors
        self.negotiate_ttl = negotiate_ttl
        self.on_connect: Callable[[HubCallContext], Awaitable[None]] | None = None
        self.on_disconnect: Callable[[HubCallContext], Awaitable[None]] | None = None
        self.stats = ServerStats()
        self._methods: dict[str, _Method] = {}
        self._by_id: dict[str, _Connection] = {}
        self._by_token: dict[str, _Connection] = {}
        self._groups: dict[str, set[str]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._refuse: tuple[int, float] | None = None
        self._flap: tuple[str, float] | None = None
        self._invocation_counter = 0

    # --- registration ----------------------------------------------------------------------------------

    def register(self, name: str, fn: HubMethod, *, arg_types: Sequence[str] | None = None) -> None:
        """Register a hub method: `fn(ctx, *args)`, sync or async; an async generator is a stream.

        Names are matched case-insensitively. `arg_types` (C# names: `int`, `string?`, `int[]`, `any`)
        make arguments the real binder would refuse a binding failure, as in ASP.NET Core."""
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())[1:]  # first one is the call context
        arity: int | None = 0
        for param in params:
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                arity = None
                break
            if param.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
                assert arity is not None
                arity += 1
        types = tuple(arg_types) if arg_types is not None else None
        self._methods[name.lower()] = _Method(fn, arity, inspect.isasyncgenfunction(fn), types)

    def method(self, name: str | None = None) -> Callable[[HubMethod], HubMethod]:
        def decorate(fn: HubMethod) -> HubMethod:
            self.register(name or fn.__name__, fn)
            return fn

        return decorate

    # --- mounting ----------------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(f"{self.path}/negotiate", self._negotiate)
        app.router.add_get(self.path or "/", self._websocket)
        app.on_shutdown.append(self._on_shutdown)

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Run on a fresh aiohttp app; yields the hub URL (`http://127.0.0.1:PORT/path`)."""
        app = web.Application()
        self.add_routes(app)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound = runner.addresses[0][1]
            yield f"http://{host}:{bound}{self.path}"
        finally:
            await self.shutdown()
            await runner.cleanup()

    async def shutdown(self) -> None:
        for conn in list(self._by_token.values()):
            await conn.close()
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _on_shutdown(self, _app: web.Application) -> None:
        await self.shutdown()

    # --- public messaging API --------------------------------------------------------------------------

    @property
    def connection_ids(self) -> list[str]:
        return [c.id for c in self._by_id.values() if c.state in (_State.CONNECTED, _State.DISCONNECTED)]

    def principal_of(self, connection_id: str) -> Any:
        return self._conn(connection_id).principal

    def protocol_of(self, connection_id: str) -> str | None:
        proto = self._conn(connection_id).protocol
        return proto.name if proto else None

    def add_to_group(self, connection_id: str, group: str) -> None:
        conn = self._conn(connection_id)
        conn.groups.add(group)
        self._groups.setdefault(group, set()).add(connection_id)

    def remove_from_group(self, connection_id: str, group: str) -> None:
        members = self._groups.get(group)
        if members is not None:
            members.discard(connection_id)
            if not members:
                del self._groups[group]
        conn = self._by_id.get(connection_id)
        if conn is not None:
            conn.groups.discard(group)

    def group_members(self, group: str) -> set[str]:
        return set(self._groups.get(group, ()))

    def send_to_group(
        self, group: str, target: str, *args: Any, arguments: ProtocolArgs | msgspec.Raw | None = None
    ) -> int:
        """Broadcast to a group; returns the number of connections the message was queued for."""
        return self._broadcast(self._groups.get(group, ()), target, args, arguments)

    def send_to_all(
        self, target: str, *args: Any, arguments: ProtocolArgs | msgspec.Raw | None = None
    ) -> int:
        return self._broadcast(list(self._by_id), target, args, arguments)

    def send_to_connection(
        self, connection_id: str, target: str, *args: Any, arguments: ProtocolArgs | msgspec.Raw | None = None
    ) -> int:
        return self._broadcast([connection_id], target, args, arguments)

    async def invoke_client(
        self,
        connection_id: str,
        target: str,
        *args: Any,
        timeout: float = 30.0,  # noqa: ASYNC109 - part of the API the simulator and tests call
    ) -> Any:
        """Invoke a client method that returns a result (ASP.NET's client results)."""
        conn = self._conn(connection_id)
        if conn.protocol is None or conn.state is _State.CLOSED:
            raise ConnectionGone(connection_id)
        self._invocation_counter += 1
        invocation_id = f"s{self._invocation_counter}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        conn.pending[invocation_id] = future
        try:
            conn.send(p.Invocation(target=target, arguments=list(args), invocation_id=invocation_id))
            self.stats.messages_sent[target] += 1
            async with asyncio.timeout(timeout):
                return await future
        finally:
            conn.pending.pop(invocation_id, None)

    async def close_connection(
        self, connection_id: str, *, error: str | None = None, allow_reconnect: bool = False
    ) -> None:
        await self._conn(connection_id).close(error=error, allow_reconnect=allow_reconnect)

    # --- fault hooks -------------------------------------------------------------------------------------

    def drop_all(self) -> int:
        """Abort every transport at the TCP level (no Close message, no WebSocket close frame). Stateful
        connections keep their logical connection for the reconnect window."""
        count = 0
        for conn in list(self._by_token.values()):
            if conn.transport is not None:
                conn.transport.abort()
                count += 1
        return count

    async def close_all(self, *, error: str | None = None, allow_reconnect: bool = False) -> int:
        conns = [c for c in self._by_token.values() if c.state is _State.CONNECTED]
        for conn in conns:
            await conn.close(error=error, allow_reconnect=allow_reconnect)
        return len(conns)

    def half_open(self) -> int:
        """Freeze every live transport: stop reading (TCP too), stop writing and pinging; keep TCP open."""
        count = 0
        for conn in self._by_token.values():
            t = conn.transport
            if t is not None and not t.frozen:
                t.frozen = True
                t.thawed.clear()
                if t.request.transport is not None:
                    t.request.transport.pause_reading()
                count += 1
        return count

    def end_half_open(self) -> None:
        for conn in self._by_token.values():
            t = conn.transport
            if t is not None and t.frozen:
                t.frozen = False
                if t.request.transport is not None:
                    t.request.transport.resume_reading()
                t.last_sent = time.monotonic()
                t.thawed.set()

    def refuse_upgrades(self, status: int, duration: float) -> None:
        """Answer WebSocket upgrades with `status` (401 or 503) for `duration` s; negotiate still works."""
        self._refuse = (status, time.monotonic() + duration)

    def accept_upgrades(self) -> None:
        self._refuse = None

    FLAP_MODES = ("close", "malformed", "invalid_utf8")

    def flap(self, mode: str, duration: float) -> None:
        """For `duration` s, end every new connection right after its handshake: `close` sends
        Close(allowReconnect=true), `malformed` an unparseable message, `invalid_utf8` a text frame
        that is not UTF-8 (binary protocols get the malformed message instead)."""
        if mode not in self.FLAP_MODES:
            raise ValueError(f"mode must be one of {', '.join(self.FLAP_MODES)}")
        self._flap = (mode, time.monotonic() + duration)

    async def _flap_now(self, conn: _Connection) -> None:
        if self._flap is None:
            return
        mode, until = self._flap
        if time.monotonic() >= until:
            self._flap = None
            return
        if mode == "close":
            await conn.close(error="Server is flapping.", allow_reconnect=True)
        elif mode == "invalid_utf8" and conn.protocol is not None and conn.protocol.name == "json":
            conn.enqueue(b'{"type":1,"target":"Flap","arguments":["\xff\xfe"]}\x1e', trackable=False)
        else:
            self.send_malformed(conn.id)

    def send_malformed(self, connection_id: str | None = None) -> int:
        """Send bytes the connection's protocol cannot parse (bypassing sequence tracking)."""
        count = 0
        for conn in self._targets(connection_id):
            assert conn.protocol is not None
            bad = b'{"type":1,"target":\x1e' if conn.protocol.name == "json" else b"\x05\xc1\xc1\xc1\xc1\xc1"
            count += conn.enqueue(bad, trackable=False)
        return count

    def send_oversized(self, size: int, target: str = "Oversized", connection_id: str | None = None) -> int:
        """Send one invocation whose single string argument is `size` bytes long."""
        count = 0
        for conn in self._targets(connection_id):
            count += conn.send(p.Invocation(target=target, arguments=["x" * size]))
        return count

    # --- internals: messaging ----------------------------------------------------------------------------

    def _conn(self, connection_id: str) -> _Connection:
        conn = self._by_id.get(connection_id)
        if conn is None:
            raise ConnectionGone(connection_id)
        return conn

    def _targets(self, connection_id: str | None) -> list[_Connection]:
        conns = [self._conn(connection_id)] if connection_id else list(self._by_id.values())
        return [c for c in conns if c.protocol is not None and c.state is _State.CONNECTED]

    def _protocol(self, name: str) -> p.HubProtocol:
        proto = self._protocols.get(name)
        if proto is None:
            proto = self._protocols[name] = p.get_protocol(name)
        return proto

    def _broadcast(
        self,
        connection_ids: Iterable[str],
        target: str,
        args: tuple[Any, ...],
        arguments: ProtocolArgs | msgspec.Raw | None,
    ) -> int:
        encoded: dict[str, bytes] = {}
        sent = 0
        for cid in list(connection_ids):
            conn = self._by_id.get(cid)
            if conn is None or conn.protocol is None or conn.state is _State.CLOSED:
                continue
            name = conn.protocol.name
            data = encoded.get(name)
            if data is None:
                if isinstance(arguments, ProtocolArgs):
                    call_args: Any = arguments.for_protocol(name)
                elif arguments is not None:
                    call_args = arguments
                else:
                    call_args = list(args)
                data = encoded[name] = conn.protocol.encode(p.Invocation(target=target, arguments=call_args))
            if conn.enqueue(data, trackable=True, target=target):
                sent += 1
        self.stats.messages_sent[target] += sent
        return sent

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _end(self, conn: _Connection) -> None:
        """Forget a logical connection (idempotent); the disconnect hook runs in the background."""
        if conn.state is _State.CLOSED:
            return
        was_connected = conn.state is not _State.NEGOTIATED
        conn.state = _State.CLOSED
        for handle in (conn.ack_handle, conn.expiry_handle, conn.window_handle):
            if handle is not None:
                handle.cancel()
        self._by_token.pop(conn.token, None)
        self._by_id.pop(conn.id, None)
        for group in list(conn.groups):
            self.remove_from_group(conn.id, group)
        for task in list(conn.tasks):
            task.cancel()
        for future in conn.pending.values():
            if not future.done():
                future.set_exception(ConnectionGone(conn.id))
        conn.ended.set()
        if was_connected:
            self.stats.connections_current -= 1
            log.info("signalr.server.disconnected", connection_id=conn.id)
            if self.on_disconnect is not None:
                self._spawn(self.on_disconnect(HubCallContext(conn.id, conn.principal, self)))

    # --- internals: HTTP ---------------------------------------------------------------------------------

    @staticmethod
    def _bearer(request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        token = request.query.get("access_token")
        return token or None

    async def _authorize(self, request: web.Request) -> tuple[bool, Any]:
        """Returns (ok, principal); raises the 401 response when auth is required and fails."""
        token = self._bearer(request)
        if "access_token" in request.query:
            self.stats.query_tokens += 1
        principal: Any = None
        if self.authenticate is not None:
            try:
                principal = await self.authenticate(token, request)
            except Exception as exc:
                log.info("signalr.server.auth_rejected", reason=type(exc).__name__)
                principal = None
        if principal is None and self.require_auth:
            challenge = 'Bearer error="invalid_token"' if token else "Bearer"
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": challenge})
        return True, principal

    def _check_refusal(self) -> None:
        if self._refuse is None:
            return
        status, deadline = self._refuse
        if time.monotonic() >= deadline:
            self._refuse = None
            return
        self.stats.rejected_upgrades += 1
        if status == 401:
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        retry = str(max(1, int(deadline - time.monotonic() + 0.999)))
        raise web.HTTPServiceUnavailable(headers={"Retry-After": retry})

    async def _negotiate(self, request: web.Request) -> web.Response:
        _, principal = await self._authorize(request)
        try:
            requested = int(request.query.get("negotiateVersion", "0"))
        except ValueError:
            return web.json_response({"error": "Invalid negotiateVersion."}, status=400)
        version = 1 if requested >= 1 else 0
        self.stats.negotiations[version] += 1
        connection_id = _new_id()
        token = _new_id() if version >= 1 else connection_id
        conn = _Connection(self, connection_id, token, principal)
        conn.stateful_allowed = (
            self.stateful_reconnect and request.query.get("useStatefulReconnect") == "true"
        )
        self._by_token[token] = conn
        self._by_id[connection_id] = conn
        conn.window_handle = asyncio.get_running_loop().call_later(
            self.negotiate_ttl, self._expire_negotiated, conn
        )
        body: dict[str, Any] = {"negotiateVersion": version, "connectionId": connection_id}
        if version >= 1:
            body["connectionToken"] = token
        body["availableTransports"] = [{"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}]
        if conn.stateful_allowed:
            body["useStatefulReconnect"] = True
        return web.json_response(body)

    def _expire_negotiated(self, conn: _Connection) -> None:
        if conn.state is _State.NEGOTIATED:
            self._end(conn)

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        self._check_refusal()
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise web.HTTPBadRequest(text="WebSocket upgrade required.")
        _, principal = await self._authorize(request)
        token = request.query.get("id")
        if token is not None:
            conn = self._by_token.get(token)
            if conn is None or conn.state is _State.CLOSED:
                raise web.HTTPNotFound(text="No Connection with that ID")
            if conn.transport is not None:
                raise web.HTTPConflict(text="Connection already has a transport.")
            if principal is not None:
                conn.principal = principal
            reattach = conn.state is _State.DISCONNECTED
        else:
            cid = _new_id()
            conn = _Connection(self, cid, cid, principal)
            self._by_token[cid] = conn
            self._by_id[cid] = conn
            reattach = False
        if conn.window_handle is not None:
            conn.window_handle.cancel()
            conn.window_handle = None
        ws = web.WebSocketResponse(
            autoping=True, max_msg_size=self.max_message_size * 2 + 65536, decode_text=False, compress=False
        )
        await ws.prepare(request)
        transport = _Transport(ws, request, self.outbound_queue_size)
        conn.transport = transport
        try:
            await self._run_transport(conn, transport, reattach)
        finally:
            conn.transport = None
            if conn.state is _State.CONNECTED and conn.stateful and not conn.closing:
                conn.state = _State.DISCONNECTED
                conn.window_handle = asyncio.get_running_loop().call_later(
                    self.reconnect_window, self._expire_disconnected, conn
                )
                log.info("signalr.server.transport_lost", connection_id=conn.id)
            else:
                self._end(conn)
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close()
        return ws

    def _expire_disconnected(self, conn: _Connection) -> None:
        if conn.state is _State.DISCONNECTED:
            self._end(conn)

    # --- internals: a transport's life -----------------------------------------------------------------

    async def _run_transport(self, conn: _Connection, t: _Transport, reattach: bool) -> None:
        if reattach:
            assert conn.protocol is not None
            self.stats.reconnects += 1
            conn.state = _State.CONNECTED
            reader = conn.protocol.reader(max_message_size=self.max_message_size)
            first = conn.buffer[0].seq if conn.buffer else conn.send_seq + 1
            t.replay_upto = conn.send_seq
            # Sequence + replay go first; later queue entries with seq <= replay_upto are skipped.
            await self._write(
                conn, t, [conn.protocol.encode(p.Sequence(first)), *(o.data for o in conn.buffer)]
            )
            rest = b""
            log.info("signalr.server.reconnected", connection_id=conn.id, replayed=len(conn.buffer))
        else:
            handshake = await self._handshake(conn, t)
            if handshake is None:
                return
            reader, rest = handshake
            await self._flap_now(conn)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._writer(conn, t))
                tg.create_task(self._keepalive(conn, t))
                await self._reader(conn, t, reader, rest)
                if t.close_queued:  # let the writer flush the Close message; it ends the group
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(5.0):
                            await asyncio.Event().wait()
                raise _TransportDone
        except* _TransportDone:
            pass
        except* (ConnectionError, RuntimeError) as eg:
            log.info("signalr.server.transport_error", connection_id=conn.id, error=repr(eg.exceptions[0]))

    async def _handshake(self, conn: _Connection, t: _Transport) -> tuple[p.MessageReader, bytes] | None:
        buffer = b""
        request: p.HandshakeRequest | None = None
        try:
            async with asyncio.timeout(self.handshake_timeout):
                while request is None:
                    msg = await t.ws.receive()
                    if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                        return None
                    buffer += msg.data if isinstance(msg.data, bytes) else str(msg.data).encode()
                    if len(buffer) > self.max_message_size:
                        raise p.ProtocolError("handshake too large")
                    request, buffer = p.parse_handshake_request(buffer)
        except TimeoutError:
            log.info("signalr.server.handshake_timeout", connection_id=conn.id)
            return None
        except p.ProtocolError as exc:
            await self._handshake_error(t, f"Handshake was canceled or invalid: {exc}")
            return None
        if request.protocol not in self.protocol_names:
            await self._handshake_error(t, f"The protocol '{request.protocol}' is not supported.")
            return None
        proto = self._protocol(request.protocol)
        if request.version > 2 or request.version < 0:
            await self._handshake_error(
                t,
                f"The server does not support version {request.version} "
                f"of the '{request.protocol}' protocol.",
            )
            return None
        conn.protocol = proto
        conn.stateful = conn.stateful_allowed and request.version >= 2
        reader = proto.reader(max_message_size=self.max_message_size)
        response = p.encode_handshake_response(p.HandshakeResponse())
        opcode = WSMsgType.TEXT if proto.transfer_format == "text" else WSMsgType.BINARY
        await t.ws.send_frame(response, opcode)
        t.last_sent = time.monotonic()
        conn.state = _State.CONNECTED
        self.stats.connections_current += 1
        self.stats.connections_total += 1
        log.info(
            "signalr.server.connected", connection_id=conn.id, protocol=proto.name, stateful=conn.stateful
        )
        self._arm_expiry(conn)
        if self.on_connect is not None:
            await self.on_connect(HubCallContext(conn.id, conn.principal, self))
        return reader, buffer

    async def _handshake_error(self, t: _Transport, error: str) -> None:
        with contextlib.suppress(Exception):
            await t.ws.send_frame(
                p.encode_handshake_response(p.HandshakeResponse(error=error)), WSMsgType.TEXT
            )
            await t.ws.close()

    def _arm_expiry(self, conn: _Connection) -> None:
        expires_at = getattr(conn.principal, "expires_at", None)
        if not self.close_on_token_expiry or expires_at is None:
            return
        delay = max(0.0, float(expires_at) - time.time())
        if conn.expiry_handle is not None:
            conn.expiry_handle.cancel()
        conn.expiry_handle = asyncio.get_running_loop().call_later(delay, self._token_expired, conn)

    def _token_expired(self, conn: _Connection) -> None:
        log.info("signalr.server.token_expired", connection_id=conn.id)
        self._spawn(conn.close(error=self.token_expired_message, allow_reconnect=True))

    async def _write(self, conn: _Connection, t: _Transport, chunks: Sequence[bytes]) -> None:
        assert conn.protocol is not None
        opcode = WSMsgType.TEXT if conn.protocol.transfer_format == "text" else WSMsgType.BINARY
        data = b"".join(chunks)
        if data:
            await t.ws.send_frame(data, opcode)
            t.last_sent = time.monotonic()
            self.stats.bytes_sent += len(data)

    async def _writer(self, conn: _Connection, t: _Transport) -> None:
        queue = t.queue
        while True:
            item = await queue.get()
            batch: list[bytes] = []
            size = 0
            closing = False
            while True:
                if item is None:
                    closing = True
                    break
                if not (item.seq and item.seq <= t.replay_upto):
                    batch.append(item.data)
                    size += len(item.data)
                if size >= _MAX_FRAME_BATCH or queue.empty():
                    break
                item = queue.get_nowait()
            await t.thawed.wait()
            await self._write(conn, t, batch)
            if closing:
                await t.ws.close()
                raise _TransportDone

    async def _keepalive(self, conn: _Connection, t: _Transport) -> None:
        assert conn.protocol is not None
        ping = conn.protocol.encode(p.Ping())
        while True:
            await t.thawed.wait()
            due = t.last_sent + self.keepalive_interval - time.monotonic()
            if due > 0:
                await asyncio.sleep(due)
                continue
            with contextlib.suppress(asyncio.QueueFull):
                t.queue.put_nowait(_Out(0, ping))
                self.stats.pings_sent += 1
            t.last_sent = time.monotonic()  # the writer refreshes it when the ping actually leaves

    async def _reader(self, conn: _Connection, t: _Transport, reader: p.MessageReader, rest: bytes) -> None:
        if rest:
            await self._feed(conn, reader, rest)
        while True:
            if t.frozen:
                await t.thawed.wait()
            try:
                msg = await t.ws.receive(timeout=self.client_timeout)
            except TimeoutError:
                if t.frozen:
                    continue
                log.info("signalr.server.client_timeout", connection_id=conn.id)
                await conn.close(error="Server timeout elapsed without receiving a message from the client.")
                return
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                data = msg.data if isinstance(msg.data, bytes) else str(msg.data).encode()
                try:
                    await self._feed(conn, reader, data)
                except p.ProtocolError as exc:
                    log.info("signalr.server.protocol_error", connection_id=conn.id, error=str(exc))
                    await conn.close(error=f"Connection closed with an error. InvalidDataException: {exc}")
                    return
                if conn.closing:
                    return
            else:  # CLOSE, CLOSING, CLOSED, ERROR
                return

    async def _feed(self, conn: _Connection, reader: p.MessageReader, data: bytes) -> None:
        for message in reader.feed(data):
            self.stats.messages_received += 1
            if conn.stateful and isinstance(message, _TRACKABLE):
                current = conn.recv_next
                conn.recv_next += 1
                if current <= conn.recv_latest:
                    continue  # duplicate from before a reconnect
                conn.recv_latest = current
                self._schedule_ack(conn)
            await self._dispatch(conn, message)

    def _schedule_ack(self, conn: _Connection) -> None:
        if conn.ack_handle is None:
            conn.ack_handle = asyncio.get_running_loop().call_later(self.ack_interval, self._send_ack, conn)

    def _send_ack(self, conn: _Connection) -> None:
        conn.ack_handle = None
        if conn.protocol is not None and conn.transport is not None:
            conn.enqueue(conn.protocol.encode(p.Ack(conn.recv_latest)), trackable=False)

    # --- internals: dispatch -----------------------------------------------------------------------------

    async def _dispatch(self, conn: _Connection, message: p.HubMessage) -> None:
        match message:
            case p.Invocation():
                self._start(conn, self._invoke(conn, message))
            case p.StreamInvocation():
                task = self._start(conn, self._stream(conn, message))
                conn.streams[message.invocation_id] = task
            case p.CancelInvocation():
                stream = conn.streams.get(message.invocation_id)
                if stream is not None:
                    stream.cancel()
            case p.Completion():
                future = conn.pending.get(message.invocation_id)
                if future is not None and not future.done():
                    if message.error is not None:
                        future.set_exception(ClientResultError(message.error))
                    else:
                        future.set_result(message.result)
            case p.Ack():
                conn.acked(message.sequence_id)
            case p.Sequence():
                if message.sequence_id > conn.recv_next:
                    await conn.close(error="Sequence ID greater than amount of messages we've received.")
                else:
                    conn.recv_next = message.sequence_id
            case p.Close():
                conn.closing = True  # the client is going away; no Close back
                if conn.transport is not None:
                    await conn.transport.ws.close()
            case p.Ping() | p.StreamItem():
                pass  # pings reset the client timeout by arriving; upload streams are not supported

    def _start(self, conn: _Connection, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        conn.tasks.add(task)
        task.add_done_callback(conn.tasks.discard)
        return task

    def _bind(
        self, conn: _Connection, target: str, args: Any, stream: bool
    ) -> tuple[_Method, list[Any]] | str:
        method = self._methods.get(target.lower())
        failed = f"Failed to invoke '{target}' due to an error on the server."
        if method is None:  # the protocol's binder asks for the parameter types: a HubException
            return self._error(failed, "HubException", "Method does not exist.", hub=True)
        arguments = list(args) if isinstance(args, list) else []
        if method.arity is not None and len(arguments) != method.arity:
            return self._error(
                failed,
                "InvalidDataException",
                f"Invocation provides {len(arguments)} argument(s) but target expects {method.arity}.",
                hub=False,
            )
        if method.arg_types is not None and not all(
            _binds(a, t) for a, t in zip(arguments, method.arg_types, strict=False)
        ):
            return self._error(
                failed,
                "InvalidDataException",
                "Error binding arguments. Make sure that the types of the provided values match the "
                "types of the hub method being invoked.",
                hub=False,
            )
        if method.stream and not stream:
            return (
                f"The client attempted to invoke the streaming '{target}' method "
                "with a non-streaming invocation."
            )
        if stream and not method.stream:
            return (
                f"The client attempted to invoke the non-streaming '{target}' method "
                "with a streaming invocation."
            )
        return method, arguments

    def _error(self, message: str, kind: str, detail: str, *, hub: bool) -> str:
        if hub or self.detailed_errors:
            return f"{message} {kind}: {detail}"
        return message

    def _exception_message(self, prefix: str, exc: BaseException) -> str:
        return self._error(
            prefix,
            "HubException" if isinstance(exc, HubError) else type(exc).__name__,
            str(exc),
            hub=isinstance(exc, HubError),
        )

    async def _invoke(self, conn: _Connection, message: p.Invocation) -> None:
        bound = self._bind(conn, message.target, message.arguments, stream=False)
        async with conn.invoke_lock:
            if isinstance(bound, str):
                if message.invocation_id is not None:
                    conn.send(p.Completion(message.invocation_id, error=bound))
                return
            method, arguments = bound
            ctx = HubCallContext(conn.id, conn.principal, self, message.invocation_id)
            try:
                result = method.fn(ctx, *arguments)
                if inspect.isawaitable(result):
                    result = await result
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not isinstance(exc, HubError):
                    log.warning("signalr.server.method_failed", target=message.target, error=repr(exc))
                if message.invocation_id is not None:
                    prefix = f"An unexpected error occurred invoking '{message.target}' on the server."
                    conn.send(p.Completion(message.invocation_id, error=self._exception_message(prefix, exc)))
                return
            if message.invocation_id is not None:
                has_result = not _returns_none(method.fn) or result is not None
                conn.send(p.Completion(message.invocation_id, result=result, has_result=has_result))

    async def _stream(self, conn: _Connection, message: p.StreamInvocation) -> None:
        invocation_id = message.invocation_id
        try:
            bound = self._bind(conn, message.target, message.arguments, stream=True)
            if isinstance(bound, str):
                conn.send(p.Completion(invocation_id, error=bound))
                return
            method, arguments = bound
            ctx = HubCallContext(conn.id, conn.principal, self, invocation_id)
            error: str | None = None
            gen = method.fn(ctx, *arguments)
            try:
                async for item in gen:
                    conn.send(p.StreamItem(invocation_id, item))
            except asyncio.CancelledError:
                await gen.aclose()
                conn.send(p.Completion(invocation_id))  # the spec's Completion after CancelInvocation
                return
            except Exception as exc:
                error = self._exception_message(
                    "An error occurred on the server while streaming results.", exc
                )
            conn.send(p.Completion(invocation_id, error=error))
        finally:
            conn.streams.pop(invocation_id, None)


class _TransportDone(Exception):
    """Internal: ends a transport's TaskGroup."""


def _new_id() -> str:
    return uuid.uuid4().hex[:22] + secrets.token_hex(1)


def _returns_none(fn: HubMethod) -> bool:
    """A method annotated `-> None` is void: its Completion carries no result, like ASP.NET's void methods."""
    try:
        annotation = inspect.signature(fn).return_annotation
    except (TypeError, ValueError):
        return False
    return annotation in (None, "None", type(None))
