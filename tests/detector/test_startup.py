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
# cached). filterpy (the tracker's Kalman filters) and the scipy it imports stay, but off the
# path to the first frame: about 0.9 s of CPU, imported when the tracker first predicts a
# track, in the background once a camera's first frame is processed (detector/preload.py).
NOT_IN_THE_DAEMON = ("onnx", "fastapi", "starlette", "uvicorn", "faiss",
                     "PIL", "ai_edge_litert", "videodetector.backend")
NOT_BEFORE_THE_FIRST_FRAME = ("scipy", "filterpy")


def run_python(code: str, env: dict[str, str] | None = None) -> str:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full_env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def loaded_after(code: str, env: dict[str, str] | None = None) -> set[str]:
    out = run_python(code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))", env)
    return set(json.loads(out.strip().splitlines()[-1]))


def heavy(modules: set[str], names: tuple[str, ...] = NOT_IN_THE_DAEMON) -> set[str]:
    return {m for m in modules for bad in names if m == bad or m.startswith(bad + ".")}


def test_the_daemon_imports_nothing_it_does_not_run():
    loaded = loaded_after("import videodetector.detector.cli")
    assert heavy(loaded) == set()
    assert heavy(loaded, NOT_BEFORE_THE_FIRST_FRAME) == set()


FIRST_FRAME = """
import sys, numpy as np
from videodetector.core.detections import Detections
from videodetector.detector.tracker import Tracker
def dets(*boxes):
    n = len(boxes)
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.full(n, 0.9, np.float32),
                      np.zeros((n, 5, 2), np.float32))
tracker = Tracker(min_hits=1)
first = tracker.update(dets([100, 100, 160, 170], [300, 100, 350, 160]))
print([t.xyxy for t in first.active])
print("filterpy" in sys.modules, "scipy" in sys.modules)
second = tracker.update(dets([104, 102, 164, 172]))
print(len(second.active), "filterpy" in sys.modules)
"""


def test_the_first_frame_with_faces_needs_neither_filterpy_nor_scipy():
    """The tracker starts tracks (and hands out their boxes) without filterpy's KalmanFilter:
    it is made, with scipy imported, when a track is first predicted."""
    first, before, second = run_python(FIRST_FRAME).strip().splitlines()
    assert first == "[(100.0, 100.0, 160.0, 170.0), (300.0, 100.0, 350.0, 160.0)]"
    assert before == "False False"
    assert second == "2 True"


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


def test_a_camera_imports_the_trackers_modules_in_the_background_after_its_first_frame(
        tmp_path: Path):
    """A clip without faces never needs the tracker's Kalman filter; the daemon imports it all
    the same (for the next face), in the background, once the first frame is processed."""
    from tests.detector.video.test_reader import write_mp4

    clip = write_mp4(tmp_path / "blank.mp4", 12)
    done = subprocess.run(
        [sys.executable, "-m", "videodetector.detector.cli", "--source", str(clip),
         "--camid", "c1", "--api-url", "http://127.0.0.1:9", "--api-token", "t", "-r", "0",
         "--spool-dir", str(tmp_path / "spool"), "--log-level", "DEBUG"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    log = done.stderr
    first = log.index("first frame processed")
    assert first < log.index("imported filterpy.kalman in the background")
    assert first < log.index("imported scipy.optimize in the background")


def test_the_tracker_modules_are_imported_once_and_a_failed_import_stops_nothing(caplog):
    from videodetector.detector import preload

    assert preload.import_tracker_modules() is preload.import_tracker_modules()
    with caplog.at_level("DEBUG", logger=preload.__name__):
        preload.import_in_background(["videodetector.no_such_module", "json"]).join(30)
    assert "background import of videodetector.no_such_module failed" in caplog.text
    assert "imported json in the background" in caplog.text


def test_the_background_import_is_never_a_daemon_thread():
    """Started from a camera worker (a daemon thread) it still is not one: the interpreter
    waits for it instead of exiting in the middle of an import."""
    import threading

    from videodetector.detector import preload

    got = []
    starter = threading.Thread(target=lambda: got.append(preload.import_in_background(["json"])),
                               daemon=True)
    starter.start()
    starter.join(30)
    assert got and not got[0].daemon
    got[0].join(30)


def test_a_camera_read_in_real_time_has_the_trackers_modules_before_it_opens(tmp_path: Path):
    """A paced file (or a live source) drops frames while the pipeline is busy: the import is
    done before the source opens, so no frame of its first second is dropped for it."""
    from tests.detector.video.test_reader import write_mp4

    clip = write_mp4(tmp_path / "blank.mp4", 12)
    done = subprocess.run(
        [sys.executable, "-m", "videodetector.detector.cli", "--source", f"file@25:{clip}",
         "--camid", "c1", "--api-url", "http://127.0.0.1:9", "--api-token", "t", "-r", "1",
         "--spool-dir", str(tmp_path / "spool"), "--log-level", "DEBUG"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    log = done.stderr
    assert log.index("imported filterpy.kalman in the background") < log.index(
        "first frame processed")
