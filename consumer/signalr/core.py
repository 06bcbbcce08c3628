"""One sans-I/O SignalR connection for both roles: bytes in, events out, bytes out. No I/O, no clock.

The shape follows `websockets`' Protocol and `h11`'s state table (ideas, not code):

- `receive_data(data, now)` feeds what the transport read; `events_received()` returns what it meant
  (hub messages for the application plus the connection events below); `data_to_send()` returns the
  encoded messages to write, one per item, in order. The caller owns the socket and the clock: every
  method that needs the time takes `now` (any monotonic seconds), and `next_deadline()` /
  `on_timer(now)` expose keepalive, peer timeout, handshake timeout, Ack and resume-window deadlines
  as data.
- Everything that moves the lifecycle state lives in `TRANSITIONS` below and nowhere else: a
  (state, trigger) pair missing from the table raises `StateError`, the one error type for a use of
  the connection its state does not allow.
- Handshake (client writes the request and reads the response; server reads the request, picks the
  protocol and answers), keepalive Pings only when nothing was written for `keepalive_interval`, the
  peer timeout (any received bytes reset it), Close with error and allowReconnect both ways.
- Stateful reconnect (MessageBuffer semantics of the official client and ASP.NET Core): trackable
  messages (types 1-5) are numbered both ways; sent ones stay in a replay buffer bounded in bytes
  until the peer Acks them; received ones are Acked `ack_interval` after the first unacked one;
  after a transport loss (`connection_lost(resumable=True)`) the connection waits detached;
  `resume(now)` on a new transport writes Sequence(first unacked) + the replay, and drops everything
  the peer sends before its Sequence and every replayed message already seen (duplicates).

Role differences (all in this file): a client that sees a protocol violation or a peer timeout is
closed at once (its driver reconnects); a server answers both with a Close carrying the error, as
ASP.NET Core does. A full replay buffer makes a client's `send_blocked(seq)` true (its driver waits
for Acks, like MessageBuffer.js); a server closes the connection with allowReconnect instead.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias

from consumer.signalr import protocol as proto

__all__ = [
    "TRANSITIONS",
    "CloseReceived",
    "CoreEvent",
    "CoreOptions",
    "Event",
    "HandshakeCompleted",
    "HandshakeFailed",
    "HubCore",
    "PeerTimedOut",
    "ProtocolViolation",
    "ResumeExpired",
    "Role",
    "State",
    "StateError",
    "Trigger",
    "tracked",
]


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class State(enum.StrEnum):
    HANDSHAKING = "handshaking"  # transport open, handshake not finished
    OPEN = "open"  # messages flow
    DETACHED = "detached"  # stateful: the transport was lost; waiting for resume() (or give_up/expiry)
    CLOSING = "closing"  # we wrote Close; waiting for the transport to end
    CLOSED = "closed"  # the logical connection is over (data_to_send may still hold the last bytes)


class Trigger(enum.Enum):
    HANDSHAKE_DONE = "handshake_done"
    HANDSHAKE_FAILED = "handshake_failed"
    SEND_CLOSE = "send_close"
    RECEIVE_CLOSE = "receive_close"
    VIOLATION = "violation"  # malformed input, or a Sequence beyond what was received
    PEER_TIMEOUT = "peer_timeout"
    TRANSPORT_LOST = "transport_lost"
    TRANSPORT_LOST_RESUMABLE = "transport_lost_resumable"
    RESUME = "resume"
    GIVE_UP = "give_up"  # the client's resume attempt failed, or the server's window elapsed


_H, _O, _D, _C, _X = State.HANDSHAKING, State.OPEN, State.DETACHED, State.CLOSING, State.CLOSED

# Every lifecycle transition, for both roles. Role-specific reactions (a server answers a violation
# or a timeout with Close) are made of these triggers; nothing else assigns the state.
TRANSITIONS: Final[Mapping[tuple[State, Trigger], State]] = {
    (_H, Trigger.HANDSHAKE_DONE): _O,
    (_H, Trigger.HANDSHAKE_FAILED): _X,
    (_H, Trigger.PEER_TIMEOUT): _X,  # the handshake timeout
    (_H, Trigger.TRANSPORT_LOST): _X,
    (_O, Trigger.SEND_CLOSE): _C,
    (_O, Trigger.RECEIVE_CLOSE): _X,
    (_O, Trigger.VIOLATION): _X,
    (_O, Trigger.PEER_TIMEOUT): _X,
    (_O, Trigger.TRANSPORT_LOST): _X,
    (_O, Trigger.TRANSPORT_LOST_RESUMABLE): _D,
    (_D, Trigger.RESUME): _O,
    (_D, Trigger.GIVE_UP): _X,
    (_D, Trigger.SEND_CLOSE): _X,  # closing a detached connection: nothing to write, it just ends
    (_C, Trigger.TRANSPORT_LOST): _X,  # a closing side reads no more: only the transport's end is left
    (_X, Trigger.TRANSPORT_LOST): _X,  # drivers report the end of every transport, also after Close
}


class StateError(Exception):
    """The connection's state does not allow this (an illegal transition or a call out of place)."""

    def __init__(self, state: State, action: str) -> None:
        super().__init__(f"cannot {action} in state {state.value!r}")
        self.state = state
        self.action = action


# --- events -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    protocol: str
    version: int
    stateful: bool  # stateful reconnect is on for this connection


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    """Client: the server's error, an unparsable response or the timeout. Server: the error it sent
    back (empty `error` when the request never arrived in time; then nothing is written)."""

    error: str
    timed_out: bool = False


@dataclass(frozen=True, slots=True)
class CloseReceived:
    error: str | None
    allow_reconnect: bool


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    error: str


@dataclass(frozen=True, slots=True)
class PeerTimedOut:
    timeout: float  # seconds without a byte from the peer


@dataclass(frozen=True, slots=True)
class ResumeExpired:
    """Server: the reconnect window elapsed while detached; the connection is closed."""


CoreEvent: TypeAlias = HandshakeCompleted | HandshakeFailed | CloseReceived | ProtocolViolation | PeerTimedOut
Event: TypeAlias = proto.HubMessage | CoreEvent | ResumeExpired

_TRACKABLE: Final = frozenset(
    {
        proto.Invocation,
        proto.StreamItem,
        proto.Completion,
        proto.StreamInvocation,
        proto.CancelInvocation,
    }
)


def tracked(message: proto.HubMessage) -> bool:
    """Whether stateful reconnect numbers, buffers and replays this message (types 1-5)."""
    return message.__class__ in _TRACKABLE


_MAX_HANDSHAKE_VERSION: Final = 2
SEQUENCE_TOO_FAR: Final = "Sequence ID greater than amount of messages we've received."
SERVER_TIMEOUT_TEXT: Final = "Server timeout elapsed without receiving a message from the client."
REPLAY_OVERFLOW_TEXT: Final = "Stateful reconnect buffer overflow."


@dataclass(frozen=True, slots=True)
class CoreOptions:
    """Timing and size settings (seconds and bytes). `None` switches a deadline off."""

    keepalive_interval: float | None = 15.0
    timeout: float | None = 30.0  # peer timeout: client = serverTimeout, server = clientTimeout
    handshake_timeout: float | None = 15.0
    ack_interval: float = 1.0
    replay_limit: int = 100_000  # bytes of sent, unacknowledged trackable messages
    reconnect_window: float | None = None  # server: how long a detached connection may wait
    max_message_size: int = proto.DEFAULT_MAX_MESSAGE_SIZE
    max_handshake_size: int = proto.DEFAULT_MAX_HANDSHAKE_SIZE


class HubCore:
    """One logical SignalR connection (possibly over several transports when stateful)."""

    def __init__(
        self,
        role: Role,
        now: float,
        *,
        protocol: proto.HubProtocol | None = None,
        protocols: Iterable[proto.HubProtocol] = (),
        stateful: bool = False,
        options: CoreOptions | None = None,
    ) -> None:
        """Client: `protocol` is the one to request and `stateful` whether negotiate granted stateful
        reconnect (handshake version 2); the request is queued at once. Server: `protocols` are the
        ones offered and `stateful` whether stateful reconnect is allowed for this connection."""
        self.role = role
        self.options = opts = options if options is not None else CoreOptions()
        self._state = State.HANDSHAKING
        self._protocols = {p.name: p for p in protocols}
        self.protocol: proto.HubProtocol | None = None
        self.stateful = False
        self._stateful_allowed = stateful
        self._reader: proto.MessageReader | None = None
        self._handshake_buffer = b""
        self._events: list[Event] = []
        self._out: list[bytes] = []
        self._last_send = now
        self._last_receive = now
        self._handshake_deadline = None if opts.handshake_timeout is None else now + opts.handshake_timeout
        # stateful reconnect: send side (replay buffer) and receive side (dedupe, Acks)
        self._sent_seq = 0
        self._replay: deque[tuple[int, bytes]] = deque()
        self.replay_bytes = 0
        self.acked_through = 0
        self._next_receiving = 1
        self._latest_received = 0
        self._wait_for_sequence = False
        self._ack_due: float | None = None
        self._detached_at = 0.0
        self.pings_sent = 0
        self.messages_received = 0  # every hub message decoded, Pings and Acks included
        if role is Role.CLIENT:
            if protocol is None:
                raise ValueError("a client core needs the protocol to request")
            self.protocol = protocol
            self.stateful = stateful
            version = _MAX_HANDSHAKE_VERSION if stateful else 1
            self._out.append(proto.encode_handshake_request(proto.HandshakeRequest(protocol.name, version)))

    # --- state ------------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    def _apply(self, trigger: Trigger) -> None:
        try:
            self._state = TRANSITIONS[self._state, trigger]
        except KeyError:
            raise StateError(self._state, trigger.value) from None

    # --- the three sans-I/O calls ---------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview | str, now: float) -> None:
        """Feed bytes (or a text frame) read from the transport. Bytes after the end are ignored."""
        state = self._state
        if state is State.OPEN:
            self._last_receive = now
            try:
                messages = self._reader.feed(data)  # type: ignore[union-attr,arg-type]  # set with OPEN; readers take any buffer
            except proto.ProtocolError as exc:
                self._violation(str(exc))
                return
            self.messages_received += len(messages)
            if not self.stateful:
                for message in messages:
                    if message.__class__ not in _TRACKABLE:
                        break
                else:
                    self._events.extend(messages)  # the hot path: nothing but hub messages
                    return
            self._process(messages, now)
        elif state is State.HANDSHAKING:
            self._last_receive = now
            self._receive_handshake(data, now)
        elif state is State.DETACHED:
            raise StateError(state, "receive data")
        # CLOSING / CLOSED: the connection is over for the reader; late bytes mean nothing

    def events_received(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    @property
    def pending_messages(self) -> int:
        """Messages queued by `send`/timers and not yet taken by `data_to_send` (for outbound bounds)."""
        return len(self._out)

    # --- sending ----------------------------------------------------------------------------------

    def send(self, message: proto.HubMessage, now: float) -> int:
        """Encode and queue a message. Returns its sequence id (0 when not sequence-tracked).

        Detached (stateful): the message is kept for the replay only. A server whose replay buffer
        overflows closes the connection with allowReconnect and returns -1 (the message is dropped)."""
        return self.send_encoded(self._encoder().encode(message), message.__class__ in _TRACKABLE, now)

    def send_encoded(self, data: bytes, trackable: bool, now: float) -> int:
        """`send` for a message already encoded with this connection's protocol (broadcasts)."""
        state = self._state
        if state is not State.OPEN and not (state is State.DETACHED and trackable):
            raise StateError(state, "send")
        seq = 0
        if self.stateful and trackable:
            self._sent_seq = seq = self._sent_seq + 1
            self._replay.append((seq, data))
            self.replay_bytes += len(data)
            if self.role is Role.SERVER and self.replay_bytes > self.options.replay_limit:
                self.close(REPLAY_OVERFLOW_TEXT, allow_reconnect=True, now=now)
                return -1
        if state is State.OPEN:
            self._out.append(data)
            self._last_send = now
        return seq

    def send_blocked(self, seq: int) -> bool:
        """Client flow control: True while message `seq` is unacknowledged and the replay buffer is
        at its byte limit (the sender waits, as MessageBuffer.js does)."""
        return seq > self.acked_through and self.replay_bytes >= self.options.replay_limit

    def close(self, error: str | None = None, *, allow_reconnect: bool = False, now: float) -> None:
        """Write Close (when a transport is attached) and end the logical connection."""
        if self._state is State.OPEN:
            self._out.append(
                self._encoder().encode(proto.Close(error=error, allow_reconnect=allow_reconnect))
            )
            self._last_send = now
        self._apply(Trigger.SEND_CLOSE)

    # --- transport changes ------------------------------------------------------------------------

    def connection_lost(self, now: float, *, resumable: bool = True) -> None:
        """The transport ended. A stateful open connection detaches (unless `resumable` is False, e.g.
        after a peer timeout the driver decided on); anything else closes. Unsent bytes are dropped
        (tracked messages stay in the replay buffer)."""
        self._out.clear()
        if self._state is State.OPEN and self.stateful and resumable:
            self._apply(Trigger.TRANSPORT_LOST_RESUMABLE)
            self._detached_at = now
            self._reader = None
            return
        self._apply(Trigger.TRANSPORT_LOST)

    def resume(self, now: float) -> int:
        """A new transport for a detached connection: queue Sequence + the replay (no handshake).
        Returns how many messages are replayed."""
        self._apply(Trigger.RESUME)
        assert self.protocol is not None
        self._reader = self.protocol.reader(max_message_size=self.options.max_message_size)
        self._wait_for_sequence = True
        first = self._replay[0][0] if self._replay else self._sent_seq + 1
        self._out.append(self.protocol.encode(proto.Sequence(sequence_id=first)))
        self._out.extend(data for _, data in self._replay)
        self._last_send = self._last_receive = now
        return len(self._replay)

    def give_up(self) -> None:
        """The client's resume failed: the logical connection is over (a new one may follow)."""
        self._apply(Trigger.GIVE_UP)
        self._replay.clear()
        self.replay_bytes = 0

    # --- deadlines --------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest time `on_timer` has something to do, or None."""
        state = self._state
        opts = self.options
        candidates: list[float] = []
        if state is State.HANDSHAKING:
            if self._handshake_deadline is not None:
                candidates.append(self._handshake_deadline)
        elif state is State.OPEN:
            if opts.keepalive_interval is not None:
                candidates.append(self._last_send + opts.keepalive_interval)
            if opts.timeout is not None:
                candidates.append(self._last_receive + opts.timeout)
            if self._ack_due is not None:
                candidates.append(self._ack_due)
        elif state is State.DETACHED and opts.reconnect_window is not None:
            candidates.append(self._detached_at + opts.reconnect_window)
        return min(candidates) if candidates else None

    def on_timer(self, now: float) -> None:
        """Do whatever is due at `now`: handshake or peer timeout, Ack, keepalive Ping, expiry."""
        state = self._state
        opts = self.options
        if state is State.HANDSHAKING:
            deadline = self._handshake_deadline
            if deadline is not None and now >= deadline:
                self._apply(Trigger.PEER_TIMEOUT)
                error = f"no handshake response within {opts.handshake_timeout} s"
                self._events.append(
                    HandshakeFailed("" if self.role is Role.SERVER else error, timed_out=True)
                )
        elif state is State.OPEN:
            if opts.timeout is not None and now >= self._last_receive + opts.timeout:
                self._events.append(PeerTimedOut(opts.timeout))
                if self.role is Role.SERVER:
                    self.close(SERVER_TIMEOUT_TEXT, now=now)
                else:
                    self._apply(Trigger.PEER_TIMEOUT)
                return
            if self._ack_due is not None and now >= self._ack_due:
                self._ack_due = None
                self._out.append(self._encoder().encode(proto.Ack(sequence_id=self._latest_received)))
                self._last_send = now
            if opts.keepalive_interval is not None and now >= self._last_send + opts.keepalive_interval:
                self._out.append(self._encoder().encode(proto.Ping()))
                self._last_send = now
                self.pings_sent += 1
        elif state is State.DETACHED:
            window = opts.reconnect_window
            if window is not None and now >= self._detached_at + window:
                self._apply(Trigger.GIVE_UP)
                self._events.append(ResumeExpired())

    # --- internals --------------------------------------------------------------------------------

    def _encoder(self) -> proto.HubProtocol:
        if self.protocol is None:
            raise StateError(self._state, "encode before the handshake chose a protocol")
        return self.protocol

    def _violation(self, error: str, close_text: str | None = None) -> None:
        self._events.append(ProtocolViolation(error))
        if self.role is Role.SERVER:
            text = close_text or f"Connection closed with an error. InvalidDataException: {error}"
            self.close(text, now=self._last_receive)
        else:
            self._apply(Trigger.VIOLATION)

    def _receive_handshake(self, data: bytes | bytearray | memoryview | str, now: float) -> None:
        chunk = data.encode() if isinstance(data, str) else bytes(data)
        buffer = self._handshake_buffer + chunk
        limit = self.options.max_handshake_size
        try:
            if self.role is Role.CLIENT:
                response, rest = proto.parse_handshake_response(buffer, max_size=limit)
                parsed = response is not None
            else:
                request, rest = proto.parse_handshake_request(buffer, max_size=limit)
                parsed = request is not None
        except proto.ProtocolError as exc:
            self._handshake_buffer = b""
            self._fail_handshake(
                f"Error parsing handshake response: {exc}"
                if self.role is Role.CLIENT
                else f"Handshake was canceled or invalid: {exc}"
            )
            return
        if not parsed:
            self._handshake_buffer = rest
            return
        self._handshake_buffer = b""
        if self.role is Role.CLIENT:
            assert response is not None
            if response.error:
                self._fail_handshake(f"Server returned handshake error: {response.error}")
                return
            version = _MAX_HANDSHAKE_VERSION if self.stateful else 1
        else:
            assert request is not None
            chosen = self._protocols.get(request.protocol)
            if chosen is None:
                self._fail_handshake(f"The protocol '{request.protocol}' is not supported.")
                return
            if not 0 <= request.version <= _MAX_HANDSHAKE_VERSION:
                version_text = f"version {request.version} of the '{request.protocol}' protocol"
                self._fail_handshake(f"The server does not support {version_text}.")
                return
            self.protocol = chosen
            version = request.version
            self.stateful = self._stateful_allowed and version >= _MAX_HANDSHAKE_VERSION
            self._out.append(proto.encode_handshake_response(proto.HandshakeResponse()))
            self._last_send = now
        self._apply(Trigger.HANDSHAKE_DONE)
        assert self.protocol is not None
        self._reader = self.protocol.reader(max_message_size=self.options.max_message_size)
        self._events.append(HandshakeCompleted(self.protocol.name, version, self.stateful))
        if rest:
            self.receive_data(rest, now)

    def _fail_handshake(self, error: str) -> None:
        if self.role is Role.SERVER:
            self._out.append(proto.encode_handshake_response(proto.HandshakeResponse(error=error)))
        self._apply(Trigger.HANDSHAKE_FAILED)
        self._events.append(HandshakeFailed(error))

    def _process(self, messages: list[proto.HubMessage], now: float) -> None:
        """The general case: sequence tracking, Acks, Sequence, Close; hub messages pass through."""
        events = self._events
        stateful = self.stateful
        for message in messages:
            cls = message.__class__
            if stateful:
                if self._wait_for_sequence:
                    if cls is not proto.Sequence:
                        continue  # sent before the peer learnt where to resume: replayed after it
                    self._wait_for_sequence = False
                if cls in _TRACKABLE and not self._fresh(now):
                    continue
            if cls in _TRACKABLE:
                events.append(message)
            elif isinstance(message, proto.Ack):
                if stateful:
                    self._acked(message.sequence_id)
            elif isinstance(message, proto.Sequence):
                if stateful and not self._reset_sequence(message.sequence_id):
                    return
            elif isinstance(message, proto.Close):
                self._apply(Trigger.RECEIVE_CLOSE)
                events.append(CloseReceived(message.error, message.allow_reconnect))
                return  # nothing after a Close counts

    def _fresh(self, now: float) -> bool:
        """Number a received trackable message; False for a duplicate of one already seen."""
        current = self._next_receiving
        self._next_receiving = current + 1
        if current <= self._latest_received:
            if current == self._latest_received and self._ack_due is None:
                self._ack_due = now + self.options.ack_interval  # re-ack: our last Ack may be lost
            return False
        self._latest_received = current
        if self._ack_due is None:
            self._ack_due = now + self.options.ack_interval
        return True

    def _reset_sequence(self, sequence_id: int) -> bool:
        if sequence_id > self._next_receiving:
            self._violation(SEQUENCE_TOO_FAR, SEQUENCE_TOO_FAR)
            return False
        self._next_receiving = sequence_id
        return True

    def _acked(self, sequence_id: int) -> None:
        replay = self._replay
        while replay and replay[0][0] <= sequence_id:
            self.replay_bytes -= len(replay.popleft()[1])
        if sequence_id > self.acked_through:
            self.acked_through = min(sequence_id, self._sent_seq)
