"""--detect-period: the detector skips moving frames only while every face is tracked and all
motion is on those faces; a new face elsewhere is detected on the frame it appears."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videodetector.core.models import YuNetDetector
from videodetector.democlip import Walker, pick_sprites, write_clip
from videodetector.detector.cadence import may_skip_detection, motion_off_faces
from videodetector.detector.config import parse_config
from videodetector.detector.pipeline import CameraSpec, FacePipeline
from videodetector.detector.regions import grow_boxes
from videodetector.detector.video.source import open_video, parse_source

box = st.tuples(st.floats(0, 1200), st.floats(0, 700), st.floats(1, 300), st.floats(1, 300)).map(
    lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]])


@settings(max_examples=150, deadline=None)
@given(motion=st.lists(box, max_size=5), faces=st.lists(box, max_size=3))
def test_motion_is_new_exactly_when_a_real_blob_touches_no_grown_face(motion, faces):
    m = np.array(motion, np.float64).reshape(-1, 4)
    f = np.array(faces, np.float64).reshape(-1, 4)
    zones = grow_boxes(f, 0.5, 16.0)

    def owned(b: np.ndarray) -> bool:
        size = (b[2] - b[0]) * (b[3] - b[1])
        return any(b[0] < z[2] and z[0] < b[2] and b[1] < z[3] and z[1] < b[3]
                   and size <= 4 * (z[2] - z[0]) * (z[3] - z[1]) for z in zones)

    real = [b for b in m if max(b[2] - b[0], b[3] - b[1]) >= 16]
    assert motion_off_faces(m, f) == any(not owned(b) for b in real)


def test_motion_off_faces_cases():
    face = np.array([[100, 100, 160, 180]], np.float32)
    trail = np.array([[20, 110, 170, 190]], np.float32)  # the face's blob with its trail
    assert not motion_off_faces(trail, face)
    elsewhere = np.array([[800, 300, 860, 380]], np.float32)
    assert motion_off_faces(np.vstack([trail, elsewhere]), face)
    speck = np.array([[800, 300, 810, 310]], np.float32)  # noise, too small for a face
    assert not motion_off_faces(speck, face)
    assert motion_off_faces(elsewhere, np.zeros((0, 4)))  # nobody tracked: all motion is new
    assert not motion_off_faces(np.zeros((0, 4)), face)
    everywhere = np.array([[0, 0, 1280, 720]], np.float32)  # shake, lights: not the face's
    assert motion_off_faces(everywhere, face)


@settings(max_examples=100, deadline=None)
@given(since=st.integers(0, 30), period=st.integers(1, 25), steady=st.booleans(),
       new=st.booleans())
def test_may_skip_only_when_steady_without_new_motion_within_the_period(since, period,
                                                                         steady, new):
    skip = may_skip_detection(since, period, steady, new)
    assert skip == (steady and not new and since + 1 < period)
    if period == 1:
        assert not skip  # period 1: the detector runs on every moving frame


def test_may_skip_detection_rejects_bad_values():
    with pytest.raises(ValueError, match="period"):
        may_skip_detection(0, 0, True, False)
    with pytest.raises(ValueError, match="frames_since_detection"):
        may_skip_detection(-1, 2, True, False)


@pytest.fixture(scope="module")
def second_face_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """1280x720: one person walks across from the start; another enters at 1.2 s, far away."""
    a, b = pick_sprites(2)
    path = tmp_path_factory.mktemp("cadence") / "second.mp4"
    return str(write_clip(path, [Walker(a, 0.0, 3.0, 60), Walker(b, 1.2, 3.0, 450)],
                          seconds=3.0, size=(1280, 720)))


def first_frames_with_tracks(path: str, period: int) -> tuple[dict[int, int], FacePipeline, int]:
    """{track count: first frame index with that many confirmed tracks}, the pipeline, posts."""
    cfg = parse_config(["--source", path, "--camid", "c1", "--api-url", "127.0.0.1:9",
                        "--api-token", "t", "--detect-period", str(period)])
    pipe = FacePipeline(cfg, CameraSpec("c1", path), YuNetDetector(), live=False)
    first: dict[int, int] = {}
    posts = 0
    with open_video(parse_source(path)) as stream:
        for frame in stream:
            posts += len(pipe.process(frame))
            first.setdefault(len(pipe.active_tracks), frame.index)
    return first, pipe, posts + len(pipe.finish())


def test_a_new_face_is_tracked_as_soon_as_with_the_detector_on_every_frame(second_face_clip):
    every, pipe1, posts1 = first_frames_with_tracks(second_face_clip, 1)
    skipping, pipe2, posts2 = first_frames_with_tracks(second_face_clip, 2)
    assert pipe1.stats.tracked_skips == 0
    assert pipe2.stats.tracked_skips > 10  # frames with one steady face were skipped
    assert pipe2.stats.detector_runs < pipe1.stats.detector_runs
    assert 2 in every and skipping[1] == every[1] and skipping[2] == every[2]
    assert posts1 == posts2 == 2
