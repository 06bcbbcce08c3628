"""A small SSE reader and an independent board model for the board API tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

CONTRACT = json.loads((Path(__file__).resolve().parents[2] / "consumer/redmist/contract.json").read_text())


def _patch_names() -> dict[str, str]:
    """CarPositionPatch (camelCase) name -> CarPosition (snapshot row) name, by MessagePack key."""
    rows = {f["messagePackKey"]: f["jsonName"] for f in CONTRACT["types"]["CarPosition"]["fields"]}
    return {
        f["jsonName"]: rows[f["messagePackKey"]]
        for f in CONTRACT["types"]["CarPositionPatch"]["fields"]
        if f["jsonName"] and rows.get(f["messagePackKey"])
    }


PATCH_TO_ROW = _patch_names()


def boards_from_lines(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The merged board per event rebuilt from the relayed JSON lines alone (RedMist's merge rules)."""
    sessions: dict[str, dict[str, Any]] = {}
    cars: dict[str, dict[str, dict[str, Any]]] = {}
    for rec in records:
        if rec["kind"] == "snapshot":
            state = rec["arguments"][0]
            key = str(rec["event_id"])
            sessions[key] = {k: v for k, v in state.items() if k != "carPositions"}
            cars[key] = {str(r["n"]): dict(r) for r in state["carPositions"]}
        elif rec.get("target") == "ReceiveSessionPatch":
            patch = rec["arguments"][0]
            key = str(rec.get("event_id") or patch["eventId"])
            for k, v in patch.items():
                if v is not None:
                    sessions.setdefault(key, {})[k] = v
        elif rec.get("target") == "ReceiveCarPatches":
            for patch in rec["arguments"][0]:
                key = str(rec.get("event_id") or patch["eventId"])
                row = cars.setdefault(key, {}).setdefault(str(patch["number"]), {})
                for k, v in patch.items():
                    if v is not None:
                        row[PATCH_TO_ROW.get(k, k)] = v
        elif rec.get("target") == "ReceiveReset":
            sessions.clear()
            cars.clear()
    return {
        k: {**sessions.get(k, {}), "carPositions": list(cars.get(k, {}).values())}
        for k in set(sessions) | set(cars)
    }


def normal(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    session = {k: v for k, v in state.items() if k != "carPositions"}
    return session, {str(r["n"]): r for r in state["carPositions"]}


class StreamBoard:
    """A client-side board kept from `board` and `delta` frames."""

    def __init__(self) -> None:
        self.session: dict[str, Any] = {}
        self.cars: dict[str, dict[str, Any]] = {}
        self.last_id: str | None = None
        self.kinds: list[str] = []
        self.hub: list[str] = []

    def apply(self, kind: str, data: dict[str, Any], frame_id: str | None) -> None:
        self.kinds.append(kind)
        if frame_id is not None:
            self.last_id = frame_id
        if kind == "board":
            self.session = dict(data["session"])
            self.cars = {n: dict(r) for n, r in data["cars"].items()}
        elif kind == "delta":
            self.session.update(data.get("session", {}))
            for n, fields in data.get("cars", {}).items():
                self.cars.setdefault(n, {}).update(fields)
            for n in data.get("removed", []):
                self.cars.pop(n, None)
        elif kind == "hub":
            self.hub.append(data["state"])


async def frames(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any], str | None]]:
    kind, data, frame_id = "message", "", None
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield kind, json.loads(data), frame_id
            kind, data, frame_id = "message", "", None
        elif line.startswith(":"):
            continue
        elif line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line.startswith("id: "):
            frame_id = line[4:]
