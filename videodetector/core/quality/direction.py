"""Head pose from the detector's 5 landmarks, and fkvideo_detector's direction score.

Landmarks are in the order of ``videodetector.core.detections``: right eye, left eye, nose tip,
right mouth corner, left mouth corner (image left to right for a frontal face).

Geometry (all after rotating the points so the eye line is horizontal):

* **roll** = angle of the eye line (right eye -> left eye) from the image x axis.
* **yaw** from the nose tip's sideways offset. The nose sticks out of the face by about half
  the inter-ocular distance (IOD), so when the head turns by ``yaw`` the nose moves sideways
  by ``NOSE_DEPTH * half_iod0 * sin(yaw)`` while the eyes close in to ``half_iod0 * cos(yaw)``:
  ``offset / half_iod = NOSE_DEPTH * tan(yaw)``. The offset is measured from the facial
  midline at the nose's height (between the eye midpoint and the mouth midpoint).
* **pitch** from the nose tip's height between the eye line (0) and the mouth line (1). On
  frontal YuNet landmarks it sits at NEUTRAL_NOSE_HEIGHT; looking down moves it toward the
  mouth: ``(t - NEUTRAL_NOSE_HEIGHT) = PITCH_DEPTH * tan(pitch)``.

Angles are in degrees: yaw > 0 when the nose points to image right, pitch > 0 when the face
looks down, roll > 0 when the eye line turns clockwise on screen. This is a rough estimate
(about +-10 degrees on frontal mugshots), enough to rank snapshots of one track.

Calibration: on the 38 frontal NIST MEDS-II mugshots in ../shared/data/stills_meds YuNet's
nose sits at 0.50..0.61 of the eye-mouth distance (median 0.55) and |yaw| < 18 degrees. The
two full profiles there (S001-08-t10_02/03, really 90 degrees) come out at about 58 and 68
degrees: YuNet squeezes its landmarks on profiles, so past ~60 degrees this estimate
saturates, and the table below already calls 60 degrees a large angle.

Direction score (fkvideo_detector's ``--min-dir-score`` scale: 0 frontal, -0.05 close to
frontal, -2.5 satisfactory deviation, -3.5 large angle) is a piecewise-linear function of
the combined deviation ``sqrt(yaw^2 + pitch^2 + (ROLL_WEIGHT * roll)^2)``, see
DIRECTION_TABLE. Roll weighs little: alignment removes it.
"""

from __future__ import annotations

import math

import numpy as np

from videodetector.core.quality.tables import interp

NOSE_DEPTH = 1.0  # nose protrusion / half inter-ocular distance
NEUTRAL_NOSE_HEIGHT = 0.55  # nose height between eye line (0) and mouth line (1), frontal
PITCH_DEPTH = 0.45  # nose protrusion / eye-to-mouth distance
ROLL_WEIGHT = 0.2

# combined deviation in degrees -> direction score
DIRECTION_TABLE = (
    (0.0, 5.0, 15.0, 30.0, 45.0, 60.0, 90.0),
    (0.0, -0.05, -0.3, -1.25, -2.5, -3.5, -5.0),
)


def _as_landmarks(landmarks: np.ndarray) -> np.ndarray:
    pts = np.asarray(landmarks, np.float64)
    if pts.shape not in ((5, 2), (10,)) or not all(map(math.isfinite, pts.ravel().tolist())):
        raise ValueError(f"expected 5 finite (x, y) landmarks, got {landmarks!r}")
    return pts.reshape(5, 2)


def _derolled(pts: np.ndarray) -> tuple[list[list[float]], float]:
    """Points relative to the eye midpoint, rotated so the eye line is horizontal; and roll.

    The arithmetic is numpy's elementwise (the same doubles as plain Python floats) but
    for the rotation itself, which stays numpy's ``@`` (a BLAS kernel may fuse its
    multiply-adds), so the points are bit for bit what they always were."""
    (rx, ry), (lx, ly) = pts[:2].tolist()
    ex, ey = lx - rx, ly - ry
    if np.hypot(ex, ey) < 1e-6:
        raise ValueError(f"landmarks have both eyes at one point: {pts.tolist()}")
    roll = math.atan2(ey, ex)
    c, s = math.cos(-roll), math.sin(-roll)
    rot = np.array([[c, -s], [s, c]])
    centre = np.array([(rx + lx) / 2, (ry + ly) / 2])
    return ((pts - centre) @ rot.T).tolist(), math.degrees(roll)


def head_pose(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from 5 landmarks; see the module docstring."""
    pts, roll = _derolled(_as_landmarks(landmarks))
    right_eye, left_eye, nose, right_mouth, left_mouth = pts
    mouth = ((right_mouth[0] + left_mouth[0]) / 2, (right_mouth[1] + left_mouth[1]) / 2)
    eye_to_mouth = mouth[1]  # the eye midpoint is the origin
    if eye_to_mouth <= 1e-6:
        raise ValueError(f"landmarks have the mouth not below the eyes: {landmarks!r}")
    half_iod = (left_eye[0] - right_eye[0]) / 2

    t = nose[1] / eye_to_mouth  # nose height: 0 at the eye line, 1 at the mouth line
    midline_x = t * mouth[0]  # facial midline at the nose's height
    yaw = math.degrees(math.atan2(nose[0] - midline_x, NOSE_DEPTH * half_iod))
    pitch = math.degrees(math.atan2(t - NEUTRAL_NOSE_HEIGHT, PITCH_DEPTH))
    return yaw, pitch, roll


def deviation_to_score(deviation_deg: float) -> float:
    """Map a combined pose deviation in degrees to the direction score (<= 0)."""
    return float(interp(abs(float(deviation_deg)), *DIRECTION_TABLE))


def pose_direction_score(yaw: float, pitch: float, roll: float) -> float:
    """The direction score of a pose from :func:`head_pose` (what :func:`direction_score`
    gives for its landmarks, without estimating the pose again)."""
    return deviation_to_score(math.sqrt(yaw**2 + pitch**2 + (ROLL_WEIGHT * roll) ** 2))


def direction_score(landmarks: np.ndarray) -> float:
    """fkvideo_detector-style direction score: 0 frontal ... -3.5 large angle (>= 60 deg)."""
    return pose_direction_score(*head_pose(landmarks))
