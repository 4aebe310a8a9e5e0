"""Spool: an on-disk FIFO of snapshots the server has not taken yet. Survives restarts.

The poster writes every snapshot here before it counts as accepted (write-ahead), and
removes it after the server's 2xx answer.

One file per item, ``<seq>.snap``, ``seq`` a 20-digit number: the oldest item has the
smallest name. An item is written to ``<seq>.tmp``, fsync'ed, renamed, and the directory
fsync'ed before ``push`` returns, so a crash (kill -9, power loss) never loses an item
``push`` returned for, nor leaves half an item under a ``.snap`` name; left-over ``.tmp``
files are removed on open. A failed write (``OSError``, e.g. ENOSPC on a full disk) leaves
nothing behind and the spool unchanged; the next ``push`` simply tries again. Removing an
item is not fsync'ed: after a power loss it may come back and be posted again (the
``Idempotency-Key`` makes that harmless). Items can also be pushed at the front (an item that
was being sent when the server failed goes back before the newer ones).

Beyond ``max_bytes`` the OLDEST items are dropped (counted in ``dropped``, logged); the
newest item is always kept. An item that cannot be read or decoded is renamed to
``.bad`` and skipped. A lock file (``.lock``, holding the owner's pid) keeps two processes
from sharing one directory; the second gets ``SpoolLockedError`` naming the directory and
that pid.

Items the server refused (a 4xx answer, or a 500 that repeats for the same item) are not
deleted: ``set_aside`` moves them to ``rejected/`` (outside the queue and the size bound),
where an operator can inspect them (``codec.decode_snapshot``) and, once the cause is
fixed (a wrong token, a gallery that did not exist), put them back in the queue with
``requeue_rejected`` (``fkvideo_detector --requeue-rejected``). They keep their
idempotency keys, so a snapshot the server did store is not stored twice.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import TextIO

from videodetector.core.durable import fsync_path, write_atomic
from videodetector.detector.post.codec import decode_snapshot, encode_snapshot
from videodetector.detector.snapshot import Snapshot

log = logging.getLogger(__name__)

SUFFIX = ".snap"
REJECTED = "rejected"
FIRST_SEQ = 10**12  # room below for items pushed at the front
_NAME_WIDTH = 20


class SpoolError(RuntimeError):
    """The spool directory cannot be used (created, locked); the message names it."""


class SpoolLockedError(SpoolError):
    """Another process uses this spool directory."""


class Spool:
    """A thread-safe, crash-safe FIFO of snapshots in ``directory``."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"spool max_bytes must be > 0, got {max_bytes!r}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.dropped = 0  # items dropped to stay under max_bytes, since open
        self._lock = threading.Lock()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_file: TextIO | None = _acquire_dir_lock(self.directory)
        except OSError as exc:
            raise SpoolError(f"cannot use spool directory {self.directory}: {exc}") from None
        self._items: dict[int, int] = {}  # seq -> size in bytes, in seq order
        self._bytes = 0
        self._scan()

    # -- public API ------------------------------------------------------------

    def push(self, snap: Snapshot, *, front: bool = False) -> int:
        """Store ``snap`` as the newest item (or the oldest with ``front=True``); its seq."""
        blob = encode_snapshot(snap)
        with self._lock:
            if not self._items:
                seq = FIRST_SEQ
            elif front:
                seq = next(iter(self._items)) - 1
            else:
                seq = next(reversed(self._items)) + 1
            if seq < 0:
                raise RuntimeError(f"spool {self.directory}: no sequence number left at front")
            self._write(seq, blob)
            if front:
                self._items = {seq: len(blob), **self._items}
            else:
                self._items[seq] = len(blob)
            self._bytes += len(blob)
            self._enforce_bound()
            return seq

    def peek_oldest(self) -> tuple[int, Snapshot] | None:
        """The oldest readable item ``(seq, snapshot)``, not removed; None if empty."""
        with self._lock:
            while self._items:
                seq = next(iter(self._items))
                try:
                    return seq, decode_snapshot(self._path(seq).read_bytes())
                except (OSError, ValueError) as exc:
                    self._quarantine(seq, exc)
            return None

    def remove(self, seq: int) -> None:
        """Delete item ``seq`` (no error if it is already gone)."""
        with self._lock:
            size = self._items.pop(seq, None)
            if size is None:
                return
            self._bytes -= size
            self._path(seq).unlink(missing_ok=True)

    def set_aside(self, seq: int | None, snap: Snapshot) -> Path:
        """Keep a refused snapshot in ``rejected/``: move item ``seq`` there, or write ``snap``
        (an item that never was in the spool). Returns its path."""
        folder = self.directory / REJECTED
        folder.mkdir(exist_ok=True)
        target = folder / f"{snap.idempotency_key.replace(':', '_').replace('/', '_')}{SUFFIX}"
        with self._lock:
            size = self._items.pop(seq, None) if seq is not None else None
            if size is not None:
                self._bytes -= size
                os.replace(self._path(seq), target)  # type: ignore[arg-type]
            else:
                tmp = target.with_suffix(".tmp")
                try:
                    tmp.write_bytes(encode_snapshot(snap))
                    os.replace(tmp, target)
                except BaseException:
                    tmp.unlink(missing_ok=True)  # e.g. a full disk: leave nothing behind
                    raise
            fsync_path(folder)
        return target

    def requeue_rejected(self) -> int:
        """Move the items in ``rejected/`` back to the end of the queue, oldest first;
        how many. An item that cannot be decoded stays where it is (logged), and so do
        the items that would push the queue past ``max_bytes`` (nothing is dropped)."""
        folder = self.directory / REJECTED
        paths = sorted(folder.glob(f"*{SUFFIX}"), key=lambda p: (p.stat().st_mtime, p.name))
        moved = 0
        for i, path in enumerate(paths):
            if self.bytes + path.stat().st_size > self.max_bytes:
                log.warning("spool %s: full (%d bytes): %d refused item(s) left in %s",
                            self.directory, self.max_bytes, len(paths) - i, folder)
                break
            try:
                snap = decode_snapshot(path.read_bytes())
            except (OSError, ValueError) as exc:
                log.error("spool %s: cannot requeue %s: %s", self.directory, path.name, exc)
                continue
            self.push(snap)
            path.unlink()
            moved += 1
        if moved:
            fsync_path(folder)
        return moved

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes

    def close(self) -> None:
        """Release the directory lock. Items stay on disk."""
        with self._lock:
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None

    # -- internals ---------------------------------------------------------------

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:0{_NAME_WIDTH}d}{SUFFIX}"

    def _scan(self) -> None:
        for tmp in self.directory.glob("*.tmp"):
            log.warning("spool %s: removing unfinished item %s", self.directory, tmp.name)
            tmp.unlink(missing_ok=True)
        found = {}
        for path in self.directory.glob(f"*{SUFFIX}"):
            stem = path.name[: -len(SUFFIX)]
            if not stem.isdigit():
                log.warning("spool %s: ignoring unexpected file %s", self.directory, path.name)
                continue
            found[int(stem)] = path.stat().st_size
        self._items = dict(sorted(found.items()))
        self._bytes = sum(found.values())
        if found:
            log.info("spool %s: %d item(s), %d bytes from a previous run",
                     self.directory, len(found), self._bytes)
            self._enforce_bound()

    def _write(self, seq: int, blob: bytes) -> None:
        """Durable once this returns: data fsync'ed, renamed, directory fsync'ed. On any
        error (a full disk) nothing is left behind, not even the ``.tmp`` file."""
        final = self._path(seq)
        write_atomic(final, blob, final.with_suffix(".tmp"))
        try:
            fsync_path(self.directory)
        except BaseException:
            final.unlink(missing_ok=True)  # not known to be durable: not accepted
            raise

    def _enforce_bound(self) -> None:
        """Drop the oldest items until under max_bytes; the newest item is always kept."""
        dropped = 0
        while self._bytes > self.max_bytes and len(self._items) > 1:
            seq = next(iter(self._items))
            self._bytes -= self._items.pop(seq)
            self._path(seq).unlink(missing_ok=True)
            dropped += 1
        if dropped:
            self.dropped += dropped
            log.warning(
                "spool %s over %d bytes: dropped the %d oldest item(s) (%d dropped since start, "
                "%d kept)", self.directory, self.max_bytes, dropped, self.dropped,
                len(self._items),
            )

    def _quarantine(self, seq: int, exc: Exception) -> None:
        path = self._path(seq)
        self._bytes -= self._items.pop(seq)
        try:
            os.replace(path, path.with_suffix(".bad"))
            log.error("spool %s: unreadable item %s moved aside as .bad: %s",
                      self.directory, path.name, exc)
        except OSError as move_exc:
            log.error("spool %s: unreadable item %s (%s), cannot move it aside: %s",
                      self.directory, path.name, exc, move_exc)


def _acquire_dir_lock(directory: Path) -> TextIO:
    """Lock ``directory/.lock`` for this Spool's lifetime (released by close or exit, also
    kill -9). The holder writes its pid in the file, so a refused process can name it."""
    lock_file = open(directory / ".lock", "a+")
    try:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock_file.seek(0)
        holder = lock_file.read(32).strip()
        lock_file.close()
        who = f"pid {holder}" if holder.isdigit() else "pid unknown"
        raise SpoolLockedError(
            f"spool directory {directory} is used by another process ({who}): give each "
            "fkvideo_detector its own --spool-dir"
        ) from None
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(f"{os.getpid()}\n")
    lock_file.flush()
    return lock_file

