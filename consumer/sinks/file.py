"""Append JSON lines to a file: whole lines only, rotation, fsync policy, reopen on SIGHUP.

Guarantees and choices:
- **Whole lines only.** A batch is written with `os.write` calls on an `O_APPEND` descriptor that we
  alone write to. We track the last good offset (end of the last complete line). If a write fails
  part-way (ENOSPC, EIO), the whole lines that made it stay (the worker counts them written and keeps
  the rest for a retry) and the torn tail after the last of them is truncated away: with little free
  space the sink makes progress with partial batches instead of retrying all-or-nothing. If even the
  truncate fails, the next attempt truncates first (the file's size is compared with the good offset
  before every write), so a torn line never stays followed by more data. If the file shrank under us
  (logrotate `copytruncate`), the new size is accepted.
- **Torn tail repaired on open.** A crash (SIGKILL, power loss) in the middle of a write can leave a
  partial last line. Opening an existing file that does not end with a newline truncates it after its
  last newline and logs `torn tail repaired` with the bytes dropped, so the next line starts on a line
  of its own and every line of the file parses.
- **Unlinked file / vanished directory.** Before every batch (one `stat` call) the path is compared
  with the open descriptor: if the file was deleted, renamed away or replaced (another inode at PATH),
  or its directory removed, the sink logs `sink file missing or replaced; reopening` and opens PATH
  again, recreating the directory (mode 0750) when `create_dirs` is set; otherwise the writes fail
  (ENOENT, records kept and retried by the worker) until the directory is back.
- **Mode 0640** for files we create (set explicitly, whatever the umask).
- **Rotation** by size (`rotate_bytes`: the file is rotated before a line would take it past the
  limit) and/or daily (the first write on a new UTC date rotates). Rotated files are `PATH.1` (newest)
  … `PATH.<keep>`; older ones are deleted.
- **fsync**: `always` after every batch, `interval` every `fsync_interval` seconds while there is
  unsynced data (driven by the worker), `never` (the OS decides; still synced at close/reopen).
- **SIGHUP** → `reopen()`: the current file is synced and closed and PATH is opened (created) again,
  which is what logrotate's rename-then-signal expects.
- **Interval fsync beside writes.** `flush()` may run (in its own thread) while `write()` appends to
  the same descriptor (POSIX allows fsync and write on one fd concurrently). It must never meet a
  closing descriptor (rotation, reopen, close) — a closed fd number can be reused by anything at once —
  so the descriptor's lifecycle is guarded by a `threading.Lock` that fsync and every close hold;
  plain appends do not take it. Durability is counted, not flagged: every completed write bumps
  `written_generation`; an fsync records the generation it started at and only advances
  `synced_generation` to it, so a write that lands during an fsync stays unsynced until the next
  flush or the close.

Blocking file calls run in the sink's own daemon threads (`SinkThread`: one for open/write/reopen/close,
one for the interval fsync), one batch per call; a thread stuck in the kernel cannot keep the process
alive at exit.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal

from consumer.logs import get_logger
from consumer.sinks.base import PartialWrite
from consumer.sinks.threads import SinkThread

log = get_logger(__name__)

Writer = Callable[[int, memoryview], int]
Syncer = Callable[[int], None]
FsyncPolicy = Literal["never", "interval", "always"]

FILE_MODE = 0o640
DIR_MODE = 0o750
_TAIL_CHUNK = 64 * 1024


def _utc_day(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(t))


class FileSink:
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        rotate_bytes: int | None = None,
        rotate_daily: bool = False,
        keep: int = 7,
        fsync: FsyncPolicy = "interval",
        fsync_interval: float = 1.0,
        writer: Writer = os.write,
        syncer: Syncer | None = None,
        clock: Callable[[], float] = time.time,
        create_dirs: bool = False,
        fd_lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        """`writer`/`syncer` replace `os.write`/`os.fsync` (tests: faults, gates); `clock` the UTC time;
        `fd_lock` the lock held by fsync and whatever closes or replaces the fd (default a
        `threading.Lock`; tests pass one that reports who waits)."""
        self.path = Path(path)
        self.name = name or f"file:{self.path}"
        self.rotate_bytes = rotate_bytes
        self.rotate_daily = rotate_daily
        self.keep = max(1, keep)
        self.fsync = fsync
        self.sync_interval: float | None = fsync_interval if fsync == "interval" else None
        self._writer = writer
        self._syncer = syncer
        self._clock = clock
        self.create_dirs = create_dirs
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the open regular file
        self._good = 0  # offset just after the last complete line
        self._day = ""
        # Held by fsync and by whatever closes or replaces `_fd`; never by a plain append.
        self._fd_lock: AbstractContextManager[Any] = fd_lock if fd_lock is not None else threading.Lock()
        self._written_gen = 0  # completed writes (batches or rotation chunks), ever
        self._synced_gen = 0  # writes up to this generation are known durable
        self._fsync_unsupported = False
        self._io = SinkThread(f"sink:{self.name}")
        self._sync_thread = SinkThread(f"sink-fsync:{self.name}")

    @property
    def written_generation(self) -> int:
        """How many writes have completed (monotonic, across rotations and reopens)."""
        return self._written_gen

    @property
    def synced_generation(self) -> int:
        """Writes up to this generation were fsynced (or the file cannot be synced)."""
        return self._synced_gen

    # -- async interface (one thread hop per call) ---------------------------------------------

    async def open(self) -> None:
        await self._io.run(self._open)

    async def write(self, lines: Sequence[bytes]) -> None:
        await self._io.run(self._write_batch, lines)

    async def flush(self) -> None:
        await self._sync_thread.run(self._sync)

    async def reopen(self) -> None:
        await self._io.run(self._reopen)

    async def close(self) -> None:
        try:
            await self._io.run(self._close)
        finally:
            self._io.stop()
            self._sync_thread.stop()

    # -- blocking implementation ---------------------------------------------------------------

    def _open(self) -> None:
        try:
            fd = self._open_fd()
        except FileNotFoundError:
            if not self.create_dirs:
                raise
            os.makedirs(self.path.parent, mode=DIR_MODE, exist_ok=True)
            log.warning("sink.dir_created", sink=self.name, directory=str(self.path.parent))
            fd = self._open_fd()
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                self._ident = (st.st_dev, st.st_ino)
                size = self._repair_tail(fd, st.st_size)
            else:  # /dev/null, a FIFO, a terminal: nothing to repair or watch
                self._ident = None
                size = st.st_size
        except BaseException:
            os.close(fd)
            raise
        self._good = size
        self._day = _utc_day(st.st_mtime) if self._good else _utc_day(self._clock())
        with self._fd_lock:
            self._fd = fd

    def _open_fd(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags | os.O_EXCL, FILE_MODE)
            os.fchmod(fd, FILE_MODE)
        except FileExistsError:
            fd = os.open(self.path, flags, FILE_MODE)
        return fd

    def _repair_tail(self, fd: int, size: int) -> int:
        """Truncate a partial last line (a crash mid-write); return the file's size afterwards."""
        if size == 0:
            return 0
        try:
            rfd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except PermissionError:  # a write-only file: we cannot look, so we append as before
            log.warning("sink.torn_tail_unreadable", sink=self.name)
            return size
        try:
            if os.pread(rfd, 1, size - 1) == b"\n":
                return size
            end = size
            cut = 0
            while end > 0:  # search backwards for the last newline, a chunk at a time
                start = max(0, end - _TAIL_CHUNK)
                at = os.pread(rfd, end - start, start).rfind(b"\n")
                if at >= 0:
                    cut = start + at + 1
                    break
                end = start
        finally:
            os.close(rfd)
        os.ftruncate(fd, cut)
        log.warning("sink.torn_tail_repaired", sink=self.name, bytes_dropped=size - cut, size=cut)
        return cut

    def _check_path(self, st: os.stat_result) -> None:
        """Reopen when PATH no longer names the open file (deleted, renamed away, replaced, dir gone)."""
        if self._ident is None:
            return
        try:
            now = os.stat(self.path)
            if st.st_nlink > 0 and (now.st_dev, now.st_ino) == self._ident:
                return
            reason = "replaced" if st.st_nlink > 0 else "unlinked"
        except FileNotFoundError:
            reason = "unlinked" if self.path.parent.is_dir() else "directory_missing"
        log.warning("sink.file_replaced", sink=self.name, reason=reason)
        self._close()
        self._open()

    def _close(self) -> None:
        """Sync and close the descriptor; waits for an fsync in flight (the lock), never races it."""
        with self._fd_lock:
            if self._fd is None:
                return
            fd, self._fd = self._fd, None
            try:
                self._fsync_locked(fd)
            finally:
                os.close(fd)

    def _sync(self) -> None:
        with self._fd_lock:
            if self._fd is not None:
                self._fsync_locked(self._fd)

    def _fsync_locked(self, fd: int) -> None:
        """fsync `fd` (the lock is held) if any write is unsynced, and count what it covered.

        Only writes completed before the fsync starts are counted as synced. Unsupported files
        (/dev/null, a pipe: EINVAL) are not fsynced again.
        """
        gen = self._written_gen
        if gen <= self._synced_gen:
            return
        if not self._fsync_unsupported:
            try:
                (self._syncer or os.fsync)(fd)
            except OSError as err:
                if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EROFS):
                    raise
                self._fsync_unsupported = True
                log.warning("sink.fsync_unsupported", sink=self.name)
        self._synced_gen = gen

    def _reopen(self) -> None:
        self._close()
        self._open()

    def _rotate(self) -> None:
        self._close()
        base = str(self.path)
        oldest = Path(f"{base}.{self.keep}")
        if oldest.exists():
            oldest.unlink()
        for i in range(self.keep - 1, 0, -1):
            src = Path(f"{base}.{i}")
            if src.exists():
                src.rename(f"{base}.{i + 1}")
        if self.path.exists():
            self.path.rename(f"{base}.1")
        self._open()
        self._day = _utc_day(self._clock())

    def _needs_rotation(self, size: int) -> bool:
        if self._good == 0:
            return False
        if self.rotate_bytes is not None and self._good + size > self.rotate_bytes:
            return True
        return self.rotate_daily and _utc_day(self._clock()) != self._day

    def _write_batch(self, lines: Sequence[bytes]) -> None:
        if self._fd is None:
            self._open()
        else:
            self._check_path(os.fstat(self._fd))
        done = 0
        try:
            for chunk in self._chunks(lines):
                data = b"\n".join([*chunk, b""])  # one copy: the lines, each with its newline
                if self._needs_rotation(len(data)):
                    self._rotate()
                self._write_all(data)
                done += len(chunk)
        except PartialWrite as err:
            raise PartialWrite(done + err.done, err.cause) from err.cause
        except OSError as err:
            if done:
                raise PartialWrite(done, err) from err
            raise

    def _chunks(self, lines: Sequence[bytes]) -> list[Sequence[bytes]]:
        """Split a batch where a size rotation must happen between lines."""
        limit = self.rotate_bytes
        if limit is None:
            return [lines]
        chunks: list[Sequence[bytes]] = []
        start, size, base = 0, 0, self._good
        for i, line in enumerate(lines):
            n = len(line) + 1
            if i > start and base + size + n > limit:
                chunks.append(lines[start:i])
                start, size, base = i, 0, 0
            size += n
        chunks.append(lines[start:])
        return chunks

    def _write_all(self, data: bytes) -> None:
        """Append `data` (whole lines); on failure keep the whole lines written (PartialWrite)."""
        fd = self._fd
        assert fd is not None
        size = os.fstat(fd).st_size
        if size > self._good:  # a torn tail from an earlier failure that could not be truncated
            os.ftruncate(fd, self._good)
        elif size < self._good:  # truncated by someone else (copytruncate): follow it
            self._good = size
        view = memoryview(data)
        off = 0
        try:
            while off < len(view):
                n = self._writer(fd, view[off:])
                if n <= 0:
                    raise OSError(errno.EIO, "write returned 0")
                off += n
        except OSError as err:
            if not off:
                raise
            keep = data.rfind(b"\n", 0, off) + 1  # the whole lines that made it
            self._good += keep
            with contextlib.suppress(OSError):  # else retried before the next write (size check)
                os.ftruncate(fd, self._good)
            if not keep:
                raise
            self._written_gen += 1
            raise PartialWrite(data.count(b"\n", 0, keep), err) from err
        self._good += len(view)
        self._written_gen += 1
        if self.fsync == "always":
            with self._fd_lock:
                self._fsync_locked(fd)
