"""Reconnect gap over repeated hub restarts, and token requests per hour at steady state.

Both run the REAL daemon process (`python -m consumer run --config FILE`, file sink, client_credentials
against the simulator's IdP, the RedMist profile subscribed to one event) against the simulator
(`consumer.sim.Simulator`, in this process, race driver off). A traffic task broadcasts one numbered
`ReceiveCarPatches` to the event's group every TRAFFIC_INTERVAL seconds.

Reconnect gap (`run_reconnect`): after HOLD_S of steady traffic the simulator's `restart` fault drops
every connection, stops listening for DOWN_S seconds and listens again on the same port; `up` is the
wall-clock time `restart` returned (listening again). Read from the daemon's sink file (timestamps the
daemon wrote, same clock): gap = `received_at` of the first invocation after `up` - `up`; split into
up -> the `reconnected` marker (backoff wait + connect) and marker -> first invocation (resubscribe round
and the first broadcast; the traffic interval adds up to TRAFFIC_INTERVAL). The daemon runs with its
production reconnect defaults (`reconnect = "daemon"`: 0 s after a healthy connection, then
exponential backoff from 1 s drawn in [c/2, c], capped at `reconnect_max_delay_seconds` = 5 s; a
connection that lived under `healthy_after_seconds` = 10 s counts as a failed attempt), so the backoff
draw dominates the gap. Results measured before 2026-12 used full jitter capped at 30 s.

Token requests per hour (`run_tokens`), measured with short tokens and scaled: the simulator's IdP issues
tokens of LIFETIME seconds (require_auth on); the daemon runs for `lifetimes` token lifetimes after it
first relays, and the IdP's own request counter gives the requests in that window. The token factory's
schedule is proportional to the lifetime for both LIFETIME and 300 s tokens (refresh at
min(L - 30 s, 0.8 L), or 0.8 L when L - 30 s <= 0: 240 s = 0.8 x 300 s), and the daemon's other token
uses (a connect, a snapshot) follow from the hub's closes, so requests per lifetime carry over:
per hour at 300 s = requests per lifetime x 12. Two hubs: one that closes each connection when its token
expires (the simulator's default, `Close(allowReconnect=true)` as ASP.NET's
CloseOnAuthenticationExpiration does) and one that does not (ASP.NET's default).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from harness import ROOT

from consumer.logs import setup_logging
from consumer.sim.hub import HubSettings
from consumer.sim.simulator import SimConfig, Simulator

TARGET = "ReceiveCarPatches"
TRAFFIC_INTERVAL = 0.005
HOLD_S = 1.0
DOWN_S = 1.0
SECRET_ENV = "BENCH_CLIENT_SECRET"


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class SinkTail:
    """Incremental reader of the daemon's sink file (complete lines only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.records: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        new = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
        self.records.extend(new)
        return new


async def until(cond: Any, timeout: float, what: str) -> Any:
    """Poll a condition on a file another process writes (nothing to await), every 10 ms."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


class Traffic:
    def __init__(self, sim: Simulator, interval: float) -> None:
        self.sim = sim
        self.group = f"evt{sim.event_ids[0]}-sub"
        self.interval = interval
        self.seq = 0
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        event = str(self.sim.event_ids[0])
        while True:
            self.seq += 1
            patch = {"eventId": event, "sessionId": "1", "number": str(self.seq % 60), "benchSeq": self.seq}
            self.sim.hub.server.send_to_group(self.group, TARGET, [patch])
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


def daemon_toml(sim: Simulator, out: Path) -> str:
    q = json.dumps
    return (
        "\n".join(
            [
                "[auth]",
                'grant = "client_credentials"',
                f"token_url = {q(sim.token_url)}",
                f"client_id = {q(sim.client_id)}",
                f"client_secret_env = {q(SECRET_ENV)}",
                "[hub]",
                f"url = {q(sim.hub_url)}",
                'protocol = "json"',
                "allow_insecure_http = true",
                "[redmist]",
                f"events = [{sim.event_ids[0]}]",
                "[[sinks]]",
                'type = "file"',
                f"path = {q(str(out))}",
                'fsync = "never"',
                "[logging]",
                'level = "WARNING"',
                'format = "json"',
            ]
        )
        + "\n"
    )


@contextlib.asynccontextmanager
async def simulator(
    *, token_lifetime: float = 300.0, require_auth: bool = False, close_on_expiry: bool = True
) -> AsyncIterator[Simulator]:
    settings = HubSettings(
        require_auth=require_auth,
        close_on_token_expiry=close_on_expiry,
        snapshot_window_token=0.01,
        snapshot_bucket_size=1000.0,
        snapshot_bucket_rate=1000.0,
        global_rate_token=1000.0,
        global_burst=1000.0,
    )
    cfg = SimConfig(events=1, autostart=False, token_lifetime=token_lifetime, hub=settings)
    async with Simulator(cfg) as sim:
        yield sim


@contextlib.asynccontextmanager
async def daemon(
    sim: Simulator, tmp: Path, name: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, SinkTail]]:
    out = tmp / f"{name}.jsonl"
    out.unlink(missing_ok=True)
    cfg = tmp / f"{name}.toml"
    cfg.write_text(daemon_toml(sim, out))
    env = {**os.environ, SECRET_ENV: sim.client_secret}
    with (tmp / f"{name}.log").open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "consumer",
            "run",
            "--config",
            str(cfg),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log_file,
            env=env,
            cwd=ROOT,
        )
    try:
        yield proc, SinkTail(out)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _invocations_after(records: list[dict[str, Any]], t: float) -> list[dict[str, Any]]:
    return [r for r in records if r.get("kind") == "invocation" and _ts(r["received_at"]) > t]


async def _relaying(tail: SinkTail, proc: Any, after: float, timeout: float) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        if proc.returncode is not None:
            raise RuntimeError(f"the daemon exited {proc.returncode}")
        tail.poll()
        found = _invocations_after(tail.records, after)
        return found[0] if found else None

    result: dict[str, Any] = await until(check, timeout, "the daemon to relay")
    return result


async def _reconnect(restarts: int, tmp: Path, log: Any) -> dict[str, Any]:
    rounds: list[dict[str, float]] = []
    async with simulator() as sim:
        traffic = Traffic(sim, TRAFFIC_INTERVAL)
        traffic.start()
        try:
            async with daemon(sim, tmp, "reconnect") as (proc, tail):
                await _relaying(tail, proc, 0.0, 30)
                for i in range(restarts):
                    await asyncio.sleep(HOLD_S)  # steady traffic between faults (the schedule)
                    down = time.time()
                    await sim.faults.restart(down_seconds=DOWN_S)
                    up = time.time()
                    first = await _relaying(tail, proc, up, 60)
                    marker = next(
                        (
                            r
                            for r in tail.records
                            if r.get("kind") == "connection"
                            and r.get("target") == "reconnected"
                            and _ts(r["received_at"]) > down
                        ),
                        None,
                    )
                    first_t = _ts(first["received_at"])
                    row = {"gap_s": first_t - up, "down_s": up - down}
                    if marker is not None:
                        row["to_reconnected_s"] = _ts(marker["received_at"]) - up
                        row["reconnected_to_first_s"] = first_t - _ts(marker["received_at"])
                    rounds.append(row)
                    log(
                        f"  reconnect {i + 1}/{restarts}: gap {row['gap_s']:.3f} s "
                        f"(to reconnected {row.get('to_reconnected_s', float('nan')):.3f} s)"
                    )
        finally:
            await traffic.stop()

    def med(key: str) -> dict[str, float] | None:
        values = [r[key] for r in rounds if key in r]
        if not values:
            return None
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    return {
        "restarts": restarts,
        "down_seconds": DOWN_S,
        "hold_seconds": HOLD_S,
        "traffic_interval_seconds": TRAFFIC_INTERVAL,
        "gap_s": med("gap_s"),
        "to_reconnected_s": med("to_reconnected_s"),
        "reconnected_to_first_s": med("reconnected_to_first_s"),
        "rounds": rounds,
        "method": (
            f"Real daemon process (production reconnect defaults) vs the simulator; restart fault: all "
            f"connections dropped, not listening for {DOWN_S} s, listening again on the same port (`up`). "
            "gap = received_at of the first invocation after `up` - `up` (daemon-written timestamps, same "
            f"clock); traffic every {TRAFFIC_INTERVAL * 1000:g} ms."
        ),
    }


async def _tokens_one(lifetime: float, lifetimes: int, close_on_expiry: bool, tmp: Path) -> dict[str, Any]:
    name = "tokens-close" if close_on_expiry else "tokens-noclose"
    async with simulator(token_lifetime=lifetime, require_auth=True, close_on_expiry=close_on_expiry) as sim:
        traffic = Traffic(sim, 0.05)
        traffic.start()
        try:
            async with daemon(sim, tmp, name) as (proc, tail):
                await _relaying(tail, proc, 0.0, 30)
                before = sim.idp.stats["token_requests"]
                t0 = time.time()
                # when each token request happened: the IdP's counter, read every 10 ms (in-process)
                times: list[float] = []
                seen = before
                while time.time() - t0 < lifetime * lifetimes:
                    now = sim.idp.stats["token_requests"]
                    times.extend([time.time()] * (now - seen))
                    seen = now
                    await asyncio.sleep(0.01)
                window = time.time() - t0
                requests = sim.idp.stats["token_requests"] - before
                if proc.returncode is not None:
                    raise RuntimeError(f"the daemon exited {proc.returncode}")
                tail.poll()
                reconnects = sum(
                    1
                    for r in tail.records
                    if r.get("kind") == "connection"
                    and r.get("target") == "reconnected"
                    and _ts(r["received_at"]) > t0
                )
        finally:
            await traffic.stop()
    if len(times) >= 2:
        # mean spacing of the requests (window edges cut a periodic schedule arbitrarily)
        per_lifetime = (len(times) - 1) / ((times[-1] - times[0]) / lifetime)
    else:
        per_lifetime = requests / (window / lifetime)
    return {
        "hub_closes_at_expiry": close_on_expiry,
        "token_lifetime_s": lifetime,
        "window_s": window,
        "token_requests": requests,
        "reconnects": reconnects,
        "request_offsets_s": [round(t - times[0], 3) for t in times] if times else [],
        "requests_per_lifetime": per_lifetime,
        "requests_per_hour_300s": per_lifetime * 3600 / 300,
    }


def run_reconnect(*, restarts: int, tmp: Path, log: Any = print) -> dict[str, Any]:
    setup_logging("WARNING", fmt="json")  # the in-process simulator's own logs
    return asyncio.run(_reconnect(restarts, tmp, log))


def run_tokens(*, lifetime: float, lifetimes: int, tmp: Path, log: Any = print) -> dict[str, Any]:
    setup_logging("WARNING", fmt="json")

    async def both() -> list[dict[str, Any]]:
        return list(
            await asyncio.gather(
                _tokens_one(lifetime, lifetimes, True, tmp), _tokens_one(lifetime, lifetimes, False, tmp)
            )
        )

    rows = asyncio.run(both())
    for row in rows:
        log(
            f"  tokens (hub closes at expiry: {row['hub_closes_at_expiry']}): {row['token_requests']} "
            f"requests in {row['window_s']:.1f} s of {lifetime:g} s tokens -> "
            f"{row['requests_per_hour_300s']:.1f}/h at 300 s"
        )
    return {
        "method": (
            f"Real daemon process vs the simulator's IdP issuing {lifetime:g} s tokens, {lifetimes} "
            "lifetimes measured after the first relayed message; the IdP's request counter read every "
            "10 ms; requests per lifetime = (requests - 1) / (last - first request time) x lifetime "
            "(with < 2 requests: requests / window); scaled by the lifetime (the refresh schedule is "
            "0.8 x lifetime for both these and 300 s tokens): per hour at 300 s = requests per "
            "lifetime x 12."
        ),
        "rows": rows,
    }
