"""Invocations replayed from the packaged RedMist race recordings (car and session patches)."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from consumer.sim.race import PACKAGED_REPLAYS, RaceEngine, load_replay


def replayed_invocations(count: int, step_ms: int = 2000) -> Iterator[tuple[str, msgspec.Raw]]:
    """`count` (target, raw JSON arguments) pairs, the replays interleaved, restarted when finished."""
    engines = [RaceEngine(load_replay(name)) for name in PACKAGED_REPLAYS]
    clocks = [e.first_lap_ms for e in engines]
    encode = msgspec.json.encode
    made = 0
    while True:
        for i, engine in enumerate(engines):
            clocks[i] += step_ms
            if clocks[i] > engine.end_ms:
                engine.reset()
                clocks[i] = engine.first_lap_ms
            update = engine.advance_to(clocks[i])
            if update.car_patches:
                yield "ReceiveCarPatches", msgspec.Raw(encode([update.car_patches]))
                made += 1
                if made == count:
                    return
            if update.session_patch:
                yield "ReceiveSessionPatch", msgspec.Raw(encode([update.session_patch]))
                made += 1
                if made == count:
                    return


def cycled(count: int, pool_size: int = 2000) -> list[tuple[str, msgspec.Raw]]:
    """`count` invocations: a pool of `pool_size` distinct replayed ones, repeated in order (a race
    engine step is slow; the envelope lines stay distinct through `seq` and `received_at`)."""
    pool = list(replayed_invocations(pool_size, step_ms=10_000))
    return [pool[i % len(pool)] for i in range(count)]
