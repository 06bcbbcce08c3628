"""A sink's own daemon thread for its blocking calls (write, fsync, open, close).

Why not `asyncio.to_thread`: the default executor's threads are joined when the interpreter exits (and
by `asyncio.run` when the loop closes), so one thread stuck in `write(1, …)` to a pipe nobody reads, or
in an fsync on a dead NFS mount, keeps the process alive past any shutdown grace. A `SinkThread` is a
daemon thread: whatever it is blocked in, the process exits when the main thread is done.

Calls submitted to one `SinkThread` run one at a time, in order. A cancelled caller stops waiting at
once; the call itself still runs to its end in the thread (as with `to_thread`), its result dropped.
`stuck_threads()` names the sink threads still inside a call (the daemon reports them in its `stopped`
line and then leaves with `os._exit`, see consumer/commands/run.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["SinkThread", "stuck_threads"]

T = TypeVar("T")

_ALL: weakref.WeakSet[SinkThread] = weakref.WeakSet()
_Item = tuple[Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


def stuck_threads() -> list[str]:
    """Names of sink threads currently inside a blocking call."""
    return sorted(t.name for t in list(_ALL) if t.busy)


def _resolve(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.cancelled():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class SinkThread:
    def __init__(self, name: str) -> None:
        self.name = name
        self.busy = False
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        _ALL.add(self)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in this sink's thread and wait for its result."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
            self._thread.start()
        self._queue.put((fn, args, loop, fut))
        return await fut

    def stop(self) -> None:
        """Let the thread end after the calls already submitted (it is not waited for)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread = None

    def _main(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, args, loop, fut = item
            self.busy = True
            try:
                result: Any = fn(*args)
                ok = True
            except BaseException as err:  # handed to the awaiting task, like to_thread
                result, ok = err, False
            finally:
                self.busy = False
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for this any more
                loop.call_soon_threadsafe(_resolve, fut, ok, result)
            del item, fn, args, fut, result
