"""Image decoding and validation (JPEG, PNG, WebP; size limits), thumbnails, encoding.

Decoding goes through Pillow so that truncated files are refused rather than
half-decoded, and so that the pixel size is checked from the header before the
pixels are decoded (a small file can still be a huge image).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from videodetector.backend.errors import bad_param, too_large

FORMATS = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp"}


@dataclass(frozen=True)
class Photo:
    data: bytes  # the original file, stored as uploaded
    image: np.ndarray  # HxWx3 BGR uint8, EXIF orientation applied
    ext: str  # "jpeg" | "png" | "webp"
    sha256: str
    orientation: int  # EXIF orientation tag of the original (1 = upright)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_photo(data: bytes, param: str, max_bytes: int, max_side: int) -> Photo:
    """Validate and decode an uploaded image; BAD_PARAM (or 413) naming ``param`` otherwise."""
    if not data:
        raise bad_param(param, f"{param} is empty")
    if len(data) > max_bytes:
        raise too_large(param, len(data), max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt = im.format
                if fmt not in FORMATS:
                    raise bad_param(param, f"{param}: unsupported image format {fmt}; "
                                    "use JPEG, PNG or WebP")
                w, h = im.size
                if max(w, h) > max_side:
                    raise bad_param(param, f"{param} is {w}x{h} pixels, larger than the "
                                    f"{max_side} pixel limit (max_size)")
                orientation = int(im.getexif().get(0x0112, 1) or 1)
                im.load()
                rgb = ImageOps.exif_transpose(im).convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise bad_param(param, f"{param} is not a valid JPEG, PNG or WebP image: {exc}") from None
    bgr = np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])
    return Photo(data, bgr, FORMATS[fmt], content_hash(data), orientation)


def clamp_box(box: tuple[float, float, float, float], width: int, height: int
              ) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    cx1 = int(np.clip(np.floor(x1), 0, width - 1))
    cy1 = int(np.clip(np.floor(y1), 0, height - 1))
    cx2 = int(np.clip(np.ceil(x2), cx1 + 1, width))
    cy2 = int(np.clip(np.ceil(y2), cy1 + 1, height))
    return cx1, cy1, cx2, cy2


def expand_box(box: tuple[float, float, float, float], margin: float
               ) -> tuple[float, float, float, float]:
    """The box grown by ``margin`` times its width/height on every side."""
    x1, y1, x2, y2 = box
    mw, mh = (x2 - x1) * margin, (y2 - y1) * margin
    return x1 - mw, y1 - mh, x2 + mw, y2 + mh


def thumbnail(image: np.ndarray, box: tuple[float, float, float, float],
              max_side: int = 160) -> np.ndarray:
    """A crop around the face (30% margin), scaled down so its longer side is ``max_side``."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = clamp_box(expand_box(box, 0.3), w, h)
    crop = image[y1:y2, x1:x2]
    scale = max_side / max(crop.shape[:2])
    if scale < 1.0:
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(crop)


def as_aligned_face(image: np.ndarray, size: int = 112) -> np.ndarray:
    """An already-normalized face (the daemon's ``face0``) brought to ``size`` x ``size``."""
    if image.shape[:2] == (size, size):
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
