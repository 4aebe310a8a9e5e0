"""A second fkvideo_detector on a spool directory in use: one ERROR line, exit code 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.detector.post.receiver import make_snapshot
from videodetector.detector.post.spool import Spool, SpoolError, SpoolLockedError


def test_second_detector_on_the_same_spool_is_refused_in_one_line(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    first = Spool(root / "cam-1", 10**9)  # as the first detector's camera holds it
    try:
        out = subprocess.run(
            [sys.executable, "-m", "videodetector.detector.cli",
             "--source", str(tmp_path / "x.mp4"),
             "--camid", "cam-1", "--api-url", "http://127.0.0.1:9", "--api-token", "t",
             "--spool-dir", str(root)],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    finally:
        first.close()
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, out.stderr
    assert str(root / "cam-1") in errors[0] and f"pid {os.getpid()}" in errors[0]
    assert "--spool-dir" in errors[0]


def test_lock_names_the_holder_and_is_released_on_close(tmp_path: Path) -> None:
    first = Spool(tmp_path, 10**9)
    first.push(make_snapshot())
    with pytest.raises(SpoolLockedError, match=f"{tmp_path}.*pid {os.getpid()}"):
        Spool(tmp_path, 10**9)
    first.close()
    again = Spool(tmp_path, 10**9)
    assert len(again) == 1
    again.close()


def test_an_unusable_spool_directory_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SpoolError, match=f"cannot use spool directory {blocker / 'cam'}"):
        Spool(blocker / "cam", 10**9)
