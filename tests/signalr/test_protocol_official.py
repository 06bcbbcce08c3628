"""Cross-check against Microsoft's own protocol implementations (@microsoft/signalr JsonHubProtocol and
@microsoft/signalr-protocol-msgpack MessagePackHubProtocol, run in node): what we write they parse as
intended, and what they write we parse as intended."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from consumer.signalr import protocol as p

pytestmark = pytest.mark.node

ROOT = Path(__file__).resolve().parents[2]  # the checkout, where node_modules lives

# Runs with cwd=ROOT so require() finds node_modules. Input: {"parse": [...], "write": [...]} on stdin.
DRIVER = r"""
const { JsonHubProtocol, NullLogger } = require("@microsoft/signalr");
const { MessagePackHubProtocol } = require("@microsoft/signalr-protocol-msgpack");
const protocols = { json: new JsonHubProtocol(), messagepack: new MessagePackHubProtocol() };
let input = "";
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const job = JSON.parse(input);
  const parsed = job.parse.map(({ protocol, b64 }) => {
    const bytes = Buffer.from(b64, "base64");
    const data = protocol === "json" ? bytes.toString("utf8")
      : bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    try { return { messages: protocols[protocol].parseMessages(data, NullLogger.instance) }; }
    catch (e) { return { error: String(e) }; }
  });
  const written = job.write.map(({ protocol, message }) => {
    const out = protocols[protocol].writeMessage(message);
    const bytes = typeof out === "string" ? Buffer.from(out, "utf8") : Buffer.from(new Uint8Array(out));
    return bytes.toString("base64");
  });
  process.stdout.write(JSON.stringify({ parsed, written }));
});
"""

# Messages a server sends to the official client (it only parses these types).
TO_CLIENT: list[p.HubMessage] = [
    p.Invocation(target="Send", arguments=[1, "two", {"x": [None, True, 2.5]}], invocation_id="7"),
    p.Invocation(target="Broadcast", arguments=["é", []], headers={"k": "v"}),
    p.StreamItem(invocation_id="4", item={"lap": 12}),
    p.Completion(invocation_id="1", result=42, has_result=True),
    p.Completion(invocation_id="2", error="It didn't work!"),
    p.Completion(invocation_id="3"),
    p.Ping(),
    p.Close(),
    p.Close(error="shutting down", allow_reconnect=True),
    p.Ack(sequence_id=1394),
    p.Sequence(sequence_id=300),
]

# JS message objects the official client writes, with what each protocol must decode them to.
FROM_CLIENT: list[tuple[dict[str, Any], p.HubMessage, p.HubMessage]] = [
    (
        {"type": 1, "target": "Send", "arguments": [1, "two"], "invocationId": "7"},
        p.Invocation(target="Send", arguments=[1, "two"], invocation_id="7"),
        p.Invocation(target="Send", arguments=[1, "two"], invocation_id="7"),
    ),
    (
        {"type": 1, "target": "Fire", "arguments": [{"a": None}]},
        p.Invocation(target="Fire", arguments=[{"a": None}]),
        p.Invocation(target="Fire", arguments=[{"a": None}]),
    ),
    (
        {"type": 1, "target": "Up", "arguments": [], "invocationId": "8", "streamIds": ["s1"]},
        p.Invocation(target="Up", arguments=[], invocation_id="8", stream_ids=["s1"]),
        p.Invocation(target="Up", arguments=[], invocation_id="8", stream_ids=["s1"]),
    ),
    (
        {"type": 1, "headers": {"k": "v"}, "target": "T", "arguments": [], "invocationId": "2"},
        p.Invocation(target="T", arguments=[], invocation_id="2", headers={"k": "v"}),
        p.Invocation(target="T", arguments=[], invocation_id="2", headers={"k": "v"}),
    ),
    (
        {"type": 4, "invocationId": "9", "target": "Count", "arguments": [3]},
        p.StreamInvocation(invocation_id="9", target="Count", arguments=[3]),
        p.StreamInvocation(invocation_id="9", target="Count", arguments=[3]),
    ),
    (
        {"type": 2, "invocationId": "s1", "item": {"a": 1}},
        p.StreamItem(invocation_id="s1", item={"a": 1}),
        p.StreamItem(invocation_id="s1", item={"a": 1}),
    ),
    (
        {"type": 3, "invocationId": "s1"},
        p.Completion(invocation_id="s1"),
        p.Completion(invocation_id="s1"),
    ),
    (
        {"type": 3, "invocationId": "1", "result": 42},
        p.Completion(invocation_id="1", result=42, has_result=True),
        p.Completion(invocation_id="1", result=42, has_result=True),
    ),
    (
        {"type": 3, "invocationId": "1", "error": "boom"},
        p.Completion(invocation_id="1", error="boom"),
        p.Completion(invocation_id="1", error="boom"),
    ),
    ({"type": 5, "invocationId": "9"}, p.CancelInvocation(invocation_id="9"), p.CancelInvocation("9")),
    ({"type": 6}, p.Ping(), p.Ping()),
    (
        {"type": 7, "error": "x", "allowReconnect": True},
        p.Close(error="x", allow_reconnect=True),
        p.Close(),  # the msgpack client always writes [7, null]
    ),
    ({"type": 8, "sequenceId": 5}, p.Ack(sequence_id=5), p.Ack(sequence_id=5)),
    ({"type": 9, "sequenceId": 6}, p.Sequence(sequence_id=6), p.Sequence(sequence_id=6)),
]


def expected_js(message: p.HubMessage, protocol: str) -> dict[str, Any]:
    """The fields the official client's parser must produce for `message` (None = absent)."""
    if isinstance(message, p.Invocation):
        return {
            "type": 1,
            "target": message.target,
            "arguments": message.arguments,
            "invocationId": message.invocation_id,
            "headers": message.headers or ({} if protocol == "messagepack" else None),
        }
    if isinstance(message, p.StreamItem):
        return {"type": 2, "invocationId": message.invocation_id, "item": message.item}
    if isinstance(message, p.Completion):
        return {
            "type": 3,
            "invocationId": message.invocation_id,
            "result": message.result if message.has_result else None,
            "error": message.error,
        }
    if isinstance(message, p.Ping):
        return {"type": 6}
    if isinstance(message, p.Close):
        return {
            "type": 7,
            "error": message.error,
            "allowReconnect": True if message.allow_reconnect else None,
        }
    if isinstance(message, p.Ack | p.Sequence):
        return {"type": int(message.type), "sequenceId": message.sequence_id}
    raise AssertionError(message)


@pytest.fixture(scope="module")
def official(node: str) -> dict[str, Any]:
    """One node run: it parses our encodings of TO_CLIENT and writes FROM_CLIENT, for both protocols."""
    protocols = ["json", "messagepack"]
    job = {
        "parse": [
            {"protocol": name, "b64": base64.b64encode(p.get_protocol(name).encode(m)).decode()}
            for name in protocols
            for m in TO_CLIENT
        ]
        + [  # all of them in one frame, too
            {
                "protocol": name,
                "b64": base64.b64encode(b"".join(map(p.get_protocol(name).encode, TO_CLIENT))).decode(),
            }
            for name in protocols
        ],
        "write": [{"protocol": name, "message": js} for name in protocols for js, _, _ in FROM_CLIENT],
    }
    result = subprocess.run(
        [node, "-e", DRIVER],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    n = len(TO_CLIENT)
    out["single"] = {"json": out["parsed"][:n], "messagepack": out["parsed"][n : 2 * n]}
    out["batch"] = {"json": out["parsed"][2 * n], "messagepack": out["parsed"][2 * n + 1]}
    m = len(FROM_CLIENT)
    out["by_protocol"] = {"json": out["written"][:m], "messagepack": out["written"][m:]}
    return out


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
@pytest.mark.parametrize("index", range(len(TO_CLIENT)), ids=[type(m).__name__ for m in TO_CLIENT])
def test_official_client_parses_what_we_write(official: dict[str, Any], protocol: str, index: int) -> None:
    parsed = official["single"][protocol][index]
    assert "error" not in parsed, parsed
    [js] = parsed["messages"]
    expected = expected_js(TO_CLIENT[index], protocol)
    assert {k: js.get(k) for k in expected} == expected


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
def test_official_client_parses_many_messages_in_one_frame(official: dict[str, Any], protocol: str) -> None:
    parsed = official["batch"][protocol]
    assert "error" not in parsed, parsed
    assert [m["type"] for m in parsed["messages"]] == [int(m.type) for m in TO_CLIENT]


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
@pytest.mark.parametrize("index", range(len(FROM_CLIENT)), ids=[str(js["type"]) for js, _, _ in FROM_CLIENT])
def test_we_parse_what_the_official_client_writes(
    official: dict[str, Any], protocol: str, index: int
) -> None:
    data = base64.b64decode(official["by_protocol"][protocol][index])
    _, want_json, want_msgpack = FROM_CLIENT[index]
    want = want_json if protocol == "json" else want_msgpack
    proto = p.get_protocol(protocol)
    assert proto.decode(data) == [want]
    assert proto.reader().feed(data) == [want]
