"""Where the face detector looks: the part of a frame with motion or tracked faces.

When motion covers only part of a frame, the detector runs on crops: the motion boxes and
the tracked faces, each grown by a margin (a face whose motion is only its mouth, or a face
at the edge of a moving body, must lie wholly inside a crop; see RegionPolicy), overlapping
ones merged. A crop is detected at the same scale as the whole frame would be, so a face
looks the same to the detector; its boxes are mapped back by a shift. When the crops would
cover most of the frame, the whole frame is as cheap and is used instead.

All boxes are ``xyxy`` float pixels of one image (see ``core/detections.py``); a region is
``(x1, y1, x2, y2)`` integers with ``0 <= x1 < x2 <= width`` and ``0 <= y1 < y2 <= height``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Region = tuple[int, int, int, int]


@dataclass(frozen=True)
class RegionPolicy:
    """How much the boxes grow before they become crops.

    A motion box grows by ``motion_grow`` x its longer side plus ``motion_pad`` pixels on
    every side (only part of a face may move: its mouth, its edge); a tracked face by
    ``track_grow`` x its longer side plus ``track_pad`` (it moved since it was last seen).
    Crops covering more than ``max_area`` of the frame are replaced by the whole frame, and
    so are more than ``max_regions`` crops or more than ``max_boxes`` boxes to start from
    (a frame full of small changes).
    """

    motion_grow: float = 0.1
    motion_pad: float = 32.0
    track_grow: float = 0.5
    track_pad: float = 16.0
    max_area: float = 0.6
    max_regions: int = 8
    max_boxes: int = 64

    def __post_init__(self) -> None:
        for name in ("motion_grow", "track_grow"):
            if not 0.0 <= getattr(self, name) <= 10.0:
                raise ValueError(f"{name} must be in [0, 10], got {getattr(self, name)!r}")
        for name in ("motion_pad", "track_pad"):
            if not 0.0 <= getattr(self, name) <= 10_000.0:
                raise ValueError(f"{name} must be in [0, 10000] px, got {getattr(self, name)!r}")
        if not (0.0 < self.max_area <= 1.0):
            raise ValueError(f"max_area must be in (0, 1], got {self.max_area!r}")
        if self.max_regions < 1 or self.max_boxes < 1:
            raise ValueError(f"max_regions and max_boxes must be >= 1, got "
                             f"{self.max_regions!r} and {self.max_boxes!r}")


def grow_boxes(boxes: np.ndarray, grow: float, pad: float) -> np.ndarray:
    """Each box grown by ``grow`` x its longer side plus ``pad`` pixels on every side."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    m = (grow * np.maximum(side, 0.0) + pad)[:, None]
    return boxes + np.hstack([-m, -m, m, m])


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> list[Region]:
    """Finite ``boxes`` as integer regions (floor/ceil) clipped to the image, the empty ones
    left out."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    boxes = boxes[np.all(np.isfinite(boxes), axis=1)]
    lo = np.floor(boxes[:, :2]).clip(0, [width, height])
    hi = np.ceil(boxes[:, 2:]).clip(0, [width, height])
    keep = np.all(hi > lo, axis=1)
    return [(int(a), int(b), int(c), int(d))
            for (a, b), (c, d) in zip(lo[keep], hi[keep], strict=True)]


def _overlap(a: Region, b: Region) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _union(a: Region, b: Region) -> Region:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def merge_regions(regions: list[Region]) -> list[Region]:
    """Overlapping regions replaced by their bounding box until no two overlap (so no
    face is cut in two by the border between two crops, and none is detected twice)."""
    out = list(regions)
    merged = True
    while merged:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                if _overlap(out[i], out[j]):
                    out[i] = _union(out[i], out.pop(j))
                    merged = True
                    break
            if merged:
                break
    return sorted(out)


def area(region: Region) -> int:
    return (region[2] - region[0]) * (region[3] - region[1])


def detection_regions(
    motion: np.ndarray, tracked: np.ndarray, width: int, height: int,
    policy: RegionPolicy = RegionPolicy(),
) -> list[Region] | None:
    """The crops to detect faces in, or None for the whole ``width`` x ``height`` image.

    ``motion``: boxes with motion; ``tracked``: boxes of the faces being tracked (they are
    looked at again, whether they move or not). Each grows by the policy's margin; the grown
    boxes that overlap are merged. None when the crops would cover more than
    ``policy.max_area`` of the image, when there are more than ``policy.max_regions`` of
    them, and when there is nothing to look at (the caller decided to run the detector, so
    it sees everything).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    motion = np.asarray(motion, np.float64).reshape(-1, 4)
    tracked = np.asarray(tracked, np.float64).reshape(-1, 4)
    if len(motion) + len(tracked) > policy.max_boxes:
        return None
    boxes = np.vstack([grow_boxes(motion, policy.motion_grow, policy.motion_pad),
                       grow_boxes(tracked, policy.track_grow, policy.track_pad)])
    regions = merge_regions(clip_boxes(boxes, width, height))
    if not regions or len(regions) > policy.max_regions:
        return None
    if sum(area(r) for r in regions) > policy.max_area * width * height:
        return None
    return regions


def any_in_image(tracked: np.ndarray, width: int, height: int,
                 policy: RegionPolicy = RegionPolicy()) -> bool:
    """Whether some tracked face's box, grown as for its crop (``policy.track_grow``,
    ``track_pad``), overlaps the ``width`` x ``height`` image: a face that may still be in
    view. A track coasting on after its face walked out of the frame has its box outside."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    grown = grow_boxes(tracked, policy.track_grow, policy.track_pad)
    return bool(clip_boxes(grown, width, height))


def align_region(region: Region, step: float, width: int, height: int) -> Region:
    """``region`` grown outwards to the grid of ``step`` pixels (from the image's origin),
    clipped to the ``width`` x ``height`` image. A detector whose feature maps have that
    stride then sees the crop's pixels on the same grid cells as in the whole image, so a
    face in it gets (nearly) the same box, landmarks and score."""
    if not step > 0:
        raise ValueError(f"step must be positive, got {step!r}")
    x1 = max(0, int(np.floor(np.floor(region[0] / step) * step)))
    y1 = max(0, int(np.floor(np.floor(region[1] / step) * step)))
    x2 = min(width, int(np.ceil(np.ceil(region[2] / step) * step)))
    y2 = min(height, int(np.ceil(np.ceil(region[3] / step) * step)))
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"region {region!r} lies outside the {width}x{height} image")
    return x1, y1, x2, y2


def input_region(
    region: Region, dx: float, dy: float, factor: float, width: int, height: int
) -> Region | None:
    """A full-frame ``region`` in the coordinates of the detector's input image, where
    full-frame = input * ``factor`` + (``dx``, ``dy``) and the input is ``width`` x
    ``height`` (see ``pipeline.crop_for_detection``); grown to whole pixels, clipped to the
    input; None when it does not overlap the input."""
    if not factor > 0:
        raise ValueError(f"factor must be positive, got {factor!r}")
    x1 = max(0, int(np.floor((region[0] - dx) / factor)))
    y1 = max(0, int(np.floor((region[1] - dy) / factor)))
    x2 = min(width, int(np.ceil((region[2] - dx) / factor)))
    y2 = min(height, int(np.ceil((region[3] - dy) / factor)))
    if x2 <= x1 or y2 <= y1:
        return None
    return x1, y1, x2, y2


def input_regions(
    regions: list[Region], dx: float, dy: float, factor: float, width: int, height: int
) -> list[Region]:
    """``input_region`` of each region, those outside the input left out."""
    out = (input_region(r, dx, dy, factor, width, height) for r in regions)
    return [r for r in out if r is not None]
