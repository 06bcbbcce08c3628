"""The live board over HTTP: `/v1/events`, `/v1/events/{id}/board` (ETag) and `/v1/events/{id}/stream` (SSE).

The data is `LiveState`'s merged board. One pump task wakes on every state change, waits out the
rate limit (at most `max_hz` publications per second: changes in between are coalesced) and, per
event, diffs the new board against the last published one:

- `event: board` — the full board (`{"event_id", "epoch", "session", "cars": {number: row}}`),
  first on every stream and after a reset;
- `event: delta` — only what changed: `{"session": {field: value}, "cars": {number: {field: value}},
  "removed": [number]}`;
- `event: reset` — the board started over (ReceiveReset, a new session): a `board` follows;
- `event: hub` — `{"state": "connected" | "reconnecting" | ...}` whenever the daemon's hub
  connection changes (and first on every stream);
- `: heartbeat` comments on every stream every `heartbeat` seconds.

`board`, `delta` and `reset` frames carry an id `<boot>.<seq>` (`boot` is random per daemon run,
`seq` counts publications per event). A client reconnecting with `Last-Event-ID` gets the frames it
missed from a bounded ring (the last `ring_size` publications of the current epoch, at most
`ring_bytes`) or, when they are no longer there (or the daemon restarted), a fresh full board.

Fan-out is bounded: at most `max_clients` streams (beyond: 503 + `Retry-After`). A publication is
encoded once and written straight to every client's transport (no task per client); a client whose
transport still holds more than `client_buffer_bytes` unsent (plus what the kernel's send buffer
holds, SO_SNDBUF = 64 KiB) is dropped (`event_consumer_board_clients_dropped_total{reason="slow"}`) and its
browser reconnects by itself (then resumes from the ring or a full board).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from consumer.redmist.view import flag_name
from consumer.web.server import (
    Request,
    Response,
    Router,
    Stream,
    StreamSink,
    error_response,
    json_response,
)

__all__ = ["BoardCollector", "BoardService", "BoardSource", "board_delta", "flag_name"]

_ENCODER = msgspec.json.Encoder()
_EVENT_ID = re.compile(r"^[0-9]{1,10}$")


class BoardSource(Protocol):
    """What the board needs from `LiveState` (its public read API)."""

    def events(self) -> list[str]: ...
    def event_state(self, event_id: str) -> dict[str, Any] | None: ...
    def epoch(self, event_id: str) -> int: ...
    def event_status(self, event_id: str) -> str: ...
    def last_message_at(self, event_id: str) -> float | None: ...
    async def wait_changed(self, since_version: int) -> int: ...


def _split(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    session = {k: v for k, v in state.items() if k != "carPositions"}
    cars = {str(r.get("n")): dict(r) for r in state.get("carPositions") or () if isinstance(r, dict)}
    return session, cars


def board_delta(
    old: tuple[dict[str, Any], dict[str, dict[str, Any]]],
    new: tuple[dict[str, Any], dict[str, dict[str, Any]]],
) -> dict[str, Any] | None:
    """Only the changed fields of the changed rows (None when nothing changed)."""
    old_s, old_c = old
    new_s, new_c = new
    out: dict[str, Any] = {}
    session = {k: v for k, v in new_s.items() if old_s.get(k, _MISSING) != v}
    if session:
        out["session"] = session
    cars: dict[str, dict[str, Any]] = {}
    for number, row in new_c.items():
        before = old_c.get(number)
        if before is None:
            cars[number] = row
            continue
        changed = {k: v for k, v in row.items() if before.get(k, _MISSING) != v}
        if changed:
            cars[number] = changed
    if cars:
        out["cars"] = cars
    removed = [n for n in old_c if n not in new_c]
    if removed:
        out["removed"] = removed
    return out or None


_MISSING = object()


def _frame(kind: str, data: Any, frame_id: str | None = None) -> bytes:
    head = f"event: {kind}\n" + (f"id: {frame_id}\n" if frame_id is not None else "")
    return head.encode() + b"data: " + _ENCODER.encode(data) + b"\n\n"


class _Client:
    """One stream: frames go straight to its sink; a backlog beyond `limit` bytes drops it."""

    __slots__ = ("dropped", "limit", "sink")

    def __init__(self, sink: StreamSink, limit: int) -> None:
        self.sink = sink
        self.limit = limit
        self.dropped = False

    def push(self, frame: bytes, *, force: bool = False) -> bool:
        if self.dropped or self.sink.closed:
            return False
        backlog = self.sink.buffered()
        if not force and backlog and backlog + len(frame) > self.limit:
            self.dropped = True
            self.sink.abort()  # no clean end: the browser reconnects and resumes
            return False
        self.sink.write(frame)
        return True


class _Channel:
    def __init__(self, event_id: str, ring_size: int) -> None:
        self.event_id = event_id
        self.epoch = -1
        self.seq = 0
        self.base_seq = 0  # the seq of the full board the ring's deltas apply to
        self.board: tuple[dict[str, Any], dict[str, dict[str, Any]]] | None = None
        self.ring: deque[tuple[int, bytes]] = deque(maxlen=ring_size)
        self.ring_bytes = 0
        self.clients: set[_Client] = set()


class BoardService:
    def __init__(
        self,
        state: BoardSource,
        *,
        events: Iterable[int | str] = (),
        max_hz: float = 10.0,
        max_clients: int = 1000,
        client_buffer_bytes: int = 256 * 1024,
        ring_size: int = 256,
        ring_bytes: int = 4 * 1024 * 1024,
        heartbeat: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = state
        self.followed = [str(e) for e in events]
        self.min_interval = 1.0 / max_hz
        self.max_clients = max_clients
        self.client_buffer_bytes = client_buffer_bytes
        self.ring_size = ring_size
        self.ring_bytes = ring_bytes
        self.heartbeat = heartbeat
        self.clock = clock
        self.boot = secrets.token_hex(4)
        self.hub_state = "connecting"
        self.channels: dict[str, _Channel] = {}
        self.dropped: dict[str, int] = {"slow": 0, "limit": 0}
        self.published = 0

    # -- inputs --------------------------------------------------------------------------------

    def set_hub_state(self, state: str) -> None:
        """The daemon's hub connection state (connecting / connected / reconnecting / closed)."""
        if state == self.hub_state:
            return
        self.hub_state = state
        frame = _frame("hub", {"state": state})
        for channel in self.channels.values():
            for client in list(channel.clients):
                self._push(channel, client, frame)

    def event_ids(self) -> list[str]:
        ids = dict.fromkeys(self.followed)
        ids.update(dict.fromkeys(self.state.events()))
        return list(ids)

    def clients(self) -> int:
        return sum(len(c.clients) for c in self.channels.values())

    # -- the pump ------------------------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._pump())
            tg.create_task(self._heartbeats())

    async def _heartbeats(self) -> None:
        """A comment on every stream every `heartbeat` seconds (keeps proxies and clients sure)."""
        while True:
            await asyncio.sleep(self.heartbeat)
            for channel in self.channels.values():
                for client in list(channel.clients):
                    self._push(channel, client, b": heartbeat\n\n")

    async def _pump(self) -> None:
        version = 0
        last = -1e9
        while True:
            version = await self.state.wait_changed(version)
            wait = last + self.min_interval - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)  # the rate limit: changes meanwhile are coalesced
            last = self.clock()
            self.publish()

    def publish(self) -> None:
        """Diff every event's board against the last published one and fan the changes out."""
        for event_id in self.event_ids():
            self._publish(event_id)

    def _channel(self, event_id: str) -> _Channel:
        channel = self.channels.get(event_id)
        if channel is None:
            channel = self.channels[event_id] = _Channel(event_id, self.ring_size)
        return channel

    def _publish(self, event_id: str) -> None:
        channel = self._channel(event_id)
        state = self.state.event_state(event_id)
        epoch = self.state.epoch(event_id)
        new = _split(state) if state is not None else ({}, {})
        if epoch != channel.epoch or channel.board is None:
            first = channel.board is None and channel.epoch == -1
            channel.epoch = epoch
            channel.board = new
            channel.ring.clear()
            channel.ring_bytes = 0
            channel.seq += 1
            channel.base_seq = channel.seq
            self.published += 1
            board = self._board_frame(channel)
            frames = board if first else _frame("reset", {"epoch": epoch}) + board
            for client in list(channel.clients):
                self._push(channel, client, frames, force=True)
            return
        delta = board_delta(channel.board, new)
        channel.board = new
        if delta is None:
            return
        channel.seq += 1
        self.published += 1
        frame = _frame("delta", delta, self._id(channel))
        self._remember(channel, frame)
        for client in list(channel.clients):
            self._push(channel, client, frame)

    def _remember(self, channel: _Channel, frame: bytes) -> None:
        """Keep the delta for resuming clients: at most `ring_size` frames and `ring_bytes` bytes."""
        ring = channel.ring
        if len(ring) == ring.maxlen:
            channel.ring_bytes -= len(ring[0][1])
        ring.append((channel.seq, frame))
        channel.ring_bytes += len(frame)
        while channel.ring_bytes > self.ring_bytes and len(ring) > 1:
            channel.ring_bytes -= len(ring.popleft()[1])

    def _id(self, channel: _Channel) -> str:
        return f"{self.boot}.{channel.seq}"

    def _board_frame(self, channel: _Channel) -> bytes:
        session, cars = channel.board or ({}, {})
        data = {"event_id": channel.event_id, "epoch": channel.epoch, "session": session, "cars": cars}
        return _frame("board", data, self._id(channel))

    def _push(self, channel: _Channel, client: _Client, frame: bytes, *, force: bool = False) -> None:
        if not client.push(frame, force=force) and client in channel.clients:
            channel.clients.discard(client)
            if client.dropped:
                self.dropped["slow"] += 1

    # -- HTTP ----------------------------------------------------------------------------------

    def add_routes(self, router: Router) -> None:
        router.add("/v1/events", self._events)
        router.add("/v1/events/{id}/board", self._board)
        router.add("/v1/events/{id}/stream", self._stream)

    def _summary(self, event_id: str) -> dict[str, Any]:
        state = self.state.event_state(event_id) or {}
        status = self.state.event_status(event_id)
        if self.hub_state != "connected":
            status = "reconnecting"
        last = self.state.last_message_at(event_id)
        flag = state.get("currentFlag")
        return {
            "id": int(event_id) if event_id.isdigit() else event_id,
            "status": status,
            "event_name": state.get("eventName"),
            "session": {"id": state.get("sessionId"), "name": state.get("sessionName")}
            if "sessionId" in state
            else None,
            "flag": flag,
            "flag_name": flag_name(flag),
            "time_to_go": state.get("timeToGo"),
            "cars": len(state.get("carPositions") or ()),
            "last_message_age_seconds": None if last is None else round(self.clock() - last, 3),
            "epoch": self.state.epoch(event_id),
        }

    async def _events(self, _request: Request) -> Response:
        return json_response({"hub": self.hub_state, "events": [self._summary(e) for e in self.event_ids()]})

    def _event_id(self, request: Request) -> str | Response:
        raw = request.params["id"]
        if not _EVENT_ID.match(raw):
            return error_response(400, "the event id must be a positive integer")
        event_id = str(int(raw))
        if event_id not in self.event_ids():
            return error_response(404, f"event {event_id} is not followed by this daemon")
        return event_id

    async def _board(self, request: Request) -> Response:
        event_id = self._event_id(request)
        if isinstance(event_id, Response):
            return event_id
        state = self.state.event_state(event_id)
        if state is None:
            return error_response(503, f"no board yet for event {event_id}", [("retry-after", "1")])
        body = _ENCODER.encode(state)
        etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
        headers = [("etag", etag)]
        match = request.headers.get("if-none-match", "")
        if etag in {t.strip().removeprefix("W/") for t in match.split(",")} or match.strip() == "*":
            return Response(304, b"", headers=headers)
        return Response(200, body, headers=headers)

    async def _stream(self, request: Request) -> Response | Stream:
        event_id = self._event_id(request)
        if isinstance(event_id, Response):
            return event_id
        if self.clients() >= self.max_clients:
            self.dropped["limit"] += 1
            return error_response(503, "too many stream clients", [("retry-after", "5")])
        channel = self._channel(event_id)
        last_id = request.headers.get("last-event-id")
        clients: list[_Client] = []

        def on_open(sink: StreamSink) -> None:
            # synchronous: no publication can slip in between the first frames and joining the channel
            if channel.board is None:
                self._publish(event_id)
            client = _Client(sink, self.client_buffer_bytes)
            clients.append(client)
            client.push(b"retry: 1000\n\n", force=True)  # browsers reconnect after 1 s, not 3 s
            client.push(_frame("hub", {"state": self.hub_state}), force=True)
            for frame in self._resume(channel, last_id):
                client.push(frame, force=True)
            channel.clients.add(client)

        def on_close() -> None:
            for client in clients:
                channel.clients.discard(client)

        return Stream(on_open, on_close=on_close, headers=[("x-accel-buffering", "no")])

    def _resume(self, channel: _Channel, last_id: str | None) -> Iterator[bytes]:
        if last_id:
            boot, _, seq_text = last_id.strip().partition(".")
            if boot == self.boot and seq_text.isdigit():
                seq = int(seq_text)
                # resumable when every publication after `seq` is still in the ring
                oldest = channel.ring[0][0] if channel.ring else channel.seq + 1
                if channel.base_seq <= seq <= channel.seq and seq >= oldest - 1:
                    yield from (frame for s, frame in channel.ring if s > seq)
                    return
        yield self._board_frame(channel)


class BoardCollector(Collector):
    def __init__(self, board: BoardService) -> None:
        self.board = board

    def collect(self) -> Iterator[Metric]:
        clients = GaugeMetricFamily("event_consumer_board_clients", "Open board streams (SSE)")
        clients.add_metric([], float(self.board.clients()))
        yield clients
        dropped = CounterMetricFamily(
            "event_consumer_board_clients_dropped",
            "Board streams refused (limit) or dropped (slow: fell behind by client_buffer_bytes)",
            labels=["reason"],
        )
        for reason, n in sorted(self.board.dropped.items()):
            dropped.add_metric([reason], float(n))
        yield dropped
        frames = CounterMetricFamily("event_consumer_board_publications", "Board changes published")
        frames.add_metric([], float(self.board.published))
        yield frames
