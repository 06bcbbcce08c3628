"""Stateful reconnect in the sans-I/O core, bytes only: numbering, Acks, replay, dedupe, flow control;
and the lifecycle table: every legal transition reached through the public calls, every other refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from consumer.signalr import core as c
from consumer.signalr import protocol as p

JSON = p.JsonHubProtocol()
MSGPACK = p.MessagePackHubProtocol()


def inv(n: int) -> p.Invocation:
    return p.Invocation(target="T", arguments=[n])


def pump(src: c.HubCore, dst: c.HubCore, now: float = 0.0) -> None:
    for data in src.data_to_send():
        dst.receive_data(data, now)


def pair(
    *, stateful: bool = True, protocol: p.HubProtocol = JSON, **options: Any
) -> tuple[c.HubCore, c.HubCore]:
    opts = c.CoreOptions(keepalive_interval=None, timeout=None, **options)
    cl = c.HubCore(c.Role.CLIENT, 0.0, protocol=protocol, stateful=stateful, options=opts)
    sv = c.HubCore(c.Role.SERVER, 0.0, protocols=[JSON, MSGPACK], stateful=True, options=opts)
    pump(cl, sv)
    pump(sv, cl)
    assert cl.events_received() == [c.HandshakeCompleted(protocol.name, 2 if stateful else 1, stateful)]
    assert sv.events_received() == [c.HandshakeCompleted(protocol.name, 2 if stateful else 1, stateful)]
    return cl, sv


def drop(cl: c.HubCore, sv: c.HubCore, now: float = 1.0) -> None:
    """The transport dies: whatever either side had not written yet is lost with it."""
    cl.connection_lost(now)
    sv.connection_lost(now)
    assert cl.state is sv.state is c.State.DETACHED


@pytest.mark.parametrize("protocol", [JSON, MSGPACK], ids=["json", "messagepack"])
def test_sequence_ids_and_ack_trimming(protocol: p.HubProtocol) -> None:
    cl, sv = pair(protocol=protocol)
    assert [cl.send(inv(n), 0.0) for n in (1, 2, 3)] == [1, 2, 3]
    assert cl.send(p.Ping(), 0.0) == 0  # not trackable
    sizes = [len(protocol.encode(inv(n))) for n in (1, 2, 3)]
    assert cl.replay_bytes == sum(sizes)
    pump(cl, sv)
    assert sv.events_received() == [inv(1), inv(2), inv(3)]
    sv.receive_data(protocol.encode(p.Ack(sequence_id=2)), 0.0)  # loop our own Ack bytes through
    cl.receive_data(protocol.encode(p.Ack(sequence_id=2)), 0.0)
    assert cl.replay_bytes == sizes[2] and cl.acked_through == 2
    cl.receive_data(protocol.encode(p.Ack(sequence_id=3)), 0.0)
    assert cl.replay_bytes == 0 and cl.acked_through == 3


def test_server_acks_after_the_interval_and_the_client_trims() -> None:
    cl, sv = pair(ack_interval=0.5)
    for n in range(4):
        cl.send(inv(n), 1.0)
    pump(cl, sv, 1.0)
    assert sv.next_deadline() == 1.5
    sv.on_timer(1.5)
    pump(sv, cl, 1.5)
    assert cl.replay_bytes == 0 and cl.acked_through == 4


def test_replay_after_a_drop_without_duplicates() -> None:
    cl, sv = pair()
    cl.send(inv(1), 0.0)
    cl.send(inv(2), 0.0)
    drop(cl, sv)  # neither message reached the server
    assert cl.send(inv(3), 1.5) == 3  # detached: kept for the replay only
    assert cl.data_to_send() == []
    assert cl.resume(2.0) == 3
    assert sv.resume(2.0) == 0
    out = cl.data_to_send()
    assert out == [JSON.encode(p.Sequence(sequence_id=1)), *(JSON.encode(inv(n)) for n in (1, 2, 3))]
    for data in out:
        sv.receive_data(data, 2.0)
    assert sv.events_received() == [inv(1), inv(2), inv(3)]
    assert sv.data_to_send() == [JSON.encode(p.Sequence(sequence_id=1))]


def test_replay_after_a_drop_with_duplicates_dropped() -> None:
    cl, sv = pair(ack_interval=10.0)
    for n in (1, 2, 3):
        cl.send(inv(n), 0.0)
    pump(cl, sv)  # the server saw all three, but its Ack never left
    assert sv.events_received() == [inv(1), inv(2), inv(3)]
    drop(cl, sv)
    cl.send(inv(4), 1.5)
    cl.resume(2.0)
    sv.resume(2.0)
    pump(cl, sv, 2.0)
    assert sv.events_received() == [inv(4)]  # 1..3 replayed and recognised as duplicates
    pump(sv, cl, 2.0)
    assert cl.events_received() == []
    sv.on_timer(10.0)  # the pending Ack (due since the first message) now covers all four
    pump(sv, cl, 10.0)
    assert cl.replay_bytes == 0 and cl.acked_through == 4


def test_partial_ack_before_the_drop_limits_the_replay() -> None:
    cl, sv = pair()
    for n in (1, 2, 3):
        cl.send(inv(n), 0.0)
    pump(cl, sv)
    cl.receive_data(JSON.encode(p.Ack(sequence_id=2)), 0.5)
    drop(cl, sv)
    cl.resume(2.0)
    assert cl.data_to_send() == [JSON.encode(p.Sequence(sequence_id=3)), JSON.encode(inv(3))]


def test_server_to_client_replay_and_dedupe() -> None:
    cl, sv = pair(ack_interval=10.0)
    for n in (1, 2):
        sv.send(inv(n), 0.0)
    pump(sv, cl)
    assert cl.events_received() == [inv(1), inv(2)]
    drop(cl, sv)
    sv.send(inv(3), 1.0)
    cl.resume(2.0)
    sv.resume(2.0)
    pump(sv, cl, 2.0)
    assert cl.events_received() == [inv(3)]


def test_messages_before_the_peers_sequence_are_dropped() -> None:
    cl, sv = pair()
    drop(cl, sv)
    cl.resume(2.0)
    cl.receive_data(JSON.encode(inv(1)) + JSON.encode(p.Ack(sequence_id=1)), 2.0)
    assert cl.events_received() == []
    cl.receive_data(JSON.encode(p.Sequence(sequence_id=1)) + JSON.encode(inv(1)), 2.0)
    assert cl.events_received() == [inv(1)]


def test_sequence_beyond_what_was_received() -> None:
    cl, sv = pair()
    drop(cl, sv)
    cl.resume(2.0)
    cl.receive_data(JSON.encode(p.Sequence(sequence_id=5)), 2.0)
    assert cl.events_received() == [c.ProtocolViolation(c.SEQUENCE_TOO_FAR)]
    assert cl.state is c.State.CLOSED
    sv.resume(2.0)
    sv.data_to_send()
    sv.receive_data(JSON.encode(p.Sequence(sequence_id=5)), 2.0)
    assert sv.events_received() == [c.ProtocolViolation(c.SEQUENCE_TOO_FAR)]
    assert sv.data_to_send() == [JSON.encode(p.Close(error=c.SEQUENCE_TOO_FAR))]
    assert sv.state is c.State.CLOSING


def test_client_flow_control_waits_for_acks_at_the_byte_limit() -> None:
    size = len(JSON.encode(inv(1)))
    cl, _ = pair(replay_limit=2 * size)
    first = cl.send(inv(1), 0.0)
    assert not cl.send_blocked(first)
    second = cl.send(inv(2), 0.0)
    assert cl.send_blocked(second) and cl.send_blocked(first)
    cl.receive_data(JSON.encode(p.Ack(sequence_id=1)), 0.1)
    assert not cl.send_blocked(second) and not cl.send_blocked(first)


def test_server_replay_overflow_closes_with_allow_reconnect() -> None:
    size = len(JSON.encode(inv(1)))
    _, sv = pair(replay_limit=size)
    assert sv.send(inv(1), 0.0) == 1
    assert sv.send(inv(2), 0.0) == -1
    assert sv.data_to_send() == [
        JSON.encode(inv(1)),
        JSON.encode(p.Close(error=c.REPLAY_OVERFLOW_TEXT, allow_reconnect=True)),
    ]
    assert sv.state is c.State.CLOSING


def test_give_up_clears_the_replay() -> None:
    cl, sv = pair()
    cl.send(inv(1), 0.0)
    drop(cl, sv)
    cl.give_up()
    assert cl.state is c.State.CLOSED and cl.replay_bytes == 0
    with pytest.raises(c.StateError):
        cl.resume(3.0)


def test_unresumable_loss_of_a_stateful_connection_closes() -> None:
    cl, _ = pair()
    cl.connection_lost(1.0, resumable=False)
    assert cl.state is c.State.CLOSED


def test_without_stateful_reconnect_a_loss_closes_and_ack_sequence_are_ignored() -> None:
    cl, _ = pair(stateful=False)
    cl.receive_data(JSON.encode(p.Sequence(sequence_id=9)) + JSON.encode(p.Ack(sequence_id=3)), 0.0)
    assert cl.events_received() == [] and cl.state is c.State.OPEN
    assert cl.send(inv(1), 0.0) == 0 and cl.replay_bytes == 0
    cl.connection_lost(1.0)
    assert cl.state is c.State.CLOSED


# --- the lifecycle table -------------------------------------------------------------------------------

S, T = c.State, c.Trigger
EXPECTED_TABLE = {
    (S.HANDSHAKING, T.HANDSHAKE_DONE): S.OPEN,
    (S.HANDSHAKING, T.HANDSHAKE_FAILED): S.CLOSED,
    (S.HANDSHAKING, T.PEER_TIMEOUT): S.CLOSED,
    (S.HANDSHAKING, T.TRANSPORT_LOST): S.CLOSED,
    (S.OPEN, T.SEND_CLOSE): S.CLOSING,
    (S.OPEN, T.RECEIVE_CLOSE): S.CLOSED,
    (S.OPEN, T.VIOLATION): S.CLOSED,
    (S.OPEN, T.PEER_TIMEOUT): S.CLOSED,
    (S.OPEN, T.TRANSPORT_LOST): S.CLOSED,
    (S.OPEN, T.TRANSPORT_LOST_RESUMABLE): S.DETACHED,
    (S.DETACHED, T.RESUME): S.OPEN,
    (S.DETACHED, T.GIVE_UP): S.CLOSED,
    (S.DETACHED, T.SEND_CLOSE): S.CLOSED,
    (S.CLOSING, T.TRANSPORT_LOST): S.CLOSED,
    (S.CLOSED, T.TRANSPORT_LOST): S.CLOSED,
}


def test_the_table_is_the_documented_one() -> None:
    assert dict(c.TRANSITIONS) == EXPECTED_TABLE


def in_state(state: c.State) -> c.HubCore:
    """A stateful client core brought to `state` through public calls only."""
    cl = c.HubCore(c.Role.CLIENT, 0.0, protocol=JSON, stateful=True)
    if state is S.HANDSHAKING:
        return cl
    cl.receive_data(b"{}\x1e", 0.0)
    if state is S.DETACHED:
        cl.connection_lost(1.0)
    elif state is S.CLOSING:
        cl.close(now=1.0)
    elif state is S.CLOSED:
        cl.connection_lost(1.0, resumable=False)
    assert cl.state is state
    return cl


# Each trigger through the public call that fires it (from any state).
FIRE: dict[c.Trigger, Callable[[c.HubCore], None]] = {
    T.HANDSHAKE_DONE: lambda x: x.receive_data(b"{}\x1e", 2.0),
    T.HANDSHAKE_FAILED: lambda x: x.receive_data(b'{"error":"no"}\x1e', 2.0),
    T.SEND_CLOSE: lambda x: x.close(now=2.0),
    T.RECEIVE_CLOSE: lambda x: x.receive_data(JSON.encode(p.Close()), 2.0),
    T.VIOLATION: lambda x: x.receive_data(b"[\x1e", 2.0),
    T.PEER_TIMEOUT: lambda x: x.on_timer(1e6),
    T.TRANSPORT_LOST: lambda x: x.connection_lost(2.0, resumable=False),
    T.TRANSPORT_LOST_RESUMABLE: lambda x: x.connection_lost(2.0),
    T.RESUME: lambda x: x.resume(2.0),
    T.GIVE_UP: lambda x: x.give_up(),
}

# Calls whose trigger cannot apply in a state are not refused there but mean something else (or
# nothing): bytes go to the handshake parser / the message reader / nowhere, and a lost transport
# or a timer is never an error. These (state, trigger) pairs are checked for that other meaning.
OTHER_MEANING = {
    (S.OPEN, T.HANDSHAKE_DONE): S.CLOSED,  # "{}" is not a hub message: a violation on an open reader
    (S.OPEN, T.HANDSHAKE_FAILED): S.CLOSED,  # same: an object without a type
    (S.HANDSHAKING, T.RECEIVE_CLOSE): S.CLOSED,  # a hub message where the response belongs
    (S.HANDSHAKING, T.VIOLATION): S.CLOSED,  # unparsable handshake response
    (S.HANDSHAKING, T.TRANSPORT_LOST_RESUMABLE): S.CLOSED,
    (S.CLOSING, T.TRANSPORT_LOST_RESUMABLE): S.CLOSED,
    (S.CLOSED, T.TRANSPORT_LOST_RESUMABLE): S.CLOSED,
    (S.CLOSING, T.PEER_TIMEOUT): S.CLOSING,  # no deadlines while closing
    (S.CLOSED, T.PEER_TIMEOUT): S.CLOSED,
    (S.DETACHED, T.PEER_TIMEOUT): S.DETACHED,  # a client has no resume window
    (S.CLOSING, T.HANDSHAKE_DONE): S.CLOSING,  # bytes after the end are ignored
    (S.CLOSING, T.HANDSHAKE_FAILED): S.CLOSING,
    (S.CLOSING, T.RECEIVE_CLOSE): S.CLOSING,
    (S.CLOSING, T.VIOLATION): S.CLOSING,
    (S.CLOSED, T.HANDSHAKE_DONE): S.CLOSED,
    (S.CLOSED, T.HANDSHAKE_FAILED): S.CLOSED,
    (S.CLOSED, T.RECEIVE_CLOSE): S.CLOSED,
    (S.CLOSED, T.VIOLATION): S.CLOSED,
}


@pytest.mark.parametrize("state", list(S), ids=str)
@pytest.mark.parametrize("trigger", list(T), ids=lambda t: t.value)
def test_every_transition_legal_or_refused(state: c.State, trigger: c.Trigger) -> None:
    core = in_state(state)
    if (state, trigger) in EXPECTED_TABLE:
        FIRE[trigger](core)
        assert core.state is EXPECTED_TABLE[state, trigger]
    elif (state, trigger) in OTHER_MEANING:
        FIRE[trigger](core)
        assert core.state is OTHER_MEANING[state, trigger]
    else:
        with pytest.raises(c.StateError):
            FIRE[trigger](core)
        assert core.state is state  # a refused call changes nothing


@pytest.mark.parametrize("state", [S.HANDSHAKING, S.CLOSING, S.CLOSED])
def test_send_is_refused_without_an_open_connection(state: c.State) -> None:
    core = in_state(state)
    with pytest.raises(c.StateError, match="cannot send"):
        core.send(inv(1), 2.0)


def test_detached_connection_takes_only_trackable_sends_and_no_bytes() -> None:
    core = in_state(S.DETACHED)
    assert core.send(inv(1), 2.0) == 1
    with pytest.raises(c.StateError):
        core.send(p.Ping(), 2.0)
    with pytest.raises(c.StateError):
        core.receive_data(b"{}\x1e", 2.0)
