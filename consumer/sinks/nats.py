"""`type = "nats"`: every envelope line published to a JetStream stream, acknowledged (at-least-once).

Per line: subject from the template (default `{hub}.{event_id}.{target}`, every value one sanitised
token), payload = the line as written by the file sink (byte for byte), headers `Nats-Msg-Id` (the
SHA-256 of the line truncated to 128 bits, hex: the same line always gets the same id, so a publish
retried after a lost ack or a server restart is dropped by the stream's duplicate window; SHA-256
because OpenSSL's is the cheapest strong hash here, 2.4 µs for 2.7 KB against BLAKE2b's 3.8),
`Event-Consumer-Seq` (the envelope `seq`) and `Content-Type: application/json`. (The HA takeover
does not use the id: two daemons' lines differ in `seq` and `received_at`; it matches content.)

A batch from the `SinkWorker` is published pipelined: up to `max_in_flight` lines and
`max_in_flight_bytes` unsettled at once (refilled when half is settled), the commands put into
nats-py's outgoing buffer and handed to its transport every `FLUSH_BYTES` (256 KiB), so the server
stores while the sink formats the next ones (waiting for nats-py's flusher task would hand them over
only when the loop next ran it). Acks (reply subjects under one inbox
subscription) are asked only for the first and the last line of every run of `ACK_EVERY` (256) lines:
the run counts as stored when those two acks are stream sequences exactly as far apart as the lines
(nothing in between refused, deduplicated or interleaved by another publisher); a run not proven
that way is published again with an ack per line (the stream drops what it already has by
`Nats-Msg-Id`), so at-least-once never rests on an ack that was not asked for. The first line whose
ack did not come (connection lost, `ack_timeout_seconds`, a stream error) ends the write: the lines
before it are reported stored (`PartialWrite`), the rest stay in the worker's bounded retry buffer
and are retried with its backoff; beyond `max_buffered` the oldest are dropped and counted, as for
every sink. Lines after the failed one that were stored anyway come back as duplicates on the retry
and the stream drops them (`duplicates` counts those acks).

Connection: one attempt at `open()` — rejected credentials exit 77 naming the server, an unreachable
server exits 69, a missing stream exits 78 naming the stream and the key (unless `create_stream`).
Later losses are not fatal: the next write reconnects (one attempt per write, so the worker's capped
exponential backoff paces the reconnects). The stream is created or updated at `open()` with
`create_stream = true` (subjects, max age, max bytes, duplicate window, file storage).

Size (about 750 lines, over the 700 guideline): the pipelined publisher, its ack-run proof and the
connection/stream setup share one window's state; split, each half would need the other's internals.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from consumer.errors import ConfigError, CredentialsRejected, ServiceUnavailable, describe_error
from consumer.logs import get_logger
from consumer.natsconn import NatsUnavailable, SubjectTemplate, connect, server_label
from consumer.sinks.base import PartialWrite

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

    from consumer.config import NatsSinkConfig

__all__ = ["NatsSink", "msg_id"]

log = get_logger(__name__)

CONTENT_TYPE = "application/json"
_HDR = (
    b"NATS/1.0\r\nNats-Msg-Id: %s\r\nEvent-Consumer-Seq: %d\r\nContent-Type: "
    + CONTENT_TYPE.encode()
    + b"\r\n\r\n"
)
FLUSH_BYTES = 256 * 1024  # hand the buffered commands to the socket every this many bytes
# Fast path: one ack requested for the first and the last line of every ACK_EVERY lines; the run in
# between counts as stored only when the stream sequences of those two acks are exactly that far apart.
ACK_EVERY = 256
# nats-py 2.x internals the fast path writes to (its outgoing command buffer); else `publish()`.
_FAST = True  # tests turn it off to cover the public path


class _Head(msgspec.Struct):
    """The envelope fields the subject and headers need (the rest of the line is skipped)."""

    seq: int = 0
    hub: str = ""
    kind: str = ""
    target: str = ""
    event_id: int | str | None = None


_decode_head = msgspec.json.Decoder(_Head).decode
_ARGS = b',"arguments":'


def _head(line: bytes) -> _Head:
    """The head fields of an envelope line. `arguments` is the envelope's last field and the bytes
    `,"arguments":` cannot occur inside a JSON string, so the part before it is decoded alone (the
    arguments are most of the line); anything else is decoded whole, and a non-envelope line gets
    empty fields."""
    cut = line.find(_ARGS, 0, 1024)
    try:
        if cut > 0:
            return _decode_head(line[:cut] + b"}")
        return _decode_head(line)
    except msgspec.DecodeError:
        try:
            return _decode_head(line)
        except msgspec.DecodeError:
            return _Head()


def _no_marker(target: str, info: dict[str, Any], event_id: int | str | None) -> bytes:
    raise RuntimeError("enable_ha() first")


def msg_id(line: bytes) -> str:
    """`Nats-Msg-Id` of a line: deterministic from its bytes (SHA-256 truncated to 128 bits, hex)."""
    return hashlib.sha256(line).hexdigest()[:32]


class NatsSink:
    """A `Sink` publishing to JetStream. `sync_interval` is None: an ack means stored."""

    sync_interval: float | None = None

    def __init__(
        self,
        cfg: NatsSinkConfig,
        connect_kwargs: Mapping[str, Any],
        *,
        name: str | None = None,
        hub: str | None = None,
        source: str = "<config>",
        key: str = "sinks.0.nats",
    ) -> None:
        self.cfg = cfg
        self.name = name or f"nats:{cfg.stream}"
        self._kwargs = dict(connect_kwargs)
        self._servers = server_label(list(connect_kwargs["servers"]))
        self._source = source
        self._hub = hub
        self._key = key
        self._subject = SubjectTemplate(cfg.subject)
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._lost: asyncio.Future[None] | None = None
        self._closing = False
        # Counters (read by tests and the benchmark).
        self.published = 0  # acks received
        self.duplicates = 0  # acks saying the stream already had the message
        self.unproven = 0  # lines published again with an ack each (their run was not proven)
        self.connects = 0
        self.peak_in_flight_bytes = 0  # the most line bytes published and not yet settled at once
        # Hot-standby pair (enable_ha): "leader" publishes; "standby" keeps a bounded buffer;
        # "takeover" publishes what the stream lacks when the failover marker comes through.
        self.role: str = "leader"
        self._buffer: deque[bytes] | None = None
        self._backlog: deque[bytes] = deque()
        self._make_marker: Callable[[str, dict[str, Any], int | str | None], bytes] = _no_marker
        self._on_gap: Callable[[list[int | str]], None] = lambda _events: None
        self._node = ""
        self.takeovers: list[dict[str, Any]] = []
        self._inbox = ""
        self._token = 0
        self._batch: _Batch | None = None
        self._subjects: dict[tuple[str, int | str | None, str, str], bytes] = {}  # HPUB subjects

    # -- connection ----------------------------------------------------------------------------

    async def _connect(self) -> JetStreamContext:
        # One `lost` future per connection: a late callback of an old one cannot mark a new one.
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_disconnect() -> None:
            if not lost.done():
                lost.set_result(None)

        nc = await connect(self._kwargs, on_disconnect=on_disconnect)
        self._lost = lost
        self._nc = nc
        self._js = nc.jetstream(timeout=self.cfg.ack_timeout_seconds)
        # Publish acks come back on <inbox>.<token>: one subscription, no future per message.
        self._inbox = nc.new_inbox() + "."
        await nc.subscribe(self._inbox + "*", cb=self._on_ack)
        self.connects += 1
        if self.connects > 1:
            log.info("nats.reconnected", sink=self.name, servers=self._servers)
        return self._js

    async def _drop_connection(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.close(), timeout=self.cfg.ack_timeout_seconds)
            except Exception as err:  # closing a broken connection: nothing left to save
                log.debug("nats.close_failed", sink=self.name, error=type(err).__name__)

    async def open(self) -> None:
        try:
            js = await self._connect()
        except NatsUnavailable as err:
            raise ServiceUnavailable(str(err)) from None
        try:
            await self._check_stream(js)
        except BaseException:
            await self._drop_connection()
            raise

    async def _check_stream(self, js: JetStreamContext) -> None:
        import nats.errors
        import nats.js.api
        import nats.js.errors

        cfg = self.cfg
        subjects = cfg.stream_subjects or [self._subject.wildcard(self._hub)]
        try:
            if cfg.create_stream:
                config = nats.js.api.StreamConfig(
                    name=cfg.stream,
                    subjects=subjects,
                    max_age=cfg.stream_max_age_seconds or None,
                    max_bytes=cfg.stream_max_bytes,
                    duplicate_window=cfg.duplicate_window_seconds,
                    storage=nats.js.api.StorageType.FILE,
                )
                try:
                    await js.stream_info(cfg.stream)
                except nats.js.errors.NotFoundError:
                    await js.add_stream(config)
                    log.info("nats.stream_created", stream=cfg.stream, subjects=subjects)
                else:
                    await js.update_stream(config)
            else:
                await js.stream_info(cfg.stream)
        except nats.js.errors.NotFoundError:
            raise ConfigError(
                f"JetStream stream {cfg.stream!r} does not exist on NATS server {self._servers}; "
                "create it or set create_stream = true",
                file=self._source,
                key=f"{self._key}.stream",
            ) from None
        except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError):
            raise ConfigError(
                f"JetStream is not enabled on NATS server {self._servers}",
                file=self._source,
                key=f"{self._key}.stream",
            ) from None
        except nats.js.errors.APIError as err:
            raise ConfigError(
                f"JetStream refused stream {cfg.stream!r} on {self._servers}: {err.description or err}",
                file=self._source,
                key=f"{self._key}.stream",
            ) from None
        except nats.errors.Error as err:
            raise ServiceUnavailable(f"NATS server {self._servers}: {err}") from None

    # -- writes --------------------------------------------------------------------------------

    def _headers(self, line: bytes) -> tuple[str, dict[str, str]]:
        head = _head(line)  # not an envelope (never from the relay): still published
        subject = self._subject.render(head.hub, head.event_id, head.target, head.kind)
        return subject, {
            "Nats-Msg-Id": msg_id(line),
            "Event-Consumer-Seq": str(head.seq),
            "Content-Type": CONTENT_TYPE,
        }

    def _hpub(self, out: list[bytes], line: bytes, reply: bytes | None) -> int:
        """Append the protocol command publishing `line` with our headers to `out` (no per-header
        checks: the subject's tokens are sanitised and the header values are hex digits and an int),
        as three pieces so the line itself is not copied here; returns its size. Without a reply
        subject the server sends no ack (see ACK_EVERY)."""
        head = _head(line)
        key = (head.hub, head.event_id, head.target, head.kind)
        subject = self._subjects.get(key)
        if subject is None:
            subject = self._subject.render(head.hub, head.event_id, head.target, head.kind).encode()
            if len(self._subjects) >= 10_000:  # bounded: event ids come from the hub
                self._subjects.clear()
            self._subjects[key] = subject
        hdr = _HDR % (msg_id(line).encode(), head.seq)
        n = len(hdr)
        if reply is None:
            cmd = b"HPUB %s %d %d\r\n%s" % (subject, n, n + len(line), hdr)
        else:
            cmd = b"HPUB %s %s %d %d\r\n%s" % (subject, reply, n, n + len(line), hdr)
        out.append(cmd)
        out.append(line)
        out.append(b"\r\n")
        return len(cmd) + len(line) + 2

    async def _ensure(self) -> JetStreamContext:
        js = self._js
        if js is None or self._nc is None or self._nc.is_closed:
            await self._drop_connection()
            try:
                js = await self._connect()
            except CredentialsRejected as err:  # rotated credentials: keep the records, keep trying
                raise NatsUnavailable(str(err)) from None
        return js

    async def write(self, lines: Sequence[bytes]) -> None:
        if self.role == "leader":
            await self._leader_write(lines)
            if self._buffer is not None:  # HA: keep the recent history for a later re-takeover
                self._buffer.extend(lines)
        elif self.role == "standby":
            assert self._buffer is not None
            self._buffer.extend(lines)  # only the leader publishes; the standby remembers
        else:
            await self._takeover_write(lines)

    async def _leader_write(self, lines: Sequence[bytes]) -> None:
        backlog = self._backlog
        if backlog:  # what a takeover found missing in the stream goes first
            try:
                await self._publish(list(backlog))
            except PartialWrite as err:
                for _ in range(err.done):
                    backlog.popleft()
                raise err.cause from None
            backlog.clear()
        await self._publish(lines)

    async def _on_ack(self, msg: Msg) -> None:
        batch = self._batch
        if batch is None:
            return
        try:
            i = int(msg.subject[len(self._inbox) :]) - batch.base
        except ValueError:
            return
        if not 0 <= i < len(batch.state) or batch.state[i]:
            return  # a late ack of an earlier batch (already counted as failed) or a repeat
        try:
            if msg.data:
                ack = _decode_ack(msg.data)
            elif msg.headers and msg.headers.get("Status") == "503":
                ack = _Ack(error=_ApiError(503, "no stream takes this subject (no responders)"))
            else:
                ack = _Ack(error=_ApiError(description="empty ack"))
        except msgspec.DecodeError:
            ack = _Ack(error=_ApiError(description="undecodable ack"))
        state = batch.state
        if ack.error is not None:
            state[i] = -1
            batch.error = batch.error or f"JetStream error {ack.error.code}: {ack.error.description}"
            batch.done.set()
        else:
            state[i] = 2 if ack.duplicate else 1
            batch.seqs[i] = ack.seq
        batch.received += 1
        run = batch.chunk_start.pop(i, None)
        if run is not None:  # the last line of a run: settled (proven stored, or left for pass 2)
            start, size = run
            if (
                start < i
                and state[start] == 1
                and state[i] == 1
                and batch.seqs[i] - batch.seqs[start] == i - start
            ):
                state[start + 1 : i] = _ONES[: i - start - 1]  # the stream stored exactly these
            batch.settled += i - start + 1
            batch.settled_bytes += size
        if not batch.sending and batch.received == batch.expected:
            batch.done.set()
        batch.progress.set()

    async def _publish(self, lines: Sequence[bytes]) -> None:
        """Publish `lines` pipelined (at most `max_in_flight` lines unsettled); PartialWrite on failure.

        Fast path (nats-py's outgoing buffer): acks are asked for the first and last line of every
        `ACK_EVERY` lines only; a run counts as stored when its two acks are stream sequences exactly
        that far apart (nothing in between lost, duplicated or interleaved). Runs not proven that way
        are published again with an ack per line (the stream drops the copies it already has by
        `Nats-Msg-Id`). No await between two publishes unless the in-flight bound is reached.
        """
        import nats.errors

        if not lines:
            return
        await self._ensure()
        nc, lost = self._nc, self._lost
        assert nc is not None and lost is not None
        batch = _Batch(self._token, len(lines))
        self._token += len(lines)
        self._batch = batch
        fast = _FAST and nc.is_connected and isinstance(getattr(nc, "_pending", None), list)
        error: BaseException | str | None = None
        try:
            async with asyncio.timeout(
                self.cfg.ack_timeout_seconds * (2 + 2 * len(lines) // self.cfg.max_in_flight)
            ):
                every = max(1, min(ACK_EVERY, self.cfg.max_in_flight // 2)) if fast else 1
                await self._send(nc, lost, batch, lines, range(len(lines)), every=every, fast=fast)
                if fast and batch.error is None and not lost.done():
                    redo = [i for i, st in enumerate(batch.state) if st == 0]
                    if redo:
                        self.unproven += len(redo)
                        await self._send(nc, lost, batch, lines, redo, every=1, fast=fast)
        except (nats.errors.Error, OSError) as err:  # TimeoutError is an OSError
            error = err
        finally:
            self._batch = None
        state = batch.state
        done = 0
        for st in state:
            if st <= 0:
                break
            done += 1
        self.duplicates += sum(1 for st in state[:done] if st == 2)
        self.published += done
        if done == len(lines):
            return
        error = error or batch.error or ("connection lost" if lost.done() else "no ack in time")
        if batch.error is None:
            await self._drop_connection()  # transport trouble: reconnect on the next write
        text = describe_error(error) if isinstance(error, BaseException) else error
        cause = NatsUnavailable(f"NATS server {self._servers}, stream {self.cfg.stream!r}: {text}")
        if done:
            raise PartialWrite(done, cause)
        raise cause

    async def _send(
        self,
        nc: NATS,
        lost: asyncio.Future[None],
        batch: _Batch,
        lines: Sequence[bytes],
        indices: Sequence[int],
        *,
        every: int,
        fast: bool,
    ) -> None:
        """One pass over `indices` (runs of `every` lines, acks on their ends); returns once every
        requested ack came, or on an error ack or a lost connection."""
        inbox, limit, limit_bytes = self._inbox, self.cfg.max_in_flight, self.cfg.max_in_flight_bytes
        inbox_b = inbox.encode()
        batch.expected = batch.received = batch.settled = batch.settled_bytes = 0
        batch.chunk_start.clear()
        batch.done.clear()
        batch.sending = True
        n = len(indices)
        unflushed = sent = run_bytes = 0
        for k, i in enumerate(indices):
            if k - batch.settled >= limit or sent - batch.settled_bytes >= limit_bytes:
                self.peak_in_flight_bytes = max(self.peak_in_flight_bytes, sent - batch.settled_bytes)
                if fast and unflushed:  # full: what is buffered must leave to be acked
                    _write_out(nc)
                    unflushed = 0
                # until half the window (lines and bytes) is settled; only ended runs can settle (a
                # run longer than half the bytes bound goes out whole: no wait for its own end)
                while (
                    (k - batch.settled > limit // 2 or sent - batch.settled_bytes > limit_bytes // 2)
                    and batch.chunk_start
                    and not (batch.done.is_set() or lost.done())
                ):
                    batch.progress.clear()
                    await _first(batch.progress, lost)
            if batch.done.is_set() or lost.done():
                break
            pos = k % every
            line = lines[i]
            sent += len(line)
            run_bytes += len(line)
            reply: bytes | None = None
            if pos == 0 or pos == every - 1 or k == n - 1:
                reply = b"%s%d" % (inbox_b, batch.base + i)
                batch.expected += 1
                if pos == every - 1 or k == n - 1:  # the run's end: its ack settles the run
                    batch.chunk_start[i] = (indices[k - pos], run_bytes)
                    run_bytes = 0
            if fast:  # straight into the client's outgoing buffer (see _hpub)
                size = self._hpub(nc._pending, line, reply)
                nc._pending_data_size += size
                unflushed += size
                if unflushed > FLUSH_BYTES:
                    _write_out(nc)
                    unflushed = 0
            else:
                subject, headers = self._headers(line)
                await nc.publish(subject, line, reply=f"{inbox}{batch.base + i}", headers=headers)
        batch.sending = False
        self.peak_in_flight_bytes = max(self.peak_in_flight_bytes, sent - batch.settled_bytes)
        if fast and unflushed and not lost.done():
            _write_out(nc)
        if batch.received == batch.expected:
            batch.done.set()
        if not batch.done.is_set() and not lost.done():
            await _first(batch.done, lost)

    # -- hot-standby pair ----------------------------------------------------------------------

    def enable_ha(
        self,
        *,
        buffer_records: int,
        make_marker: Callable[[str, dict[str, Any], int | str | None], bytes],
        on_gap: Callable[[list[int | str]], None] = lambda _events: None,
        node: str = "",
    ) -> None:
        """Start as the standby: lines are kept (the last `buffer_records`), not published."""
        self.role = "standby"
        self._buffer = deque(maxlen=buffer_records)
        self._make_marker = make_marker
        self._on_gap = on_gap
        self._node = node

    def demote(self) -> None:
        """Lost the lease: stop publishing at once; keep remembering."""
        if self._buffer is None:
            return
        self.role = "standby"
        self._backlog.clear()  # the buffer keeps the recent history (published or not)

    def begin_takeover(self) -> None:
        """Won the lease: the next `failover` marker line ends the standby part (see module doc)."""
        if self.role == "standby":
            self.role = "takeover"

    async def _takeover_write(self, lines: Sequence[bytes]) -> None:
        assert self._buffer is not None
        cut = next((i for i, line in enumerate(lines) if _is_failover(line)), None)
        if cut is None:
            self._buffer.extend(lines)
            return
        plan, report = await self._reconcile([*self._buffer, *lines[:cut]])  # may raise: nothing changed
        self._buffer.clear()
        self._backlog.extend(plan)
        self.role = "leader"
        self.takeovers.append(report)
        log.warning("nats.took_over", sink=self.name, **report)
        try:
            await self._leader_write(lines[cut:])
        except PartialWrite as err:
            raise PartialWrite(cut + err.done, err.cause) from None
        except OSError as err:
            if cut:
                raise PartialWrite(cut, err) from None
            raise

    async def _reconcile(self, pre: list[bytes]) -> tuple[list[bytes], dict[str, Any]]:
        """What of `pre` (the standby's lines) the stream lacks, with `gap` markers where unproven."""
        js = await self._ensure()
        records: list[tuple[bytes, _Record]] = []
        for line in pre:
            try:
                rec = _decode_record(line)
            except msgspec.DecodeError:
                continue
            if rec.kind == "invocation":
                records.append((line, rec))
        by_event: dict[int | str | None, list[int]] = {}
        for i, (_line, rec) in enumerate(records):
            by_event.setdefault(rec.event_id, []).append(i)
        send: set[int] = set()
        gaps: list[int | str | None] = []
        outcome: dict[str, str] = {}
        for ev, idxs in by_event.items():
            tail = await self._stream_tail(js, ev)
            content = [_content(records[i][1]) for i in idxs]
            if not tail:
                send.update(idxs)
                outcome[str(ev)] = "new"
                continue
            k = len(tail)
            matches = [p for p in range(k - 1, len(content)) if content[p - k + 1 : p + 1] == tail]
            if len(matches) == 1:
                send.update(idxs[matches[0] + 1 :])
                outcome[str(ev)] = "continuous"
            elif matches:  # ambiguous: continue after the latest occurrence, and say so (gap + snapshot)
                send.update(idxs[matches[-1] + 1 :])
                gaps.append(ev)
                outcome[str(ev)] = "gap"
            else:  # the buffer does not reach back to the leader's last record: all of it, with a gap
                send.update(idxs)
                gaps.append(ev)
                outcome[str(ev)] = "gap"
        plan: list[bytes] = []
        marked: set[int | str | None] = set()
        for i, (line, rec) in enumerate(records):
            if i not in send:
                continue
            if rec.event_id in gaps and rec.event_id not in marked:
                marked.add(rec.event_id)
                plan.append(
                    self._make_marker("gap", {"node": self._node, "reason": "no continuity"}, rec.event_id)
                )
            plan.append(line)
        if gaps:
            self._on_gap([g for g in gaps if g is not None])
        report = {
            "buffered": len(pre),
            "republished": len(send),
            "gap_events": [str(g) for g in gaps],
            "events": outcome,
        }
        return plan, report

    async def _stream_tail(self, js: JetStreamContext, event_id: int | str | None) -> list[tuple[Any, ...]]:
        """Content of the stream's last (up to TAIL) invocations of `event_id`, oldest first."""
        import nats.js.api
        import nats.js.errors

        subject = self._subject.filter(self._hub, event_id)
        try:
            last = await js.get_last_msg(self.cfg.stream, subject)
        except nats.js.errors.NotFoundError:
            return []
        last_seq = last.seq or 0
        window = 256
        while True:
            start = max(1, last_seq - window)
            sub = await js.pull_subscribe(
                subject,
                stream=self.cfg.stream,
                config=nats.js.api.ConsumerConfig(
                    ack_policy=nats.js.api.AckPolicy.NONE,
                    deliver_policy=nats.js.api.DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=start,
                    inactive_threshold=30.0,
                ),
            )
            tail: list[tuple[Any, ...]] = []
            try:
                seq = 0
                while seq < last_seq:
                    for msg in await sub.fetch(1000, timeout=self.cfg.ack_timeout_seconds):
                        seq = msg.metadata.sequence.stream
                        try:
                            rec = _decode_record(msg.data)
                        except msgspec.DecodeError:
                            continue
                        if rec.kind == "invocation" and rec.event_id == event_id:
                            tail.append(_content(rec))
                            del tail[:-TAIL]
            finally:
                await sub.unsubscribe()
            if len(tail) >= TAIL or start == 1:
                return tail
            window *= 8

    async def flush(self) -> None:
        """Nothing to do: a write returns only once the stream acknowledged every line."""

    async def reopen(self) -> None:
        """Nothing to reopen (SIGHUP is for files)."""

    async def close(self) -> None:
        self._closing = True
        await self._drop_connection()


class _ApiError(msgspec.Struct):
    code: int = 0
    description: str = ""


class _Ack(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_decode_ack = msgspec.json.Decoder(_Ack).decode


class _Batch:
    """Ack state of the batch being published: per line 0 pending (or not proven), 1 stored,
    2 duplicate, -1 error; the stream sequence of each acked line; the runs awaiting their last ack."""

    __slots__ = (
        "base",
        "chunk_start",
        "done",
        "error",
        "expected",
        "progress",
        "received",
        "sending",
        "seqs",
        "settled",
        "settled_bytes",
        "state",
    )

    def __init__(self, base: int, n: int) -> None:
        self.base = base
        self.state = [0] * n
        self.seqs = [0] * n
        # index of a run's last line -> index of its first, bytes of the run's lines
        self.chunk_start: dict[int, tuple[int, int]] = {}
        self.expected = 0  # acks requested in this pass
        self.received = 0  # acks received in this pass
        self.settled = 0  # lines of this pass whose run got its last ack
        self.settled_bytes = 0  # and the bytes of their lines
        self.sending = False
        self.error: str | None = None
        self.done = asyncio.Event()
        self.progress = asyncio.Event()


_ONES = [1] * 4096


def _write_out(nc: NATS) -> None:
    """Hand nats-py's outgoing buffer to its transport now, as its flusher task does (without the
    drain): the socket takes the bytes at once while we keep formatting, instead of when the loop
    next runs the flusher. Memory stays bounded by the in-flight window."""
    if nc._pending_data_size and nc._transport is not None and nc.is_connected:
        nc._transport.writelines(nc._pending)
        nc._pending = []
        nc._pending_data_size = 0


async def _first(event: asyncio.Event, lost: asyncio.Future[None]) -> None:
    """Until `event` is set or the connection is lost."""
    waiter = asyncio.ensure_future(event.wait())
    both: set[asyncio.Future[Any]] = {waiter, lost}
    try:
        await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


class _Record(msgspec.Struct):
    kind: str = ""
    target: str = ""
    event_id: int | str | None = None
    arguments: msgspec.Raw = msgspec.Raw(b"[]")


_decode_record = msgspec.json.Decoder(_Record).decode
TAIL = 8  # stream messages matched as one run: enough context that a repeated payload is not mistaken


def _content(rec: _Record) -> tuple[Any, ...]:
    """What two daemons receiving the same invocation agree on (not seq, not received_at)."""
    return (rec.target, rec.event_id, bytes(rec.arguments))


def _is_failover(line: bytes) -> bool:
    if b'"kind":"ha"' not in line[:200]:
        return False
    try:
        rec = _decode_record(line)
    except msgspec.DecodeError:
        return False
    return rec.kind == "ha" and rec.target == "failover"
