"""Detections: the one data type that flows from the face detector to the tracker.

Box convention (stated once, used everywhere in the package):
    ``xyxy`` is ``[x1, y1, x2, y2]`` in float pixels of the *full decoded frame*
    (after ``--rotate``), top-left origin, ``x2 > x1`` and ``y2 > y1``; the box
    covers the continuous region ``x1 <= x < x2``.
Landmarks are the detector's 5 points in the same coordinates, in the order
right eye, left eye, nose tip, right mouth corner, left mouth corner (the
subject's right/left, i.e. image left/right for a frontal face), shape (N, 5, 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Parallel arrays for N faces found in one frame."""

    xyxy: np.ndarray  # (N, 4) float32
    score: np.ndarray  # (N,) float32, detector confidence in 0..1
    landmarks: np.ndarray = field(default=None)  # type: ignore[assignment]  # (N, 5, 2)

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        score = np.asarray(self.score, dtype=np.float32).reshape(-1)
        n = len(xyxy)
        if len(score) != n:
            raise ValueError(f"score has {len(score)} entries for {n} boxes")
        lm = self.landmarks
        lm = np.zeros((n, 5, 2), np.float32) if lm is None else np.asarray(lm, np.float32)
        lm = lm.reshape(-1, 5, 2)
        if len(lm) != n:
            raise ValueError(f"landmarks has {len(lm)} entries for {n} boxes")
        if n and not np.all((xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])):
            raise ValueError(f"boxes must have x2 > x1 and y2 > y1: {xyxy.tolist()}")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "score", score)
        object.__setattr__(self, "landmarks", lm)

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))

    def __getitem__(self, index: object) -> Detections:
        """Select faces by boolean mask, index array or slice."""
        return Detections(self.xyxy[index], self.score[index], self.landmarks[index])

    def shifted(self, dx: float, dy: float) -> Detections:
        """The same faces with boxes and landmarks moved by (dx, dy)."""
        off = np.array([dx, dy, dx, dy], np.float32)
        return Detections(self.xyxy + off, self.score, self.landmarks + off[:2])

    def scaled(self, factor: float) -> Detections:
        """The same faces with all coordinates multiplied by ``factor``."""
        if factor <= 0:
            raise ValueError(f"scale factor must be positive, got {factor}")
        return Detections(self.xyxy * factor, self.score, self.landmarks * factor)


def concat_detections(parts: list[Detections]) -> Detections:
    """The faces of all ``parts``, in order."""
    if not parts:
        return Detections.empty()
    return Detections(np.concatenate([p.xyxy for p in parts]),
                      np.concatenate([p.score for p in parts]),
                      np.concatenate([p.landmarks for p in parts]))


def clean_detections(raw: object, width: int, height: int) -> tuple[Detections, int]:
    """The usable faces of a detector's raw output, and how many were dropped.

    ``raw`` is anything with ``xyxy`` (N, 4), ``score`` (N,) and ``landmarks`` (N, 5, 2)
    arrays (a :class:`Detections` or a model's unchecked output). A row is dropped when its
    box or score is not finite, or when the box clipped to the ``width`` x ``height`` image
    is less than 1 pixel wide or tall (zero or negative size, or wholly outside). Kept boxes
    are clipped to the image; scores are clipped to 0..1. Landmarks are kept as they are
    (they may lie outside the box or the image, or be NaN): whoever uses them decides.
    """
    xyxy = np.asarray(getattr(raw, "xyxy", np.zeros((0, 4))), np.float64).reshape(-1, 4)
    score = np.asarray(getattr(raw, "score", np.zeros(0)), np.float64).reshape(-1)
    lm_raw = getattr(raw, "landmarks", None)
    n = len(xyxy)
    lm = (np.full((n, 5, 2), np.nan) if lm_raw is None
          else np.asarray(lm_raw, np.float64).reshape(-1, 5, 2))
    if len(score) != n or len(lm) != n:
        raise ValueError(f"detector output has {n} boxes, {len(score)} scores and "
                         f"{len(lm)} landmark sets")
    finite = np.all(np.isfinite(xyxy), axis=1) & np.isfinite(score)
    box = np.where(finite[:, None], xyxy, 0.0)
    box[:, [0, 2]] = np.clip(box[:, [0, 2]], 0, width)
    box[:, [1, 3]] = np.clip(box[:, [1, 3]], 0, height)
    keep = finite & (box[:, 2] - box[:, 0] >= 1) & (box[:, 3] - box[:, 1] >= 1)
    kept = Detections(box[keep], np.clip(score[keep], 0.0, 1.0), lm[keep])
    return kept, int(n - keep.sum())
