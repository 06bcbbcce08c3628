"""The client's dispatching: the receive loop -> dispatcher hand-off (a FIFO of whole frames'
invocation batches and connection-callback markers, bounded in invocations and in bytes), and the
dispatcher itself (`Dispatching`, mixed into `HubConnection`): routes, handlers, raw handlers,
Completions for invocations that expect a result, connection callbacks, the final drain.

- `on(target, handler)` (sync or async, target case-insensitive like the official client); handlers
  run one at a time, in arrival order, in a dispatcher task. The receive loop hands each WebSocket
  frame's invocations over as one batch (one queue operation per frame, not per message) on a queue
  bounded in invocations (`dispatch_queue_size`) and in bytes (`max_dispatch_bytes`, the frames'
  wire size, which the undecoded arguments point into): while either bound is reached, the receive
  loop stops reading (backpressure: TCP then slows the hub; nothing is dropped). A frame's batch is
  never split, so at most `dispatch_queue_size - 1` + two frames' invocations, or
  `max_dispatch_bytes` + two frames' bytes, are decoded and not yet dispatched (one admitted over
  the bound, one waiting for room). `buffer_usage()` reports bytes and invocations in use and the
  limits. A handler exception is logged and never stops the
  connection. A server invocation that expects a result gets
  a Completion with the handler's return value, or an error Completion ("Client didn't provide a
  result." when nothing handled it).
- `raw_arguments=True` builds the protocol with its `raw_arguments` option: invocations whose target
  has no `on()` handler go to the single `on_raw(handler(target, raw_args))` handler, undecoded
  (`msgspec.Raw` of the arguments array). `on()` handlers still get decoded arguments.
- One FIFO orders data and connection events: the reconnecting and reconnected callbacks are queued
  behind every invocation decoded before them and run by the dispatcher. So handlers see every
  invocation decoded before a loss before on_reconnecting fires; on_reconnected runs with the receive
  loop already up (state `connected`, so it may await `invoke()`), and it finishes before any invocation
  the new transport brings is dispatched. The reconnect itself never waits for callbacks or handlers.
  on_closed runs last, after the final drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import msgspec

from consumer.errors import describe_error
from consumer.logs import get_logger
from consumer.signalr import protocol as proto
from consumer.signalr.errors import HubConnectionError

if TYPE_CHECKING:
    from consumer.signalr.state import ClientStats

log = get_logger("consumer.signalr.connection")  # the client's log events keep their logger name

__all__ = [
    "DEFAULT_MAX_DISPATCH_BYTES",
    "MAX_ROUTES",
    "MAX_TARGET_LENGTH",
    "NO_RESULT_ERROR",
    "Batch",
    "Callback",
    "DispatchQueue",
    "Dispatching",
    "Handler",
    "Notify",
    "Queued",
    "RawHandler",
]

DEFAULT_MAX_DISPATCH_BYTES = 16 * 1024 * 1024
NO_RESULT_ERROR = "Client didn't provide a result."
# Hub targets (method names) longer than this are still dispatched, but never kept as a key of a
# long-lived structure (route caches, warned-once sets, per-target counters): a hub controls them.
MAX_TARGET_LENGTH = 256
Handler: TypeAlias = Callable[..., Any]
RawHandler: TypeAlias = Callable[[str, Any], Any]
Callback: TypeAlias = Callable[..., Any]


@dataclass(slots=True)
class Notify:
    """Connection callbacks queued behind the invocations decoded before them (dispatch order)."""

    callbacks: list[Callback]
    args: tuple[Any, ...]


Batch: TypeAlias = list[proto.Invocation]  # the invocations one frame brought, in order
Queued: TypeAlias = Batch | Notify


class DispatchQueue:
    """The receive loop → dispatcher FIFO. Items are whole batches (a frame's invocations) or
    `Notify` markers, so the hand-off costs one put/get per frame, not per message.

    Bounded in invocations and in bytes, not in items: `size` counts the invocations handed over and
    not yet finished by the dispatcher (queued ones and the batch it is working on; a `Notify`
    counts 1) until `task_done(item)`; `bytes` likewise counts the wire bytes given with each
    `put(item, nbytes)`. `put()` waits while `size >= limit` or `bytes >= byte_limit`, then adds
    the whole item: a batch is never split, so `size` stays under `limit + one batch` and `bytes`
    under `byte_limit + one frame`. A cancelled `put()` has added nothing. `join()` waits until
    every item put is done. One consumer: `task_done()` is called for the items taken, in order.
    """

    __slots__ = ("_byte_limit", "_idle", "_items", "_limit", "_ready", "_room", "_taken", "bytes", "size")

    def __init__(self, limit: int, byte_limit: int = DEFAULT_MAX_DISPATCH_BYTES) -> None:
        self._items: deque[tuple[Queued, int]] = deque()
        self._taken: deque[int] = deque()  # bytes of the items taken by get(), not yet task_done()
        self._limit = max(1, limit)
        self._byte_limit = max(1, byte_limit)
        self.size = 0
        self.bytes = 0
        self._ready = asyncio.Event()  # set while items are queued
        self._room = asyncio.Event()  # set while size < limit
        self._room.set()
        self._idle = asyncio.Event()  # set while size == 0 (everything put is done)
        self._idle.set()

    def __len__(self) -> int:
        """Items (batches and markers) queued, not yet taken by the dispatcher."""
        return len(self._items)

    def put_nowait(self, item: Queued, nbytes: int = 0) -> bool:
        """Add `item` (`nbytes` wire bytes) and return True, or return False (nothing added) when full."""
        if self.size >= self._limit or self.bytes >= self._byte_limit:
            return False
        self._items.append((item, nbytes))
        self.size += len(item) if item.__class__ is list else 1
        self.bytes += nbytes
        self._idle.clear()
        self._ready.set()
        if self.size >= self._limit or self.bytes >= self._byte_limit:
            self._room.clear()
        return True

    async def put(self, item: Queued, nbytes: int = 0) -> None:
        while not self.put_nowait(item, nbytes):
            await self._room.wait()

    async def get(self) -> Queued:
        items = self._items
        while not items:
            self._ready.clear()
            await self._ready.wait()
        item, nbytes = items.popleft()
        self._taken.append(nbytes)
        return item

    def task_done(self, item: Queued) -> None:
        """The dispatcher is done with `item` (taken by `get()`): its invocations stop counting."""
        self.size -= len(item) if item.__class__ is list else 1
        self.bytes -= self._taken.popleft() if self._taken else 0
        if self.size < self._limit and self.bytes < self._byte_limit:
            self._room.set()
        if self.size <= 0:
            self._idle.set()

    async def join(self) -> None:
        await self._idle.wait()


@dataclass(slots=True, frozen=True)
class _Route:
    """How invocations of one target (exact spelling) are dispatched; cached per target string."""

    handlers: tuple[Handler, ...]  # the on() handlers (case-insensitive match)
    raw: RawHandler | None  # on_raw takes it (raw_arguments, no on() handler)
    raw_is_coroutine: bool  # raw is an `async def`: await its result without inspecting it


MAX_ROUTES = 1024  # distinct target spellings cached (each <= MAX_TARGET_LENGTH); starts over past that


class Dispatching:
    """The dispatcher side of `HubConnection` (a mixin): the handler and callback registry (`on`,
    `off`, `on_raw`, `on_reconnecting`, `on_reconnected`, `on_closed`), the dispatch loop and the
    final drain. The annotated attributes without a value here are the connection's."""

    stats: ClientStats
    _raw_arguments: bool
    _text: bool
    _drain_timeout: float
    _dispatch_queue: DispatchQueue | None
    _leftover: deque[Batch]
    _abandoned: bool
    _firing_closed: bool
    _dispatcher: asyncio.Task[None] | None
    _main_task: asyncio.Task[None] | None

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}
        self._raw_handler: RawHandler | None = None
        self._routes: dict[str, _Route] = {}  # cleared in place when handlers change, never replaced
        self._warned_targets: set[str] = set()
        self._reconnecting_cbs: list[Callback] = []
        self._reconnected_cbs: list[Callback] = []
        self._closed_cbs: list[Callback] = []
        self._background: set[asyncio.Task[Any]] = set()

    def on(self, target: str, handler: Handler) -> None:
        """Register `handler(*args)` (sync or async) for a hub → client method; case-insensitive."""
        self._handlers.setdefault(target.lower(), []).append(handler)
        self._routes.clear()

    def off(self, target: str, handler: Handler | None = None) -> None:
        self._routes.clear()
        if handler is None:
            self._handlers.pop(target.lower(), None)
            return
        handlers = self._handlers.get(target.lower(), [])
        with contextlib.suppress(ValueError):
            handlers.remove(handler)
        if not handlers:
            self._handlers.pop(target.lower(), None)

    def on_raw(self, handler: RawHandler | None) -> None:
        """With `raw_arguments=True`: `handler(target, raw_args)` gets invocations no `on()` handler takes."""
        self._raw_handler = handler
        self._routes.clear()

    def on_reconnecting(self, callback: Callback) -> None:
        self._reconnecting_cbs.append(callback)

    def on_reconnected(self, callback: Callback) -> None:
        self._reconnected_cbs.append(callback)

    def on_closed(self, callback: Callback) -> None:
        self._closed_cbs.append(callback)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _notify(self, callbacks: list[Callback], *args: Any) -> None:
        """Queue connection callbacks behind every invocation decoded so far: the dispatcher runs
        them in that order, so markers and data keep their true order and the receive loop (or the
        reconnect) never waits for a callback. If the queue stays full for `drain_timeout` s (a
        handler is stuck), the put goes on in the background and ordering becomes best effort."""
        queue = self._dispatch_queue
        assert queue is not None
        item = Notify(callbacks, args)
        if queue.put_nowait(item):
            return
        try:
            async with asyncio.timeout(self._drain_timeout):
                await queue.put(item)
        except TimeoutError:
            log.warning("signalr.dispatch_queue_stuck", queued=queue.size)
            self._spawn(queue.put(item))

    async def _send_message(self, message: proto.HubMessage) -> None:
        raise NotImplementedError  # the connection's

    async def _dispatch_loop(self, queue: DispatchQueue) -> None:
        stats = self.stats
        routes = self._routes  # cleared in place by on()/off()/on_raw(), never replaced
        while True:
            item = await queue.get()
            try:
                if isinstance(item, Notify):
                    await self._fire(item.callbacks, *item.args)
                    continue
                done = 0
                try:
                    for message in item:
                        target = message.target
                        route = routes.get(target)
                        if route is None:
                            route = self._route(target)
                        raw = route.raw
                        if raw is not None and message.invocation_id is None:
                            # the raw hot path: no result to send back
                            try:
                                if route.raw_is_coroutine:
                                    await raw(target, message.arguments)
                                else:
                                    result = raw(target, message.arguments)
                                    if result is not None and inspect.isawaitable(result):
                                        await result
                            except Exception as exc:
                                log.error(
                                    "signalr.handler_failed",
                                    target=target[:MAX_TARGET_LENGTH],
                                    error=describe_error(exc),
                                )
                        else:
                            try:
                                await self._dispatch(message, route)
                            except Exception as exc:  # never let one invocation stop the dispatcher
                                log.error(
                                    "signalr.dispatch_failed",
                                    target=target[:MAX_TARGET_LENGTH],
                                    error=describe_error(exc),
                                )
                        done += 1
                finally:
                    stats.invocations_dispatched += done
            finally:
                queue.task_done(item)

    def _route(self, target: str) -> _Route:
        handlers = tuple(self._handlers.get(target.lower(), ()))
        raw = self._raw_handler if not handlers and self._raw_arguments else None
        route = _Route(handlers, raw, raw is not None and inspect.iscoroutinefunction(raw))
        if len(target) > MAX_TARGET_LENGTH:
            return route  # dispatched, never cached: the hub picks these names
        if len(self._routes) >= MAX_ROUTES:
            self._routes.clear()
        self._routes[target] = route
        return route

    async def _drain(self, queue: DispatchQueue, dispatcher: asyncio.Task[None], deadline: float) -> None:
        """Closing: until the dispatcher has run everything queued (then `_leftover`) or `deadline`;
        then the dispatcher stops and whatever it did not reach is counted as abandoned."""

        async def flush() -> None:
            while self._leftover:
                await queue.put(self._leftover[0])  # a cancelled put enqueues nothing
                self._leftover.popleft()
            await queue.join()

        flusher = asyncio.create_task(flush())
        try:
            timeout = max(0.0, deadline - asyncio.get_running_loop().time())
            await asyncio.wait({flusher, dispatcher}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # cancelled again while closing: cut the drain short
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
        finally:
            flusher.cancel()
            await asyncio.wait([flusher])
            dispatcher.cancel()
            await asyncio.wait([dispatcher])
        stats = self.stats
        stats.invocations_abandoned = stats.invocations_decoded - stats.invocations_dispatched
        leftover = sum(len(batch) for batch in self._leftover)
        if flusher.cancelled() or queue.size or leftover:
            log.warning(
                "signalr.drain_incomplete",
                queued=queue.size + leftover,
                abandoned_total=stats.invocations_abandoned,
            )
        self._leftover.clear()

    def _abandon_drain(self) -> None:
        """stop() was cancelled: stop the dispatcher now, the final drain returns at once, and the
        on_closed callbacks are bounded by close_timeout (cancelled now if they are running)."""
        self._abandoned = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        if self._firing_closed and self._main_task is not None:
            self._main_task.cancel()

    def _decode_raw(self, raw: Any) -> list[Any]:
        if not isinstance(raw, msgspec.Raw):
            return list(raw)
        data = bytes(raw)
        decoded = msgspec.json.decode(data) if self._text else msgspec.msgpack.decode(data)
        return list(decoded)

    async def _dispatch(self, message: proto.Invocation, route: _Route) -> None:
        """The general case: on() handlers, or an invocation that expects a result."""
        expects = message.invocation_id is not None
        raw_handler = route.raw
        if raw_handler is not None:
            try:
                raw_result = await _maybe_await(raw_handler(message.target, message.arguments))
            except Exception as exc:
                log.error(
                    "signalr.handler_failed",
                    target=message.target[:MAX_TARGET_LENGTH],
                    error=describe_error(exc),
                )
                if expects:
                    await self._send_completion(message.invocation_id, error=str(exc))
                return
            if expects:
                if raw_result is None:
                    await self._send_completion(message.invocation_id, error=NO_RESULT_ERROR)
                else:
                    await self._send_completion(message.invocation_id, result=raw_result)
            return
        handlers = route.handlers
        if not handlers:
            key = message.target.lower()[:MAX_TARGET_LENGTH]
            if key not in self._warned_targets and len(self._warned_targets) < MAX_ROUTES:
                self._warned_targets.add(key)  # warned once per name, for at most MAX_ROUTES names
                log.warning(
                    "signalr.no_handler",
                    target=message.target[:MAX_TARGET_LENGTH],
                    target_length=len(message.target),
                )
            if expects:
                await self._send_completion(message.invocation_id, error=NO_RESULT_ERROR)
            return
        args = self._decode_raw(message.arguments) if self._raw_arguments else list(message.arguments)
        result: Any = None
        error: BaseException | None = None
        multiple = False
        for handler in handlers:
            try:
                previous = result
                result = await _maybe_await(handler(*args))
                if expects and result is not None and previous is not None:
                    multiple = True
                error = None
            except Exception as exc:
                error = exc
                log.error(
                    "signalr.handler_failed",
                    target=message.target[:MAX_TARGET_LENGTH],
                    error=describe_error(exc),
                )
        if not expects:
            return
        if multiple:
            await self._send_completion(message.invocation_id, error="Client provided multiple results.")
        elif error is not None:
            await self._send_completion(message.invocation_id, error=str(error) or type(error).__name__)
        elif result is not None:
            await self._send_completion(message.invocation_id, result=result)
        else:
            await self._send_completion(message.invocation_id, error=NO_RESULT_ERROR)

    async def _send_completion(
        self, invocation_id: str | None, *, result: Any = None, error: str | None = None
    ) -> None:
        assert invocation_id is not None
        completion = (
            proto.Completion(invocation_id=invocation_id, error=error)
            if error is not None
            else proto.Completion(invocation_id=invocation_id, result=result, has_result=True)
        )
        try:
            await self._send_message(completion)
        except HubConnectionError as exc:
            log.warning("signalr.completion_not_sent", invocation_id=invocation_id, error=describe_error(exc))

    async def _fire(self, callbacks: list[Callback], *args: Any) -> None:
        for callback in list(callbacks):
            try:
                await _maybe_await(callback(*args))
            except Exception as exc:
                log.error(
                    "signalr.callback_failed",
                    callback=getattr(callback, "__name__", "?"),
                    error=describe_error(exc),
                )


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value
