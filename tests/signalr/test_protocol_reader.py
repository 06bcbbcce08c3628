"""The readers' hot path: Invocations built inline, in-place parsing of buffered partial messages,
inline VarInt prefixes, cheap raw-arguments validation, and the public message Structs."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from consumer.signalr import protocol as p

RAW_PROTOCOLS = [
    p.get_protocol("json", raw_arguments=True),
    p.get_protocol("messagepack", raw_arguments=True),
]
ALL_PROTOCOLS = [
    p.get_protocol("json"),
    p.get_protocol("messagepack"),
    *RAW_PROTOCOLS,
]
ALL_IDS = ["json", "messagepack", "json-raw", "messagepack-raw"]


def _encoded_args(proto: Any, args: list[Any]) -> bytes:
    return msgspec.json.encode(args) if proto.name == "json" else msgspec.msgpack.encode(args)


@pytest.mark.parametrize("proto", RAW_PROTOCOLS, ids=["json", "messagepack"])
def test_raw_arguments_of_split_messages_stay_intact_after_later_feeds(proto: Any) -> None:
    """A message completed from the reader's buffer is decoded in place; its Raw must not change
    when the reader buffers and completes further messages afterwards."""
    argument_lists = [[i, "x" * (50 + 37 * i), {"car": str(i)}] for i in range(12)]
    stream = b"".join(
        proto.encode(p.Invocation(target="T", arguments=msgspec.Raw(_encoded_args(proto, args))))
        for args in argument_lists
    )
    reader = proto.reader()
    got: list[p.HubMessage] = []
    step = 41  # cuts land inside prefixes, envelopes and arguments
    for i in range(0, len(stream), step):
        got += reader.feed(stream[i : i + step])
    assert reader.buffered == 0
    reader.feed(stream[: len(stream) // 2])  # more buffering after the Raws were handed out
    assert [type(m) for m in got] == [p.Invocation] * len(argument_lists)
    assert [bytes(m.arguments) for m in got] == [_encoded_args(proto, a) for a in argument_lists]  # type: ignore[union-attr]


@pytest.mark.parametrize("proto", ALL_PROTOCOLS, ids=ALL_IDS)
def test_reader_returns_exactly_the_public_invocation_class(proto: Any) -> None:
    """The client's dispatch hot path selects invocations with `m.__class__ is Invocation`."""
    frame = proto.encode(p.Invocation(target="T", arguments=[1], invocation_id="5", headers={"h": "v"}))
    [message] = proto.reader().feed(frame + frame[:3])
    assert message.__class__ is p.Invocation
    assert (message.target, message.invocation_id, message.headers) == ("T", "5", {"h": "v"})
    args = message.arguments
    assert (msgspec.json.decode(args) if proto.raw_arguments and proto.name == "json" else args) in (
        [1],
        msgspec.Raw(_encoded_args(proto, [1])),
    )


@pytest.mark.parametrize("size", [1, 127, 128, 16383, 16384, 2**21 + 5])
def test_msgpack_length_prefix_widths(size: int) -> None:
    """1- and 2-byte prefixes are read inline, longer ones by decode_varint; same results either
    way, whole or cut right after every prefix byte."""
    proto = p.get_protocol("messagepack")
    filler = "y" * max(size - 40, 0)
    message = p.Invocation(target="T", arguments=[filler])
    frame = proto.encode(message)
    prefix = p.decode_varint(frame)
    assert prefix is not None
    length, width = prefix
    assert width == len(p.encode_varint(length))
    stream = frame + proto.encode(p.Ping()) + frame
    assert proto.reader(max_message_size=2**22).feed(stream) == [message, p.Ping(), message]
    for cut in range(1, width + 2):
        reader = proto.reader(max_message_size=2**22)
        assert reader.feed(stream[:cut]) == []
        assert reader.feed(stream[cut:]) == [message, p.Ping(), message]


def test_msgpack_two_byte_prefix_over_the_limit_is_rejected_before_buffering() -> None:
    reader = p.get_protocol("messagepack").reader(max_message_size=200)
    with pytest.raises(p.ProtocolError, match="maximum size"):
        reader.feed(p.encode_varint(201) + b"\x95")
    assert reader.buffered == 0


def test_msgpack_raw_arguments_accept_every_array_header() -> None:
    proto = p.get_protocol("messagepack", raw_arguments=True)
    sixteen = msgspec.msgpack.encode(list(range(16)))
    assert sixteen[0] == 0xDC  # array16
    array32 = b"\xdd\x00\x00\x00\x02\x01\x02"
    for args in (b"\x90", b"\x9f" + b"\x00" * 15, sixteen, array32):
        body = b"\x95\x01\x80\xc0\xa1T" + args
        [message] = proto.decode(p.frame_binary(body))
        assert isinstance(message, p.Invocation)
        assert bytes(message.arguments) == args
    for not_array in (b"\x80", b"\xc0", b"\x01", b"\xa1x", b"\xde\x00\x00"):
        with pytest.raises(p.ProtocolError, match="array"):
            proto.decode(p.frame_binary(b"\x95\x01\x80\xc0\xa1T" + not_array))


@pytest.mark.parametrize("value", [b"{}", b'"[1]"', b"null", b"1", b"true"])
def test_json_raw_arguments_that_are_not_arrays_are_rejected(value: bytes) -> None:
    proto = p.get_protocol("json", raw_arguments=True)
    reader = proto.reader()
    with pytest.raises(p.ProtocolError, match="array"):
        reader.feed(b'{"type":6}\x1e{"type":1,"target":"T","arguments": ' + value + b"}\x1e")
    with pytest.raises(p.ProtocolError, match="unusable"):
        reader.feed(b'{"type":6}\x1e')


def test_public_messages_are_structs_with_a_class_level_type() -> None:
    invocation = p.Invocation("T", [1], "7")
    assert invocation.type is p.MessageType.INVOCATION
    assert invocation == p.Invocation(target="T", arguments=[1], invocation_id="7")
    assert invocation != p.Invocation(target="T", arguments=[2], invocation_id="7")
    assert "type" not in [f.name for f in msgspec.structs.fields(p.Invocation)]
    pairs: list[tuple[p.HubMessage, p.MessageType]] = [
        (p.StreamItem("1", None), p.MessageType.STREAM_ITEM),
        (p.Completion("1"), p.MessageType.COMPLETION),
        (p.StreamInvocation("1", "T", []), p.MessageType.STREAM_INVOCATION),
        (p.CancelInvocation("1"), p.MessageType.CANCEL_INVOCATION),
        (p.Ping(), p.MessageType.PING),
        (p.Close(), p.MessageType.CLOSE),
        (p.Ack(1), p.MessageType.ACK),
        (p.Sequence(1), p.MessageType.SEQUENCE),
    ]
    for message, kind in pairs:
        assert message.type is kind
    match p.Ack(sequence_id=3):
        case p.Ack(sequence_id=seq):
            assert seq == 3
        case _:  # pragma: no cover
            pytest.fail("class pattern did not match")


@pytest.mark.parametrize("proto", ALL_PROTOCOLS, ids=ALL_IDS)
def test_one_message_frames_at_and_over_the_size_limit(proto: Any) -> None:
    """A frame holding exactly one message takes the readers' short path; the limit still holds
    there, to the byte, for 1- and 2-byte MessagePack prefixes and for JSON records."""
    for target_len in (20, 300):
        message = p.Invocation(target="T" * target_len, arguments=[1])
        frame = proto.encode(message)
        body = len(frame) - 1 if proto.name == "json" else len(frame) - (1 if len(frame) < 129 else 2)
        [got] = proto.reader(max_message_size=body).feed(frame)
        assert isinstance(got, p.Invocation) and got.target == message.target
        with pytest.raises(p.ProtocolError, match="maximum size"):
            proto.reader(max_message_size=body - 1).feed(frame)
