"""Unverified JWT inspection: enough to read `exp` and show claims, never to trust them."""

from __future__ import annotations

from typing import Any

import jwt


def decode_unverified(token: str) -> dict[str, Any] | None:
    """The claims of a JWT without verifying it, or None if `token` is not a JWT (e.g. opaque)."""
    if token.count(".") != 2:
        return None
    try:
        claims = jwt.decode(
            token,
            options={"verify_signature": False, "verify_exp": False, "verify_aud": False},
            algorithms=None,
        )
    except jwt.PyJWTError:
        return None
    return claims if isinstance(claims, dict) else None


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
