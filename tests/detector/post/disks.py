"""Full disks for the spool tests: a fault-injection seam, and a real small tmpfs (root only)."""

from __future__ import annotations

import builtins
import errno
import os
from pathlib import Path
from typing import IO, Any


class _RefusingFile:
    """A file opened for writing on a full disk: it exists, but no byte fits."""

    def __init__(self, f: IO[Any], disk: SeamDisk) -> None:
        self._f = f
        self._disk = disk

    def __enter__(self) -> _RefusingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()

    def write(self, data: bytes) -> int:
        self._disk.refused += 1
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


class SeamDisk:
    """Replaces ``open`` in the spool module: while ``full``, every write raises ENOSPC,
    as the kernel does on a full file system. The product code runs unchanged."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.full = False
        self.refused = 0

    def open(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = builtins.open(file, mode, *args, **kwargs)
        if self.full and ("w" in mode or "a" in mode):
            return _RefusingFile(f, self)
        return f

    def fill(self) -> None:
        self.full = True

    def free(self) -> None:
        self.full = False


class TmpfsDisk:
    """A real 1 MiB tmpfs: ``fill`` writes a file until ENOSPC, ``free`` deletes it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._filler = directory / "filler"

    def fill(self) -> None:
        for path, size in ((self._filler, 4096), (self.directory / "crumbs", 1)):
            with builtins.open(path, "wb", buffering=0) as f:  # unbuffered: ENOSPC shows here
                try:
                    while True:
                        f.write(b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)
        (self.directory / "crumbs").unlink(missing_ok=True)
