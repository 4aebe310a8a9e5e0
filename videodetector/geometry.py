"""Rectangles and boxes: parsing of ``--rot``/``--roi``/``--sink-res`` and ``--bbox-scale``.

Pure functions only. Boxes are ``(x1, y1, x2, y2)`` tuples in frame pixels, with
``x2``/``y2`` exclusive (a box of width ``w`` starting at ``x1`` ends at ``x1 + w``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
