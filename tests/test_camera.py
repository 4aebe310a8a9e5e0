"""CameraWorker isolation: a crash inside the pipeline restarts it without losing the camera."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from tests.post.receiver import Receiver, wait_for
from videodetector.camera import CameraWorker
from videodetector.config import parse_config
from videodetector.democlip import Walker, pick_sprites, write_clip
from videodetector.detections import Detections
from videodetector.models import YuNetDetector
from videodetector.pipeline import CameraSpec
from videodetector.post.poster import Poster
from videodetector.post.spool import Spool


class FailsOnce:
    """The real detector, except that the first pipeline's detector raises after a few calls
    (as a bug in a pipeline stage would)."""

    created = 0

    def __init__(self) -> None:
        FailsOnce.created += 1
        self.first = FailsOnce.created == 1
        self.calls = 0
        self.real = YuNetDetector()

    def detect(self, bgr: np.ndarray) -> Detections:
        self.calls += 1
        if self.first and self.calls == 40:
            raise RuntimeError("simulated bug in a pipeline stage")
        return self.real.detect(bgr)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    (a,) = pick_sprites(1)
    path = tmp_path_factory.mktemp("clip") / "walk.mp4"
    return write_clip(path, [Walker(a, 0.0, 3.0, 100)], seconds=3.0)


def test_a_pipeline_crash_restarts_the_camera_with_fresh_keys(clip: Path, tmp_path: Path):
    rx = Receiver().start()
    cfg = parse_config(["--source", str(clip), "--api-url", rx.url, "--api-token", "t",
                        "-r", "1", "--rt-perm", "1", "--rt-delay", "400",
                        "--spool-dir", str(tmp_path / "spool")])
    poster = Poster(cfg, spool=Spool(cfg.spool_dir, cfg.spool_max_bytes))
    poster.start()
    FailsOnce.created = 0
    worker = CameraWorker(cfg, CameraSpec("cam", str(clip)), FailsOnce, poster).start()
    try:
        deadline = time.monotonic() + 60
        while worker.is_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not worker.is_alive()
        assert worker.counters.crashes == 1 and FailsOnce.created == 2
        assert "simulated bug" in (worker.error or "")
        # the second run processed the whole clip (counters go on across the restart)
        assert worker.pipeline_stats.frames > 75
        assert wait_for(lambda: len(rx.received) >= 3)
        keys = rx.ok_keys()
        assert len(keys) == len(set(keys))
        # both runs posted track 1 from sequence 0: only the run id tells them apart
        runs = {k.split(":")[1] for k in keys if k.split(":")[2:4] == ["1", "0"]}
        assert len(runs) == 2, keys
    finally:
        poster.stop(timeout=5)
        rx.stop()


def test_the_camera_writes_its_annotated_output_to_the_sink(clip: Path, tmp_path: Path):
    from videodetector.video.source import open_video

    rx = Receiver().start()
    out = tmp_path / "annotated.mkv"
    cfg = parse_config(["--source", str(clip), "--camid", "door", "--api-url", rx.url,
                        "--api-token", "t", "--spool-dir", str(tmp_path / "spool"),
                        "--sink-url", str(out), "--sink-res", "320x240", "--draw-track", "1"])
    poster = Poster(cfg, spool=Spool(cfg.spool_dir, cfg.spool_max_bytes))
    poster.start()
    worker = CameraWorker(cfg, CameraSpec("door", str(clip)), YuNetDetector, poster).start()
    try:
        worker.join(60)
        assert not worker.is_alive() and worker.error is None
        assert worker.sink is not None and worker.sink.cam_id == "door"
        with open_video(str(out)) as video:
            frames = [f.image.shape for f in video]
        assert len(frames) == worker.pipeline_stats.frames == worker.sink.frames_written
        assert set(frames) == {(240, 320, 3)}
    finally:
        poster.stop(timeout=5)
        rx.stop()
