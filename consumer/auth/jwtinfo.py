"""Unverified JWT inspection: enough to read `exp` and show claims, never to trust them.

No JWT library: reading claims without checking the signature is base64url + JSON (RFC 7519 §7.2
steps 1-10 minus the signature), so the daemon does not depend on pyjwt (the simulator's IdP, which
signs tokens, does, through the `sim` extra).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec

__all__ = ["client_roles", "decode_unverified", "realm_roles"]


def _segment(text: str) -> Any:
    """One base64url JSON segment (padding optional, as JWTs omit it)."""
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return msgspec.json.decode(raw)


def decode_unverified(token: str) -> dict[str, Any] | None:
    """The claims of a JWT without verifying it, or None if `token` is not a JWT (e.g. opaque)."""
    if token.count(".") != 2:
        return None
    header_part, payload_part, _signature = token.split(".")
    try:
        header = _segment(header_part)
        claims = _segment(payload_part)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return claims


def realm_roles(claims: dict[str, Any]) -> list[str]:
    """Keycloak realm roles (`realm_access.roles`)."""
    access = claims.get("realm_access")
    roles = access.get("roles") if isinstance(access, dict) else None
    return [str(r) for r in roles] if isinstance(roles, list) else []


def client_roles(claims: dict[str, Any]) -> dict[str, list[str]]:
    """Keycloak client roles (`resource_access.<client>.roles`)."""
    out: dict[str, list[str]] = {}
    access = claims.get("resource_access")
    if isinstance(access, dict):
        for client, entry in access.items():
            roles = entry.get("roles") if isinstance(entry, dict) else None
            if isinstance(roles, list):
                out[str(client)] = [str(r) for r in roles]
    return out
