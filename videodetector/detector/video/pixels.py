"""The pixels of one decoded frame, converted only when someone looks at them.

Most frames of a quiet camera only go through the motion gate, which needs the brightness
alone: for the usual planar YUV formats that is the decoder's own luma plane (a view, no
copy, no conversion). The BGR image that the face detector, the quality score and the
snapshots need is converted from the decoded frame on first use and kept.

The face detector looks at a frame at its own, smaller size (longer side 640): ``bgr_at(scale)``
gives the BGR image resized by ``scale``, which for a decoded frame is one swscale pass from the
decoder's YUV straight to that size (``SCALE_INTERPOLATION``), so a moving frame without a face
never pays the full-resolution conversion (for yuv444p, which FFmpeg has no fast path for, about
twice the scaled one). The full-resolution image is still made, on first use, for the frames
with a face (quality, snapshots). Converting only the rectangles the face quality reads (a
yuv420p crop at even offsets converts to the same pixels) was tried for issue 10 and measured
no cheaper than this one conversion, for the two or three faces of a frame (the per-crop
copies, converter set-up and the score's read box cost as much; README, issue 10).

``DecodedPixels`` wraps a PyAV frame (after the rotation the source asks for); ``ArrayPixels``
wraps a BGR array someone already has (tests, tools; ``bgr_at`` resizes it with OpenCV's
``INTER_AREA``). Both give ``bgr()`` (HxWx3 uint8), ``bgr_at(scale)``,
``gray()`` (HxW uint8, full range 0..255 like ``cv2.cvtColor(bgr, COLOR_BGR2GRAY)`` up to
rounding) and ``luma()``: the brightness as decoded and whether it is full range -- a
limited-range (16..235) plane is not stretched there, because stretching a whole 720p plane
(``cv2.LUT``, ~0.7 ms) costs more than the motion gate's work on it once downscaled; the
gate stretches its small copy (:func:`stretch_luma`). Not thread-safe: one thread (the
camera's worker) converts.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Protocol

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

# 8-bit formats whose first plane is the luma (Y) plane.
LUMA_FIRST = frozenset({
    "yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p",
    "yuvj440p", "yuv411p", "yuvj411p", "yuv410p", "nv12", "nv21", "gray",
})
FULL_RANGE_FORMATS = frozenset({"yuvj420p", "yuvj422p", "yuvj444p", "yuvj440p", "yuvj411p",
                                "gray"})
JPEG_RANGE = 2  # AVCOL_RANGE_JPEG: luma uses 0..255 (else 16..235, "MPEG" or unspecified)
# swscale's filter for bgr_at: "AREA" is the nearest to cv2.INTER_AREA (what the detector used to
# resize with) and changed the fewest detections; "BILINEAR" is slower and a little farther,
# "FAST_BILINEAR" faster but aliases and changes detections most (measured for issue 10).
SCALE_INTERPOLATION = "AREA"

# Limited-range luma (16..235) stretched to 0..255, as the BGR conversion does.
_LIMITED_TO_FULL = np.clip((np.arange(256) - 16) * 255.0 / 219.0 + 0.5, 0, 255).astype(np.uint8)


class Pixels(Protocol):
    convert_seconds: float  # time the BGR conversion took (0: none, or not yet)

    @property
    def converted(self) -> bool: ...

    def bgr(self) -> np.ndarray: ...

    def bgr_at(self, scale: float) -> np.ndarray: ...

    def gray(self) -> np.ndarray: ...

    def luma(self) -> tuple[np.ndarray, bool]: ...


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """(width, height) of a ``width`` x ``height`` image resized by ``scale``: each side
    rounded, at least 1 (as ``YuNetDetector.detect`` sizes its input)."""
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_bgr(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` resized by ``scale`` to :func:`scaled_size` with ``cv2.INTER_AREA`` (the same
    array when the size does not change)."""
    h, w = image.shape[:2]
    size = scaled_size(w, h, scale)
    if size == (w, h):
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def stretch_luma(y: np.ndarray) -> np.ndarray:
    """Limited-range luma (16..235) stretched to 0..255, as the BGR conversion does."""
    return cv2.LUT(y, _LIMITED_TO_FULL)


class Scaler:
    """The swscale contexts that convert one stream's frames to BGR (full size, and the
    detector's size), kept for the stream's life.

    PyAV's ``VideoFrame.to_ndarray(...)`` makes a new swscale context for every frame
    (a new ``VideoReformatter`` per frame) with swscale's automatic threads, i.e. a pool of
    threads set up and torn down per conversion: for a 720p yuv420p frame that cost ~1.4 ms
    of process CPU for the detector-size conversion and ~0.72 ms for the full-size one
    (~0.85 and ~0.36 ms in the converting thread, the rest in the pool), against ~0.82 and
    ~0.49 ms with a context kept per stream and one thread (the same pixels: the same
    filter, only set up once; measured interleaved in one process, load ~5). ``threads``:
    swscale's threads, 0 = automatic (as the decoder: a source read in real time converts in
    one thread, see :func:`~videodetector.detector.video.source.decoder_threads`).

    One per stream: a context is set up again whenever its input or output changes, hence
    one for each output. The lock makes a scaler safe to share, though one thread (the
    camera's) converts a stream's frames.
    """

    __slots__ = ("threads", "_full", "_scaled", "_lock")

    def __init__(self, threads: int = 0) -> None:
        if threads < 0:
            raise ValueError(f"threads must be >= 0, got {threads!r}")
        self.threads = threads
        self._full = VideoReformatter()
        self._scaled = VideoReformatter()
        self._lock = threading.Lock()

    def bgr(self, frame: av.VideoFrame) -> np.ndarray:
        """``frame`` as BGR at its size (``frame.to_ndarray(format="bgr24")``)."""
        with self._lock:
            return self._full.reformat(frame, format="bgr24", threads=self.threads).to_ndarray()

    def bgr_at(self, frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
        """``frame`` as BGR resized to ``width`` x ``height`` with SCALE_INTERPOLATION."""
        with self._lock:
            return self._scaled.reformat(frame, width=width, height=height, format="bgr24",
                                         interpolation=SCALE_INTERPOLATION,
                                         threads=self.threads).to_ndarray()


class ArrayPixels:
    """Pixels of a BGR array; grey is converted from it on first use."""

    __slots__ = ("_bgr", "_gray", "_scaled", "convert_seconds")

    def __init__(self, bgr: np.ndarray) -> None:
        self._bgr = bgr
        self._gray: np.ndarray | None = None
        self._scaled: tuple[float, np.ndarray] | None = None
        self.convert_seconds = 0.0

    @property
    def converted(self) -> bool:
        """Always: the BGR image is what this wraps."""
        return True

    def bgr(self) -> np.ndarray:
        return self._bgr

    def bgr_at(self, scale: float) -> np.ndarray:
        """The image resized by ``scale`` (:func:`resize_bgr`; the last one is kept)."""
        if self._scaled is None or self._scaled[0] != scale:
            self._scaled = scale, resize_bgr(self._bgr, scale)
        return self._scaled[1]

    def gray(self) -> np.ndarray:
        if self._gray is None:
            image = self._bgr
            self._gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        return self._gray

    def luma(self) -> tuple[np.ndarray, bool]:
        """(``gray()``, True)."""
        return self.gray(), True


def luma_plane(frame: av.VideoFrame, stretch: bool = True) -> np.ndarray | None:
    """The frame's Y plane as an HxW uint8 view, or None when its format has no 8-bit luma
    plane first (then convert). ``stretch``: a limited-range plane is stretched to full range
    0..255 (a copy); else it is returned as decoded (see :func:`full_range`)."""
    if frame.format.name not in LUMA_FIRST:
        return None
    plane = frame.planes[0]
    rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
    y = rows[:frame.height, :frame.width]
    return stretch_luma(y) if stretch and not full_range(frame) else y


def full_range(frame: av.VideoFrame) -> bool:
    """Whether the frame's luma uses 0..255 (else 16..235, "MPEG" or unspecified)."""
    return frame.format.name in FULL_RANGE_FORMATS or frame.color_range == JPEG_RANGE


def rotate(image: np.ndarray, clockwise: int) -> np.ndarray:
    """``image`` turned by 0, 90, 180 or 270 degrees clockwise (0: the same array)."""
    if clockwise == 0:
        return image
    codes = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180,
             270: cv2.ROTATE_90_COUNTERCLOCKWISE}
    return cv2.rotate(image, codes[clockwise])


class DecodedPixels:
    """Pixels of a decoded PyAV frame, turned ``clockwise`` degrees (0/90/180/270).

    ``scaler``: the stream's :class:`Scaler` (its frames share one); None: one of its own
    (automatic threads), as a lone frame's ``to_ndarray`` would.
    ``convert_seconds``: time the BGR conversions took, full size and scaled (0 until one
    happened).
    """

    __slots__ = ("_frame", "_clockwise", "_bgr", "_gray", "_luma", "_scaled",
                 "convert_seconds", "scaler")

    def __init__(self, frame: av.VideoFrame, clockwise: int = 0,
                 scaler: Scaler | None = None) -> None:
        if clockwise not in (0, 90, 180, 270):
            raise ValueError(f"clockwise must be 0, 90, 180 or 270, got {clockwise!r}")
        self.scaler = scaler if scaler is not None else Scaler()
        self._frame: av.VideoFrame | None = frame
        self._clockwise = clockwise
        self._bgr: np.ndarray | None = None
        self._gray: np.ndarray | None = None
        self._luma: tuple[np.ndarray, bool] | None = None
        self._scaled: tuple[float, np.ndarray] | None = None
        self.convert_seconds = 0.0

    @property
    def converted(self) -> bool:
        """Whether the full-size BGR image exists yet (``bgr_at`` does not make it)."""
        return self._bgr is not None

    def bgr(self) -> np.ndarray:
        if self._bgr is None:
            frame = self._frame
            if frame is None:  # cannot happen: the frame is released only after both exist
                raise RuntimeError("decoded frame released before its BGR conversion")
            t0 = time.perf_counter()
            self._bgr = rotate(self.scaler.bgr(frame), self._clockwise)
            self.convert_seconds += time.perf_counter() - t0
            self._release()
        return self._bgr

    def bgr_at(self, scale: float) -> np.ndarray:
        """The BGR image resized by ``scale`` to :func:`scaled_size` of the (turned) frame; the
        last one is kept. Shrunk in one swscale pass from the decoded frame, without making
        the full-size image; the same as ``bgr()`` at the same size; enlarged (or once the
        decoded frame is released) resized from ``bgr()`` like :class:`ArrayPixels`."""
        if self._scaled is not None and self._scaled[0] == scale:
            return self._scaled[1]
        width, height = self.size
        size = scaled_size(width, height, scale)
        frame = self._frame
        if size == (width, height):
            image = self.bgr()
        elif frame is None or scale > 1.0:
            image = resize_bgr(self.bgr(), scale)
        else:
            t0 = time.perf_counter()
            w, h = size if self._clockwise in (0, 180) else size[::-1]  # before turning
            image = rotate(self.scaler.bgr_at(frame, w, h), self._clockwise)
            self.convert_seconds += time.perf_counter() - t0
        self._scaled = scale, image
        return image

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the turned frame."""
        if self._bgr is not None or self._frame is None:  # (released only once bgr exists)
            return self.bgr().shape[1], self.bgr().shape[0]
        w, h = self._frame.width, self._frame.height
        return (w, h) if self._clockwise in (0, 180) else (h, w)

    def gray(self) -> np.ndarray:
        if self._gray is None:
            y = None if self._frame is None else luma_plane(self._frame)
            if y is None:
                self._gray = cv2.cvtColor(self.bgr(), cv2.COLOR_BGR2GRAY)
            else:
                self._gray = rotate(y, self._clockwise)
            self._release()
        return self._gray

    def luma(self) -> tuple[np.ndarray, bool]:
        """(brightness, full range): the decoder's luma plane as is (a view; turned if the
        frame is), or ``gray()`` when there is none or it was made already."""
        if self._gray is not None:
            return self._gray, True
        if self._luma is None:
            frame = self._frame
            y = None if frame is None else luma_plane(frame, stretch=False)
            if frame is None or y is None:
                return self.gray(), True
            self._luma = rotate(y, self._clockwise), full_range(frame)
        return self._luma

    def _release(self) -> None:
        """Drop the decoded frame (and its buffer) once nothing more needs it."""
        if self._bgr is not None and self._gray is not None:
            self._frame = None
