"""RedMist-sized `ReceiveCarPatches` payloads for the benchmarks, built from the packaged real replays.

Each payload is one argument list `[patches]` where `patches` is 10-60 real car patches (consecutive
engine updates of a recorded race, concatenated) whose compact JSON is about 1-4 KB. Both wire forms
are prepared once: the JSON arguments array and the MessagePack arguments array (integer-keyed, via
the RedMist contract), each as a `msgspec.Raw`, so the hub never encodes a payload while it sends.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import msgspec

from consumer.redmist import contract
from consumer.sim.race import PACKAGED_REPLAYS, RaceEngine, load_replay

TARGET = "ReceiveCarPatches"
MIN_CARS, MAX_CARS = 10, 60
MIN_BYTES, MAX_BYTES = 1024, 4096


@dataclass(frozen=True, slots=True)
class Payload:
    cars: int
    json_args: msgspec.Raw  # JSON arguments array: [[patch, ...]]
    msgpack_args: msgspec.Raw  # MessagePack arguments array: [[[k0, k1, ...], ...]]

    @property
    def json_size(self) -> int:
        return len(self.json_args)


def _patch_stream(engine: RaceEngine, step_ms: int = 5000, limit: int = 8000) -> list[dict[str, Any]]:
    """The race's car patches in order (every engine update from the first lap on)."""
    out: list[dict[str, Any]] = []
    t = engine.first_lap_ms
    while t < engine.end_ms and len(out) < limit:
        t += step_ms
        out.extend(engine.advance_to(t).car_patches)
    return out


def _batches(patches: list[dict[str, Any]], rng: random.Random) -> list[list[dict[str, Any]]]:
    """Consecutive patches cut into batches: a size target drawn from 1-4 KB, 10-60 cars."""
    out: list[list[dict[str, Any]]] = []
    i = 0
    while i < len(patches):
        goal = rng.randint(MIN_BYTES, MAX_BYTES)
        batch: list[dict[str, Any]] = []
        size = 2
        while i < len(patches) and len(batch) < MAX_CARS:
            n = len(msgspec.json.encode(patches[i])) + 1
            if len(batch) >= MIN_CARS and size + n > goal:
                break
            batch.append(patches[i])
            size += n
            i += 1
        if len(batch) >= MIN_CARS:
            out.append(batch)
    return out


def build_pool(limit: int = 512) -> list[Payload]:
    """Up to `limit` distinct payloads, alternating between the packaged replays."""
    rng = random.Random(7)
    per_replay = [_batches(_patch_stream(RaceEngine(load_replay(name))), rng) for name in PACKAGED_REPLAYS]
    pool: list[Payload] = []
    i = 0
    while len(pool) < limit and any(i < len(b) for b in per_replay):
        for batches in per_replay:
            if i < len(batches) and len(pool) < limit:
                patches = batches[i]
                args_json = msgspec.json.encode([patches])
                packed = contract.arguments_to_msgpack(TARGET, [patches])
                pool.append(
                    Payload(len(patches), msgspec.Raw(args_json), msgspec.Raw(msgspec.msgpack.encode(packed)))
                )
        i += 1
    if not pool:
        raise RuntimeError("no payloads: the packaged replays yielded no car patch batches")
    return pool


def describe(pool: list[Payload]) -> dict[str, Any]:
    sizes = sorted(p.json_size for p in pool)
    cars = sorted(p.cars for p in pool)
    mp = sorted(len(p.msgpack_args) for p in pool)
    return {
        "payloads": len(pool),
        "cars_min": cars[0],
        "cars_max": cars[-1],
        "json_bytes_min": sizes[0],
        "json_bytes_median": sizes[len(sizes) // 2],
        "json_bytes_max": sizes[-1],
        "json_bytes_mean": round(sum(sizes) / len(sizes)),
        "msgpack_bytes_mean": round(sum(mp) / len(mp)),
    }


# --- the side-by-side section's frames: RedMist-shaped, every patch key present ----------------------

FULL_CARS = 12


@dataclass(frozen=True, slots=True)
class FullPayload:
    """`ReceiveCarPatches` of `FULL_CARS` patches as RedMist's hub writes them: JSON with every
    `CarPositionPatch` key present (unset ones null, contract key order); MessagePack with every patch
    an integer-keyed array of the contract's full length."""

    json_args: bytes  # [[{...every key...}, ...]]
    msgpack_args: bytes  # [[[slot0, ..., slotN], ...]]
    cars: int = FULL_CARS


def build_full_pool(limit: int = 256, cars: int = FULL_CARS) -> list[FullPayload]:
    """Up to `limit` distinct payloads: consecutive real car patches of the packaged replays, `cars` each."""
    names = [f.json_name for f in contract.CONTRACT.type("CarPositionPatch").fields]
    pool: list[FullPayload] = []
    streams = [_patch_stream(RaceEngine(load_replay(name))) for name in PACKAGED_REPLAYS]
    i = 0
    while len(pool) < limit and any(i + cars <= len(s) for s in streams):
        for stream in streams:
            if i + cars <= len(stream) and len(pool) < limit:
                full = [{n: patch.get(n) for n in names} for patch in stream[i : i + cars]]
                packed = contract.arguments_to_msgpack(TARGET, [full])
                pool.append(FullPayload(msgspec.json.encode([full]), msgspec.msgpack.encode(packed), cars))
        i += cars
    if not pool:
        raise RuntimeError("no payloads: the packaged replays yielded no car patches")
    return pool


def describe_full(pool: list[FullPayload], cars: int = FULL_CARS) -> dict[str, Any]:
    js = [len(p.json_args) for p in pool]
    mp = [len(p.msgpack_args) for p in pool]
    return {
        "payloads": len(pool),
        "cars": cars,
        "slots": contract.CONTRACT.type("CarPositionPatch").array_length,
        "json_bytes_mean": round(sum(js) / len(js)),
        "msgpack_bytes_mean": round(sum(mp) / len(mp)),
    }


if __name__ == "__main__":
    print(describe(build_pool()))
    print(describe_full(build_full_pool()))
