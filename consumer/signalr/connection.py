"""asyncio SignalR hub client: accessTokenFactory semantics, automatic reconnect that never gives up.

Layout: the protocol decisions (handshake, keepalive and Ack deadlines, stateful reconnect's
numbering, replay buffer and dedupe, Close) are the sans-I/O core's (`consumer.signalr.core`); this
module drives it over websockets. Negotiate (redirects, token transport, proxy) and the WebSocket
open are `consumer.signalr.connector`; dispatching is `consumer.signalr.dispatch`, streams
`streams.py`, errors `errors.py`, URLs `urls.py`.
The lifecycle (connect, reconnect under the retry policy, healthy-before-reset, flapping, resume,
shutdown) is `consumer.signalr.supervisor.Supervisor`, driving this connection through `_Link`.
The receive path of one transport (socket → core → dispatch queue) is `receiver.py`.
Size (about 950 lines, over the 700 guideline, a known debt of issue 11 item 3): the constructor's
29 keyword parameters, sending through the core, the handshake, resume and shutdown still live here.

Point by point it follows the official @microsoft/signalr client (HttpConnection.js, HubConnection.js,
MessageBuffer.js) and goes past it where a daemon needs it:

- Handshake timeout; keepalive Ping only when nothing was sent for `keepalive_interval`; server
  timeout (any received frame resets it) → the transport is treated as lost (half-open detection).
- `send` (no invocation id), `invoke` (awaits the Completion; raises `HubError` with the hub's
  message), `stream` (a `HubStream` async iterator; `aclose()`, leaving `async with`, or cancelling
  the consuming task sends CancelInvocation).
- `connector.py` (negotiate, redirects, token transport, 401/403 rule, proxies), `dispatch.py`
  (handlers, bounded hand-off, callback ordering) and `supervisor.py` (reconnect policy,
  healthy-before-reset, flapping) describe their parts of the behaviour.
- States `disconnected, connecting, connected, reconnecting, disconnecting`; callbacks
  `on_reconnecting(error)`, `on_reconnected(connection_id)`, `on_closed(error)`. Pending invocations
  and streams fail with `ConnectionLostError` when the connection is lost (unless a stateful reconnect
  resumes it), so nothing hangs.
- Nothing decoded is lost on `stop(drain_timeout=)`: reading stops first, the queue is drained
  (bounded), then Close and the WebSocket close. `stats` (`ClientStats`) counts invocations decoded,
  dispatched and abandoned (a drain cut short by its deadline or a cancelled `stop()`).
- Text frames (JSON protocol) must be valid UTF-8 (RFC 6455 5.6, 8.1): a frame that is not is a
  protocol error, never decoded or relayed; the WebSocket is closed with 1007 and the connection
  recycled like any other protocol error.
- Stateful reconnect (opt-in): negotiates `useStatefulReconnect`, handshake version 2, counts
  trackable messages (types 1-5) both ways, Acks about every `ack_interval`, keeps a byte-bounded
  replay buffer (sends wait when it is full), on a transport drop reconnects with the same
  connection token without negotiating or handshaking, sends Sequence and replays, drops duplicates.
  If that single resume attempt fails, a normal reconnect follows.

Logging: structlog via `consumer.logs.get_logger`; tokens never logged; every logged URL goes
through `redact_url` (access_token and the connection token `id` masked).

Public API::

    conn = HubConnection(url, access_token_factory=provider.get_token,
                         invalidate_token=provider.invalidate, protocol="messagepack")
    conn.on("ReceiveCarPatches", handler)            # handler(*args), sync or async
    conn.on_reconnected(resubscribe)                 # also on_reconnecting / on_closed
    await conn.start(); await conn.invoke("SubscribeToEventV2", 42); ...; await conn.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from consumer.errors import ConfigError, describe_error
from consumer.logs import get_logger, register_secret
from consumer.signalr import protocol as proto
from consumer.signalr.connector import MAX_NEGOTIATE_BYTES, Connector, ConnectorOptions, TokenFactory
from consumer.signalr.core import (
    CloseReceived,
    CoreOptions,
    HandshakeCompleted,
    HandshakeFailed,
    HubCore,
    ProtocolViolation,
    Role,
    StateError,
)
from consumer.signalr.core import State as CoreState
from consumer.signalr.dispatch import (
    DEFAULT_MAX_DISPATCH_BYTES,
    MAX_TARGET_LENGTH,
    Batch,
    Callback,
    Dispatching,
    DispatchQueue,
    Handler,
    Notify,
    RawHandler,
)
from consumer.signalr.errors import (
    ConnectionLostError,
    HandshakeError,
    HubAuthError,
    HubConnectionError,
    HubError,
    InvalidTextFrameError,
    NegotiateError,
    ServerClosedError,
    ServerTimeoutError,
)
from consumer.signalr.proxies import (
    PROXY_ENV,
    PROXY_OFF,
    redact_proxy,
    validate_proxy,
)
from consumer.signalr.receiver import Receiver, check_utf8
from consumer.signalr.retry import DaemonRetryPolicy, RetryPolicy
from consumer.signalr.streams import _END, HubStream
from consumer.signalr.supervisor import Ended, Health, Supervisor
from consumer.signalr.urls import (
    build_negotiate_url,
    build_ws_url,
    check_url_security,
    redact_url,
)

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


class TokenProviderLike(Protocol):
    async def get_token(self) -> str: ...

    def invalidate(self, token: str) -> None: ...


# --- the connection ---------------------------------------------------------------------------------


class ConnectionState(enum.StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    DISCONNECTING = "disconnecting"


@dataclass(slots=True)
class ClientStats:
    """Counters of one HubConnection (cumulative over start/stop cycles).

    Once the connection is closed, `invocations_decoded == invocations_dispatched +
    invocations_abandoned`; `invocations_abandoned` only grows when a drain deadline expired (a
    handler too slow for `drain_timeout`) or `stop()` itself was cancelled.
    """

    invocations_decoded: int = 0  # server→client invocations decoded from the socket (replays excluded)
    invocations_dispatched: int = 0  # ... whose dispatch finished (handled, failed or unhandled)
    invocations_abandoned: int = 0  # ... decoded but never dispatched because a drain was cut short
    connections_opened: int = 0  # handshakes completed (first connect and every reconnect)
    short_lived_connections: int = 0  # ... lost before they had stayed up `healthy_after` seconds


@dataclass(frozen=True, slots=True)
class BufferUsage:
    """What the connection holds in memory now, and its limits (for `/metrics`).

    `dispatch_*`: invocations decoded and not yet dispatched (wire bytes of their frames);
    `replay_*`: the stateful-reconnect buffer of sent, not yet acknowledged messages (0 without one).
    """

    dispatch_bytes: int
    dispatch_invocations: int
    dispatch_limit_bytes: int
    dispatch_limit_invocations: int
    replay_bytes: int
    replay_limit_bytes: int


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
        self._protocol_name = protocol
        self._raw_arguments = raw_arguments
        try:
            self._protocol: proto.HubProtocol = proto.get_protocol(protocol, raw_arguments=raw_arguments)
        except proto.ProtocolError as exc:
            raise ConfigError(str(exc), key="protocol") from None
        self._text = self._protocol.transfer_format == "text"
        self._retry_policy: RetryPolicy = retry_policy if retry_policy is not None else DaemonRetryPolicy()
        self._retry_initial_start = retry_initial_start
        self._stateful_buffer_size = stateful_buffer_size
        self._ack_interval = ack_interval
        self._handshake_timeout = handshake_timeout
        self._keepalive_interval = keepalive_interval
        self._server_timeout = server_timeout
        self._close_timeout = close_timeout
        self._max_message_size = max_message_size
        frame_size = max_frame_size if max_frame_size is not None else 8 * max_message_size
        self._dispatch_queue_size = dispatch_queue_size
        self._max_dispatch_bytes = max_dispatch_bytes
        self._drain_timeout = drain_timeout
        self._stream_buffer_size = stream_buffer_size
        if proxy not in (PROXY_ENV, PROXY_OFF):
            parts = urlsplit(proxy)
            register_secret(parts.password)
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
        self._handlers: dict[str, list[Handler]] = {}
        self._raw_handler: RawHandler | None = None
        self._reconnecting_cbs: list[Callback] = []
        self._reconnected_cbs: list[Callback] = []
        self._closed_cbs: list[Callback] = []
        self._ids = itertools.count()
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._streams: dict[str, HubStream] = {}
        self._warned_targets: set[str] = set()
        self._background: set[asyncio.Task[Any]] = set()

        self._ws: ClientConnection | None = None
        # The sans-I/O connection core of the current logical connection (handshake, keepalive and
        # Ack deadlines, stateful reconnect's numbering, replay buffer and dedupe); None when closed.
        self._core: HubCore | None = None
        self._early: list[Any] = []
        self._timer_wake = asyncio.Event()  # the core may have an earlier deadline (an Ack is due)
        self._acked = asyncio.Event()  # Acks arrived (or the core went away): blocked senders recheck
        self._resume_url: str | None = None
        self._connection_id: str | None = None
        self._send_lock = asyncio.Lock()
        self._dispatch_queue: DispatchQueue | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._leftover: deque[Batch] = deque()  # decoded, not yet queued when stop() came
        self._routes = {}  # (annotated in Dispatching)
        self._main_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._closing = False  # _main is past its receive/reconnect loop: only cleanup is left
        self._graceful_close = False  # stop() found the connection connected: send Close after draining
        self._drain_deadline: float | None = None
        self._abandoned = False  # stop() was cancelled: cut the drain and on_closed short
        self._firing_closed = False  # _main is running the on_closed callbacks
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

    def on(self, target: str, handler: Handler) -> None:
        """Register `handler(*args)` (sync or async) for a hub → client method; case-insensitive."""
        self._handlers.setdefault(target.lower(), []).append(handler)
        self._routes.clear()

    def off(self, target: str, handler: Handler | None = None) -> None:
        self._routes.clear()
        if handler is None:
            self._handlers.pop(target.lower(), None)
            return
        handlers = self._handlers.get(target.lower(), [])
        with contextlib.suppress(ValueError):
            handlers.remove(handler)
        if not handlers:
            self._handlers.pop(target.lower(), None)

    def on_raw(self, handler: RawHandler | None) -> None:
        """With `raw_arguments=True`: `handler(target, raw_args)` gets invocations no `on()` handler takes."""
        self._raw_handler = handler
        self._routes.clear()

    def on_reconnecting(self, callback: Callback) -> None:
        self._reconnecting_cbs.append(callback)

    def on_reconnected(self, callback: Callback) -> None:
        self._reconnected_cbs.append(callback)

    def on_closed(self, callback: Callback) -> None:
        self._closed_cbs.append(callback)

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
                await self._cancel_main()
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
        core = self._core
        return BufferUsage(
            dispatch_bytes=queue.bytes if queue is not None else 0,
            dispatch_invocations=queue.size if queue is not None else 0,
            dispatch_limit_bytes=self._max_dispatch_bytes,
            dispatch_limit_invocations=self._dispatch_queue_size,
            replay_bytes=core.replay_bytes if core is not None else 0,
            replay_limit_bytes=self._stateful_buffer_size,
        )

    async def send(self, target: str, *args: Any) -> None:
        """Non-blocking invocation: no invocation id, no Completion."""
        self._require_connected()
        await self._send_message(proto.Invocation(target=target, arguments=list(args)))

    async def invoke(self, target: str, *args: Any) -> Any:
        """Invoke a hub method and return its result; raises HubError with the hub's error message."""
        self._require_connected()
        invocation_id = str(next(self._ids))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[invocation_id] = future
        try:
            await self._send_message(
                proto.Invocation(target=target, arguments=list(args), invocation_id=invocation_id)
            )
            return await future
        finally:
            self._pending.pop(invocation_id, None)

    def stream(self, target: str, *args: Any) -> HubStream:
        """A server→client stream; the StreamInvocation is sent on first iteration."""
        return HubStream(self, target, args, self._stream_buffer_size)

    # --- internals: streams --------------------------------------------------------------------

    async def _start_stream(self, stream: HubStream) -> None:
        self._require_connected()
        invocation_id = str(next(self._ids))
        stream._invocation_id = invocation_id
        self._streams[invocation_id] = stream
        try:
            await self._send_message(
                proto.StreamInvocation(
                    invocation_id=invocation_id, target=stream._target, arguments=list(stream._args)
                )
            )
        except BaseException:
            self._streams.pop(invocation_id, None)
            stream._finished = True
            raise

    async def _send_cancel(self, invocation_id: str) -> None:
        if self._state != ConnectionState.CONNECTED:
            return
        try:
            await self._send_message(proto.CancelInvocation(invocation_id=invocation_id))
        except Exception as exc:  # the connection is going away; nothing to cancel any more
            log.debug("signalr.cancel_not_sent", invocation_id=invocation_id, error=repr(exc))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- internals: sending --------------------------------------------------------------------

    def _require_connected(self) -> None:
        if self._state != ConnectionState.CONNECTED:
            raise HubConnectionError(
                f"Cannot send data if the connection is not in the 'connected' state (it is {self._state})."
            )

    async def _ws_send(self, ws: ClientConnection, data: bytes) -> None:
        try:
            if self._text:
                await ws.send(data.decode("utf-8"))
            else:
                await ws.send(data)
        except ConnectionClosed as exc:
            raise ConnectionLostError(f"the WebSocket is closed ({exc})") from exc

    async def _send_message(self, message: proto.HubMessage) -> None:
        """Through the core: it numbers and buffers trackable messages when stateful. A stateful
        message whose write fails stays buffered and is replayed after the resume; a sender waits
        while the replay buffer is at its byte limit and its message unacknowledged."""
        core = self._core
        if core is None or core.state not in (CoreState.OPEN, CoreState.DETACHED):
            raise ConnectionLostError("the connection has no transport")
        async with self._send_lock:
            try:  # detached (resuming): a trackable message is kept for the replay
                seq = core.send(message, asyncio.get_running_loop().time())
            except StateError:
                raise ConnectionLostError("the connection has no transport") from None
            await self._flush_core(core, lost_ok=seq > 0)
        while seq > 0 and core.send_blocked(seq):
            if self._core is not core or core.state in (CoreState.CLOSING, CoreState.CLOSED):
                raise ConnectionLostError("the connection was closed before the hub acknowledged the message")
            self._acked.clear()
            await self._acked.wait()

    async def _flush_core(self, core: HubCore, *, lost_ok: bool = False) -> None:
        """Write what the core queued (send lock held). `lost_ok`: a lost transport is not an error
        (what was written is in the replay buffer)."""
        ws = self._ws
        data = core.data_to_send()
        if ws is None:
            if lost_ok:
                return
            raise ConnectionLostError("the connection has no transport")
        try:
            for chunk in data:
                await self._ws_send(ws, chunk)
        except ConnectionLostError:
            if not lost_ok:
                raise

    # --- internals: connecting -----------------------------------------------------------------

    async def _establish(self) -> None:
        """One connect: the connector's [negotiate (+redirects)] → WebSocket (with the 401/403 rule),
        then the handshake driven through a new core."""
        opened = await self._connector.open()
        ws, connect_url, stateful = opened.ws, opened.connect_url, opened.stateful
        core = HubCore(
            Role.CLIENT,
            asyncio.get_running_loop().time(),
            protocol=self._protocol,
            stateful=stateful,
            options=CoreOptions(
                keepalive_interval=self._keepalive_interval,
                timeout=None,  # the server timeout times only the wait on the socket (_receive_loop)
                handshake_timeout=self._handshake_timeout,
                ack_interval=self._ack_interval,
                replay_limit=self._stateful_buffer_size,
                max_message_size=self._max_message_size,
                max_handshake_size=self._max_message_size,
            ),
        )
        try:
            await self._handshake(ws, core)
        except BaseException:
            await self._abort(ws)
            raise
        self._replace_core(core)
        self._ws = ws
        self._connection_id = opened.connection_id
        self._resume_url = connect_url if stateful else None
        log.info(
            "signalr.connected",
            url=redact_url(connect_url),
            protocol=self._protocol.name,
            connection_id=self._connection_id,
            stateful_reconnect=stateful,
        )

    def _replace_core(self, core: HubCore | None) -> None:
        """A new logical connection (or none): senders blocked on the old one's replay buffer fail."""
        self._core = core
        self._acked.set()

    async def _handshake(self, ws: ClientConnection, core: HubCore) -> None:
        """Drive the core's handshake over `ws`; hub messages right behind the response are kept."""
        loop = asyncio.get_running_loop()
        for chunk in core.data_to_send():
            await ws.send(chunk.decode("utf-8"))
        events: list[Any] = []
        try:
            async with asyncio.timeout_at(core.next_deadline()):
                while core.state is CoreState.HANDSHAKING:
                    frame = await ws.recv(decode=False)
                    if self._text and not frame.isascii():
                        check_utf8(frame)
                    core.receive_data(frame, loop.time())
                    events.extend(core.events_received())
        except TimeoutError:
            core.on_timer(loop.time())
            events.extend(core.events_received())
        except ConnectionClosed as exc:
            raise HandshakeError(f"the server closed the WebSocket during the handshake ({exc})") from None
        except proto.ProtocolError as exc:  # invalid UTF-8
            raise HandshakeError(f"Error parsing handshake response: {exc}") from None
        for index, event in enumerate(events):
            if isinstance(event, HandshakeFailed):
                if event.error.startswith("Server returned"):  # a response arrived: the server is up
                    self._health.opened()
                    self.stats.connections_opened += 1
                raise HandshakeError(event.error)
            if isinstance(event, HandshakeCompleted):
                self._health.opened()
                self.stats.connections_opened += 1
                rest = events[index + 1 :]
                for later in rest:
                    if isinstance(later, ProtocolViolation):
                        raise HandshakeError(f"malformed data after the handshake: {later.error}")
                self._early = rest
                return
        raise HandshakeError("the handshake ended without a response")  # pragma: no cover

    async def _abort(self, ws: ClientConnection, code: int = 1000, reason: str = "") -> None:
        try:
            async with asyncio.timeout(self._close_timeout):
                await ws.close(code, reason)
        except Exception:
            ws.transport.abort()

    async def _notify(self, callbacks: list[Callback], *args: Any) -> None:
        """Queue connection callbacks behind every invocation decoded so far: the dispatcher runs
        them in that order, so markers and data keep their true order and the receive loop (or the
        reconnect) never waits for a callback. If the queue stays full for `drain_timeout` s (a
        handler is stuck), the put goes on in the background and ordering becomes best effort."""
        queue = self._dispatch_queue
        assert queue is not None
        item = Notify(callbacks, args)
        if queue.put_nowait(item):
            return
        try:
            async with asyncio.timeout(self._drain_timeout):
                await queue.put(item)
        except TimeoutError:
            log.warning("signalr.dispatch_queue_stuck", queued=queue.size)
            self._spawn(queue.put(item))

    # --- internals: lifecycle ------------------------------------------------------------------

    async def _cancel_main(self) -> None:
        task = self._main_task
        if task is None:
            return
        if not task.done():
            task.cancel()
        await asyncio.wait([task])

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
        self._fail_pending(  # before draining: a handler awaiting an invoke must not wait for it
            ConnectionLostError("the connection was stopped")
            if close_error is None
            else ConnectionLostError(f"the connection was closed: {_describe(close_error)}")
        )
        deadline = self._drain_deadline
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self._drain_timeout
        await self._drain(queue, dispatcher, deadline)
        ws, self._ws = self._ws, None
        core = self._core
        if ws is not None:
            if self._graceful_close and core is not None and core.state is CoreState.OPEN:
                core.close(now=asyncio.get_running_loop().time())
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self._close_timeout):
                        for chunk in core.data_to_send():
                            await self._ws_send(ws, chunk)
            await self._abort(ws)
        for task in list(self._background):
            task.cancel()
        self._fail_pending(ConnectionLostError("the connection was stopped"))
        self._replace_core(None)
        self._state = ConnectionState.DISCONNECTED
        self._dispatcher = None
        self._drain_deadline = None
        self._graceful_close = False
        log.info("signalr.closed", error=_describe(close_error))

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
        ws = self._ws
        core = self._core
        assert ws is not None and core is not None
        timers = asyncio.create_task(self._timer_loop(core))
        try:
            early, self._early = self._early, []
            queue = self._dispatch_queue
            assert queue is not None
            receiver = Receiver(
                ws,
                core,
                queue,
                self.stats,
                leftover=self._leftover,
                other=self._handle_other,
                text=self._text,
                server_timeout=self._server_timeout,
                acked=self._acked,
                timer_wake=self._timer_wake,
            )
            ended = await receiver.run(early)
        finally:
            timers.cancel()
            await asyncio.wait([timers])
        if self._ws is ws:
            self._ws = None
        # stateful and resumable: the core keeps the replay buffer, detached, for _resume
        core.connection_lost(asyncio.get_running_loop().time(), resumable=ended.resumable)
        if ended.error is None or isinstance(ended.error, ServerClosedError):
            await self._abort(ws)  # the server said goodbye: close the WebSocket politely
        elif isinstance(ended.error, InvalidTextFrameError):
            await self._abort(ws, code=1007, reason="invalid UTF-8")  # RFC 6455 7.4.1
        else:
            ws.transport.abort()  # dead, half-open or broken: do not wait for a close handshake
        if not self._stopping:
            log.warning(
                "signalr.transport_ended",
                error=_describe(ended.error),
                allow_reconnect=ended.allow_reconnect,
                resumable=core.state is CoreState.DETACHED,
            )
        return ended

    async def _handle_other(self, message: Any) -> Ended | None:
        if isinstance(message, proto.StreamItem):
            stream = self._streams.get(message.invocation_id)
            if stream is not None:
                await stream._put(message.item)
        elif isinstance(message, proto.Completion):
            self._complete(message)
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

    def _complete(self, message: proto.Completion) -> None:
        future = self._pending.pop(message.invocation_id, None)
        if future is not None:
            if not future.done():
                if message.error is not None:
                    future.set_exception(HubError(message.error))
                else:
                    future.set_result(message.result)
            return
        stream = self._streams.get(message.invocation_id)
        if stream is not None:
            stream._complete(HubError(message.error) if message.error is not None else _END)

    def _fail_pending(self, error: ConnectionLostError) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            stream._complete(error)

    async def _timer_loop(self, core: HubCore) -> None:
        """Runs the core's deadlines (keepalive Ping after a quiet interval, Acks) for one transport."""
        loop = asyncio.get_running_loop()
        wake = self._timer_wake
        while True:
            deadline = core.next_deadline()
            wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await wake.wait()
            if core.state is not CoreState.OPEN:
                return
            core.on_timer(loop.time())
            try:
                async with self._send_lock:
                    await self._flush_core(core)
            except HubConnectionError:
                return

    async def _resume(self) -> bool:
        """Stateful reconnect: same connection token, no negotiate, no handshake; the core writes
        Sequence + the replay and drops what the hub replays twice."""
        core = self._core
        url = self._resume_url
        assert core is not None and url is not None and core.state is CoreState.DETACHED
        log.info("signalr.resuming", url=redact_url(url), unacked_bytes=core.replay_bytes)
        try:
            ws = await self._connector.open_ws(url)
        except (HubConnectionError, OSError, TimeoutError) as exc:
            log.warning("signalr.resume_failed", error=_describe(exc))
            core.give_up()
            return False
        self._early = []
        try:
            async with self._send_lock:
                replayed = core.resume(asyncio.get_running_loop().time())
                for chunk in core.data_to_send():
                    await self._ws_send(ws, chunk)
                self._ws = ws  # under the lock: no send may find the core open and no transport
        except HubConnectionError as exc:
            log.warning("signalr.resume_failed", error=_describe(exc))
            core.connection_lost(asyncio.get_running_loop().time(), resumable=False)
            await self._abort(ws)
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
        core = self._conn._core
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
        self._conn._fail_pending(error)

    async def shut_down(self, error: BaseException | None) -> None:
        await self._conn._shut_down(error)

    async def fire_closed(self, error: BaseException | None) -> None:
        await self._conn._fire_closed(error)

    def closed(self) -> None:
        self._conn._closed_event.set()


def _describe(error: BaseException | None) -> str | None:
    return describe_error(error) if error is not None else None
