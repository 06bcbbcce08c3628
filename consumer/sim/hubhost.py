"""An ASP.NET Core SignalR hub host on aiohttp: the peer the simulator, the client's tests and the benchmarks
talk to. Only transport glue lives here: the connection's protocol (handshake, keepalive, client timeout,
stateful reconnect's numbering, Acks, replay and dedupe, Close) is `consumer.signalr.core`, driven by the
same core as the client; every byte goes through `protocol.py`. Fault hooks: `consumer/sim/faults.py`.

Size (about 1,000 lines, over the 700 guideline): a complete hub host — negotiate, auth, the WebSocket
driver, hub method binding with ASP.NET's error texts, streams, groups, broadcasts and client results —
kept in one file because each part is small and they share the connection registry.

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
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeAlias

import msgspec
from aiohttp import WSMsgType, web

from consumer.logs import get_logger
from consumer.signalr import protocol as p
from consumer.signalr.core import (
    CoreOptions,
    Event,
    HandshakeCompleted,
    HandshakeFailed,
    HubCore,
    PeerTimedOut,
    ProtocolViolation,
    ResumeExpired,
    Role,
    State,
    tracked,
)
from consumer.sim.faults import HubFaults

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
_ENDED = (State.CLOSING, State.CLOSED)
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
    """Where a logical connection is in the host's registry (its protocol lifecycle is the core's)."""

    NEGOTIATED = "negotiated"  # negotiated (or WebSocket open), handshake not done
    LIVE = "live"  # handshake done: open, detached (stateful, waiting for a resume) or closing
    CLOSED = "closed"


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

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.request = request
        self.wake = asyncio.Event()  # the core has bytes to write (or the connection ended)
        self.frozen = False  # half-open fault: no reads, no writes, no timers
        self.thawed = asyncio.Event()
        self.thawed.set()

    def abort(self) -> None:
        transport = self.request.transport
        if transport is not None:
            transport.abort()
        self.thawed.set()  # a frozen reader/writer must wake up to notice the dead socket
        self.wake.set()


_LIVE_CORE = (State.OPEN, State.DETACHED)


class _Connection:
    """One logical connection: the sans-I/O core plus what the host keeps around it (groups, tasks,
    client results, the current transport, the core's timer)."""

    def __init__(self, server: HubServer, connection_id: str, token: str, principal: Any) -> None:
        self.server = server
        self.id = connection_id
        self.token = token
        self.principal = principal
        self.state = _State.NEGOTIATED
        self.stateful_allowed = False
        self.core: HubCore | None = None  # made when the first WebSocket opens
        self.groups: set[str] = set()
        self.transport: _Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.expiry_handle: asyncio.TimerHandle | None = None
        self.window_handle: asyncio.TimerHandle | None = None  # negotiated, never connected
        # invocations
        self.invoke_lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[None]] = set()
        self.streams: dict[str, asyncio.Task[None]] = {}
        self.pending: dict[str, asyncio.Future[Any]] = {}
        self.ended = asyncio.Event()

    @property
    def protocol(self) -> p.HubProtocol | None:
        return self.core.protocol if self.core is not None else None

    @property
    def open(self) -> bool:
        return self.core is not None and self.core.state is State.OPEN

    # --- outbound ---------------------------------------------------------------------------------------

    def send(self, message: p.HubMessage) -> bool:
        assert self.protocol is not None
        return self.enqueue(self.protocol.encode(message), trackable=tracked(message))

    def enqueue(self, data: bytes, *, trackable: bool) -> bool:
        """Queue one encoded message (the core numbers and buffers it when stateful)."""
        core = self.core
        if core is None or self.state is _State.CLOSED:
            return False
        state = core.state
        if not (state is State.OPEN or (state is State.DETACHED and trackable)):
            return False
        server = self.server
        if core.send_encoded(data, trackable, _now()) < 0:  # replay buffer overflow: the core closed
            server.stats.queue_overflows += 1
            log.warning("signalr.server.replay_buffer_overflow", connection_id=self.id)
            self.flush()
            server._end(self)
            return False
        transport = self.transport
        if transport is None:
            return True  # detached: kept for the replay
        if core.pending_messages > server.outbound_queue_size:
            server.stats.queue_overflows += 1
            log.warning("signalr.server.outbound_queue_overflow", connection_id=self.id)
            transport.abort()  # stateful: the client reconnects and gets the replay
            if not core.stateful:
                server._spawn(self.close(error="Outbound queue overflow: the client is too slow."))
            return False
        transport.wake.set()
        return True

    def flush(self) -> None:
        """Wake the writer (bytes to write, or the core ended) and re-arm the core's timer."""
        if self.transport is not None:
            self.transport.wake.set()
        self.rearm()

    def rearm(self) -> None:
        core = self.core
        deadline = core.next_deadline() if core is not None and self.state is not _State.CLOSED else None
        if deadline is None:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            return
        if self.timer is not None:
            if self.timer_at <= deadline:
                return  # fires earlier and re-arms then
            self.timer.cancel()
        self.timer_at = deadline
        self.timer = asyncio.get_running_loop().call_at(deadline, self.server._on_timer, self)

    # --- lifecycle ---------------------------------------------------------------------------------------

    async def close(self, *, error: str | None = None, allow_reconnect: bool = False) -> None:
        """Send Close and end the logical connection (no stateful reconnect afterwards)."""
        core = self.core
        if self.state is _State.CLOSED:
            return
        if core is None or core.state is State.HANDSHAKING:
            if self.transport is not None:
                self.transport.abort()
            self.server._end(self)
            return
        if core.state not in _LIVE_CORE:
            return  # already closing
        core.close(error, allow_reconnect=allow_reconnect, now=_now())
        transport = self.transport
        if transport is not None and transport.frozen:
            transport.abort()
        self.flush()
        self.server._end(self)


class HubServer(HubFaults):
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
        return [c.id for c in self._by_id.values() if c.state is _State.LIVE]

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

    # --- administration (fault hooks: consumer/sim/faults.py) ---------------------------------------------

    async def close_all(self, *, error: str | None = None, allow_reconnect: bool = False) -> int:
        conns = [c for c in self._by_token.values() if c.open]
        for conn in conns:
            await conn.close(error=error, allow_reconnect=allow_reconnect)
        return len(conns)

    # --- internals: messaging ----------------------------------------------------------------------------

    def _conn(self, connection_id: str) -> _Connection:
        conn = self._by_id.get(connection_id)
        if conn is None:
            raise ConnectionGone(connection_id)
        return conn

    def _targets(self, connection_id: str | None) -> list[_Connection]:
        conns = [self._conn(connection_id)] if connection_id else list(self._by_id.values())
        return [c for c in conns if c.open]

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
            if conn.enqueue(data, trackable=True):
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
        was_connected = conn.state is _State.LIVE
        conn.state = _State.CLOSED
        for handle in (conn.timer, conn.expiry_handle, conn.window_handle):
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
            if conn.transport is not None or (
                conn.core is not None and conn.core.state is not State.DETACHED
            ):
                raise web.HTTPConflict(text="Connection already has a transport.")
            if principal is not None:
                conn.principal = principal
        else:
            cid = _new_id()
            conn = _Connection(self, cid, cid, principal)
            self._by_token[cid] = conn
            self._by_id[cid] = conn
        if conn.window_handle is not None:
            conn.window_handle.cancel()
            conn.window_handle = None
        ws = web.WebSocketResponse(
            autoping=True, max_msg_size=self.max_message_size * 2 + 65536, decode_text=False, compress=False
        )
        await ws.prepare(request)
        transport = _Transport(ws, request)
        conn.transport = transport
        if conn.core is None:
            protocols = [self._protocol(name) for name in self.protocol_names]
            options = CoreOptions(
                keepalive_interval=self.keepalive_interval,
                timeout=self.client_timeout,
                handshake_timeout=self.handshake_timeout,
                ack_interval=self.ack_interval,
                replay_limit=self.stateful_buffer_size,
                reconnect_window=self.reconnect_window,
                max_message_size=self.max_message_size,
                max_handshake_size=self.max_message_size,
            )
            conn.core = HubCore(
                Role.SERVER, _now(), protocols=protocols, stateful=conn.stateful_allowed, options=options
            )
        else:  # a stateful resume: Sequence + the replay go first
            replayed = conn.core.resume(_now())
            self.stats.reconnects += 1
            log.info("signalr.server.reconnected", connection_id=conn.id, replayed=replayed)
        conn.flush()
        try:
            await self._run_transport(conn, transport)
        finally:
            conn.transport = None
            core = conn.core
            core.connection_lost(_now())
            if core.state is State.DETACHED and conn.state is _State.LIVE:
                conn.rearm()  # the reconnect window is the core's deadline now
                log.info("signalr.server.transport_lost", connection_id=conn.id)
            else:
                self._end(conn)
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close()
        return ws

    # --- internals: a transport's life -----------------------------------------------------------------

    async def _run_transport(self, conn: _Connection, t: _Transport) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._writer(conn, t))
                await self._reader(conn, t)
                if conn.core is not None and conn.core.state in _ENDED:
                    conn.flush()  # we are closing: let the writer flush the last bytes; it ends the group
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(5.0):
                            await asyncio.Event().wait()
                raise _TransportDone
        except* _TransportDone:
            pass
        except* (ConnectionError, RuntimeError) as eg:
            log.info("signalr.server.transport_error", connection_id=conn.id, error=repr(eg.exceptions[0]))

    def _on_timer(self, conn: _Connection) -> None:
        conn.timer = None
        core = conn.core
        if core is None or conn.state is _State.CLOSED:
            return
        t = conn.transport
        if t is not None and t.frozen:
            return  # half-open: no pings, no timeouts; end_half_open re-arms
        pings = core.pings_sent
        core.on_timer(_now())
        self.stats.pings_sent += core.pings_sent - pings
        events = core.events_received()
        for event in events:
            if isinstance(event, HandshakeFailed):
                log.info("signalr.server.handshake_timeout", connection_id=conn.id)
            elif isinstance(event, PeerTimedOut):
                log.info("signalr.server.client_timeout", connection_id=conn.id)
            elif isinstance(event, ResumeExpired):
                self._end(conn)
        conn.flush()

    async def _connected(self, conn: _Connection, event: HandshakeCompleted) -> None:
        conn.state = _State.LIVE
        self.stats.connections_current += 1
        self.stats.connections_total += 1
        log.info(
            "signalr.server.connected",
            connection_id=conn.id,
            protocol=event.protocol,
            stateful=event.stateful,
        )
        core, t = conn.core, conn.transport
        if core is not None and t is not None:  # the handshake response goes out in a frame of its own
            protocol = core.protocol
            binary = protocol is not None and protocol.transfer_format == "binary"
            chunks = core.data_to_send()
            if chunks:
                await self._write(t.ws, WSMsgType.BINARY if binary else WSMsgType.TEXT, chunks)
        self._arm_expiry(conn)
        if self.on_connect is not None:
            await self.on_connect(HubCallContext(conn.id, conn.principal, self))
        await self._flap_now(conn)

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

    async def _writer(self, conn: _Connection, t: _Transport) -> None:
        """Writes what the core queued, batched into frames of up to 64 KiB; closes the WebSocket
        once the core is past open (Close sent, handshake refused, or the peer's Close received)."""
        core = conn.core
        assert core is not None
        ws = t.ws
        while True:
            await t.wake.wait()
            t.wake.clear()
            await t.thawed.wait()
            chunks = core.data_to_send()
            protocol = core.protocol
            opcode = (
                WSMsgType.BINARY
                if protocol is not None and protocol.transfer_format == "binary"
                else WSMsgType.TEXT
            )
            batch: list[bytes] = []
            size = 0
            for chunk in chunks:
                batch.append(chunk)
                size += len(chunk)
                if size >= _MAX_FRAME_BATCH:
                    await self._write(ws, opcode, batch)
                    batch, size = [], 0
            if batch:
                await self._write(ws, opcode, batch)
            if core.state in _ENDED:
                await ws.close()
                raise _TransportDone

    async def _write(self, ws: web.WebSocketResponse, opcode: WSMsgType, batch: list[bytes]) -> None:
        data = batch[0] if len(batch) == 1 else b"".join(batch)
        await ws.send_frame(data, opcode)
        self.stats.bytes_sent += len(data)

    async def _reader(self, conn: _Connection, t: _Transport) -> None:
        core = conn.core
        assert core is not None
        stats = self.stats
        while True:
            if t.frozen:
                await t.thawed.wait()
            msg = await t.ws.receive()
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                return  # CLOSE, CLOSING, CLOSED, ERROR
            received = core.messages_received
            core.receive_data(msg.data, _now())
            stats.messages_received += core.messages_received - received
            for event in core.events_received():
                await self._dispatch(conn, event)
            conn.flush()
            if core.state in _ENDED:
                return

    # --- internals: dispatch -----------------------------------------------------------------------------

    async def _dispatch(self, conn: _Connection, message: Event) -> None:
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
            case HandshakeCompleted():
                await self._connected(conn, message)
            case HandshakeFailed():
                log.info("signalr.server.handshake_failed", connection_id=conn.id, error=message.error)
            case ProtocolViolation():
                log.info("signalr.server.protocol_error", connection_id=conn.id, error=message.error)
            case _:
                pass  # CloseReceived: the client is going away (no Close back); upload streams unsupported

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


def _now() -> float:
    """The loop's clock: the core's deadlines are handed to `loop.call_at`."""
    return asyncio.get_running_loop().time()
