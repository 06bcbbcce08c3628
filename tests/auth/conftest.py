"""Fixtures for the auth tests: real IdPs (npm oidc-provider, oauth2-mock-server@8) on 127.0.0.1."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from authtest_helpers import OIDC_CLIENTS, OIDC_TTL, LogCapture, NodeIdP

from consumer.logs import setup_logging


@pytest.fixture(scope="session")
def oidc_idp(node: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeIdP]:
    idp = NodeIdP(
        node,
        "oidc_provider.mjs",
        {"clients": OIDC_CLIENTS, "ttl": OIDC_TTL},
        tmp_path_factory.mktemp("oidc-provider"),
    )
    try:
        yield idp
    finally:
        idp.stop()


@pytest.fixture
def mock_idp(node: str, tmp_path: Path) -> Iterator[Callable[..., NodeIdP]]:
    """Start oauth2-mock-server with options (script of responses, ttl, ...); stopped after the test."""
    started: list[NodeIdP] = []

    def start(**options: Any) -> NodeIdP:
        idp = NodeIdP(node, "mock_server.mjs", options, tmp_path)
        started.append(idp)
        return idp

    try:
        yield start
    finally:
        for idp in started:
            idp.stop()


@pytest.fixture
def json_logs() -> Iterator[LogCapture]:
    capture = LogCapture()
    setup_logging("DEBUG", fmt="json", stream=capture.stream)
    try:
        yield capture
    finally:
        root = logging.getLogger()
        for handler in list(root.handlers):
            if getattr(handler, "_event_consumer", False):
                root.removeHandler(handler)
        structlog.reset_defaults()
