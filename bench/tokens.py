"""Token factory benchmark: cache-hit cost of get_token() and IdP requests under 10,000 callers.

    .venv/bin/python bench/tokens.py                 # httpx.MockTransport IdP (5 ms latency)
    .venv/bin/python bench/tokens.py --mock-server   # also against oauth2-mock-server@8 (node)

Prints one line per figure; the README's auth section quotes them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consumer.auth import AuthConfig, TokenProvider, build_token_provider  # noqa: E402
from consumer.logs import setup_logging  # noqa: E402
from consumer.secret import Secret  # noqa: E402

CALLERS = 10_000
HITS = 200_000


def mock_client(counter: list[int], latency: float) -> httpx.AsyncClient:
    async def handler(_request: httpx.Request) -> httpx.Response:
        counter[0] += 1
        await asyncio.sleep(latency)
        return httpx.Response(200, json={"access_token": f"bench-token-{counter[0]}", "expires_in": 300})

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def config(url: str) -> AuthConfig:
    return AuthConfig(token_url=url, client_id="bench", client_secret=Secret("bench-secret"))


async def cache_hit_ns(provider: TokenProvider) -> float:
    await provider.get_token()
    start = time.perf_counter_ns()
    for _ in range(HITS):
        await provider.get_token()
    return (time.perf_counter_ns() - start) / HITS


async def stampede(provider: TokenProvider) -> float:
    start = time.perf_counter()
    tokens = await asyncio.gather(*(provider.get_token() for _ in range(CALLERS)))
    assert len(set(tokens)) == 1
    return time.perf_counter() - start


async def run_mock(latency: float) -> None:
    counter = [0]
    provider = build_token_provider(
        config("https://idp.bench/token"), http=mock_client(counter, latency), env={}
    )
    elapsed = await stampede(provider)
    print(
        f"mocktransport: {CALLERS} concurrent cold callers -> {counter[0]} IdP request(s) "
        f"in {elapsed * 1000:.1f} ms"
    )
    ns = await cache_hit_ns(provider)
    print(f"mocktransport: cache hit {ns:.0f} ns per get_token() (mean of {HITS})")
    first = await provider.get_token()
    provider.invalidate(first)
    before = counter[0]
    await asyncio.sleep(1.0)  # let the 1 s rate floor pass so the refresh is not delayed
    elapsed = await stampede(provider)
    print(
        f"mocktransport: {CALLERS} callers after invalidate -> {counter[0] - before} IdP request(s) "
        f"in {elapsed * 1000:.1f} ms"
    )
    await provider.aclose()


async def run_mock_server() -> None:
    node = shutil.which("node")
    if node is None:
        print("oauth2-mock-server: skipped (no node)")
        return
    script = ROOT / "tests" / "auth" / "idp" / "mock_server.mjs"
    proc = subprocess.Popen(
        [node, str(script), "{}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["ready"].rstrip("/")
        provider = build_token_provider(config(f"{url}/token"), env={})
        elapsed = await stampede(provider)
        ns = await cache_hit_ns(provider)
        await provider.aclose()
        proc.terminate()
        out, _ = proc.communicate(timeout=5)
        requests = sum(1 for line in out.splitlines() if '"token"' in line)
        print(
            f"oauth2-mock-server: {CALLERS} concurrent cold callers -> {requests} IdP request(s) "
            f"in {elapsed * 1000:.1f} ms"
        )
        print(f"oauth2-mock-server: cache hit {ns:.0f} ns per get_token()")
    finally:
        if proc.poll() is None:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latency", type=float, default=0.005, help="MockTransport IdP latency (s)")
    parser.add_argument("--mock-server", action="store_true", help="also run against oauth2-mock-server")
    args = parser.parse_args()
    setup_logging("WARNING")
    print(f"python {sys.version.split()[0]}, httpx {httpx.__version__}")
    asyncio.run(run_mock(args.latency))
    if args.mock_server:
        asyncio.run(run_mock_server())


if __name__ == "__main__":
    main()
