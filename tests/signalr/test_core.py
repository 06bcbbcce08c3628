"""The sans-I/O connection core, tested with bytes alone: handshakes, messages, Close, deadlines."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.signalr import core as c
from consumer.signalr import protocol as p

JSON = p.JsonHubProtocol()
MSGPACK = p.MessagePackHubProtocol()
RS = b"\x1e"


def client(*, stateful: bool = False, protocol: p.HubProtocol = JSON, **options: Any) -> c.HubCore:
    return c.HubCore(
        c.Role.CLIENT, 0.0, protocol=protocol, stateful=stateful, options=c.CoreOptions(**options)
    )


def server(*, stateful: bool = True, **options: Any) -> c.HubCore:
    return c.HubCore(
        c.Role.SERVER, 0.0, protocols=[JSON, MSGPACK], stateful=stateful, options=c.CoreOptions(**options)
    )


def open_client(**kwargs: Any) -> c.HubCore:
    conn = client(**kwargs)
    conn.data_to_send()
    conn.receive_data(b"{}" + RS, 0.0)
    assert conn.events_received() == [
        c.HandshakeCompleted("json", 2 if kwargs.get("stateful") else 1, bool(kwargs.get("stateful")))
    ]
    return conn


def open_server(request: bytes = b'{"protocol":"json","version":1}' + RS, **kwargs: Any) -> c.HubCore:
    conn = server(**kwargs)
    conn.receive_data(request, 0.0)
    assert isinstance(conn.events_received()[0], c.HandshakeCompleted)
    assert conn.data_to_send() == [b"{}" + RS]
    return conn


def inv(n: int) -> p.Invocation:
    return p.Invocation(target="T", arguments=[n])


# --- client handshake --------------------------------------------------------------------------------


def test_client_queues_its_handshake_request_at_once() -> None:
    assert client().data_to_send() == [b'{"protocol":"json","version":1}' + RS]
    assert client(stateful=True, protocol=MSGPACK).data_to_send() == [
        b'{"protocol":"messagepack","version":2}' + RS
    ]
    assert client().state is c.State.HANDSHAKING


def test_client_handshake_success_in_pieces() -> None:
    conn = client()
    conn.receive_data(b"{", 0.0)
    assert conn.events_received() == [] and conn.state is c.State.HANDSHAKING
    conn.receive_data(b"}" + RS, 0.0)
    assert conn.events_received() == [c.HandshakeCompleted("json", 1, False)]
    assert conn.state is c.State.OPEN


def test_client_handshake_with_messages_behind_it_in_the_same_frame() -> None:
    conn = client()
    conn.receive_data(b"{}" + RS + JSON.encode(inv(1)) + JSON.encode(inv(2)), 0.0)
    assert conn.events_received() == [c.HandshakeCompleted("json", 1, False), inv(1), inv(2)]


def test_client_handshake_messagepack_then_binary_frames() -> None:
    conn = client(protocol=MSGPACK)
    conn.data_to_send()
    conn.receive_data(b"{}" + RS + MSGPACK.encode(inv(7)), 0.0)
    assert conn.events_received() == [c.HandshakeCompleted("messagepack", 1, False), inv(7)]


def test_client_handshake_error_from_the_server() -> None:
    conn = client()
    conn.receive_data(b'{"error":"nope"}' + RS, 0.0)
    assert conn.events_received() == [c.HandshakeFailed("Server returned handshake error: nope")]
    assert conn.state is c.State.CLOSED
    assert conn.data_to_send() == [b'{"protocol":"json","version":1}' + RS]  # nothing else written


@pytest.mark.parametrize(
    "response",
    [b"not json" + RS, b'{"type":1,"target":"x","arguments":[]}' + RS, b'{"error":5}' + RS],
    ids=["garbage", "hub-message", "bad-error-type"],
)
def test_client_handshake_unparsable_response(response: bytes) -> None:
    conn = client()
    conn.receive_data(response, 0.0)
    [event] = conn.events_received()
    assert isinstance(event, c.HandshakeFailed) and not event.timed_out
    assert event.error.startswith("Error parsing handshake response: ")
    assert conn.state is c.State.CLOSED


def test_client_handshake_response_too_large() -> None:
    conn = client(max_handshake_size=16)
    conn.receive_data(b"{" + b" " * 40, 0.0)
    [event] = conn.events_received()
    assert isinstance(event, c.HandshakeFailed) and "exceeds 16 bytes" in event.error
    assert conn.state is c.State.CLOSED


def test_client_handshake_timeout_is_a_deadline() -> None:
    conn = client(handshake_timeout=5.0)
    assert conn.next_deadline() == 5.0
    conn.on_timer(4.999)
    assert conn.events_received() == [] and conn.state is c.State.HANDSHAKING
    conn.on_timer(5.0)
    assert conn.events_received() == [c.HandshakeFailed("no handshake response within 5.0 s", timed_out=True)]
    assert conn.state is c.State.CLOSED and conn.next_deadline() is None


def test_client_malformed_data_right_after_the_handshake() -> None:
    conn = client()
    conn.receive_data(b"{}" + RS + b"{oops" + RS, 0.0)
    events = conn.events_received()
    assert events[0] == c.HandshakeCompleted("json", 1, False)
    assert isinstance(events[1], c.ProtocolViolation)
    assert conn.state is c.State.CLOSED


def test_client_transport_lost_during_handshake() -> None:
    conn = client()
    conn.connection_lost(1.0)
    assert conn.state is c.State.CLOSED


# --- server handshake --------------------------------------------------------------------------------


def test_server_handshake_json_v1() -> None:
    conn = server(stateful=True)
    conn.receive_data(b'{"protocol":"json","version":1}' + RS, 0.0)
    assert conn.events_received() == [c.HandshakeCompleted("json", 1, False)]
    assert conn.data_to_send() == [b"{}" + RS]
    assert conn.protocol is JSON and conn.state is c.State.OPEN and not conn.stateful


@pytest.mark.parametrize("allowed", [True, False])
def test_server_handshake_v2_is_stateful_only_when_allowed(allowed: bool) -> None:
    conn = server(stateful=allowed)
    conn.receive_data('{"protocol":"messagepack","version":2}\x1e', 0.0)  # a text frame
    assert conn.events_received() == [c.HandshakeCompleted("messagepack", 2, allowed)]
    assert conn.stateful is allowed and conn.protocol is MSGPACK


@pytest.mark.parametrize(
    ("request_bytes", "error"),
    [
        (b'{"protocol":"xml","version":1}', "The protocol 'xml' is not supported."),
        (b'{"protocol":"json","version":3}', "The server does not support version 3 of the 'json' protocol."),
        (
            b'{"protocol":"json","version":-1}',
            "The server does not support version -1 of the 'json' protocol.",
        ),
    ],
)
def test_server_handshake_refusals_are_answered(request_bytes: bytes, error: str) -> None:
    conn = server()
    conn.receive_data(request_bytes + RS, 0.0)
    assert conn.events_received() == [c.HandshakeFailed(error)]
    assert conn.data_to_send() == [p.encode_handshake_response(p.HandshakeResponse(error=error))]
    assert conn.state is c.State.CLOSED


def test_server_handshake_malformed_request() -> None:
    conn = server()
    conn.receive_data(b'{"protocol":1}' + RS, 0.0)
    [event] = conn.events_received()
    assert isinstance(event, c.HandshakeFailed)
    assert event.error.startswith("Handshake was canceled or invalid: ")
    [answer] = conn.data_to_send()
    assert answer.startswith(b'{"error":"Handshake was canceled or invalid: ') and answer.endswith(RS)


def test_server_handshake_timeout_writes_nothing() -> None:
    conn = server(handshake_timeout=2.0)
    conn.receive_data(b'{"protocol":', 1.0)
    conn.on_timer(2.0)
    assert conn.events_received() == [c.HandshakeFailed("", timed_out=True)]
    assert conn.data_to_send() == [] and conn.state is c.State.CLOSED


def test_server_handshake_with_an_invocation_behind_it() -> None:
    conn = server()
    conn.receive_data(b'{"protocol":"json","version":1}' + RS + JSON.encode(inv(3)), 0.0)
    assert conn.events_received() == [c.HandshakeCompleted("json", 1, False), inv(3)]


# --- messages and Close ------------------------------------------------------------------------------


def test_hub_messages_pass_through_and_pings_are_consumed() -> None:
    conn = open_client()
    completion = p.Completion(invocation_id="1", result=5, has_result=True)
    conn.receive_data(JSON.encode(inv(1)) + JSON.encode(p.Ping()) + JSON.encode(completion), 1.0)
    assert conn.events_received() == [inv(1), completion]
    conn.receive_data(JSON.encode(inv(2)), 2.0)
    assert conn.events_received() == [inv(2)]


def test_client_receives_close() -> None:
    conn = open_client()
    conn.receive_data(JSON.encode(p.Close(error="bye", allow_reconnect=True)) + JSON.encode(inv(9)), 1.0)
    assert conn.events_received() == [c.CloseReceived("bye", True)]  # nothing after a Close counts
    assert conn.state is c.State.CLOSED
    conn.receive_data(JSON.encode(inv(10)), 2.0)
    assert conn.events_received() == []
    conn.connection_lost(3.0)
    assert conn.state is c.State.CLOSED


def test_client_sends_close() -> None:
    conn = open_client()
    conn.close(now=1.0)
    assert conn.data_to_send() == [b'{"type":7}' + RS]
    assert conn.state is c.State.CLOSING
    conn.receive_data(JSON.encode(inv(1)), 2.0)  # a closing side reads no more
    assert conn.events_received() == []
    conn.connection_lost(2.0)
    assert conn.state is c.State.CLOSED


def test_server_sends_close_with_error_and_allow_reconnect() -> None:
    conn = open_server(b'{"protocol":"messagepack","version":1}' + RS)
    conn.close("token expired", allow_reconnect=True, now=1.0)
    assert conn.data_to_send() == [MSGPACK.encode(p.Close(error="token expired", allow_reconnect=True))]
    assert conn.state is c.State.CLOSING


def test_server_receives_close() -> None:
    conn = open_server()
    conn.receive_data(JSON.encode(p.Close()), 1.0)
    assert conn.events_received() == [c.CloseReceived(None, False)]
    assert conn.data_to_send() == [] and conn.state is c.State.CLOSED


def test_client_protocol_violation_closes_without_writing() -> None:
    conn = open_client()
    conn.receive_data(b'{"type":1,"target":5,"arguments":[]}' + RS, 1.0)
    [event] = conn.events_received()
    assert isinstance(event, c.ProtocolViolation)
    assert conn.state is c.State.CLOSED and conn.data_to_send() == []


def test_server_protocol_violation_answers_with_close() -> None:
    conn = open_server()
    conn.receive_data(b"[1,2" + RS, 1.0)
    [event] = conn.events_received()
    assert isinstance(event, c.ProtocolViolation)
    [close_bytes] = conn.data_to_send()
    [close] = JSON.decode(close_bytes)
    assert isinstance(close, p.Close) and close.error is not None
    assert close.error.startswith("Connection closed with an error. InvalidDataException: ")
    assert conn.state is c.State.CLOSING


def test_send_encodes_in_the_chosen_protocol() -> None:
    conn = open_server(b'{"protocol":"messagepack","version":1}' + RS)
    assert conn.send(inv(4), 1.0) == 0  # not stateful: no sequence id
    assert conn.data_to_send() == [MSGPACK.encode(inv(4))]


# --- deadlines ---------------------------------------------------------------------------------------


def test_keepalive_ping_only_after_a_quiet_interval() -> None:
    conn = open_client(keepalive_interval=15.0, timeout=100.0)
    assert conn.next_deadline() == 15.0
    conn.send(inv(1), 10.0)
    conn.data_to_send()
    assert conn.next_deadline() == 25.0
    conn.on_timer(24.0)
    assert conn.data_to_send() == []
    conn.on_timer(25.0)
    assert conn.data_to_send() == [b'{"type":6}' + RS]
    assert conn.pings_sent == 1 and conn.next_deadline() == 40.0


def test_client_peer_timeout_resets_on_any_bytes() -> None:
    conn = open_client(keepalive_interval=None, timeout=30.0)
    conn.receive_data(JSON.encode(p.Ping()), 20.0)
    assert conn.next_deadline() == 50.0
    conn.on_timer(49.0)
    assert conn.events_received() == [] and conn.state is c.State.OPEN
    conn.on_timer(50.0)
    assert conn.events_received() == [c.PeerTimedOut(30.0)]
    assert conn.state is c.State.CLOSED and conn.data_to_send() == []


def test_server_peer_timeout_sends_close() -> None:
    conn = open_server(keepalive_interval=None, timeout=10.0)
    conn.on_timer(10.0)
    assert conn.events_received() == [c.PeerTimedOut(10.0)]
    assert conn.data_to_send() == [JSON.encode(p.Close(error=c.SERVER_TIMEOUT_TEXT))]
    assert conn.state is c.State.CLOSING and conn.next_deadline() is None


def test_ack_is_a_deadline_after_the_first_unacked_message() -> None:
    conn = open_client(stateful=True, keepalive_interval=None, timeout=None, ack_interval=1.0)
    assert conn.next_deadline() is None
    conn.receive_data(JSON.encode(inv(1)), 3.0)
    conn.receive_data(JSON.encode(inv(2)), 3.5)
    assert conn.events_received() == [inv(1), inv(2)]
    assert conn.next_deadline() == 4.0
    conn.on_timer(4.0)
    assert conn.data_to_send() == [JSON.encode(p.Ack(sequence_id=2))]
    assert conn.next_deadline() is None


def test_no_ack_without_stateful_reconnect() -> None:
    conn = open_client(keepalive_interval=None, timeout=None)
    conn.receive_data(JSON.encode(inv(1)), 1.0)
    assert conn.next_deadline() is None


def test_server_reconnect_window_expires() -> None:
    conn = open_server(b'{"protocol":"json","version":2}' + RS, reconnect_window=30.0)
    conn.connection_lost(5.0)
    assert conn.state is c.State.DETACHED and conn.next_deadline() == 35.0
    conn.on_timer(34.0)
    assert conn.state is c.State.DETACHED
    conn.on_timer(35.0)
    assert conn.events_received() == [c.ResumeExpired()]
    assert conn.state is c.State.CLOSED and conn.next_deadline() is None


def test_no_deadline_when_closed() -> None:
    conn = open_client()
    conn.close(now=1.0)
    conn.connection_lost(1.0)
    assert conn.next_deadline() is None
    conn.on_timer(1e9)
    assert conn.events_received() == [] and conn.data_to_send() == []  # unsent bytes died with the transport
