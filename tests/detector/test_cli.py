"""fkvideo_detector as a user runs it: a separate process posting to a local HTTP receiver."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import shared_file
from tests.detector.post.receiver import Receiver

START = datetime(2026, 1, 20, 12, 34, 56)


def run_detector(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "videodetector.detector.cli", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def receiver():
    rx = Receiver().start()
    yield rx
    rx.stop()


def detector_args(rx: Receiver, source: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["--source", str(source), "--camid", "cam-1", "--api-url", rx.url,
            "--api-token", "secret", "--spool-dir", str(tmp_path / "spool"),
            "--start-ts", START.strftime("%Y-%m-%d %H:%M:%S"), *extra]


def check_request(req, img_arg: str = "photo") -> dict:
    """Every field of the 5.4 request format; returns detectorParams."""
    assert req.path == "/v1/face/"
    assert req.headers["Authorization"] == "Token secret"
    assert req.key.startswith("cam-1:")
    photo = cv2.imdecode(np.frombuffer(req.part(img_arg).data, np.uint8), cv2.IMREAD_COLOR)
    assert photo.shape == (480, 640, 3)
    face = cv2.imdecode(np.frombuffer(req.part("face0").data, np.uint8), cv2.IMREAD_COLOR)
    assert face.shape == (112, 112, 3) and req.part("face0").data[:4] == b"\x89PNG"
    (x1, y1, x2, y2), = json.loads(req.part("bbox").text)
    assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480
    assert req.part("cam_id").text == "cam-1"
    stamp = datetime.fromisoformat(req.part("timestamp").text)
    assert START <= stamp.replace(tzinfo=None) <= START + timedelta(seconds=4)
    params = json.loads(req.part("detectorParams").text)
    assert params["score"] <= 0 and params["direction_score"] <= 0
    return params


@pytest.mark.media
def test_offline_event_clip_posts_one_snapshot_per_person(receiver, tmp_path):
    clip = shared_file("clips_faces/mpf_video_01.mp4")
    out = run_detector(*detector_args(receiver, clip, tmp_path, "--realtime", "0"))
    assert out.returncode == 0, out.stderr
    # 5 people; the two intermittent photographers may split into two tracks each.
    assert 5 <= len(receiver.received) <= 7, out.stderr
    tracks = [check_request(r)["track_id"] for r in receiver.received]
    assert len(set(tracks)) == len(tracks)
    assert len({r.key for r in receiver.received}) == len(receiver.received)


@pytest.mark.media
def test_no_face_clip_posts_nothing(receiver, tmp_path):
    clip = shared_file("clips_noface/imageio_cockatoo.mp4")
    out = run_detector(*detector_args(receiver, clip, tmp_path))
    assert out.returncode == 0, out.stderr
    assert receiver.received == []


@pytest.mark.media
def test_region_clip_has_exactly_one_track_from_frame_31(receiver, tmp_path):
    clip = shared_file("clips_faces/mpf_ff-region-face-motion.avi")
    out = run_detector(*detector_args(receiver, clip, tmp_path, "--realtime", "1", "--rt-perm",
                                      "1", "--rt-delay", "200", "--send-track"))
    assert out.returncode == 0, out.stderr
    params = [check_request(r) for r in receiver.received]
    assert {p["track_id"] for p in params} == {1}
    first = min(datetime.fromisoformat(r.part("timestamp").text).replace(tzinfo=None)
                for r in receiver.received)
    # frame 31 at 30 fps is 1.03 s in; the tracker confirms a face on its 2nd hit.
    assert timedelta(seconds=0.9) <= first - START <= timedelta(seconds=1.4)
    assert all(len(p["track"]) >= 1 for p in params)
    # the clip is 101 frames: 70 frames with the face in 200 ms windows -> about 10 posts
    assert 8 <= len(params) <= 13


@pytest.mark.media
def test_only_norm_and_custom_image_argument(receiver, tmp_path):
    clip = shared_file("clips_faces/mpf_ff-region-face-motion.avi")
    out = run_detector(*detector_args(receiver, clip, tmp_path, "--only-norm", "1",
                                      "--body", "galleries=g1,g2", "--headers", "X-Site: lab"))
    assert out.returncode == 0, out.stderr
    (req,) = receiver.received
    assert "photo" not in req.names() and "face0" in req.names()
    assert req.part("galleries").text == "g1,g2"
    assert req.headers["X-Site"] == "lab"


def test_a_file_that_is_not_video_fails_clearly(receiver, tmp_path):
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("this is not a video\n" * 50)
    out = run_detector(*detector_args(receiver, bogus, tmp_path))
    assert out.returncode == 1
    assert "notes.mp4" in out.stderr
    assert receiver.received == []


def test_bad_option_fails_at_start_naming_it(tmp_path):
    out = run_detector("--api-url", "127.0.0.1:1", "--api-token", "t", "--source", "x.mp4",
                       "--roi", "big")
    assert out.returncode == 2
    assert "--roi" in out.stderr


def test_unknown_option_in_config_file_is_named(tmp_path):
    ini = tmp_path / "bad.ini"
    ini.write_text("[General]\napi-url=127.0.0.1:8000\napi-token=t\nsource=x.mp4\n"
                   "md-treshold=0.003\n")
    out = run_detector("-c", str(ini))
    assert out.returncode == 2
    assert "md-treshold" in out.stderr


def test_check_config_accepts_the_shipped_example():
    ini = Path(__file__).resolve().parents[2] / "configs" / "fkvideo.ini"
    out = run_detector("-c", str(ini), "--check-config")
    assert out.returncode == 0, out.stderr
    assert "configuration ok" in out.stdout


def test_requeue_rejected_moves_refused_snapshots_back_unless_the_daemon_runs(tmp_path):
    from tests.detector.post.receiver import make_snapshot
    from videodetector.detector.post.spool import Spool

    root = tmp_path / "spool"
    for cam, n in (("door", 2), ("hall", 1)):
        spool = Spool(root / cam, 10**9)
        for i in range(n):
            spool.set_aside(None, make_snapshot(seq=i, cam_id=cam))
        spool.close()
    args = ["--detector-name", "site1", "--api-url", "127.0.0.1:9", "--api-token", "t",
            "--spool-dir", str(root), "--requeue-rejected"]
    running = Spool(root / "hall", 10**9)  # as a running daemon's camera holds it
    out = run_detector(*args, timeout=60)
    assert out.returncode == 1 and "stop fkvideo_detector" in out.stderr
    assert "2 snapshot(s) requeued" in out.stdout and "1 spool(s) in use" in out.stdout
    running.close()
    out = run_detector(*args, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "1 snapshot(s) requeued" in out.stdout
    assert [len(Spool(root / cam, 10**9)) for cam in ("door", "hall")] == [2, 1]
    assert not list(root.glob("*/rejected/*.snap"))
