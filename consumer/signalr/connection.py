"""asyncio SignalR hub client: accessTokenFactory semantics, automatic reconnect that never gives up.

It follows the official @microsoft/signalr client (HttpConnection.js, HubConnection.js,
MessageBuffer.js) and goes past it where a daemon needs it. This module is the thin driver that ties
the parts together and holds the public surface; each part describes its own behaviour:

- `core.py`: the sans-I/O connection core (handshake, keepalive and Ack deadlines, stateful
  reconnect's numbering, byte-bounded replay buffer and dedupe, Close).
- `connector.py`: negotiate (redirects, token transport, proxies, the 401/403 rule) and the
  WebSocket open. `wire.py`: the handshake, sending through the core, keepalive Ping only when
  nothing was sent for `keepalive_interval`, Acks, the Close. `receiver.py`: socket → core →
  dispatch queue, the server timeout (any received frame resets it: half-open detection), UTF-8
  checks of text frames (an invalid one closes the WebSocket with 1007 and recycles the connection).
- `dispatch.py`: handlers, callbacks (`on_reconnecting(error)`, `on_reconnected(connection_id)`,
  `on_closed(error)`), the bounded hand-off and the final drain. `calls.py`: pending invocations and
  streams (`streams.py`); they fail with `ConnectionLostError` when the connection is lost (unless a
  stateful reconnect resumes it), so nothing hangs.
- `supervisor.py`: the lifecycle outside the connection (connect, the reconnect policy,
  healthy-before-reset, flapping, the single resume attempt of a stateful connection, shutdown),
  driving this connection through `_Link`. `state.py`: `ConnectionState`, `ClientStats`, `BufferUsage`.

States `disconnected, connecting, connected, reconnecting, disconnecting`. `send` (no invocation
id), `invoke` (awaits the Completion; raises `HubError` with the hub's message), `stream` (a
`HubStream` async iterator). Nothing decoded is lost on `stop(drain_timeout=)` (see `stop`). Tokens
are never logged; every logged URL goes through `redact_url`.

Public API::

    conn = HubConnection(url, access_token_factory=provider.get_token,
                         invalidate_token=provider.invalidate, protocol="messagepack")
    conn.on("ReceiveCarPatches", handler)            # handler(*args), sync or async
    conn.on_reconnected(resubscribe)                 # also on_reconnecting / on_closed
    await conn.start(); await conn.invoke("SubscribeToEventV2", 42); ...; await conn.stop()
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from consumer.errors import ConfigError
from consumer.logs import get_logger, register_secret
from consumer.signalr import protocol as proto
from consumer.signalr.calls import Calls
from consumer.signalr.connector import (
    MAX_NEGOTIATE_BYTES,
    Connector,
    ConnectorOptions,
    TokenFactory,
    TokenProviderLike,
)
from consumer.signalr.core import CloseReceived, CoreOptions, HubCore, ProtocolViolation, Role
from consumer.signalr.core import State as CoreState
from consumer.signalr.dispatch import (
    DEFAULT_MAX_DISPATCH_BYTES,
    MAX_TARGET_LENGTH,
    Batch,
    Dispatching,
    DispatchQueue,
)
from consumer.signalr.errors import (
    ConnectionLostError,
    HandshakeError,
    HubAuthError,
    HubConnectionError,
    HubError,
    NegotiateError,
    ServerClosedError,
    ServerTimeoutError,
)
from consumer.signalr.proxies import PROXY_ENV, PROXY_OFF, redact_proxy, validate_proxy
from consumer.signalr.receiver import Receiver
from consumer.signalr.retry import DaemonRetryPolicy, RetryPolicy
from consumer.signalr.state import BufferUsage, ClientStats, ConnectionState
from consumer.signalr.streams import HubStream
from consumer.signalr.supervisor import Ended, Health, Supervisor, describe_reason
from consumer.signalr.urls import build_negotiate_url, build_ws_url, check_url_security, redact_url
from consumer.signalr.wire import Wire

__all__ = [
    "MAX_TARGET_LENGTH",
    "BufferUsage",
    "ClientStats",
    "ConnectionLostError",
    "ConnectionState",
    "HandshakeError",
    "HubAuthError",
    "HubConnection",
    "HubConnectionError",
    "HubError",
    "HubStream",
    "NegotiateError",
    "ServerClosedError",
    "ServerTimeoutError",
    "build_negotiate_url",
    "build_ws_url",
    "check_url_security",
    "redact_url",
]

log = get_logger(__name__)

DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024


class HubConnection(Dispatching):
    """One logical SignalR hub connection. See the module docstring for the behaviour."""

    def __init__(
        self,
        url: str,
        *,
        access_token_factory: TokenFactory | None = None,
        invalidate_token: Callable[[str], None] | None = None,
        token_provider: TokenProviderLike | None = None,
        protocol: Literal["json", "messagepack"] | str = "json",
        skip_negotiation: bool = False,
        token_transport: Literal["header", "query", "both"] = "both",
        headers: Mapping[str, str] | None = None,
        retry_policy: RetryPolicy | None = None,
        retry_initial_start: bool = True,
        stateful_reconnect: bool = False,
        stateful_buffer_size: int = 100_000,
        ack_interval: float = 1.0,
        handshake_timeout: float = 15.0,
        keepalive_interval: float = 15.0,
        server_timeout: float = 30.0,
        negotiate_timeout: float = 100.0,
        close_timeout: float = 2.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_frame_size: int | None = None,
        dispatch_queue_size: int = 10_000,
        max_dispatch_bytes: int = DEFAULT_MAX_DISPATCH_BYTES,
        drain_timeout: float = 5.0,
        stream_buffer_size: int = 1_000,
        allow_insecure_http: bool = False,
        raw_arguments: bool = False,
        http_client: httpx.AsyncClient | None = None,
        ssl: Any = None,
        healthy_after: float = 10.0,
        proxy: str = PROXY_ENV,
        max_negotiate_bytes: int = MAX_NEGOTIATE_BYTES,
    ) -> None:
        super().__init__()
        check_url_security(url, allow_insecure_http)
        problem = validate_proxy(proxy)
        if problem is not None:
            raise ConfigError(f"proxy must be {problem}, not {redact_proxy(proxy)!r}", key="proxy")
        if token_transport not in ("header", "query", "both"):
            raise ConfigError(f"token_transport must be header, query or both, not {token_transport!r}")
        if token_provider is not None:
            access_token_factory = access_token_factory or token_provider.get_token
            invalidate_token = invalidate_token or token_provider.invalidate
        self.url = url
        self._raw_arguments = raw_arguments
        try:
            self._protocol: proto.HubProtocol = proto.get_protocol(protocol, raw_arguments=raw_arguments)
        except proto.ProtocolError as exc:
            raise ConfigError(str(exc), key="protocol") from None
        self._text = self._protocol.transfer_format == "text"
        self._retry_policy: RetryPolicy = retry_policy if retry_policy is not None else DaemonRetryPolicy()
        self._retry_initial_start = retry_initial_start
        self._core_options = CoreOptions(
            keepalive_interval=keepalive_interval,
            timeout=None,  # the server timeout times only the wait on the socket (receiver.py)
            handshake_timeout=handshake_timeout,
            ack_interval=ack_interval,
            replay_limit=stateful_buffer_size,
            max_message_size=max_message_size,
            max_handshake_size=max_message_size,
        )
        self._server_timeout = server_timeout
        self._dispatch_queue_size = dispatch_queue_size
        self._max_dispatch_bytes = max_dispatch_bytes
        self._drain_timeout = drain_timeout
        self._close_timeout = close_timeout
        self._stream_buffer_size = stream_buffer_size
        if proxy not in (PROXY_ENV, PROXY_OFF):
            register_secret(urlsplit(proxy).password)
        frame_size = max_frame_size if max_frame_size is not None else 8 * max_message_size
        self._connector = Connector(
            ConnectorOptions(
                url=url,
                text=self._text,
                skip_negotiation=skip_negotiation,
                stateful_reconnect=stateful_reconnect and not skip_negotiation,
                token_transport=token_transport,
                headers=dict(headers or {}),
                allow_insecure_http=allow_insecure_http,
                proxy=proxy,
                negotiate_timeout=negotiate_timeout,
                max_negotiate_bytes=max_negotiate_bytes,
                open_timeout=handshake_timeout,
                close_timeout=close_timeout,
                max_frame_size=frame_size,
                # Frames the WebSocket library may read ahead of the receive loop (it pauses the
                # socket past that): as many of the largest frames as the dispatch byte bound
                # holds, 1..16 (its default).
                read_ahead=max(1, min(16, max_dispatch_bytes // frame_size)),
                http_client=http_client,
                ssl=ssl,
            ),
            access_token_factory,
            invalidate_token,
        )

        self._state = ConnectionState.DISCONNECTED
        self.calls = Calls()
        self._wire = Wire(text=self._text, close_timeout=close_timeout)
        self._early: list[Any] = []  # hub messages right behind the handshake response
        self._resume_url: str | None = None
        self._connection_id: str | None = None
        self._dispatch_queue: DispatchQueue | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._leftover: deque[Batch] = deque()  # decoded, not yet queued when stop() came
        self._main_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._closing = False  # the supervisor is past its loop: only cleanup is left
        self._graceful_close = False  # stop() found the connection connected: send Close after draining
        self._drain_deadline: float | None = None
        self._abandoned = False  # stop() was cancelled: cut the drain and on_closed short
        self._firing_closed = False  # the on_closed callbacks are running
        self.stats = ClientStats()
        self._health = Health(healthy_after, self.stats)
        self._closed_event = asyncio.Event()
        self._closed_event.set()

    # --- public surface --------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def connection_id(self) -> str | None:
        return self._connection_id

    @property
    def protocol_name(self) -> str:
        return self._protocol.name

    @property
    def flapping(self) -> bool:
        """Three or more connections in a row were lost before `healthy_after` seconds, and the
        current one (if any) has not yet stayed up that long."""
        return self._health.flapping(self._state == ConnectionState.CONNECTED)

    @property
    def pending_calls(self) -> int:
        """Invocations awaiting their Completion plus open streams."""
        return len(self.calls)

    async def start(self) -> None:
        """Connect (retrying with the policy when `retry_initial_start`); returns once connected."""
        if self._state != ConnectionState.DISCONNECTED:
            raise HubConnectionError(f"Cannot start a HubConnection that is in the {self._state} state.")
        self._stopping = False
        self._state = ConnectionState.CONNECTING
        self._closed_event.clear()
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._main_task = asyncio.create_task(self._main(started), name=f"signalr:{redact_url(self.url)}")
        try:
            await asyncio.shield(started)
        except asyncio.CancelledError:
            if not started.done():
                self._main_task.cancel()  # still running: it resolves `started` before it ends
                await asyncio.wait([self._main_task])
            if started.done() and not started.cancelled():
                # Our caller was cancelled, so nobody else will read the "stopped during start" error
                # _main set: retrieve it here (else asyncio logs "Future exception was never retrieved").
                started.exception()
            raise
        except BaseException:
            await asyncio.wait([self._main_task])  # cleanup done, state is disconnected
            raise

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Close gracefully; nothing already decoded is lost.

        1. Stop reading: no frame is decoded after this call (an invocation batch decoded from one
           frame is kept whole).
        2. Drain: every invocation decoded before is dispatched to its handlers, in order, within
           `drain_timeout` seconds (default: the constructor's `drain_timeout`). While draining the
           state is `disconnecting`: handlers can still answer server invocations (Completions are
           sent), but cannot `invoke`/`send`.
        3. Close message (when it was connected), then the WebSocket. Pending calls fail with
           ConnectionLostError; on_closed fires.

        Whatever is still queued when the deadline passes is abandoned (`stats.invocations_abandoned`);
        so is the rest of the queue when the task calling stop() is cancelled. A cancelled stop() still
        closes (bounded by close_timeout) and waits for that, but cuts the on_closed callbacks short:
        cancelled if they are running, bounded by close_timeout if they have not started. Called from a
        handler or callback, stop() starts the shutdown and returns at once (the drain goes on after
        it returns).
        """
        task = self._main_task
        if task is None or task.done():
            self._state = ConnectionState.DISCONNECTED
            return
        current = asyncio.current_task()
        inside = current is task or (current is not None and current is self._dispatcher)
        if self._stopping:
            if not inside:
                await self._closed_event.wait()
            return
        self._stopping = True
        timeout = self._drain_timeout if drain_timeout is None else drain_timeout
        self._drain_deadline = asyncio.get_running_loop().time() + max(0.0, timeout)
        self._graceful_close = self._state == ConnectionState.CONNECTED
        if not self._closing:
            self._state = ConnectionState.DISCONNECTING
            task.cancel()  # stops the receive loop (or a reconnect); _main then drains and closes
        if inside:
            return
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            self._abandon_drain()  # our caller gave up waiting: cut the drain short, finish quickly
            await asyncio.wait([task])
            raise

    async def wait_closed(self) -> None:
        """Wait until the connection is closed for good (stop, policy gave up, Close without reconnect)."""
        await self._closed_event.wait()

    def buffer_usage(self) -> BufferUsage:
        """Bytes and invocations held for dispatch and for a stateful resume now, with their limits."""
        queue = self._dispatch_queue
        core = self._wire.core
        return BufferUsage(
            dispatch_bytes=queue.bytes if queue is not None else 0,
            dispatch_invocations=queue.size if queue is not None else 0,
            dispatch_limit_bytes=self._max_dispatch_bytes,
            dispatch_limit_invocations=self._dispatch_queue_size,
            replay_bytes=core.replay_bytes if core is not None else 0,
            replay_limit_bytes=self._core_options.replay_limit,
        )

    async def send(self, target: str, *args: Any) -> None:
        """Non-blocking invocation: no invocation id, no Completion."""
        self._require_connected()
        await self._send_message(proto.Invocation(target=target, arguments=list(args)))

    async def invoke(self, target: str, *args: Any) -> Any:
        """Invoke a hub method and return its result; raises HubError with the hub's error message."""
        self._require_connected()
        invocation_id, future = self.calls.expect()
        try:
            await self._send_message(
                proto.Invocation(target=target, arguments=list(args), invocation_id=invocation_id)
            )
            return await future
        finally:
            self.calls.forget(invocation_id, future)

    def stream(self, target: str, *args: Any) -> HubStream:
        """A server→client stream; the StreamInvocation is sent on first iteration."""
        return HubStream(self, target, args, self._stream_buffer_size)

    # --- internals -------------------------------------------------------------------------------

    def _require_connected(self) -> None:
        if self._state != ConnectionState.CONNECTED:
            raise HubConnectionError(
                f"Cannot send data if the connection is not in the 'connected' state (it is {self._state})."
            )

    async def _send_message(self, message: proto.HubMessage) -> None:
        await self._wire.send_message(message)

    async def _establish(self) -> None:
        """One connect: the connector's [negotiate (+redirects)] → WebSocket (with the 401/403 rule),
        then the handshake driven through a new core."""
        opened = await self._connector.open()
        ws, connect_url, stateful = opened.ws, opened.connect_url, opened.stateful
        loop = asyncio.get_running_loop()
        core = HubCore(
            Role.CLIENT, loop.time(), protocol=self._protocol, stateful=stateful, options=self._core_options
        )
        try:
            self._early = await self._wire.handshake(ws, core, self._answered)
        except BaseException:
            await self._wire.abort(ws)
            raise
        self._wire.replace_core(core)
        self._wire.ws = ws
        self._connection_id = opened.connection_id
        self._resume_url = connect_url if stateful else None
        log.info(
            "signalr.connected",
            url=redact_url(connect_url),
            protocol=self._protocol.name,
            connection_id=self._connection_id,
            stateful_reconnect=stateful,
        )

    def _answered(self) -> None:
        """The hub answered a handshake: a connection opened (for healthy-before-reset and stats)."""
        self._health.opened()
        self.stats.connections_opened += 1

    async def _main(self, started: asyncio.Future[None]) -> None:
        self._closing = False
        self._abandoned = False
        self._health.reset()
        self._leftover.clear()
        queue = DispatchQueue(self._dispatch_queue_size, self._max_dispatch_bytes)
        self._dispatch_queue = queue
        self._dispatcher = asyncio.create_task(self._dispatch_loop(queue), name="signalr:dispatcher")
        supervisor = Supervisor(
            _Link(self), self._retry_policy, self._health, retry_initial_start=self._retry_initial_start
        )
        await supervisor.run(started)

    async def _reconnecting(self, reason: BaseException | None) -> None:
        self._state = ConnectionState.RECONNECTING
        await self._notify(self._reconnecting_cbs, reason)

    async def _reconnected(self) -> None:
        self._state = ConnectionState.CONNECTED
        log.info("signalr.reconnected", connection_id=self._connection_id)
        # Queued ahead of everything the new transport will decode, and run by the dispatcher
        # while the receive loop is up: a callback may await invoke().
        await self._notify(self._reconnected_cbs, self._connection_id)

    async def _shut_down(self, close_error: BaseException | None) -> None:
        """Drain (bounded), Close when stop() found it connected, close the WebSocket."""
        queue, dispatcher = self._dispatch_queue, self._dispatcher
        assert queue is not None and dispatcher is not None
        self._closing = True
        self._state = ConnectionState.DISCONNECTING
        self.calls.fail_all(  # before draining: a handler awaiting an invoke must not wait for it
            ConnectionLostError("the connection was stopped")
            if close_error is None
            else ConnectionLostError(f"the connection was closed: {describe_reason(close_error)}")
        )
        deadline = self._drain_deadline
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self._drain_timeout
        await self._drain(queue, dispatcher, deadline)
        await self._wire.close(graceful=self._graceful_close)
        for task in list(self._background):
            task.cancel()
        self.calls.fail_all(ConnectionLostError("the connection was stopped"))
        self._wire.replace_core(None)
        self._state = ConnectionState.DISCONNECTED
        self._dispatcher = None
        self._drain_deadline = None
        self._graceful_close = False
        log.info("signalr.closed", error=describe_reason(close_error))

    async def _fire_closed(self, close_error: BaseException | None) -> None:
        self._firing_closed = True
        try:
            # after a cancelled stop() the callbacks get close_timeout, and are cut short if
            # the cancel comes while they run: a hung callback must not hang stop()
            async with asyncio.timeout(self._close_timeout if self._abandoned else None):
                await self._fire(self._closed_cbs, close_error)
        except (TimeoutError, asyncio.CancelledError):
            log.warning("signalr.closed_callbacks_cut_short")
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                current.uncancel()
        finally:
            self._firing_closed = False

    async def _run_transport(self) -> Ended:
        wire = self._wire
        ws, core, queue = wire.ws, wire.core, self._dispatch_queue
        assert ws is not None and core is not None and queue is not None
        timers = asyncio.create_task(wire.timer_loop(core))
        try:
            early, self._early = self._early, []
            receiver = Receiver(
                ws,
                core,
                queue,
                self.stats,
                leftover=self._leftover,
                other=self._handle_other,
                text=self._text,
                server_timeout=self._server_timeout,
                acked=wire.acked,
                timer_wake=wire.timer_wake,
            )
            ended = await receiver.run(early)
        finally:
            timers.cancel()
            await asyncio.wait([timers])
        await wire.transport_ended(ws, core, ended)
        if not self._stopping:
            log.warning(
                "signalr.transport_ended",
                error=describe_reason(ended.error),
                allow_reconnect=ended.allow_reconnect,
                resumable=core.state is CoreState.DETACHED,
            )
        return ended

    async def _handle_other(self, message: Any) -> Ended | None:
        """What the receive path does not hand to the dispatcher, in arrival order."""
        if isinstance(message, proto.StreamItem):
            await self.calls.stream_item(message)
        elif isinstance(message, proto.Completion):
            self.calls.complete(message)
        elif isinstance(message, CloseReceived):
            error = (
                ServerClosedError(f"Server returned an error on close: {message.error}")
                if message.error
                else None
            )
            log.info("signalr.close_message", error=message.error, allow_reconnect=message.allow_reconnect)
            return Ended(error, allow_reconnect=message.allow_reconnect, resumable=False)
        elif isinstance(message, ProtocolViolation):
            return Ended(proto.ProtocolError(message.error), allow_reconnect=True, resumable=False)
        else:
            log.warning("signalr.unexpected_message", type=type(message).__name__)
        return None

    async def _resume(self) -> bool:
        """Stateful reconnect: same connection token, no negotiate, no handshake; the core writes
        Sequence + the replay and drops what the hub replays twice."""
        core = self._wire.core
        url = self._resume_url
        assert core is not None and url is not None and core.state is CoreState.DETACHED
        log.info("signalr.resuming", url=redact_url(url), unacked_bytes=core.replay_bytes)
        try:
            ws = await self._connector.open_ws(url)
        except (HubConnectionError, OSError, TimeoutError) as exc:
            log.warning("signalr.resume_failed", error=describe_reason(exc))
            core.give_up()
            return False
        self._early = []
        try:
            replayed = await self._wire.resume_on(ws, core)
        except HubConnectionError as exc:
            log.warning("signalr.resume_failed", error=describe_reason(exc))
            core.connection_lost(asyncio.get_running_loop().time(), resumable=False)
            await self._wire.abort(ws)
            return False
        log.info("signalr.resumed", replayed=replayed)
        return True


class _Link:
    """`HubConnection` as the supervisor sees it (`consumer.signalr.supervisor.Link`)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: HubConnection) -> None:
        self._conn = conn

    @property
    def stopping(self) -> bool:
        return self._conn._stopping

    @property
    def log_url(self) -> str:
        return redact_url(self._conn.url)

    def can_resume(self) -> bool:
        core = self._conn._wire.core
        return core is not None and core.state is CoreState.DETACHED

    async def connect_once(self) -> None:
        await self._conn._establish()

    async def run_transport(self) -> Ended:
        return await self._conn._run_transport()

    async def resume(self) -> bool:
        return await self._conn._resume()

    def mark_connected(self) -> None:
        self._conn._state = ConnectionState.CONNECTED

    async def reconnecting(self, reason: BaseException | None) -> None:
        await self._conn._reconnecting(reason)

    async def reconnected(self) -> None:
        await self._conn._reconnected()

    def fail_pending(self, error: ConnectionLostError) -> None:
        self._conn.calls.fail_all(error)

    async def shut_down(self, error: BaseException | None) -> None:
        await self._conn._shut_down(error)

    async def fire_closed(self, error: BaseException | None) -> None:
        await self._conn._fire_closed(error)

    def closed(self) -> None:
        self._conn._closed_event.set()
