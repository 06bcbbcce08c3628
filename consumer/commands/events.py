"""`event-consumer events --config PATH`: RedMist's live events (`LoadLiveEvents`, anonymous REST).

On a TTY: a table (id, date, live, private, organization, event, track). Otherwise (or with
`--json`): the JSON array exactly as the server returned it. The REST base is `[redmist] rest_url`,
or derived from `[hub] url`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import httpx
import msgspec

from consumer.auth import check_url_security
from consumer.config import load_config
from consumer.errors import ServiceUnavailable, describe_error
from consumer.redmist.profile import default_rest_url

HELP = "list RedMist live events (LoadLiveEvents)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="PATH", help="TOML configuration file")
    parser.add_argument("--json", action="store_true", help="print JSON even on a TTY")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="HTTP timeout")


async def fetch_live_events(rest_url: str, *, http_timeout: float = 10.0) -> bytes:
    url = f"{rest_url.rstrip('/')}/v2/Events/LoadLiveEvents"
    try:
        async with httpx.AsyncClient(timeout=http_timeout) as http:
            resp = await http.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as err:
        raise ServiceUnavailable(f"LoadLiveEvents failed: {describe_error(err)}") from None
    if resp.status_code != 200:
        raise ServiceUnavailable(f"LoadLiveEvents answered HTTP {resp.status_code}")
    return resp.content


def table(events: list[dict[str, Any]]) -> str:
    head = ("id", "date", "live", "private", "organization", "event", "track")
    rows = [
        (
            str(e.get("eid", "")),
            str(e.get("ed", ""))[:10],
            "yes" if e.get("l") else "",
            "yes" if e.get("priv") else "",
            str(e.get("on", "")),
            str(e.get("en", "")),
            str(e.get("t", "")),
        )
        for e in events
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows]]
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    rest_url = cfg.redmist.rest_url or default_rest_url(cfg.hub.url)
    check_url_security(
        rest_url, cfg.hub.allow_insecure_http, "the REST URL", file=cfg.source, key="redmist.rest_url"
    )
    body = asyncio.run(fetch_live_events(rest_url, http_timeout=args.timeout))
    if args.json or not sys.stdout.isatty():
        sys.stdout.write(body.decode() + "\n")
        return 0
    try:
        events = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise ServiceUnavailable("LoadLiveEvents did not return JSON") from None
    sys.stdout.write(table(events if isinstance(events, list) else []))
    return 0
