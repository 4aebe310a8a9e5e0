"""Files written whole or not at all, and made durable (shared by the detector's spool, the
backend's image store and its index snapshots)."""

from __future__ import annotations

import contextlib
import os
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
