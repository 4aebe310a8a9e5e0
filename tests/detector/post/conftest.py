"""Fixtures for the poster tests: full disks (see ``disks.py``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import videodetector.core.durable as durable_module
from tests.detector.post.disks import SeamDisk, TmpfsDisk


@pytest.fixture
def seam_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SeamDisk:
    disk = SeamDisk(tmp_path / "disk")
    disk.directory.mkdir()
    monkeypatch.setattr(durable_module, "open", disk.open, raising=False)  # the spool's writes
    return disk


@pytest.fixture
def tmpfs_disk(tmp_path: Path) -> Iterator[TmpfsDisk]:
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs root to mount a 1 MiB tmpfs")
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")
    try:
        yield TmpfsDisk(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
