"""`event-consumer token --config PATH [--json] [--show-token]`: fetch a token and describe it.

Prints expiry, scope, token type and fingerprint, and for JWTs the decoded (UNVERIFIED) claims
iss/aud/azp/sub/exp plus Keycloak realm and client roles. The token itself only with --show-token.
Exit 77 when the IdP rejects the credentials, 78 on config errors, 69 when no token arrives within
--timeout seconds (transient IdP failures are retried until then).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

import msgspec

from consumer.auth import TokenInfo, build_token_provider
from consumer.auth.jwtinfo import client_roles, decode_unverified, realm_roles
from consumer.config import load_config
from consumer.logs import setup_logging

HELP = "fetch a token with the configured credentials and print its metadata (not the token)"

CLAIMS = ("iss", "aud", "azp", "sub", "exp")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="PATH", help="TOML configuration file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--show-token", action="store_true", help="also print the token itself")
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up (exit 69) if no token within this long (default 30)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log progress (-vv: debug)")


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def describe(token: str, info: TokenInfo | None, *, show_token: bool) -> dict[str, Any]:
    """The report as plain data (the token only when `show_token`)."""
    claims = decode_unverified(token) if token else None
    out: dict[str, Any] = {
        "grant": info.grant if info else "none",
        "token_type": info.token_type if info else None,
        "expires_in": info.expires_in if info else None,
        "expires_in_source": info.expires_in_source if info else None,
        "expires_at": _iso(info.expires_at) if info else None,
        "scope": info.scope if info else None,
        "fingerprint": info.fingerprint if info else None,
        "jwt": claims is not None,
        "claims": {k: claims.get(k) for k in CLAIMS} if claims is not None else None,
        "realm_roles": realm_roles(claims) if claims is not None else [],
        "client_roles": client_roles(claims) if claims is not None else {},
    }
    if show_token:
        out["access_token"] = token
    return out


def _render_text(report: dict[str, Any]) -> str:
    lines = []
    for key in ("grant", "token_type", "scope", "fingerprint"):
        lines.append(f"{key + ':':<14}{report[key] if report[key] is not None else '-'}")
    if report["expires_in"] is not None:
        lines.append(
            f"{'expires_in:':<14}{report['expires_in']:.0f} s "
            f"(at {report['expires_at']}, from {report['expires_in_source']})"
        )
    else:
        lines.append(f"{'expires_in:':<14}-")
    if report["claims"] is not None:
        lines.append("claims (unverified):")
        for key, value in report["claims"].items():
            lines.append(f"  {key + ':':<6}{value if value is not None else '-'}")
        lines.append(f"realm roles:  {', '.join(report['realm_roles']) or '-'}")
        for client, roles in report["client_roles"].items():
            lines.append(f"client roles: {client}: {', '.join(roles) or '-'}")
    elif report["fingerprint"] is not None:
        lines.append("(opaque token: no claims to show)")
    if "access_token" in report:
        lines.append(f"{'access_token:':<14}{report['access_token']}")
    return "\n".join(lines) + "\n"


async def _fetch(args: argparse.Namespace) -> dict[str, Any]:
    cfg = load_config(args.config)
    provider = build_token_provider(cfg.auth, source=cfg.source)
    try:
        token = await provider.get_token(max_wait=args.timeout)
        return describe(token, provider.last_token_info, show_token=args.show_token)
    finally:
        await provider.aclose()


def main(args: argparse.Namespace) -> int:
    level = "DEBUG" if args.verbose > 1 else "INFO" if args.verbose == 1 else "WARNING"
    setup_logging(level)
    report = asyncio.run(_fetch(args))
    if args.json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        sys.stdout.write(_render_text(report))
    return 0
