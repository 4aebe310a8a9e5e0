"""Rectangles and boxes: parsing of ``--rot``/``--roi``/``--sink-res`` and ``--bbox-scale``.

Pure functions only. Boxes are ``(x1, y1, x2, y2)`` tuples in frame pixels, with
``x2``/``y2`` exclusive (a box of width ``w`` starting at ``x1`` ends at ``x1 + w``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

Box = tuple[int, int, int, int]

# X geometry "WxH+X+Y" (see X(7), GEOMETRY SPECIFICATIONS). Only non-negative offsets
# from the top-left corner are supported: "-X" (offset from the right edge) would need
# the frame size, which is not known when the configuration is read.
_GEOMETRY_RE = re.compile(r"^\s*(\d+)[xX](\d+)\+(\d+)\+(\d+)\s*$")
_RESOLUTION_RE = re.compile(r"^\s*(\d+)[xX](\d+)\s*$")


@dataclass(frozen=True)
class Rect:
    """An axis-aligned rectangle: top-left corner ``(x, y)``, width ``w``, height ``h``."""

    x: int
    y: int
    w: int
    h: int

    def __post_init__(self) -> None:
        if self.w <= 0 or self.h <= 0:
            raise ValueError(f"rectangle must have positive size, got {self.w}x{self.h}")
        if self.x < 0 or self.y < 0:
            raise ValueError(f"rectangle offset must be >= 0, got +{self.x}+{self.y}")

    @property
    def xyxy(self) -> Box:
        return (self.x, self.y, self.x + self.w, self.y + self.h)

    def contains_point(self, px: float, py: float) -> bool:
        """True if the point lies inside (left/top edges inclusive, right/bottom exclusive)."""
        return self.x <= px < self.x + self.w and self.y <= py < self.y + self.h

    def contains_box(self, box: tuple[float, float, float, float]) -> bool:
        """True if the whole box ``(x1, y1, x2, y2)`` lies inside the rectangle."""
        x1, y1, x2, y2 = box
        return self.x <= x1 and self.y <= y1 and x2 <= self.x + self.w and y2 <= self.y + self.h

    def __str__(self) -> str:
        return f"{self.w}x{self.h}+{self.x}+{self.y}"


def parse_geometry(text: str) -> Rect:
    """Parse an X geometry string ``"WxH+X+Y"`` (e.g. ``"150x123+300+155"``)."""
    match = _GEOMETRY_RE.match(text)
    if match is None:
        raise ValueError(f"bad geometry {text!r}: expected WxH+X+Y, e.g. 150x123+300+155")
    w, h, x, y = (int(g) for g in match.groups())
    try:
        return Rect(x=x, y=y, w=w, h=h)
    except ValueError as exc:
        raise ValueError(f"bad geometry {text!r}: {exc}") from None


def parse_resolution(text: str) -> tuple[int, int]:
    """Parse ``"1280x720"`` into ``(1280, 720)``."""
    match = _RESOLUTION_RE.match(text)
    if match is None:
        raise ValueError(f"bad resolution {text!r}: expected WxH, e.g. 1280x720")
    w, h = int(match.group(1)), int(match.group(2))
    if w <= 0 or h <= 0:
        raise ValueError(f"bad resolution {text!r}: width and height must be positive")
    return w, h


def as_boxes(xyxy: np.ndarray) -> np.ndarray:
    """Any box or list of boxes as an (N, 4) float64 array."""
    return np.asarray(xyxy, np.float64).reshape(-1, 4)


def iou_matrix(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` with every box in ``b``, shape (A, B)."""
    a, b = as_boxes(a_xyxy), as_boxes(b_xyxy)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / np.maximum(union, 1e-9)


def region_rect(value: object) -> Rect | None:
    """A camera region (roi/rot) as the API gives it: ``[W, H, X, Y]`` (9.1.4) or the
    command line's ``"WxH+X+Y"``; None when empty. ValueError names the bad value."""
    if value in (None, "", []):
        return None
    if isinstance(value, str):
        return parse_geometry(value)
    if isinstance(value, list | tuple) and len(value) == 4:
        try:
            w, h, x, y = (int(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"[W,H,X,Y] must be integers, got {value!r}") from None
        return Rect(x=x, y=y, w=w, h=h)
    raise ValueError(f"expected [W,H,X,Y] or 'WxH+X+Y', got {value!r}")


def box_centre(box: tuple[float, float, float, float]) -> tuple[float, float]:
    """Centre ``(cx, cy)`` of a box ``(x1, y1, x2, y2)``."""
    x1, y1, x2, y2 = box
    return ((x1 + x2) / 2.0, (y1 + y2) / 2.0)


def scale_box(
    box: tuple[float, float, float, float], factor: float, frame_w: int, frame_h: int
) -> Box:
    """Scale a box about its centre by ``factor`` (``--bbox-scale``), then clip to the frame.

    Returns integer pixel coordinates; the result is never empty (at least 1x1 inside
    the frame) as long as the frame itself is not empty.
    """
    if factor <= 0:
        raise ValueError(f"scale factor must be > 0, got {factor}")
    if frame_w <= 0 or frame_h <= 0:
        raise ValueError(f"frame size must be positive, got {frame_w}x{frame_h}")
    cx, cy = box_centre(box)
    half_w = (box[2] - box[0]) * factor / 2.0
    half_h = (box[3] - box[1]) * factor / 2.0
    x1 = _clip(round(cx - half_w), 0, frame_w - 1)
    y1 = _clip(round(cy - half_h), 0, frame_h - 1)
    x2 = _clip(round(cx + half_w), x1 + 1, frame_w)
    y2 = _clip(round(cy + half_h), y1 + 1, frame_h)
    return (x1, y1, x2, y2)


def _clip(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))
