"""The daemon's start-up: what it imports and what it loads (issue 10: process start to first
frame under 1 s). Not timed here (bench/bench_naive.py prints the start-up time): these tests
check the causes, which do not depend on the machine's load."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from videodetector.core import models
from videodetector.detector.timing import process_age

ROOT = Path(__file__).resolve().parents[2]

# Modules the daemon never runs: the backend's web stack, onnx (YuNet's symbolic input size is
# cached). filterpy (the tracker's Kalman filters) and the scipy it imports stay: about 0.9 s of
# start-up CPU, the price of the library the product names for tracking (README, start-up).
NOT_IN_THE_DAEMON = ("onnx", "fastapi", "starlette", "uvicorn", "faiss",
                     "PIL", "ai_edge_litert", "videodetector.backend")


def run_python(code: str, env: dict[str, str] | None = None) -> str:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full_env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def loaded_after(code: str, env: dict[str, str] | None = None) -> set[str]:
    out = run_python(code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))", env)
    return set(json.loads(out.strip().splitlines()[-1]))


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules for bad in NOT_IN_THE_DAEMON if m == bad or
            m.startswith(bad + ".")}


def test_the_daemon_imports_nothing_it_does_not_run():
    assert heavy(loaded_after("import videodetector.detector.cli")) == set()


def test_the_daemon_with_a_detector_does_not_import_onnx_once_yunet_is_cached(tmp_path: Path):
    """The first start makes YuNet with a symbolic input size (with onnx) and caches it; the
    next starts load the cached copy (sha256 pinned) and never import onnx. Both detect the
    same faces."""
    code = ("import numpy as np\n"
            "from videodetector.democlip import packaged_photos\n"
            "from videodetector.core.models import YuNetDetector\n"
            "import cv2\n"
            "img = cv2.imread(str(packaged_photos()[0]))\n"
            "d = YuNetDetector()\n"
            "print(np.round(d.detect(img).xyxy, 2).tolist())")
    env = {models.CACHE_ENV: str(tmp_path)}
    first = loaded_after(code, env)
    assert "onnx" in first  # made it
    (cached,) = tmp_path.glob("*.dynamic-hw.onnx")
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == models.DYNAMIC_HW_SHA256[
        models.YUNET]
    assert heavy(loaded_after("import videodetector.detector.cli\n" + code, env)) == set()
    again = run_python(code, env).strip().splitlines()
    assert again == run_python(code, env).strip().splitlines()
    assert json.loads(again[-1])  # a face found, with the cached model


def test_a_cached_copy_that_is_not_the_pinned_one_is_made_again(tmp_path, monkeypatch):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    cached = tmp_path / "face_detection_yunet_2023mar.dynamic-hw.onnx"
    cached.write_bytes(b"not a model")
    source = models.dynamic_hw_source(models.YUNET)
    assert isinstance(source, bytes)
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == models.DYNAMIC_HW_SHA256[
        models.YUNET]
    assert models.dynamic_hw_source(models.YUNET) == str(cached)


def test_an_unwritable_cache_only_costs_the_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv(models.CACHE_ENV, str(blocker / "models"))
    assert isinstance(models.dynamic_hw_source(models.YUNET), bytes)
    assert models.YuNetDetector() is not None


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_process_age_counts_from_the_process_start():
    age = float(run_python("import time\ntime.sleep(0.4)\n"
                           "from videodetector.detector.timing import process_age\n"
                           "print(process_age())"))
    assert 0.4 <= age < 60
    here = process_age()
    assert here is not None and here > 0
