"""`consumer/relay/` and `consumer/sinks/` name nothing of RedMist's: no hub method, no payload type, no
distinctive field, no import of `consumer.redmist`. What the relay needs of a hub comes through
`consumer.relay.profile.HubProfile` (RedMist's: `consumer.redmist.payloads`)."""

from __future__ import annotations

import re
from pathlib import Path

from consumer.redmist import contract

ROOT = Path(__file__).resolve().parents[2] / "consumer"
GENERIC = ("relay", "sinks")

# Field names RedMist's payloads carry that a generic layer has no business knowing (the contract's
# type fields that are neither short (`n`) nor common words (`name`, `number`, `type`, `id`)).
DISTINCTIVE_FIELDS = {
    "eventId",
    "sessionId",
    "carPositions",
    "currentFlag",
    "overallPosition",
    "lastLapCompleted",
    "isInPit",
    "isEnteredPit",
    "timeToGo",
    "runningRaceTime",
    "eventEntries",
}


# Payload type names that are plain English words (`asyncio.Event`, a "session" of a connection).
COMMON_WORDS = {"Event", "Session", "Section"}


def redmist_names() -> set[str]:
    raw = contract.CONTRACT.raw
    names = {m["name"] for m in raw["serverMethods"]} | {m["name"] for m in raw["clientMethods"]}
    names |= (set(contract.CONTRACT.types) - COMMON_WORDS) | set(contract.CONTRACT.enums)
    return names | DISTINCTIVE_FIELDS


def generic_sources() -> list[Path]:
    return sorted(p for d in GENERIC for p in (ROOT / d).rglob("*.py"))


def test_the_name_list_is_drawn_from_the_contract() -> None:
    names = redmist_names()
    # the list can fail: it holds the hub methods, payload types and fields the layers once named
    assert {"ReceiveCarPatches", "SubscribeToEventV2", "CarPositionPatch", "SessionState", "Flags"} <= names
    assert len(names) > 30
    assert len(generic_sources()) >= 10


def test_relay_and_sinks_name_no_redmist_type_field_or_method() -> None:
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, redmist_names()))) + r")\b")
    found = [
        f"{path.relative_to(ROOT.parent)}:{n}: {m.group(1)}"
        for path in generic_sources()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for m in [pattern.search(line)]
        if m
    ]
    assert found == []


def test_relay_and_sinks_do_not_import_the_redmist_package() -> None:
    imports = re.compile(r"^\s*(from|import)\s+consumer\.redmist\b", re.MULTILINE)
    assert [str(p) for p in generic_sources() if imports.search(p.read_text(encoding="utf-8"))] == []
