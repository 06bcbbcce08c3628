"""HTTP requests to the IdP with a total deadline and a body size limit.

httpx's `timeout` applies per network operation: an IdP that trickles one byte every few seconds
never trips it. `bounded_request` bounds the whole exchange (connect, send, headers, every body
byte) by one deadline, and stops reading a body as soon as it exceeds `max_bytes` (a declared
Content-Length beyond the limit is refused before reading anything). Bodies are asked for without
content coding (`Accept-Encoding: identity`); gzip/deflate sent anyway are decoded with the same
bound on the decoded size, so a compression bomb is cut off too.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024


class ResponseTooLarge(Exception):
    """The body exceeded the limit; `read` is how many bytes were read before stopping."""

    def __init__(self, limit: int, read: int, declared: int | None) -> None:
        self.limit = limit
        self.read = read
        self.declared = declared
        if declared is not None:
            text = f"response body declares {declared} bytes, over the {limit}-byte limit; not read"
        else:
            text = f"response body exceeded {limit} bytes (the limit); stopped after reading {read} bytes"
        super().__init__(text)


class UnsupportedEncoding(Exception):
    """A Content-Encoding other than identity, gzip or deflate."""


class DeadlineExceeded(Exception):
    """The whole request (connect to last body byte) took longer than its deadline."""


@dataclass(frozen=True, slots=True)
class BoundedResponse:
    status_code: int
    headers: httpx.Headers
    content: bytes


def _decoder(encoding: str) -> Any:
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return None
    if enc in ("gzip", "x-gzip"):
        return zlib.decompressobj(zlib.MAX_WBITS | 16)
    if enc == "deflate":
        return zlib.decompressobj()
    raise UnsupportedEncoding(f"unsupported Content-Encoding {encoding!r}")


async def _raw_chunks(resp: httpx.Response) -> AsyncIterator[bytes]:
    if resp.is_stream_consumed:  # already in memory (a transport that answers with bytes, e.g. a mock)
        yield resp.content
        return
    async for raw in resp.aiter_raw():
        yield raw


async def bounded_request(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    max_bytes: int,
    deadline: float,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> BoundedResponse:
    """Send one request; the answer must be complete within `deadline` seconds and its (decoded) body
    at most `max_bytes`. Raises DeadlineExceeded, ResponseTooLarge, UnsupportedEncoding, or the
    httpx.HTTPError of a network failure. The connection is closed when the body is abandoned."""
    hdrs = {"Accept-Encoding": "identity", **(headers or {})}
    try:
        async with asyncio.timeout(deadline):
            async with http.stream(method, url, headers=hdrs, timeout=deadline, **kwargs) as resp:
                declared_raw = resp.headers.get("Content-Length", "")
                declared = int(declared_raw) if declared_raw.strip().isdigit() else None
                if declared is not None and declared > max_bytes:
                    raise ResponseTooLarge(max_bytes, 0, declared)
                decoder = _decoder(resp.headers.get("Content-Encoding", ""))
                chunks: list[bytes] = []
                size = 0  # decoded bytes kept
                raw_read = 0
                async for raw in _raw_chunks(resp):
                    raw_read += len(raw)
                    if decoder is None:
                        data = raw
                    else:
                        # Never decode more than what still fits (+1 byte to notice the excess).
                        data = decoder.decompress(raw, max_bytes - size + 1)
                        if decoder.unconsumed_tail:
                            raise ResponseTooLarge(max_bytes, raw_read, None)
                    size += len(data)
                    if size > max_bytes or raw_read > max_bytes:
                        raise ResponseTooLarge(max_bytes, raw_read, None)
                    chunks.append(data)
                if decoder is not None:
                    tail = decoder.flush(max_bytes - size + 1)
                    size += len(tail)
                    if size > max_bytes:
                        raise ResponseTooLarge(max_bytes, raw_read, None)
                    chunks.append(tail)
                return BoundedResponse(resp.status_code, resp.headers, b"".join(chunks))
    except TimeoutError:
        raise DeadlineExceeded(f"no complete answer within {deadline:g} s") from None
    except zlib.error as err:
        raise UnsupportedEncoding(f"body does not decode: {err}") from None
