"""Micro-benchmark of the relay hot path, in process: `python bench/hot_path_micro.py [--patches N]`.

Real `ReceiveCarPatches` payloads (bench/payloads.py: consecutive car patches of the packaged replays,
10-60 per message; with `--redmist`: 12 per message with every key present, as the side-by-side
section's hub sends them), cycled until at least N car patches (default 100,000) are covered. Each stage is
timed over the whole set, `--repeats` times (default 5); the median and the best are reported as µs
per message and per car patch. Stages:

- `msgpack decode`: `msgspec.msgpack.decode` of the arguments (the floor under any conversion).
- `msgpack -> names (dicts)`: decode + `contract.arguments_from_msgpack` (the dict form watchers get).
- `msgpack -> names (encodable)`: decode + `contract.encodable_arguments_from_msgpack` (the relay's
  form for the envelope), when the contract module has it.
- `msgpack envelope line`: the reference MessagePack per-message work up to the line bytes.
- `msgpack -> names (fastpack)` / `msgpack envelope line (fastpack)`: the same through
  `consumer.redmist.fastpack` (the relay's path since issue 15; the reference is its fallback).
- `json envelope line`: `peek_json_event_id` + `EnvelopeEncoder.invocation` with the raw JSON spliced.
- `relay -> file, json|messagepack`: `Relay.on_raw` for every message with a real `SinkWorker` +
  `FileSink` (fsync never, temp file) running in the same event loop, until every line is written.
- `file sink batch write`: `FileSink.write` of 4,096-line batches of real envelope lines.

Absolute figures depend on the machine (2 shared cores here): compare stages and before/after runs
made on the same machine in one sitting. `--out FILE` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from payloads import TARGET, build_full_pool, build_pool  # noqa: E402

from consumer.redmist import PAYLOADS, contract, fastpack  # noqa: E402
from consumer.redmist.payloads import event_id_of, peek_json_event_id  # noqa: E402
from consumer.relay.envelope import EnvelopeEncoder  # noqa: E402
from consumer.relay.relay import Relay  # noqa: E402
from consumer.sinks import FileSink, SinkWorker  # noqa: E402


def timed(repeats: int, fn: Callable[[], object]) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


class Report:
    def __init__(self, messages: int, patches: int) -> None:
        self.messages = messages
        self.patches = patches
        self.rows: list[dict[str, Any]] = []

    def add(
        self, stage: str, seconds: list[float], *, per_patch: bool = True, items: int | None = None
    ) -> None:
        med, best = statistics.median(seconds), min(seconds)
        n = items if items is not None else self.messages
        row: dict[str, Any] = {
            "stage": stage,
            "us_per_message_median": med / n * 1e6,
            "us_per_message_best": best / n * 1e6,
        }
        if per_patch:
            row["us_per_patch_median"] = med / self.patches * 1e6
        self.rows.append(row)
        patch = f"{row['us_per_patch_median']:8.2f}" if per_patch else " " * 8
        unit = "line" if items is not None else "msg"
        median = row["us_per_message_median"]
        print(f"{stage:34s} {median:9.2f} µs/{unit:4s} (best {best / n * 1e6:8.2f}) {patch} µs/patch")


def messages_for(pool: list[Any], min_patches: int) -> list[Any]:
    out: list[Any] = []
    total = 0
    while total < min_patches:
        for p in pool:
            out.append(p)
            total += p.cars
            if total >= min_patches:
                break
    return out


async def relay_to_file(protocol: str, raws: list[msgspec.Raw], path: Path) -> None:
    worker = SinkWorker(FileSink(path, fsync="never"), queue_size=10_000)
    await worker.start()
    relay = Relay([worker], hub="bench", profile=PAYLOADS, protocol=protocol)  # type: ignore[arg-type]
    on_raw = relay.on_raw
    for raw in raws:
        await on_raw(TARGET, raw)
    await worker.wait_idle()
    await worker.close(grace=30)
    path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patches", type=int, default=100_000, help="car patches covered (default 100,000)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON to this file")
    parser.add_argument("--redmist", action="store_true", help="12-car frames, every patch key present")
    args = parser.parse_args()

    pool: list[Any] = build_full_pool() if args.redmist else build_pool()
    msgs = messages_for(pool, args.patches)
    patches = sum(p.cars for p in msgs)
    mp = [p.msgpack_args for p in msgs]
    js = [p.json_args for p in msgs]
    print(f"{len(msgs):,} ReceiveCarPatches messages, {patches:,} car patches, repeats={args.repeats}")
    rep = Report(len(msgs), patches)
    r = args.repeats
    dec = msgspec.msgpack.decode
    conv = contract.arguments_from_msgpack

    # Results are dropped as they are made (as the relay does): keeping them alive would make the
    # cyclic GC walk an ever larger heap and charge that to the stage.
    def each(fn: Callable[[Any], object], items: list[Any]) -> Callable[[], None]:
        def run() -> None:
            for item in items:
                fn(item)

        return run

    rep.add("msgpack decode", timed(r, each(dec, mp)))
    rep.add("msgpack -> names (dicts)", timed(r, each(lambda m: conv(TARGET, dec(m)), mp)))
    fast = getattr(contract, "encodable_arguments_from_msgpack", None)
    if fast is not None:
        rep.add("msgpack -> names (encodable)", timed(r, each(lambda m: fast(TARGET, dec(m)), mp)))
    enc = EnvelopeEncoder("bench")

    def mp_lines() -> None:
        for m in mp:
            if fast is not None:
                a = fast(TARGET, dec(m))
                enc.invocation(TARGET, a, event_id_of(a))
            else:
                a = conv(TARGET, dec(m))
                enc.invocation(TARGET, a, event_id_of(a))

    rep.add("msgpack envelope line", timed(r, mp_lines))
    fp = fastpack.convert
    rep.add("msgpack -> names (fastpack)", timed(r, each(lambda m: fp(TARGET, m), mp)))

    def fp_lines() -> None:
        for m in mp:
            a = fp(TARGET, m)
            assert a is not None
            enc.invocation(TARGET, a, event_id_of(a))

    rep.add("msgpack envelope line (fastpack)", timed(r, fp_lines))
    rep.add(
        "json envelope line", timed(r, each(lambda j: enc.invocation(TARGET, j, peek_json_event_id(j)), js))
    )

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.jsonl"
        for protocol, raws in (("json", js), ("messagepack", mp)):
            rep.add(
                f"relay -> file, {protocol}",
                timed(r, lambda p=protocol, w=raws: asyncio.run(relay_to_file(p, w, out))),
            )
        lines = [enc.invocation(TARGET, j, peek_json_event_id(j)) for j in js]
        batches = [lines[i : i + 4096] for i in range(0, len(lines), 4096)]

        async def write_all() -> None:
            sink = FileSink(out, fsync="never")
            await sink.open()
            for b in batches:
                await sink.write(b)
            await sink.close()
            out.unlink()

        rep.add(
            "file sink batch write",
            timed(r, lambda: asyncio.run(write_all())),
            per_patch=False,
            items=len(lines),
        )

    if args.out:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True, cwd=HERE
        ).stdout.strip()
        doc = {
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "commit": commit,
            "python": platform.python_version(),
            "msgspec": msgspec.__version__,
            "messages": len(msgs),
            "patches": patches,
            "shape": "redmist" if args.redmist else "sparse",
            "repeats": r,
            "stages": rep.rows,
        }
        args.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
