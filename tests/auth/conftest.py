"""Fixtures for the auth tests: real IdPs (npm oidc-provider, oauth2-mock-server@8) on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from authtest_helpers import NodeIdP

# Clients of the oidc-provider IdP. Tests use distinct client ids so that request counts from one
# test never leak into another's assertions (the IdP is shared by the session).
OIDC_SECRET = "s3cr:t/+ &=%-basic-secret-value"
OIDC_CLIENTS: list[dict[str, Any]] = [
    {
        "client_id": cid,
        "client_secret": OIDC_SECRET,
        "grant_types": ["client_credentials"],
        "redirect_uris": [],
        "response_types": [],
        "token_endpoint_auth_method": method,
        "scope": "api:read",
    }
    for cid, method in (
        ("svc-basic", "client_secret_basic"),
        ("svc-post", "client_secret_post"),
        ("svc-discovery", "client_secret_basic"),
        ("svc-wrong", "client_secret_basic"),
        ("svc-scope", "client_secret_basic"),
        ("svc-cli", "client_secret_basic"),
        ("svc-cli-wrong", "client_secret_basic"),
        ("svc-schedule", "client_secret_basic"),
        ("svc-bearer", "client_secret_basic"),
    )
]
OIDC_TTL = 5


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
