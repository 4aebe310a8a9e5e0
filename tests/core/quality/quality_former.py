"""The face quality code that issue 10's quality round replaced, kept as the reference its
replacement is compared with (``tests/core/quality/test_same_scores.py``) and timed against
(``bench/quality_cost.py``): ``face_quality`` with ``head_pose`` twice (once inside
``direction_score``), ``similarity_transform`` through an SVD twice per face, a float32 grey
crop, ``cv2.Laplacian`` / two ``cv2.Sobel`` and numpy's float32 ``var`` / ``mean``. Verbatim
(from videodetector/core/quality/{score,direction}.py and the alignment helpers of
videodetector/core/models.py at 040ab96) but for the ``former_`` prefix on the names and the
import of the tables from the live modules (the tables are not changed by this round)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from videodetector.core.models import MAX_LANDMARK_COORD, TEMPLATE_112
from videodetector.core.quality.direction import (
    DIRECTION_TABLE,
    NEUTRAL_NOSE_HEIGHT,
    NOSE_DEPTH,
    PITCH_DEPTH,
    ROLL_WEIGHT,
)
from videodetector.core.quality.score import (
    CONFIDENCE_TABLE,
    DIRECTION_WEIGHT,
    EDGE_LANDMARK_OUTSIDE,
    EDGE_TABLE,
    MIN_CROP,
    SHARPNESS_CROP,
    SHARPNESS_TABLE,
    SIZE_TABLE,
    QualityScore,
)


def former_similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, scale, shift) mapping src to dst (Umeyama)."""
    return former_similarity64(src, dst).astype(np.float32)


def former_similarity64(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``former_similarity_transform`` before its float32 cast (the same lines)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1
    rot = u @ np.diag(d) @ vt
    var = (s0**2).sum() / len(src)
    scale = (sig * d).sum() / var if var > 0 else 1.0
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def former_check_landmarks(landmarks: object) -> np.ndarray:
    """5 landmarks as a (5, 2) float64 array; ValueError (naming them) when they cannot
    place a face: not 5 points, not finite, absurdly far away, or all at one point.

    Landmarks in any order, outside the box or the image, or on one line still place a
    face (a poor one: the quality score says so)."""
    try:
        pts = np.asarray(landmarks, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"landmarks must be 5 (x, y) numbers, got {landmarks!r}") from None
    if pts.size != 10:
        raise ValueError(f"expected 5 (x, y) landmarks, got shape {pts.shape}")
    pts = pts.reshape(5, 2)
    if not np.all(np.isfinite(pts)) or np.abs(pts).max() > MAX_LANDMARK_COORD:
        raise ValueError(f"landmarks must be finite pixel coordinates, got {pts.tolist()}")
    if np.ptp(pts, axis=0).max() < 1e-3:
        raise ValueError(f"landmarks are all at one point: {pts.tolist()}")
    return pts


def former_align_face(bgr: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The normalized face: a ``size``-square crop warped so the landmarks sit on the template.

    ValueError for landmarks that cannot place a face (see :func:`check_landmarks`) or an
    image that is not HxWx3 uint8 with at least one pixel."""
    if (not isinstance(bgr, np.ndarray) or bgr.ndim != 3 or bgr.shape[2] != 3
            or bgr.dtype != np.uint8 or bgr.shape[0] < 1 or bgr.shape[1] < 1):
        raise ValueError(f"expected an HxWx3 uint8 BGR image, got "
                         f"{getattr(bgr, 'shape', None)} {getattr(bgr, 'dtype', type(bgr))}")
    dst = TEMPLATE_112 * (size / 112.0)
    m = former_similarity_transform(former_check_landmarks(landmarks), dst)
    return cv2.warpAffine(bgr, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def former_as_landmarks(landmarks: np.ndarray) -> np.ndarray:
    pts = np.asarray(landmarks, np.float64)
    if pts.shape not in ((5, 2), (10,)) or not np.all(np.isfinite(pts)):
        raise ValueError(f"expected 5 finite (x, y) landmarks, got {landmarks!r}")
    return pts.reshape(5, 2)


def former_derolled(pts: np.ndarray) -> tuple[np.ndarray, float]:
    """Points relative to the eye midpoint, rotated so the eye line is horizontal; and roll."""
    right_eye, left_eye = pts[0], pts[1]
    eye_vec = left_eye - right_eye
    if np.hypot(*eye_vec) < 1e-6:
        raise ValueError(f"landmarks have both eyes at one point: {pts.tolist()}")
    roll = math.atan2(eye_vec[1], eye_vec[0])
    c, s = math.cos(-roll), math.sin(-roll)
    rot = np.array([[c, -s], [s, c]])
    return (pts - (right_eye + left_eye) / 2) @ rot.T, math.degrees(roll)


def former_head_pose(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from 5 landmarks; see the module docstring."""
    pts, roll = former_derolled(former_as_landmarks(landmarks))
    right_eye, left_eye, nose, right_mouth, left_mouth = pts
    mouth = (right_mouth + left_mouth) / 2
    eye_to_mouth = mouth[1]  # the eye midpoint is the origin
    if eye_to_mouth <= 1e-6:
        raise ValueError(f"landmarks have the mouth not below the eyes: {landmarks!r}")
    half_iod = (left_eye[0] - right_eye[0]) / 2

    t = nose[1] / eye_to_mouth  # nose height: 0 at the eye line, 1 at the mouth line
    midline_x = t * mouth[0]  # facial midline at the nose's height
    yaw = math.degrees(math.atan2(nose[0] - midline_x, NOSE_DEPTH * half_iod))
    pitch = math.degrees(math.atan2(t - NEUTRAL_NOSE_HEIGHT, PITCH_DEPTH))
    return yaw, pitch, roll


def former_deviation_to_score(deviation_deg: float) -> float:
    """Map a combined pose deviation in degrees to the direction score (<= 0)."""
    return float(np.interp(abs(deviation_deg), *DIRECTION_TABLE))


def former_direction_score(landmarks: np.ndarray) -> float:
    """fkvideo_detector-style direction score: 0 frontal ... -3.5 large angle (>= 60 deg)."""
    yaw, pitch, roll = former_head_pose(landmarks)
    return former_deviation_to_score(math.sqrt(yaw**2 + pitch**2 + (ROLL_WEIGHT * roll) ** 2))


def former_confidence_score(det_score: float) -> float:
    """Detector confidence 0..1 -> penalty, see CONFIDENCE_TABLE."""
    if not 0.0 <= det_score <= 1.0:
        raise ValueError(f"det_score must be in [0, 1], got {det_score}")
    return float(np.interp(det_score, *CONFIDENCE_TABLE))


def former_aligned_grey_face(
    image_bgr: np.ndarray, landmarks: np.ndarray, size: int, upsample: bool = True
) -> np.ndarray:
    """The face as the recogniser sees it: aligned ``size`` x ``size`` grey crop, float32.

    With ``upsample=False`` a face smaller than the crop is aligned at its own resolution
    instead (a smaller crop, at least MIN_CROP pixels).

    A face larger than the crop is first shrunk with area averaging (``cv2.INTER_AREA``):
    ``align_face`` alone samples bilinearly and would alias, which adds fake detail that
    grows with the face size.
    """
    pts = former_check_landmarks(landmarks)
    m = former_similarity_transform(pts, TEMPLATE_112 * (size / 112.0))
    scale = math.sqrt(abs(np.linalg.det(m[:, :2].astype(np.float64))))
    if scale > 1.0 and not upsample:
        size = max(round(size / scale), MIN_CROP)
    elif scale < 1.0:
        h, w = image_bgr.shape[:2]
        cx, cy = pts.mean(axis=0)
        half = size / scale  # generous: the crop's half-diagonal is 0.71 * size / scale
        x0, y0 = int(max(cx - half, 0)), int(max(cy - half, 0))
        x1, y1 = int(min(cx + half, w)), int(min(cy + half, h))
        if min(x1 - x0, y1 - y0) * scale >= 2:  # else nothing of the face is in the image
            roi = image_bgr[y0:y1, x0:x1]
            image_bgr = cv2.resize(roi, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            pts = (pts - (x0, y0)) * scale
    face = former_align_face(image_bgr, pts.astype(np.float32), size)
    return cv2.cvtColor(face, cv2.COLOR_BGR2GRAY).astype(np.float32)


def former_sharpness_ratio(image_bgr: np.ndarray, landmarks: np.ndarray) -> float:
    """var(Laplacian) / mean squared Sobel gradient of the aligned SHARPNESS_CROP face."""
    grey = former_aligned_grey_face(image_bgr, landmarks, SHARPNESS_CROP, upsample=False)
    lap = cv2.Laplacian(grey, cv2.CV_32F)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1)
    # +1 keeps a flat crop (no detail at all) at ratio ~0 instead of 0/0.
    return float(lap.var() / (np.mean(gx**2 + gy**2) + 1.0))


def former_sharpness_score(ratio: float) -> float:
    """Sharpness ratio -> penalty, interpolated on a log scale, see SHARPNESS_TABLE."""
    xs, ys = SHARPNESS_TABLE
    return float(np.interp(math.log10(max(ratio, 1e-6)), np.log10(xs), ys))


def former_size_score(face_size_px: float) -> float:
    """Box shorter side in pixels -> penalty, see SIZE_TABLE."""
    return float(np.interp(face_size_px, *SIZE_TABLE))


def former_edge_margin(xyxy: np.ndarray, frame_wh: tuple[int, int]) -> float:
    """Smallest distance from the box to a frame border, in units of the box's shorter side."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    w, h = frame_wh
    side = max(min(x2 - x1, y2 - y1), 1e-6)
    return min(x1, y1, w - x2, h - y2) / side


def former_edge_score(margin: float, landmarks: np.ndarray, frame_wh: tuple[int, int]) -> float:
    """Penalty for a face at or beyond the frame border, see EDGE_TABLE."""
    pts = np.asarray(landmarks, np.float64).reshape(5, 2)
    w, h = frame_wh
    if np.any(pts < 0) or np.any(pts[:, 0] >= w) or np.any(pts[:, 1] >= h):
        return EDGE_LANDMARK_OUTSIDE
    return float(np.interp(margin, *EDGE_TABLE))


def former_check_inputs(image_bgr: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(
            f"expected an HxWx3 uint8 BGR image, got shape {image_bgr.shape} {image_bgr.dtype}"
        )
    box = np.asarray(xyxy, np.float64).reshape(-1)
    if box.shape != (4,) or not (box[2] > box[0] and box[3] > box[1]):
        raise ValueError(f"xyxy must be [x1, y1, x2, y2] with x2 > x1, y2 > y1, got {xyxy!r}")
    return box


def former_face_quality(
    image_bgr: np.ndarray, xyxy: np.ndarray, landmarks: np.ndarray, det_score: float
) -> QualityScore:
    """Quality of one detected face in a full frame; see the module docstring for the formula.

    ``xyxy`` and ``landmarks`` (5x2) are in the frame's pixel coordinates, as produced by
    the detector (``Detections.xyxy[i]``, ``Detections.landmarks[i]``).
    """
    box = former_check_inputs(image_bgr, xyxy)
    frame_wh = (image_bgr.shape[1], image_bgr.shape[0])
    yaw, pitch, roll = former_head_pose(landmarks)  # also validates the landmarks
    direction = former_direction_score(landmarks)
    ratio = former_sharpness_ratio(image_bgr, landmarks)
    size_px = float(min(box[2] - box[0], box[3] - box[1]))
    margin = former_edge_margin(box, frame_wh)
    parts = {
        "confidence": former_confidence_score(float(det_score)),
        "sharpness": former_sharpness_score(ratio),
        "size": former_size_score(size_px),
        "edge": former_edge_score(margin, landmarks, frame_wh),
    }
    total = sum(parts.values()) + DIRECTION_WEIGHT * direction
    return QualityScore(
        score=float(total), direction_score=direction, **parts,
        yaw=yaw, pitch=pitch, roll=roll,
        sharpness_ratio=ratio, face_size_px=size_px, edge_margin=margin,
    )
