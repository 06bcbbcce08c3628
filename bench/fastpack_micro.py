"""Before/after of the MessagePack conversion per frame: `python bench/fastpack_micro.py [ROUNDS]`.

RedMist-shaped `ReceiveCarPatches` frames (bench/payloads.py `build_full_pool`: 12 cars, full-length
integer-keyed arrays, 256 distinct frames). Four stages, run interleaved round after round (so machine
noise hits all of them alike) and reported as the best round, in µs per frame:

- `reference convert`: `msgspec.msgpack.decode` + `contract.encodable_arguments_from_msgpack` (the
  relay's path before issue 15, now the fast path's fallback).
- `fastpack convert`: `consumer.redmist.fastpack.convert` (typed decode straight into Structs).
- `reference line` / `fastpack line`: the same plus the envelope line (`EnvelopeEncoder.invocation`,
  event id included): the relay's whole MessagePack per-frame work.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from payloads import TARGET, build_full_pool

from consumer.redmist import contract, fastpack
from consumer.redmist.payloads import event_id_of
from consumer.relay.envelope import EnvelopeEncoder


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 25
    raws = [p.msgpack_args for p in build_full_pool(256)]
    enc = EnvelopeEncoder("bench")
    dec = msgspec.msgpack.decode

    def ref_conv(r: bytes) -> Any:
        return contract.encodable_arguments_from_msgpack(TARGET, dec(r))

    def fast_conv(r: bytes) -> Any:
        return fastpack.convert(TARGET, r)

    def ref_line(r: bytes) -> bytes:
        a = contract.encodable_arguments_from_msgpack(TARGET, dec(r))
        return enc.invocation(TARGET, a, event_id_of(a))

    def fast_line(r: bytes) -> bytes:
        a = fastpack.convert(TARGET, r)
        assert a is not None
        return enc.invocation(TARGET, a, event_id_of(a))

    stages: dict[str, Callable[[bytes], Any]] = {
        "reference convert": ref_conv,
        "fastpack convert": fast_conv,
        "reference line": ref_line,
        "fastpack line": fast_line,
    }
    best = dict.fromkeys(stages, float("inf"))
    for _ in range(rounds):
        for name, fn in stages.items():
            t0 = time.perf_counter()
            for _ in range(4):
                for r in raws:
                    fn(r)
            best[name] = min(best[name], (time.perf_counter() - t0) / (4 * len(raws)))
    for name, seconds in best.items():
        print(f"{name:20s} {seconds * 1e6:6.1f} µs/frame (best of {rounds} interleaved rounds)")


if __name__ == "__main__":
    main()
