"""Face snapshot quality on fkvideo_detector's ``--min-score`` scale.

Scale (from the FindFace docs): 0 = high quality, -1 = good, -2 = satisfactory,
-5 = recognition may be inefficient; the default posting threshold is -7. Higher is better.

Every component is a penalty <= 0 on that same scale, given by a small piecewise-linear
table (``np.interp``, clamped at the ends), and the total is their sum::

    score = confidence + sharpness + size + edge + DIRECTION_WEIGHT * direction_score

* ``confidence``: detector score c in 0..1. CONFIDENCE_TABLE: c >= 0.9 -> 0, 0.8 -> -0.5,
  0.7 -> -1.5, 0.5 -> -3, <= 0.3 -> -5. (YuNet gives 0.92..0.96 on sharp frontal faces.)
* ``sharpness``: the face aligned as for recognition (112x112 grey, the SFace input). A
  larger face is shrunk to it with area averaging (no aliasing); a smaller face is aligned
  at its own resolution instead (never upsampled), so this measures blur *relative to the
  face*, and resolution is left to ``size``. Then
  ratio = var(Laplacian) / mean(|Sobel gradient|^2). Dividing by the gradient energy cancels
  contrast, lighting and how much texture the face has, leaving "how steep are the edges".
  SHARPNESS_TABLE on log10(ratio): >= 0.025 -> 0, 0.015 -> -1, 0.01 -> -2,
  0.006 -> -3.5, <= 0.003 -> -5. Measured on the 39 non-profile MEDS-II mugshots (5th..95th
  percentile, median): sharp 0.021..0.041 (0.029); Gaussian blur sigma 1 -> 0.015..0.029
  (0.020), sigma 2 -> 0.008..0.019 (0.012), sigma 3 -> 0.005..0.014 (0.008); the sharp
  photos downscaled to a 70, 46 or 30 px face: medians 0.031, 0.032, 0.034 (resolution
  does not change it); downscaled to 46 px and then blurred by sigma 1: 0.009.
* ``size``: the box's shorter side s in pixels (what ``--min-face-size`` measures).
  SIZE_TABLE: s >= 100 -> 0, 64 -> -1, 48 -> -2, 30 -> -5, <= 16 -> -8.
* ``edge``: the smallest distance from the box to a frame border, divided by s. A box
  touching the border (ratio 0, i.e. the detector clipped it: the face is cut) -> -3,
  ratio >= 0.05 -> 0. If a landmark itself lies outside the frame the face is certainly
  cut: -5.
* ``direction_score`` (``videodetector.core.quality.direction``): 0 frontal ... -3.5 at 60
  degrees. It is weighted by DIRECTION_WEIGHT = 0.5 here because it already has its own
  threshold (``--min-dir-score``) and pose also lowers the detector confidence.

So a sharp, frontal, 100 px, well-detected face scores 0; each flaw costs what the tables
say; a face that is both small (48 px -> -2) and a little blurred (-1) is at -3. On
clips_faces/mpf_video_01.mp4 (H.264 640x480) the best snapshots of the 5 tracks score
-1.5 (59 px face), -4.0 and -4.5 (36 px), -5.8 (27 px), -6.3 (25 px): all posted at the
default -7, the two smallest only just.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from videodetector.core.models import check_landmarks
from videodetector.core.quality.align import MIN_CROP as MIN_CROP  # re-export: px, see there
from videodetector.core.quality.align import aligned_grey_crop
from videodetector.core.quality.direction import head_pose, pose_direction_score
from videodetector.core.quality.tables import interp

log = logging.getLogger(__name__)

CONFIDENCE_TABLE = ((0.3, 0.5, 0.7, 0.8, 0.9), (-5.0, -3.0, -1.5, -0.5, 0.0))
SHARPNESS_CROP = 112  # pixels: the aligned crop SFace sees; the Laplacian is measured on it
SHARPNESS_TABLE = ((0.003, 0.006, 0.01, 0.015, 0.025), (-5.0, -3.5, -2.0, -1.0, 0.0))
SIZE_TABLE = ((16.0, 30.0, 48.0, 64.0, 100.0), (-8.0, -5.0, -2.0, -1.0, 0.0))
EDGE_TABLE = ((0.0, 0.05), (-3.0, 0.0))
EDGE_LANDMARK_OUTSIDE = -5.0
DIRECTION_WEIGHT = 0.5


@dataclass(frozen=True)
class QualityScore:
    """Total quality and its parts. All ``*_score``-scale fields are <= 0, higher = better."""

    score: float  # the total, compare with --min-score
    direction_score: float  # compare with --min-dir-score
    confidence: float  # component penalties (summed into score)
    sharpness: float
    size: float
    edge: float
    # The measurements behind them, for logs and tuning.
    yaw: float  # degrees
    pitch: float
    roll: float
    sharpness_ratio: float  # var(Laplacian) / mean squared gradient of the aligned crop
    face_size_px: float  # box shorter side
    edge_margin: float  # distance to the frame border / face_size_px (<= 0: touches)


def confidence_score(det_score: float) -> float:
    """Detector confidence 0..1 -> penalty, see CONFIDENCE_TABLE."""
    if not 0.0 <= det_score <= 1.0:
        raise ValueError(f"det_score must be in [0, 1], got {det_score}")
    return float(interp(float(det_score), *CONFIDENCE_TABLE))


def aligned_grey_face(
    image_bgr: np.ndarray, landmarks: np.ndarray, size: int, upsample: bool = True
) -> np.ndarray:
    """The face as the recogniser sees it: aligned ``size`` x ``size`` grey crop, float32.

    With ``upsample=False`` a face smaller than the crop is aligned at its own resolution
    instead (a smaller crop, at least MIN_CROP pixels).

    A face larger than the crop is first shrunk with area averaging (``cv2.INTER_AREA``):
    ``align_face`` alone samples bilinearly and would alias, which adds fake detail that
    grows with the face size. (How it is computed cheaply, bit for bit: see
    ``videodetector.core.quality.align``.)
    """
    return aligned_grey_crop(image_bgr, check_landmarks(landmarks), size,
                             upsample).astype(np.float32)


def laplacian_ratio(grey: np.ndarray) -> float:
    """var(Laplacian) / (mean squared Sobel gradient + 1) of a uint8 grey crop, the same
    float32 value the former ``lap.var() / (np.mean(gx**2 + gy**2) + 1.0)`` gave on its
    float32 copy: the filters' values are exact integers either way, and numpy's float32
    ``var`` and ``mean`` are replayed step by step (their mean of the Laplacian is an exact
    integer sum, below 2**24, divided once) with the same reductions on the same shapes,
    without their temporaries."""
    lap = cv2.Laplacian(grey, cv2.CV_32F)
    n = np.intp(lap.size)
    mean = np.float32(cv2.sumElems(lap)[0] / lap.size)
    np.subtract(lap, mean, out=lap)
    np.square(lap, out=lap)
    var = np.add.reduce(lap, axis=None)
    var = var.dtype.type(var / n)
    dx, dy = cv2.spatialGradient(grey)  # the two 3x3 Sobels, int16
    grad = np.square(dx, dtype=np.float32)
    np.add(grad, np.square(dy, dtype=np.float32), out=grad)
    energy = np.add.reduce(grad, axis=None)
    energy = energy.dtype.type(energy / n)
    # +1 keeps a flat crop (no detail at all) at ratio ~0 instead of 0/0.
    return float(var / (energy + 1.0))


def sharpness_ratio(image_bgr: np.ndarray, landmarks: np.ndarray) -> float:
    """var(Laplacian) / mean squared Sobel gradient of the aligned SHARPNESS_CROP face."""
    return _sharpness_ratio(image_bgr, check_landmarks(landmarks))


def _sharpness_ratio(image_bgr: np.ndarray, pts: np.ndarray) -> float:
    return laplacian_ratio(aligned_grey_crop(image_bgr, pts, SHARPNESS_CROP, upsample=False))


_LOG_SHARPNESS_XS = tuple(np.log10(SHARPNESS_TABLE[0]).tolist())


def sharpness_score(ratio: float) -> float:
    """Sharpness ratio -> penalty, interpolated on a log scale, see SHARPNESS_TABLE."""
    return float(interp(math.log10(max(ratio, 1e-6)), _LOG_SHARPNESS_XS, SHARPNESS_TABLE[1]))


def size_score(face_size_px: float) -> float:
    """Box shorter side in pixels -> penalty, see SIZE_TABLE."""
    return float(interp(float(face_size_px), *SIZE_TABLE))


def edge_margin(xyxy: np.ndarray, frame_wh: tuple[int, int]) -> float:
    """Smallest distance from the box to a frame border, in units of the box's shorter side."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    w, h = frame_wh
    side = max(min(x2 - x1, y2 - y1), 1e-6)
    return min(x1, y1, w - x2, h - y2) / side


def edge_score(margin: float, landmarks: np.ndarray, frame_wh: tuple[int, int]) -> float:
    """Penalty for a face at or beyond the frame border, see EDGE_TABLE."""
    pts = np.asarray(landmarks, np.float64).reshape(5, 2).tolist()
    w, h = frame_wh
    if any(x < 0 or y < 0 or x >= w or y >= h for x, y in pts):
        return EDGE_LANDMARK_OUTSIDE
    return float(interp(float(margin), *EDGE_TABLE))


def _check_inputs(image_bgr: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(
            f"expected an HxWx3 uint8 BGR image, got shape {image_bgr.shape} {image_bgr.dtype}"
        )
    box = np.asarray(xyxy, np.float64).reshape(-1)
    if box.shape != (4,) or not (box[2] > box[0] and box[3] > box[1]):
        raise ValueError(f"xyxy must be [x1, y1, x2, y2] with x2 > x1, y2 > y1, got {xyxy!r}")
    return box


def face_quality(
    image_bgr: np.ndarray, xyxy: np.ndarray, landmarks: np.ndarray, det_score: float
) -> QualityScore:
    """Quality of one detected face in a full frame; see the module docstring for the formula.

    ``xyxy`` and ``landmarks`` (5x2) are in the frame's pixel coordinates, as produced by
    the detector (``Detections.xyxy[i]``, ``Detections.landmarks[i]``).
    """
    box = _check_inputs(image_bgr, xyxy)
    frame_wh = (image_bgr.shape[1], image_bgr.shape[0])
    yaw, pitch, roll = head_pose(landmarks)  # also validates the landmarks
    direction = pose_direction_score(yaw, pitch, roll)
    pts = check_landmarks(landmarks)
    ratio = _sharpness_ratio(image_bgr, pts)
    x1, y1, x2, y2 = box.tolist()
    size_px = min(x2 - x1, y2 - y1)
    margin = edge_margin((x1, y1, x2, y2), frame_wh)
    parts = {
        "confidence": confidence_score(float(det_score)),
        "sharpness": sharpness_score(ratio),
        "size": size_score(size_px),
        "edge": edge_score(margin, pts, frame_wh),
    }
    total = sum(parts.values()) + DIRECTION_WEIGHT * direction
    return QualityScore(
        score=float(total), direction_score=direction, **parts,
        yaw=yaw, pitch=pitch, roll=roll,
        sharpness_ratio=ratio, face_size_px=size_px, edge_margin=margin,
    )
