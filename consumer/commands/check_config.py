"""`event-consumer check-config --config PATH [--online] [--show-config]`: a preflight.

Offline (always): the schema; URL security of every URL (hub, token endpoint / issuer / base URL, RedMist
REST); every secret source the configuration uses is present, readable and not world-readable
(inline secrets: the config file itself), including [redmist] access codes; every file sink path
and the state file can be written or created; the [http] bind address is an address of this machine.
Any problem: exit 78, one line per problem naming the file, the key and the cause.

--online also: fetches a token (exit 77 if the IdP rejects the credentials, 69 if none comes within
--timeout); opens the hub connection (negotiate unless skip_negotiation, WebSocket upgrade, SignalR
handshake) and closes it (77 on a 401/403, 69 otherwise); with a RedMist profile, requests one snapshot
per configured event (at most MAX_SNAPSHOTS, spaced by snapshot_min_interval_seconds).

Prints a one-screen report (`ok` / `warn` / `FAIL` / `skip` per check, then `result:`) on stdout;
--show-config also prints the effective configuration as JSON with every secret masked.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec

from consumer.auth import (
    BearerAuth,
    TokenProvider,
    TokenRequestRejected,
    TokenUnavailable,
    build_token_provider,
    check_url_security,
    parse_retry_after,
    resolve_endpoint,
)
from consumer.auth.bounded import BoundedResponse, bounded_request
from consumer.auth.settings import SECRET_KEYS
from consumer.config import Config, RedMistConfig, load_access_codes, load_config, to_display
from consumer.errors import (
    EXIT_CONFIG,
    EXIT_CREDENTIALS,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    ConfigError,
    CredentialsRejected,
    describe_error,
)
from consumer.logs import setup_logging

HELP = (
    "preflight: check the config offline (schema, URLs, secrets, sink paths, bind address); "
    "--online also fetches a token, opens the hub and requests a snapshot"
)

MAX_SNAPSHOTS = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="PATH", help="TOML configuration file")
    parser.add_argument(
        "--online", action="store_true", help="also fetch a token, open the hub handshake, request a snapshot"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="--online: bound on each step (token, hub, each snapshot); default 15",
    )
    parser.add_argument(
        "--show-config", action="store_true", help="also print the effective config (JSON, secrets masked)"
    )


@dataclass(slots=True)
class Line:
    status: str  # ok | warn | FAIL | skip
    check: str
    detail: str


@dataclass(slots=True)
class Report:
    source: str
    lines: list[Line] = field(default_factory=list)
    exit_code: int = EXIT_OK

    def ok(self, check: str, detail: str) -> None:
        self.lines.append(Line("ok", check, detail))

    def warn(self, check: str, detail: str) -> None:
        self.lines.append(Line("warn", check, detail))

    def skip(self, check: str, detail: str) -> None:
        self.lines.append(Line("skip", check, detail))

    def fail(self, check: str, detail: str, code: int) -> None:
        if any(line.status == "FAIL" and line.detail == detail for line in self.lines):
            return  # one cause found by two checks (e.g. a token URL rule, also hit building the provider)
        self.lines.append(Line("FAIL", check, detail))
        if self.exit_code == EXIT_OK:
            self.exit_code = code

    def render(self) -> str:
        out = [f"check-config {self.source}"]
        out += [f"  {line.status:<4}  {line.check:<9} {line.detail}" for line in self.lines]
        if self.exit_code == EXIT_OK:
            out.append("result: ok")
        else:
            out.append(f"result: FAILED (exit {self.exit_code})")
        return "\n".join(out) + "\n"


# -- offline checks ---------------------------------------------------------------------------------


def check_urls(cfg: Config, report: Report) -> None:
    hub = cfg.hub
    shown: list[str] = []
    problems = 0
    checks: list[tuple[str, str, bool, str]] = [("hub.url", hub.url, hub.allow_insecure_http, "hub.url")]
    if cfg.redmist.events:
        from consumer.redmist.profile import default_rest_url

        rest = cfg.redmist.rest_url or default_rest_url(hub.url)
        checks.append(("the REST URL", rest, hub.allow_insecure_http, "redmist.rest_url"))
    for what, url, insecure, key in checks:
        try:
            check_url_security(url, insecure, what, file=cfg.source, key=key)
            shown.append(f"{key} {url}")
        except ConfigError as err:
            problems += 1
            report.fail("urls", str(err), EXIT_CONFIG)
    if cfg.auth.grant not in ("none", "static"):
        try:
            endpoint = resolve_endpoint(cfg.auth, source=cfg.source)
            shown.append(f"token {endpoint.known}")
        except ConfigError as err:
            problems += 1
            report.fail("urls", str(err), EXIT_CONFIG)
    if not problems:
        report.ok("urls", "; ".join(shown))


def _secret_sources(cfg: Config) -> list[str]:
    """The secret keys set in the config (names only, never values)."""
    used = []
    for name in SECRET_KEYS:
        for suffix in ("", "_env", "_file"):
            if getattr(cfg.auth, name + suffix) is not None:
                used.append(f"auth.{name}{suffix}")
    rm = cfg.redmist
    for table in ("access_codes", "access_codes_env", "access_codes_file"):
        used += [f"redmist.{table}.{ev}" for ev in getattr(rm, table)]
    return used


def check_secrets(cfg: Config, report: Report, env: Mapping[str, str]) -> TokenProvider | None:
    """Every secret the config uses can be read (strictly: world-readable is an error). Returns the
    token provider (built, nothing fetched yet) when the [auth] table is sound."""
    ok = True
    provider: TokenProvider | None = None
    try:
        provider = build_token_provider(cfg.auth, source=cfg.source, env=env, strict=True)
    except ConfigError as err:
        ok = False
        report.fail("secrets", str(err), EXIT_CONFIG)
    try:
        load_access_codes(cfg, env=env, strict=True)
    except ConfigError as err:
        ok = False
        report.fail("secrets", str(err), EXIT_CONFIG)
    if ok:
        used = _secret_sources(cfg)
        report.ok("secrets", f"grant {cfg.auth.grant}; " + (", ".join(used) if used else "no secrets used"))
    return provider


def _writable(path_text: str, *, needs_dir_write: bool) -> str | None:
    """Why `path_text` cannot be written/created by this process, or None."""
    path = Path(path_text).expanduser()
    parent = path.parent
    if not parent.exists():
        return f"directory {str(parent)!r} does not exist"
    if not parent.is_dir():
        return f"{str(parent)!r} is not a directory"
    if path.exists():
        if path.is_dir():
            return f"{str(path)!r} is a directory"
        if not os.access(path, os.W_OK):
            return f"{str(path)!r} is not writable by this user (uid {os.getuid()})"
        if needs_dir_write and not os.access(parent, os.W_OK | os.X_OK):
            return f"directory {str(parent)!r} is not writable (needed to rotate/replace the file)"
        return None
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create {str(path)!r}: directory {str(parent)!r} is not writable by this user"
    return None


def check_sinks(cfg: Config, report: Report) -> None:
    shown = []
    problems = 0
    for i, sink in enumerate(cfg.sinks):
        if sink.type != "file" or not sink.path:
            shown.append(f"sinks.{i} {sink.type}")
            continue
        why = _writable(sink.path, needs_dir_write=bool(sink.rotate_bytes or sink.rotate_daily))
        if why:
            problems += 1
            report.fail("sinks", f"{cfg.source}: sinks.{i}.path: {why}", EXIT_CONFIG)
        else:
            shown.append(f"sinks.{i} file {sink.path}")
    if cfg.redmist.state_path:
        why = _writable(cfg.redmist.state_path, needs_dir_write=True)  # temp file + rename
        if why:
            problems += 1
            report.fail("sinks", f"{cfg.source}: redmist.state_path: {why}", EXIT_CONFIG)
        else:
            shown.append(f"state {cfg.redmist.state_path}")
    if not problems:
        report.ok("sinks", "; ".join(shown) + " (writable)" if shown else "none")


def check_http(cfg: Config, report: Report) -> None:
    http = cfg.http
    if not http.enabled:
        report.skip("http", "[http] disabled")
        return
    where = f"{http.host}:{http.port}"
    try:
        infos = socket.getaddrinfo(http.host, http.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        report.fail(
            "http", f"{cfg.source}: http.host: cannot resolve {http.host!r}: {err.strerror}", EXIT_CONFIG
        )
        return
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((addr[0], 0, *addr[2:]))
        except OSError as err:
            report.fail(
                "http",
                f"{cfg.source}: http.host: {http.host!r} is not an address of this machine ({err.strerror})",
                EXIT_CONFIG,
            )
            return
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:  # perhaps the running daemon itself: not a config error
                report.warn("http", f"{where}: port in use now (another instance running?)")
                return
            report.fail("http", f"{cfg.source}: http.port: cannot bind {where}: {err.strerror}", EXIT_CONFIG)
            return
    report.ok("http", f"{where} (bindable)")


# -- online checks ----------------------------------------------------------------------------------


async def check_token(cfg: Config, report: Report, provider: TokenProvider, step_timeout: float) -> bool:
    t0 = time.monotonic()
    try:
        token = await provider.get_token(max_wait=step_timeout)
    except TokenRequestRejected as err:
        report.fail("token", str(err), EXIT_CREDENTIALS)
        return False
    except TokenUnavailable as err:
        report.fail("token", str(err), EXIT_UNAVAILABLE)
        return False
    elapsed = time.monotonic() - t0
    info = provider.last_token_info
    if info is None:
        report.ok("token", f"grant {cfg.auth.grant}: no token needed")
        return True
    expiry = f"expires in {info.expires_in:.0f} s" if info.expires_in is not None else "no expiry"
    scope = f", scope {info.scope!r}" if info.scope else ""
    who = f", client_id {cfg.auth.client_id!r}" if cfg.auth.client_id else ""
    kind = "JWT" if info.is_jwt else "opaque"
    report.ok(
        "token",
        f"{info.grant}{who}: {kind} {info.fingerprint}, {expiry}{scope} ({elapsed:.2f} s)"
        + ("" if token else " (empty)"),
    )
    return True


async def check_hub(cfg: Config, report: Report, provider: TokenProvider, step_timeout: float) -> bool:
    from consumer.daemon import Daemon
    from consumer.signalr.connection import HubAuthError
    from consumer.systemd import Notifier

    # One attempt, no reconnects: the daemon's own connection setup with the retry policy off.
    hub = msgspec.structs.replace(cfg.hub, retry_initial_start=False, reconnect="never")
    once = msgspec.structs.replace(cfg, hub=hub)
    daemon = Daemon(once, workers=[], token_provider=provider, notifier=Notifier(None))
    steps = "WebSocket + handshake" if hub.skip_negotiation else "negotiate + WebSocket + handshake"
    t0 = time.monotonic()
    try:
        conn = await daemon._build_connection(provider)
        try:
            async with asyncio.timeout(step_timeout):
                await conn.start()
            connection_id = conn.connection_id
        finally:
            await conn.stop()
    except (CredentialsRejected, HubAuthError) as err:
        report.fail("hub", f"{hub.url}: {describe_error(err)}", EXIT_CREDENTIALS)
        return False
    except ConfigError as err:
        report.fail("hub", str(err), EXIT_CONFIG)
        return False
    except TimeoutError:
        report.fail("hub", f"{hub.url}: no handshake within {step_timeout:g} s", EXIT_UNAVAILABLE)
        return False
    except Exception as err:
        report.fail("hub", f"{hub.url}: {describe_error(err)}", EXIT_UNAVAILABLE)
        return False
    ident = f", connection id {connection_id}" if connection_id else ""
    report.ok("hub", f"{hub.url}: {steps} ({hub.protocol}){ident}, closed ({time.monotonic() - t0:.2f} s)")
    return True


async def _snapshot_request(
    http: httpx.AsyncClient,
    url: str,
    ev: int,
    headers: dict[str, str],
    *,
    rm: RedMistConfig,
    step_timeout: float,
) -> BoundedResponse:
    """One snapshot GET; a 429 (the REST API's per-IP rate limit) is retried once after its
    Retry-After when that fits in `step_timeout`."""
    for attempt in (1, 2):
        resp = await bounded_request(
            http,
            "GET",
            url,
            params={"eventId": str(ev)},
            headers=headers,
            max_bytes=rm.snapshot_max_bytes,
            deadline=rm.snapshot_timeout_seconds,
        )
        wait = parse_retry_after(resp.headers.get("Retry-After"), time.time())
        if resp.status_code != 429 or attempt == 2 or wait is None or wait > step_timeout:
            return resp
        await asyncio.sleep(wait)
    raise AssertionError("unreachable")


async def check_snapshots(
    cfg: Config, report: Report, provider: TokenProvider, env: Mapping[str, str], *, step_timeout: float
) -> None:
    from consumer.redmist.profile import JSON_ACTION, MSGPACK_ACTION, default_rest_url

    rm = cfg.redmist
    rest = (rm.rest_url or default_rest_url(cfg.hub.url)).rstrip("/")
    codes = load_access_codes(cfg, env=env)
    json_format = rm.snapshot_format == "json"
    action = JSON_ACTION if json_format else MSGPACK_ACTION
    accept = "application/json" if json_format else "application/x-msgpack"
    events = rm.events[:MAX_SNAPSHOTS]
    async with httpx.AsyncClient(auth=BearerAuth(provider), follow_redirects=False) as http:
        for n, ev in enumerate(events):
            if n:
                await asyncio.sleep(rm.snapshot_min_interval_seconds)  # the REST API's rate limit
            headers = {"Accept": accept}
            code = codes.get(str(ev))
            if code is not None:
                headers["X-Event-Access-Code"] = code.reveal()
            t0 = time.monotonic()
            try:
                resp = await _snapshot_request(
                    http, f"{rest}/v2/Events/{action}", ev, headers, rm=rm, step_timeout=step_timeout
                )
            except Exception as err:
                report.fail("snapshot", f"event {ev}: {action}: {describe_error(err)}", EXIT_UNAVAILABLE)
                continue
            elapsed = time.monotonic() - t0
            if resp.status_code in (401, 403):
                why = "access code or token refused" if code is not None else "token refused (private event?)"
                report.fail(
                    "snapshot",
                    f"event {ev}: {action} answered HTTP {resp.status_code}: {why}",
                    EXIT_CREDENTIALS,
                )
            elif resp.status_code != 200:
                report.fail(
                    "snapshot", f"event {ev}: {action} answered HTTP {resp.status_code}", EXIT_UNAVAILABLE
                )
            else:
                report.ok(
                    "snapshot", f"event {ev}: {action} HTTP 200, {len(resp.content)} bytes ({elapsed:.2f} s)"
                )
    if len(rm.events) > MAX_SNAPSHOTS:
        report.skip("snapshot", f"{len(rm.events) - MAX_SNAPSHOTS} more events not requested")


# -- the command ------------------------------------------------------------------------------------


async def preflight(cfg: Config, *, online: bool, step_timeout: float, env: Mapping[str, str]) -> Report:
    report = Report(cfg.source)
    report.ok("schema", "parsed and validated")
    check_urls(cfg, report)
    provider = check_secrets(cfg, report, env)
    check_sinks(cfg, report)
    check_http(cfg, report)
    if provider is None:
        if online:
            report.skip("online", "not attempted: fix the problems above first")
        return report
    try:
        if not online:
            return report
        if report.exit_code != EXIT_OK:
            report.skip("online", "not attempted: fix the problems above first")
            return report
        if not await check_token(cfg, report, provider, step_timeout):
            report.skip("hub", "not attempted without a token")
            return report
        hub_ok = await check_hub(cfg, report, provider, step_timeout)
        if cfg.redmist.events and hub_ok:
            await check_snapshots(cfg, report, provider, env, step_timeout=step_timeout)
        elif cfg.redmist.events:
            report.skip("snapshot", "not attempted: the hub check failed")
        else:
            report.skip("snapshot", "no RedMist profile ([redmist] events)")
    finally:
        await provider.aclose()
    return report


def main(args: argparse.Namespace) -> int:
    setup_logging("WARNING")  # permission warnings etc. go to stderr; the report to stdout
    cfg = load_config(args.config)  # a schema error: one line on stderr, exit 78 (consumer.cli)
    report = asyncio.run(preflight(cfg, online=args.online, step_timeout=args.timeout, env=os.environ))
    if args.show_config:
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(to_display(cfg)), indent=2).decode() + "\n")
    sys.stdout.write(report.render())
    return report.exit_code


__all__ = ["Report", "preflight"]
