"""The public API, pinned: every package's `__all__` (a change here is an API change, made on purpose).

Each package lists what it exports; every listed name resolves (an attribute, or a submodule for the
packages that export modules); and every package under `consumer` has an `__all__`.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest

import consumer

EXPORTS: dict[str, list[str]] = {
    "consumer": ["__version__"],
    "consumer.auth": [
        "AUTHORIZATION",
        "SYSTEM_CLOCK",
        "AuthConfig",
        "BearerAuth",
        "Clock",
        "NoneTokenProvider",
        "OAuthTokenProvider",
        "StaticTokenProvider",
        "SystemClock",
        "TokenInfo",
        "TokenProvider",
        "TokenRequestRejected",
        "TokenStats",
        "TokenUnavailable",
        "build_token_provider",
        "check_url_security",
        "headers_for",
        "is_loopback_host",
        "keycloak_token_url",
        "parse_retry_after",
        "rejected_401_403",
        "resolve_endpoint",
        "token_rejected",
    ],
    "consumer.commands": ["board", "check_config", "demo", "events", "run", "simulate", "token"],
    "consumer.ha": ["HaController"],
    "consumer.redmist": [
        "PAYLOADS",
        "LiveState",
        "RedMistPayloads",
        "RedMistProfile",
        "contract",
        "event_id_of",
        "flag_name",
        "human_line",
        "peek_json_event_id",
    ],
    "consumer.relay": [
        "EnvelopeEncoder",
        "HubCall",
        "HubProfile",
        "PlainProfile",
        "Relay",
        "RelayStats",
        "Subscriber",
    ],
    "consumer.signalr": [
        "DaemonRetryPolicy",
        "HubConnection",
        "HubConnectionError",
        "HubError",
        "RetryPolicy",
        "retry_policy",
    ],
    "consumer.sim": ["INSTALL_HINT", "require_extra"],
    "consumer.sinks": [
        "FileSink",
        "PartialWrite",
        "Sink",
        "SinkStats",
        "SinkThread",
        "SinkWorker",
        "StdoutSink",
        "build_worker",
        "stuck_threads",
    ],
    "consumer.web": [
        "BoardCollector",
        "BoardService",
        "BoardSource",
        "HttpServer",
        "Request",
        "Response",
        "Route",
        "Router",
        "Stream",
        "StreamSink",
        "add_page_routes",
        "board_delta",
        "error_response",
        "flag_name",
        "json_response",
    ],
    # modules whose names other packages build on
    "consumer.backoff": ["Backoff"],
    "consumer.versioned": ["Versioned"],
    "consumer.relay.profile": ["HubProfile", "PlainProfile"],
    "consumer.redmist.payloads": [
        "PAYLOADS",
        "RedMistPayloads",
        "event_id_of",
        "normalise_event_id",
        "peek_json_event_id",
    ],
    "consumer.redmist.view": ["FLAGS", "flag_name", "human_line"],
    "consumer.auth.httpx_auth": ["BearerAuth", "rejected_401_403", "token_rejected"],
    "consumer.sinks.stdout": ["StdoutSink", "plain_line"],
}


def packages() -> list[str]:
    found = ["consumer"]
    found += [m.name for m in pkgutil.walk_packages(consumer.__path__, "consumer.") if m.ispkg]
    return sorted(found)


def resolve(module: ModuleType, name: str) -> object:
    if hasattr(module, name):
        return getattr(module, name)
    return importlib.import_module(f"{module.__name__}.{name}")  # a package exporting a submodule


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_all_is_pinned_and_every_name_resolves(name: str) -> None:
    module = importlib.import_module(name)
    assert sorted(module.__all__) == sorted(EXPORTS[name])
    assert len(set(module.__all__)) == len(module.__all__)
    for exported in module.__all__:
        assert resolve(module, exported) is not None


def test_every_package_has_all_and_is_pinned() -> None:
    found = packages()
    assert "consumer.redmist" in found and "consumer.relay" in found
    missing = [p for p in found if not isinstance(getattr(importlib.import_module(p), "__all__", None), list)]
    assert missing == []
    assert [p for p in found if p not in EXPORTS] == []
