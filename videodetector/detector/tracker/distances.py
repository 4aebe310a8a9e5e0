"""Matching predicted track boxes to detected boxes. Pure functions, no state.

``associate`` runs in two rounds:

1. Hungarian assignment (scipy ``linear_sum_assignment``) maximising total IoU; a pair is
   accepted only if its IoU is at least ``iou_threshold``.
2. For what is left, Hungarian assignment on the centre distance normalised by the boxes'
   size (``centre_distance_matrix``). This catches small or fast faces whose predicted and
   detected boxes do not overlap at all. Pairs farther apart than ``max_centre_distance``
   box sides, or whose sizes differ by more than ``MAX_SIZE_RATIO``, are refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from videodetector.core.geometry import as_boxes, iou_matrix

MAX_SIZE_RATIO = 2.0  # the distance fallback never matches boxes whose sides differ more
_BIG = 1e6  # cost of a forbidden pair


def _mean_side(xyxy: np.ndarray) -> np.ndarray:
    return ((xyxy[:, 2] - xyxy[:, 0]) + (xyxy[:, 3] - xyxy[:, 1])) / 2


def centre_distance_matrix(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """Centre distance of every pair divided by the pair's mean box side, shape (A, B).

    1.0 means the centres are one (average) face width apart. Pairs whose mean sides differ
    by more than MAX_SIZE_RATIO get ``inf``.
    """
    a, b = as_boxes(a_xyxy), as_boxes(b_xyxy)
    ca = (a[:, :2] + a[:, 2:]) / 2
    cb = (b[:, :2] + b[:, 2:]) / 2
    dist = np.linalg.norm(ca[:, None, :] - cb[None, :, :], axis=2)
    sa, sb = _mean_side(a), _mean_side(b)
    scale = np.maximum((sa[:, None] + sb[None, :]) / 2, 1e-9)
    ratio = np.maximum(sa[:, None], sb[None, :]) / np.maximum(np.minimum(sa[:, None], sb[None, :]),
                                                              1e-9)
    return np.where(ratio <= MAX_SIZE_RATIO, dist / scale, np.inf)


def _hungarian(cost: np.ndarray, allowed: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost assignment restricted to ``allowed`` pairs."""
    if cost.size == 0 or not allowed.any():
        return []
    # imported here: scipy costs ~0.4 s of start-up and is not needed before two boxes are
    # compared (detector/preload.py imports it in the background)
    from scipy.optimize import linear_sum_assignment  # noqa: PLC0415

    rows, cols = linear_sum_assignment(np.where(allowed, cost, _BIG))
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if allowed[r, c]]


def associate(
    tracks_xyxy: np.ndarray,
    dets_xyxy: np.ndarray,
    iou_threshold: float,
    max_centre_distance: float = 1.0,
    also_xyxy: Sequence[np.ndarray] = (),
) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Match tracks to detections.

    Returns ``(matches, unmatched_tracks, unmatched_dets)``: ``matches`` is a list of
    ``(track_index, det_index)`` sorted by track index; the other two are sorted index lists.
    ``max_centre_distance <= 0`` disables the centre-distance fallback. ``also_xyxy``: other
    boxes per track (one array of one box per track each, e.g. where it was last matched); a
    pair then counts with whichever of its boxes lies closest (the largest IoU, the smallest
    centre distance).
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    tracks, dets = as_boxes(tracks_xyxy), as_boxes(dets_xyxy)
    others = [as_boxes(o) for o in also_xyxy]
    if any(o.shape != tracks.shape for o in others):
        raise ValueError(f"also_xyxy must have one box per track, got {[o.shape for o in others]}")
    iou = iou_matrix(tracks, dets)
    if others:  # (one call for all the boxes of every track)
        every = iou_matrix(np.vstack(others), dets).reshape(len(others), *iou.shape)
        iou = np.maximum(iou, every.max(axis=0))
    matches = _hungarian(-iou, iou >= iou_threshold)

    # (when every track or every detection is matched already, nothing is left to pair: the
    # second round is skipped, as it would find nothing; most updates of steady faces)
    if max_centre_distance > 0 and len(matches) < min(len(tracks), len(dets)):
        left_t = np.setdiff1d(np.arange(len(tracks)), [m[0] for m in matches])
        left_d = np.setdiff1d(np.arange(len(dets)), [m[1] for m in matches])
        dist = centre_distance_matrix(tracks[left_t], dets[left_d])
        for other in others:
            dist = np.minimum(dist, centre_distance_matrix(other[left_t], dets[left_d]))
        for r, c in _hungarian(dist, dist <= max_centre_distance):
            matches.append((int(left_t[r]), int(left_d[c])))

    matches.sort()
    unmatched_tracks = sorted(set(range(len(tracks))) - {t for t, _ in matches})
    unmatched_dets = sorted(set(range(len(dets))) - {d for _, d in matches})
    return matches, unmatched_tracks, unmatched_dets
