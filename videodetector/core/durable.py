"""Files written whole or not at all, and made durable (shared by the detector's spool, the
backend's image store and its index snapshots)."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by its path (a directory: so a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, tmp: Path | None = None) -> None:
    """Write ``data`` to ``tmp`` (default ``<path>.tmp``), fsync it and rename it to ``path``.
    On any error (ENOSPC, EIO, ...) the temporary file is removed and the error raised; the
    directory is not fsynced (callers that need the rename durable fsync it)."""
    tmp = tmp if tmp is not None else path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # the first error is the one to report
            tmp.unlink(missing_ok=True)
        raise


class GroupFsync:
    """fsync of one file or directory, shared by the threads that need it at the same time
    (group commit): a caller's change is made before it calls :meth:`sync`, which returns
    once an fsync that *started after the call* has succeeded. While one fsync runs, the
    callers arriving meanwhile wait and are all covered by the next one, so N concurrent
    writers cost about two fsyncs instead of N. An fsync error is raised to the caller whose
    fsync failed; the others waiting try again (and see it too if it persists)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._cond = threading.Condition()
        self._requested = 0  # calls so far (each call's ticket)
        self._done = 0  # every ticket up to this one is durable
        self._running = False
        self.fsyncs = 0  # fsyncs made (for tests and metrics)

    def sync(self) -> None:
        with self._cond:
            self._requested += 1
            ticket = self._requested
            while self._done < ticket:
                if self._running:
                    self._cond.wait()
                    continue
                self._lead()

    def _lead(self) -> None:
        """Run one fsync for every call made so far (called holding ``_cond``)."""
        self._running = True
        target = self._requested
        self._cond.release()
        try:
            fsync_path(self.path)
            self.fsyncs += 1
        finally:
            self._cond.acquire()
            self._running = False
            self._cond.notify_all()
        self._done = max(self._done, target)


class DirectorySync:
    """One :class:`GroupFsync` per directory (at most ``keep`` kept, the oldest dropped):
    after files are renamed into a directory, ``sync(dir)`` makes the renames durable."""

    def __init__(self, keep: int = 64) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._syncs: dict[Path, GroupFsync] = {}

    def sync(self, directory: Path) -> None:
        with self._lock:
            group = self._syncs.pop(directory, None) or GroupFsync(directory)
            self._syncs[directory] = group  # most recently used last
            while len(self._syncs) > self.keep:
                self._syncs.pop(next(iter(self._syncs)))
        group.sync()
