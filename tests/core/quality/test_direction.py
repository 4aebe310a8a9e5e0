"""Head pose and direction score on synthetic 5-point landmark sets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from videodetector.core.quality.direction import deviation_to_score, direction_score, head_pose

# A symmetric frontal face: eyes 60 px apart, nose at the neutral 0.55 of the eye-mouth drop.
FRONTAL = np.array(
    [[70, 100], [130, 100], [100, 100 + 0.55 * 65], [78, 165], [122, 165]], np.float64
)


def with_nose_shift(dx: float) -> np.ndarray:
    pts = FRONTAL.copy()
    pts[2, 0] += dx
    return pts


def rotated(pts: np.ndarray, degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    centre = pts.mean(axis=0)
    return (pts - centre) @ rot.T + centre


def test_symmetric_frontal_is_zero():
    yaw, pitch, roll = head_pose(FRONTAL)
    assert yaw == pytest.approx(0, abs=1e-6)
    assert pitch == pytest.approx(0, abs=1e-6)
    assert roll == pytest.approx(0, abs=1e-6)
    assert direction_score(FRONTAL) == pytest.approx(0, abs=1e-6)


def test_nose_toward_an_eye_is_monotonic_and_symmetric():
    shifts = [0, 3, 6, 10, 15, 20, 30, 45]
    scores = [direction_score(with_nose_shift(dx)) for dx in shifts]
    assert all(a > b for a, b in zip(scores, scores[1:], strict=False)), scores
    for dx, s in zip(shifts, scores, strict=True):
        assert direction_score(with_nose_shift(-dx)) == pytest.approx(s)
    assert head_pose(with_nose_shift(10))[0] > 0 > head_pose(with_nose_shift(-10))[0]


def test_yaw_milestones():
    # Nose offset of tan(yaw) half-IODs gives that yaw with NOSE_DEPTH = 1.
    for deg, lo, hi in [(5, -0.1, 0.0), (30, -1.5, -1.0), (45, -2.7, -2.3), (65, -5, -3.5)]:
        pts = with_nose_shift(30 * math.tan(math.radians(deg)))
        assert head_pose(pts)[0] == pytest.approx(deg, abs=0.5)
        assert lo <= direction_score(pts) <= hi, deg


def test_roll_is_measured_but_weighs_little():
    pts = rotated(FRONTAL, 20)
    yaw, pitch, roll = head_pose(pts)
    assert roll == pytest.approx(20, abs=1e-6)
    assert yaw == pytest.approx(0, abs=1e-6) and pitch == pytest.approx(0, abs=1e-6)
    assert direction_score(pts) > -0.1
    # A rolled and turned face scores like the turned one.
    turned = with_nose_shift(15)
    assert direction_score(rotated(turned, 25)) == pytest.approx(direction_score(turned),
                                                                 abs=0.1)


def test_pitch_from_nose_height():
    down, up = FRONTAL.copy(), FRONTAL.copy()
    down[2, 1] += 12  # nose nearer the mouth: looking down
    up[2, 1] -= 12
    assert head_pose(down)[1] > 10 and head_pose(up)[1] < -10
    assert direction_score(down) < -0.3 and direction_score(up) < -0.3


def test_deviation_table_milestones():
    assert deviation_to_score(0) == 0
    assert deviation_to_score(5) == pytest.approx(-0.05)
    assert deviation_to_score(45) == pytest.approx(-2.5)
    assert deviation_to_score(60) == pytest.approx(-3.5)
    assert deviation_to_score(-60) == pytest.approx(-3.5)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((5, 2)),  # a detector without landmarks
        np.zeros((4, 2)),
        np.array([[70, 100], [130, 100], [100, 80], [78, 60], [122, 60]], float),  # mouth above
        np.full((5, 2), np.nan),
    ],
)
def test_bad_landmarks_raise_value_error(bad):
    with pytest.raises(ValueError):
        direction_score(bad)
