"""Differential test: @microsoft/signalr (Node) and our client receive the same broadcast sequence from
the same server; what each hands its handlers must be identical.

Comparison is on JSON-normalised data (dict key order ignored, 1 == 1.0). Payloads are chosen so that
both runtimes represent them the same way: integers within ±2^53 (JS numbers), finite floats, strings
(BMP and astral unicode, control characters), null, booleans, nested maps and arrays, large values.
Deliberately left out, because the runtimes *legitimately* differ: MessagePack binary (Uint8Array vs
bytes), timestamps (JS Date vs datetime), int64 beyond 2^53 (BigInt/precision), NaN/Infinity.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from test_client_hub import build_hub, client, running

ROOT = Path(__file__).resolve().parents[2]
ORACLE = ROOT / "tests" / "node" / "differential_client.mjs"
REPLAY = ROOT.parent / "shared" / "data" / "replays" / "244-6.json"
METHODS = ("ReceiveCarPatches", "ReceiveSessionPatch", "ReceiveReset", "Diff")

pytestmark = pytest.mark.node


def car_patches() -> list[list[dict[str, Any]]]:
    """RedMist-shaped CarPositionPatch batches (camelCase names, nulls for 'unchanged'), from a real race."""
    replay = json.loads(REPLAY.read_text()) if REPLAY.exists() else {"cars": []}
    batches: list[list[dict[str, Any]]] = []
    for lap_index in range(3):
        batch = []
        for position, car in enumerate(replay["cars"][:40], start=1):
            if lap_index >= len(car["laps"]):
                continue
            lap, lap_ms, elapsed_ms, flag, pit = car["laps"][lap_index]
            batch.append(
                {
                    "number": car["n"],
                    "eventId": "244",
                    "sessionId": "6",
                    "overallPosition": position,
                    "lastLapCompleted": lap,
                    "lastLapTime": f"00:{lap_ms // 60000:02d}:{lap_ms % 60000 / 1000:06.3f}",
                    "totalTime": elapsed_ms,
                    "trackFlag": flag,
                    "isInPit": bool(pit),
                    "class": car["c"] or None,
                    "bestTime": None,
                    "driverName": None,
                    "gap": "",
                }
            )
        batches.append(batch)
    return batches


def sequence() -> list[tuple[str, list[Any]]]:
    seq: list[tuple[str, list[Any]]] = []
    seq.append(("ReceiveReset", []))
    seq.append(
        (
            "ReceiveSessionPatch",
            [{"eventId": 244, "sessionId": 6, "sessionName": "Fri 7Hr", "currentFlag": 1, "laps": None}],
        )
    )
    seq.extend(("ReceiveCarPatches", [batch]) for batch in car_patches())
    seq.append(
        ("Diff", ["héllo wörld", "日本語テキスト", "🏁🚗💨", 'tab\tnl\nquote"back\\', "\u2028\u00a0", ""])
    )
    seq.append(
        ("Diff", [0, -1, 2**31, -(2**31) - 1, 2**53, -(2**53), 255, 65536, 1.5, -0.25, 1e300, 3.14159])
    )
    seq.append(
        ("Diff", [True, False, None, [], {}, [[[[[["deep"]]]]]], {"a": {"b": {"c": [1, {"d": None}]}}}])
    )
    seq.append(("Diff", ["x" * 200_000]))  # large single value
    seq.append(("Diff", [{f"k{i}": [i, str(i), i % 2 == 0, None] for i in range(2000)}]))  # large map
    if REPLAY.exists():
        seq.append(("Diff", [json.loads(REPLAY.read_text())]))  # a whole real race, ~110 KB nested
    seq.extend(("Diff", [i, f"m{i}"]) for i in range(500))  # many small messages: batched per frame
    return seq


async def read_json_line(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    if not line:
        raise AssertionError("the Node oracle exited early")
    try:
        result: dict[str, Any] = json.loads(line)
    except ValueError:
        raise AssertionError(f"bad line from the oracle: {line[:300]!r}") from None
    return result


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
async def test_same_broadcasts_same_handler_arguments(node: str, protocol: str) -> None:
    server = build_hub(keepalive_interval=1.0, client_timeout=20.0)
    expected = sequence()
    async with server.serve() as url:
        proc = await asyncio.create_subprocess_exec(
            node,
            str(ORACLE),
            url,
            protocol,
            "diff",
            ",".join(METHODS),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
            cwd=str(ROOT),
        )
        try:
            assert await read_json_line(proc) == {"ready": True}
            ours: list[dict[str, Any]] = []
            done = asyncio.Event()
            conn = client(url, protocol=protocol, server_timeout=20.0)
            for method in METHODS:
                conn.on(method, lambda *args, _m=method: ours.append({"method": _m, "args": list(args)}))
            conn.on("Done", done.set)
            async with running(conn):
                await conn.invoke("JoinGroup", "diff")
                for method, args in expected:
                    server.send_to_group("diff", method, *args)
                server.send_to_group("diff", "Done")
                await asyncio.wait_for(done.wait(), 20)
            theirs: list[dict[str, Any]] = []
            while True:
                line = await read_json_line(proc)
                if line.get("done"):
                    break
                assert "error" not in line, line
                theirs.append(line)
            await asyncio.wait_for(proc.wait(), 10)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    normalised_ours = json.loads(json.dumps(ours))
    assert len(theirs) == len(expected) == len(normalised_ours)
    for index, (mine, oracle) in enumerate(zip(normalised_ours, theirs, strict=True)):
        assert mine == oracle, f"message {index} ({oracle['method']}) differs"
    # and both equal what was sent (a sanity check of the oracle itself)
    assert [m["method"] for m in theirs] == [m for m, _ in expected]
    assert theirs[-1]["args"] == [499, "m499"]
