"""The client's side of the wire: the current WebSocket and sans-I/O core of a `HubConnection`, and
everything that writes to them — the handshake, sending a message through the core (numbered and
buffered when stateful; a sender waits while the replay buffer is at its byte limit), the core's
deadlines (keepalive Ping after a quiet `keepalive_interval`, Acks about every `ack_interval`), the
Close and closing the WebSocket (bounded by `close_timeout`). One send lock orders every write.
The receive side is `receiver.py`; what to connect to is `connector.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from consumer.signalr import protocol as proto
from consumer.signalr.core import HandshakeCompleted, HandshakeFailed, HubCore, ProtocolViolation, StateError
from consumer.signalr.core import State as CoreState
from consumer.signalr.errors import (
    ConnectionLostError,
    HandshakeError,
    HubConnectionError,
    InvalidTextFrameError,
    ServerClosedError,
)
from consumer.signalr.receiver import check_utf8
from consumer.signalr.supervisor import Ended

__all__ = ["Wire"]


class Wire:
    """The WebSocket (`ws`) and core (`core`) in use; either is None between transports."""

    __slots__ = ("_close_timeout", "_send_lock", "_text", "acked", "core", "timer_wake", "ws")

    def __init__(self, *, text: bool, close_timeout: float) -> None:
        self._text = text
        self._close_timeout = close_timeout
        self.ws: ClientConnection | None = None
        # The core of the current logical connection (handshake, keepalive and Ack deadlines,
        # stateful reconnect's numbering, replay buffer and dedupe); None when closed.
        self.core: HubCore | None = None
        self._send_lock = asyncio.Lock()
        self.timer_wake = asyncio.Event()  # the core may have an earlier deadline (an Ack is due)
        self.acked = asyncio.Event()  # Acks arrived (or the core went away): blocked senders recheck

    def replace_core(self, core: HubCore | None) -> None:
        """A new logical connection (or none): senders blocked on the old one's replay buffer fail."""
        self.core = core
        self.acked.set()

    async def handshake(self, ws: ClientConnection, core: HubCore, answered: Callable[[], None]) -> list[Any]:
        """Drive the core's handshake over `ws`; returns the hub messages right behind the response.
        `answered()` is called once the hub answered (a completed or a refused handshake)."""
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
                    answered()
                raise HandshakeError(event.error)
            if isinstance(event, HandshakeCompleted):
                answered()
                rest = events[index + 1 :]
                for later in rest:
                    if isinstance(later, ProtocolViolation):
                        raise HandshakeError(f"malformed data after the handshake: {later.error}")
                return rest
        raise HandshakeError("the handshake ended without a response")  # pragma: no cover

    async def abort(self, ws: ClientConnection, code: int = 1000, reason: str = "") -> None:
        """Close `ws` (bounded by close_timeout; past it the TCP connection is dropped)."""
        try:
            async with asyncio.timeout(self._close_timeout):
                await ws.close(code, reason)
        except Exception:
            ws.transport.abort()

    async def transport_ended(self, ws: ClientConnection, core: HubCore, ended: Ended) -> None:
        """The receive path on `ws` ended: detach the core (a stateful, resumable one keeps its
        replay buffer for the resume) and close `ws` the way the end calls for."""
        if self.ws is ws:
            self.ws = None
        core.connection_lost(asyncio.get_running_loop().time(), resumable=ended.resumable)
        if ended.error is None or isinstance(ended.error, ServerClosedError):
            await self.abort(ws)  # the server said goodbye: close the WebSocket politely
        elif isinstance(ended.error, InvalidTextFrameError):
            await self.abort(ws, code=1007, reason="invalid UTF-8")  # RFC 6455 7.4.1
        else:
            ws.transport.abort()  # dead, half-open or broken: do not wait for a close handshake

    async def ws_send(self, ws: ClientConnection, data: bytes) -> None:
        try:
            if self._text:
                await ws.send(data.decode("utf-8"))
            else:
                await ws.send(data)
        except ConnectionClosed as exc:
            raise ConnectionLostError(f"the WebSocket is closed ({exc})") from exc

    async def send_message(self, message: proto.HubMessage) -> None:
        """Through the core: it numbers and buffers trackable messages when stateful. A stateful
        message whose write fails stays buffered and is replayed after the resume; a sender waits
        while the replay buffer is at its byte limit and its message unacknowledged."""
        core = self.core
        if core is None or core.state not in (CoreState.OPEN, CoreState.DETACHED):
            raise ConnectionLostError("the connection has no transport")
        async with self._send_lock:
            try:  # detached (resuming): a trackable message is kept for the replay
                seq = core.send(message, asyncio.get_running_loop().time())
            except StateError:
                raise ConnectionLostError("the connection has no transport") from None
            await self._flush(core, lost_ok=seq > 0)
        while seq > 0 and core.send_blocked(seq):
            if self.core is not core or core.state in (CoreState.CLOSING, CoreState.CLOSED):
                raise ConnectionLostError("the connection was closed before the hub acknowledged the message")
            self.acked.clear()
            await self.acked.wait()

    async def _flush(self, core: HubCore, *, lost_ok: bool = False) -> None:
        """Write what the core queued (send lock held). `lost_ok`: a lost transport is not an error
        (what was written is in the replay buffer)."""
        ws = self.ws
        data = core.data_to_send()
        if ws is None:
            if lost_ok:
                return
            raise ConnectionLostError("the connection has no transport")
        try:
            for chunk in data:
                await self.ws_send(ws, chunk)
        except ConnectionLostError:
            if not lost_ok:
                raise

    async def timer_loop(self, core: HubCore) -> None:
        """Runs the core's deadlines (keepalive Ping after a quiet interval, Acks) for one transport."""
        loop = asyncio.get_running_loop()
        wake = self.timer_wake
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
                    await self._flush(core)
            except HubConnectionError:
                return

    async def resume_on(self, ws: ClientConnection, core: HubCore) -> int:
        """Stateful resume on the new `ws`: the core writes Sequence + the replay; `ws` becomes the
        transport under the send lock (no send finds the core open and no transport). Returns the
        number of messages replayed."""
        async with self._send_lock:
            replayed = core.resume(asyncio.get_running_loop().time())
            for chunk in core.data_to_send():
                await self.ws_send(ws, chunk)
            self.ws = ws
        return replayed

    async def close(self, *, graceful: bool) -> None:
        """The end of the connection: Close when `graceful` and the core is open, then the WebSocket."""
        ws, self.ws = self.ws, None
        core = self.core
        if ws is None:
            return
        if graceful and core is not None and core.state is CoreState.OPEN:
            core.close(now=asyncio.get_running_loop().time())
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._close_timeout):
                    for chunk in core.data_to_send():
                        await self.ws_send(ws, chunk)
        await self.abort(ws)
