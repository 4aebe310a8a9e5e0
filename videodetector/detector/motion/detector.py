"""Motion gating: is there enough change in the frame to be worth running the face detector?

``--md-threshold`` is the fraction of (downscaled) pixels whose brightness differs from a running
background by more than ``pixel_threshold`` grey levels: 0 disables the gate (every frame is
"moving"), 0.002 is the default (0.2 % of the picture), 0.05 is already too high to catch a face
walking by. ``--scale`` shrinks the frame before the comparison to save CPU, and the picture
compared is never taller than MAX_HEIGHT rows whatever ``--scale`` says (a 720p frame is
compared at 320x180, shrunk by two exact halvings): the work per frame grows with the pixels
(blur, background update), and at full 720p it was the largest cost of a frame without faces
(~2.5 ms of CPU, against ~0.55 ms at 640x360 and ~0.3 ms at 320x180), while a face big enough
to be detected still changes tens of pixels there (on the shared clips and the synthetic
indoor scene the 180-row gate posts as many snapshots as the 360-row one did).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

import cv2
import numpy as np

from videodetector.detector.video.pixels import stretch_luma

DEFAULT_THRESHOLD = 0.002
MAX_HEIGHT = 180  # rows of the picture compared (a taller frame is shrunk further)
# The mask is dilated this many times with a 5x5 ellipse before its blobs are traced: 8 px of a
# 720p frame at MAX_HEIGHT rows, as twice at the former 360 rows
DILATE_ITERATIONS = 1


def analysis_scale(height: int, scale: float, max_height: int | None = MAX_HEIGHT) -> float:
    """The factor a ``height``-row frame is shrunk by before comparison: ``scale``, or less
    so that it has at most ``max_height`` rows (None: no limit)."""
    if height < 1:
        raise ValueError(f"height must be >= 1, got {height!r}")
    if max_height is None or height * scale <= max_height:
        return scale
    return max_height / height


def shrink_interpolation(scale: float) -> int:
    """OpenCV interpolation for shrinking the compared picture by ``scale`` (< 1): linear
    while the picture shrinks by at most 2x, area averaging beyond. Linear reads 2x2 source
    pixels per output pixel, so up to 2x it sees all of them: at an exact 2x (720p -> 360)
    its picture is the area average's bit for bit, and at a non-integer ratio (640 rows ->
    360, 540 -> 360) area averaging cost ~0.7 ms of CPU per frame against ~0.1 ms (the
    test clips' gate decisions did not change). Beyond 2x (1080p -> 360) linear would skip
    pixels: area, as before."""
    return cv2.INTER_LINEAR if scale >= 0.5 else cv2.INTER_AREA


def shrink(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``gray`` shrunk to ``size`` (width, height): halved exactly (2x2 averages, cheap at
    exactly 2x) while the picture is at least twice the size, then the rest by
    :func:`shrink_interpolation` (linear: less than 2x is left, unless one side shrinks much
    more than the other). A 720p frame at 180 rows is two halvings: a 4x4 average."""
    while gray.shape[0] >= 2 * size[1] and gray.shape[1] >= 2 * size[0]:
        half = (gray.shape[1] // 2, gray.shape[0] // 2)
        gray = cv2.resize(gray[:2 * half[1], :2 * half[0]], half, interpolation=cv2.INTER_AREA)
    if (gray.shape[1], gray.shape[0]) == size:
        return gray
    scale = size[1] / gray.shape[0]
    return cv2.resize(gray, size, interpolation=shrink_interpolation(scale))


@dataclass(frozen=True, eq=False)
class MotionResult:
    """intensity: fraction of changed pixels (0..1), the unit of ``--md-threshold``; 1.0 when
    nothing was measured (first frame after a reset, gate disabled).
    moving: whether the face detector should run on this frame.
    boxes: (N, 4) float32 xyxy regions with motion, in the *input* image's pixels (the full
    frame box when the answer is "moving" without a measurement: first frame, gate disabled).
    Computed by ``make_boxes`` on first access, then kept: most frames never need them (a
    quiet frame's noise, or motion while no face is tracked and the detector sees the whole
    frame), and dilating and tracing the mask is half of the gate's cost.
    """

    intensity: float
    moving: bool
    make_boxes: Callable[[], np.ndarray] = field(repr=False)

    @cached_property
    def boxes(self) -> np.ndarray:
        return self.make_boxes()


class MotionDetector(Protocol):
    def detect(self, gray: np.ndarray, *, full_range: bool = True) -> MotionResult: ...


class FrameDiffMotion:
    """Difference against a running-average background (``cv2.accumulateWeighted``).

    Pipeline per frame: grey -> resize by ``scale`` (at most ``max_height`` rows) -> stretch
    to full range if it is not -> Gaussian blur -> |frame - background| >
    ``pixel_threshold`` -> intensity = changed fraction; dilate -> external contours -> boxes
    scaled back to input coordinates. ``alpha`` is the background learning rate: a thing that
    stops moving fades into the background over roughly ``1 / alpha`` frames.
    """

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        scale: float = 1.0,
        *,
        pixel_threshold: int = 20,
        alpha: float = 0.1,
        blur: int = 5,
        max_height: int | None = MAX_HEIGHT,
    ) -> None:
        self.threshold = _check_range("--md-threshold", threshold, 0.0, 1.0, low_open=False)
        self.scale = _check_range("--scale", scale, 0.0, 1.0, low_open=True)
        self.alpha = _check_range("alpha", alpha, 0.0, 1.0, low_open=True)
        if not 0 < pixel_threshold < 255:
            raise ValueError(f"pixel_threshold must be in 1..254, got {pixel_threshold!r}")
        if blur < 1 or blur % 2 == 0:
            raise ValueError(f"blur must be an odd kernel size >= 1, got {blur!r}")
        if max_height is not None and max_height < 16:
            raise ValueError(f"max_height must be >= 16 or None, got {max_height!r}")
        self.max_height = max_height
        self.pixel_threshold = int(pixel_threshold)
        self.blur = int(blur)
        self._background: np.ndarray | None = None
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))

    def reset(self) -> None:
        """Forget the background (e.g. after a reconnect); the next frame counts as moving."""
        self._background = None

    def detect(self, gray: np.ndarray, *, full_range: bool = True) -> MotionResult:
        """Compare a frame (HxW grey or HxWx3 BGR, uint8) with the background, then learn it.
        ``full_range`` False: ``gray`` is limited-range luma (16..235), stretched here after
        the downscale (see :meth:`Pixels.luma <videodetector.detector.video.pixels.Pixels>`)."""
        gray = _to_gray(gray)
        if self.threshold == 0:
            return _everything(gray.shape)
        small = self._prepare(gray, full_range)
        background = self._background
        if background is None or background.shape != small.shape:
            self._background = small.astype(np.float32)
            return _everything(gray.shape)
        diff = cv2.absdiff(small, cv2.convertScaleAbs(background))
        cv2.accumulateWeighted(small, background, self.alpha)
        _, mask = cv2.threshold(diff, self.pixel_threshold, 255, cv2.THRESH_BINARY)
        intensity = cv2.countNonZero(mask) / mask.size
        moving = intensity >= self.threshold
        shape = gray.shape
        make = (lambda: self._boxes(mask, shape)) if intensity > 0 else _no_boxes
        return MotionResult(float(intensity), bool(moving), make)

    def _prepare(self, gray: np.ndarray, full_range: bool = True) -> np.ndarray:
        h, w = gray.shape
        scale = analysis_scale(h, self.scale, self.max_height)
        if scale != 1.0:
            gray = shrink(gray, (max(1, round(w * scale)), max(1, round(h * scale))))
        if not full_range:
            gray = stretch_luma(gray)
        return cv2.GaussianBlur(gray, (self.blur, self.blur), 0) if self.blur > 1 else gray

    def _boxes(self, mask: np.ndarray, full_shape: tuple[int, ...]) -> np.ndarray:
        mask = cv2.dilate(mask, self._kernel, iterations=DILATE_ITERATIONS)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if not contours:
            return _no_boxes()
        rects = np.array([cv2.boundingRect(c) for c in contours], np.float32)  # x, y, w, h
        boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
        h, w = full_shape[:2]
        fx, fy = w / mask.shape[1], h / mask.shape[0]  # exact inverse of the resize
        boxes *= np.array([fx, fy, fx, fy], np.float32)
        return np.clip(boxes, 0, np.array([w, h, w, h], np.float32))


def _check_range(name: str, value: float, low: float, high: float, *, low_open: bool) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    too_low = number <= low if low_open else number < low
    if math.isnan(number) or too_low or number > high:
        bound = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bound}{low:g}, {high:g}], got {value!r}")
    return number


def _to_gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"motion detector needs a uint8 image, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 2:
        return image
    raise ValueError(f"motion detector needs an HxW or HxWx3 image, got shape {image.shape}")


def _everything(shape: tuple[int, ...]) -> MotionResult:
    h, w = shape[:2]
    return MotionResult(1.0, True, lambda: np.array([[0, 0, w, h]], np.float32))


def _no_boxes() -> np.ndarray:
    return np.zeros((0, 4), np.float32)
