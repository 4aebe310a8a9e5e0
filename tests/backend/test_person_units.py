"""Pure parts of person matching: face quality, track keys, quality-weighted centroids."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videodetector.backend.person_match import (
    face_quality,
    size_quality,
    track_in_camera,
    track_key,
    weighted_centroid,
)

RUN = st.from_regex(r"[A-Za-z0-9_-]{1,16}", fullmatch=True)
CAM = st.text(min_size=1, max_size=20)
TRACK = st.integers(min_value=0, max_value=2**63 - 1)


def test_face_quality_prefers_the_detector_score_and_falls_back_to_size():
    box = (0.0, 0.0, 30.0, 40.0)
    assert face_quality({"score": -3.25}, box) == -3.25
    assert face_quality({"score": -99}, box) == -20.0  # clamped to the score scale
    assert face_quality({"score": 0.5}, box) == 0.0
    for bad in (None, {}, {"score": True}, {"score": "x"}, {"score": math.nan}, [1]):
        assert face_quality(bad, box) == size_quality(box) == -5.0  # 30 px shorter side
    assert size_quality((0, 0, 120, 150)) == 0.0 and size_quality((0, 0, 10, 10)) == -8.0


@settings(max_examples=50, deadline=None)
@given(st.floats(1, 500), st.floats(1, 500))
def test_size_quality_grows_with_the_face(a: float, b: float):
    small, big = sorted((a, b))
    assert size_quality((0, 0, small, small)) <= size_quality((0, 0, big, big)) <= 0.0


@settings(max_examples=100, deadline=None)
@given(CAM, RUN, RUN, TRACK, TRACK)
def test_track_keys_never_link_two_runs_or_two_tracks(cam: str, r1: str, r2: str, t1: int,
                                                      t2: int):
    k1 = track_key(cam, {"run_id": r1, "track_id": t1})
    k2 = track_key(cam, {"run_id": r2, "track_id": t2})
    assert k1 is not None and k2 is not None
    assert (k1 == k2) == (r1 == r2 and t1 == t2)


@settings(max_examples=100, deadline=None)
@given(CAM, RUN, TRACK)
def test_a_track_in_its_cameras_line_is_the_run_and_track_alone(cam: str, run: str, track: int):
    """The identity-switch line names the camera once: ``camera C: track RUN:N``."""
    assert track_in_camera(track_key(cam, {"run_id": run, "track_id": track})) == f"{run}:{track}"


@pytest.mark.parametrize("cam,params", [
    (None, {"run_id": "a", "track_id": 1}), ("c", {"track_id": 1}),  # no camera, no run
    ("c", {"run_id": "", "track_id": 1}), ("c", {"run_id": "a:b", "track_id": 1}),
    ("c", {"run_id": "a", "track_id": True}), ("c", {"run_id": "a", "track_id": -1}),
    ("c", {"run_id": "a", "track_id": "1"}), ("c", "not a dict"), ("c", None),
])
def test_no_track_key_without_a_valid_camera_run_and_track(cam, params):
    assert track_key(cam, params) is None


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 128))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 20))
def test_weighted_centroid_is_a_unit_vector_led_by_the_best_faces(seed: int, n: int):
    rng = np.random.default_rng(seed)
    vectors = _unit(rng, n + 1)
    qualities = np.array([0.0] + [-8.0] * n)  # one good face, n poor ones
    c = weighted_centroid(vectors, qualities)
    assert abs(float(np.linalg.norm(c)) - 1.0) < 1e-5
    cos = vectors @ c
    assert cos[0] >= cos[1:].max()  # the good face leads
    order = rng.permutation(n + 1)
    assert np.allclose(weighted_centroid(vectors[order], qualities[order]), c, atol=1e-5)
