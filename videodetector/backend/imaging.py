"""Image decoding and validation (JPEG, PNG, WebP; size limits), thumbnails, encoding.

Decoding goes through Pillow so that truncated files are refused rather than
half-decoded, and so that the pixel size is checked from the header before the
pixels are decoded (a small file can still be a huge image).
"""

from __future__ import annotations

import hashlib
import io
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from videodetector.backend.errors import ApiError, bad_param, too_large

FORMATS = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp"}


Box = tuple[float, float, float, float]
THUMBNAIL_SIDE = 160  # pixels: the longer side of a stored thumbnail (at most)
# JPEG quality of a stored thumbnail (one made on first read, thumbs.py, must be the bytes a
# post would have stored)
THUMBNAIL_QUALITY = 85


@dataclass(frozen=True)
class Photo:
    """A decoded upload. ``image`` is the whole photo at full resolution, except from
    :func:`decode_for_thumbnails`, which keeps only ``reduced`` (what the thumbnails need)
    and leaves ``image`` None."""

    data: bytes  # the original file, stored as uploaded
    image: np.ndarray | None  # HxWx3 BGR uint8, EXIF orientation applied
    ext: str  # "jpeg" | "png" | "webp"
    digest: str | None  # content_hash(data), or None: worked out when ``sha256`` is read
    orientation: int  # EXIF orientation tag of the original (1 = upright)
    mode: str = "RGB"  # the original's Pillow mode (RGB, RGBA, P, L, ...)
    # decode_for_thumbnails: the upright photo as decoded (Pillow, maybe JPEG-reduced) and
    # the full-resolution upright (width, height) that boxes refer to
    reduced: Image.Image | None = field(default=None, repr=False)
    full_size: tuple[int, int] | None = None

    @property
    def sha256(self) -> str:
        """:func:`content_hash` of the file, worked out when first read (the stored photo's
        ``photo_hash``; a face0's was computed per post and never read)."""
        if self.digest is None:
            object.__setattr__(self, "digest", content_hash(self.data))  # a cache
        return self.digest  # type: ignore[return-value]

    @property
    def size(self) -> tuple[int, int]:
        if self.full_size is not None:
            return self.full_size
        return self.image.shape[1], self.image.shape[0]  # type: ignore[union-attr]

    def thumbnail(self, box: Box, max_side: int = THUMBNAIL_SIDE) -> np.ndarray:
        """:func:`thumbnail` of the face in ``box`` (full-resolution pixels)."""
        if self.reduced is not None:
            return _reduced_thumbnail(self.reduced, self.size, box, max_side)
        return thumbnail(self.image, box, max_side)  # type: ignore[arg-type]


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)
_BAD_IMAGE = (UnidentifiedImageError, OSError, SyntaxError, ValueError, *_BOMB)


def _bad_image(param: str, exc: BaseException, max_side: int, limit_name: str) -> ApiError:
    """BAD_PARAM for an image Pillow would not open: too many pixels in its header (a valid
    image, too large: Pillow refuses it before ``max_side`` can be checked) or not an image."""
    if isinstance(exc, _BOMB):
        return bad_param(param, f"{param} is too large: {exc} (at most {max_side} pixels per "
                         f"side, {limit_name})")
    return bad_param(param, f"{param} is not a valid JPEG, PNG or WebP image: {exc}")


def _check_header(im: Image.Image, param: str, max_side: int, limit_name: str) -> None:
    if im.format not in FORMATS:
        raise bad_param(param, f"{param}: unsupported image format {im.format}; "
                        "use JPEG, PNG or WebP")
    w, h = im.size
    if max(w, h) > max_side or min(w, h) < 1:
        raise bad_param(param, f"{param} is {w}x{h} pixels, larger than the "
                        f"{max_side} pixel limit ({limit_name})", f"{w}x{h}")


def image_size(data: bytes, param: str, max_side: int, limit_name: str = "max_size"
               ) -> tuple[int, int]:
    """Width and height from the image header alone (no pixel is decoded): a 140 KB PNG can
    claim 6000x6000 pixels. BAD_PARAM naming ``param`` for a non-image, an unsupported format
    or a side over ``max_side`` (the setting ``limit_name``)."""
    if not data:
        raise bad_param(param, f"{param} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                _check_header(im, param, max_side, limit_name)
                return im.size
    except _BAD_IMAGE as exc:
        raise _bad_image(param, exc, max_side, limit_name) from None


class PixelBudget:
    """Decoded pixels left for one request's images (``max_request_pixels``); each image's
    size is read from its header before anything is decoded."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, data: bytes, param: str, max_side: int, limit_name: str) -> None:
        w, h = image_size(data, param, max_side, limit_name)
        if self.used + w * h > self.limit:
            raise bad_param(param, f"the images of this request would decode to "
                            f"{self.used + w * h} pixels, more than the {self.limit} pixel "
                            "limit (max_request_pixels)", f"{w}x{h}", status=413)
        self.used += w * h


def _check_size(data: bytes, param: str, max_bytes: int) -> None:
    if not data:
        raise bad_param(param, f"{param} is empty")
    if len(data) > max_bytes:
        raise too_large(param, len(data), max_bytes)


@contextmanager
def _opened(data: bytes, param: str, max_bytes: int, max_side: int,
            limit_name: str) -> Iterator[tuple[Image.Image, int, tuple[int, int]]]:
    """(Pillow's image of an upload, its EXIF orientation, its upright size), the byte size
    and the header (format, ``max_side``, decompression bomb) checked before any pixel is
    decoded; a bad image inside the block becomes BAD_PARAM naming ``param``."""
    _check_size(data, param, max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                _check_header(im, param, max_side, limit_name)
                orientation = int(im.getexif().get(0x0112, 1) or 1)
                yield im, orientation, _upright_size(im.size, orientation)
    except _BAD_IMAGE as exc:
        raise _bad_image(param, exc, max_side, limit_name) from None


def _draft(im: Image.Image, factor: int, mode: str = "RGB") -> None:
    """Have a JPEG decoded at the DCT scale 1/``factor`` (1, 2, 4 or 8); others unchanged.
    ``mode`` "L": a colour (YCbCr) JPEG is decoded to its luma only (every component is
    still entropy-decoded, so a damaged file fails the same way; for validation)."""
    if (factor > 1 or mode != "RGB") and im.format == "JPEG":
        im.draft(mode, (max(1, im.size[0] // factor), max(1, im.size[1] // factor)))


def decode_photo(data: bytes, param: str, max_bytes: int, max_side: int,
                 limit_name: str = "max_size",
                 factor_of: Callable[[tuple[int, int]], int] | None = None) -> Photo:
    """Validate and decode an uploaded image; BAD_PARAM (or 413) naming ``param`` otherwise.
    The header is checked (format, ``max_side``) before any pixel is decoded, then every
    byte is decoded (a truncated file is refused).

    With ``factor_of``, a JPEG is decoded at the DCT scale 1/``factor_of(upright full size)``
    (1, 2, 4 or 8; other formats at full scale): the photo's ``image`` is then the reduced
    BGR pixels and ``full_size`` the upright full-resolution size its boxes are given in."""
    with _opened(data, param, max_bytes, max_side, limit_name) as (im, orientation, upright):
        fmt = im.format
        if factor_of is not None:
            _draft(im, factor_of(upright))
        im.load()
        mode = im.mode
        bgr = _bgr_pixels(im, orientation)
    return Photo(data, bgr, FORMATS[fmt], None, orientation, mode,
                 full_size=None if factor_of is None else upright)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the last chunk of a whole PNG


def plain_png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a plain PNG: 8-bit RGB, not interlaced, whole (:func:`_chunks_whole`:
    upright, no transparency key); None for any other file. A normalized face0 from
    the daemon is one."""
    if (len(data) < 45 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR"
            or data[24:29] != b"\x08\x02\x00\x00\x00" or not data.endswith(PNG_IEND)
            or not _chunks_whole(data)):
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _chunks_whole(data: bytes) -> bool:
    """Every chunk after the signature complete with a right CRC, IEND last, and none of
    ``eXIf`` (an orientation) or ``tRNS`` (a transparency key): what libpng would otherwise
    complain about on stderr is left to Pillow (~5 us for a face0)."""
    pos, end = len(PNG_SIGNATURE), len(data)
    while pos + 12 <= end:
        size = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        stop = pos + 12 + size
        if stop > end or kind in (b"eXIf", b"tRNS") or zlib.crc32(
                data[pos + 4:stop - 4]) != int.from_bytes(data[stop - 4:stop], "big"):
            return False
        if kind == b"IEND":
            return stop == end
        pos = stop
    return False


def decode_plain_png(data: bytes, param: str, max_bytes: int, max_side: int,
                     limit_name: str = "max_size") -> Photo:
    """:func:`decode_photo`, by one ``cv2.imdecode`` for a :func:`plain_png_size` PNG (straight
    to BGR: ~0.3 ms of CPU less than Pillow's open, EXIF probe, load and conversion of a
    112x112 face0). Anything else, or a PNG libpng refuses (it is stricter than Pillow,
    e.g. about a CRC), goes through :func:`decode_photo`, which accepts or refuses it as
    before; the pixels of an 8-bit RGB PNG are the same either way."""
    size = plain_png_size(data)
    if size is None or not 0 < len(data) <= max_bytes:
        return decode_photo(data, param, max_bytes, max_side, limit_name)
    w, h = size
    if max(w, h) > max_side or min(w, h) < 1:
        raise bad_param(param, f"{param} is {w}x{h} pixels, larger than the "
                        f"{max_side} pixel limit ({limit_name})", f"{w}x{h}")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape != (h, w, 3):
        return decode_photo(data, param, max_bytes, max_side, limit_name)
    return Photo(data, bgr, "png", None, 1, "RGB")


MAX_PNG_AS_UPLOADED = 64 * 1024  # bytes: a larger upload carries more than the pixels


def png_as_uploaded(photo: Photo, image: np.ndarray) -> bytes | None:
    """``photo``'s own bytes when storing them is storing ``image``: a plain 8-bit RGB PNG
    (no alpha, no palette, upright) whose decoded pixels *are* ``image`` (not resized) and
    not much larger than its pixels; else None (the caller encodes ``image``). A normalized
    face0 from the daemon is such a PNG: re-encoding it cost ~0.7 ms of CPU per face."""
    if (photo.ext != "png" or photo.mode != "RGB" or photo.orientation not in (0, 1)
            or image is not photo.image or len(photo.data) > MAX_PNG_AS_UPLOADED):
        return None
    # IHDR right after the signature: bit depth 8, colour type 2 (RGB)
    return photo.data if photo.data[24:26] == b"\x08\x02" else None


def decode_for_thumbnails(data: bytes, param: str, max_bytes: int, max_side: int,
                          boxes: list[Box] | None, thumb_side: int = THUMBNAIL_SIDE) -> Photo:
    """:func:`decode_photo` for a photo that only needs thumbnails of ``boxes`` (None: of
    the whole photo): a detector snapshot whose faces come normalized (face0). The file is
    validated the same way (header, then every byte decoded: a truncated file is refused),
    but a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still has every
    thumbnail's pixels, and only the thumbnails' crops are converted to BGR (the full
    frame's conversion was ~1.2 ms of a 720p photo; its decode ~3 ms at full scale)."""
    with _opened(data, param, max_bytes, max_side, "max_size") as (im, orientation, upright):
        fmt, mode = im.format, im.mode
        whole = [(0.0, 0.0, float(upright[0]), float(upright[1]))]
        _draft(im, reduction_factor(upright, boxes or whole, thumb_side))
        im.load()  # every byte decoded; the loaded pixels outlive the with block
        reduced = ImageOps.exif_transpose(im) if orientation not in (0, 1) else im
    return Photo(data, None, FORMATS[fmt], None, orientation, mode,
                 reduced=reduced, full_size=upright)


VALIDATION_MODE = "L"  # what validate_photo decodes a colour JPEG to (Pillow's draft mode)


def validate_photo(data: bytes, param: str, max_bytes: int, max_side: int) -> Photo:
    """The checks of :func:`decode_for_thumbnails` without keeping any pixel: the header,
    then every byte decoded (a truncated file is refused), a JPEG at 1/8 DCT scale (the
    cheapest whole decode: ~0.9 ms of a 720p frame against ~2.4 at full scale) and, when it
    is in colour, to its luma alone (libjpeg still entropy-decodes all three components but
    skips the chroma's inverse DCT, upsampling and colour conversion: ~0.2 ms less of a
    720p frame, the same files refused). For a photo stored as uploaded whose thumbnail is
    made on first read (``thumbs.py``)."""
    with _opened(data, param, max_bytes, max_side, "max_size") as (im, orientation, upright):
        fmt, mode = im.format, im.mode
        _draft(im, 8, VALIDATION_MODE)
        im.load()
    return Photo(data, None, FORMATS[fmt], None, orientation, mode, full_size=upright)


def _upright_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """The size once EXIF ``orientation`` is applied (5-8 swap width and height)."""
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


def thumbnail_geometry(size: tuple[int, int], box: Box, max_side: int = THUMBNAIL_SIDE
                       ) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """(the crop around ``box`` on an image of ``size``, the thumbnail's (w, h)): the box
    with a 30 % margin, clamped, scaled down so its longer side is at most ``max_side``."""
    x1, y1, x2, y2 = clamp_box(expand_box(box, 0.3), size[0], size[1])
    w, h = x2 - x1, y2 - y1
    scale = max_side / max(w, h)
    if scale >= 1.0:
        return (x1, y1, x2, y2), (w, h)
    return (x1, y1, x2, y2), (max(1, round(w * scale)), max(1, round(h * scale)))


def reduction_factor(size: tuple[int, int], boxes: list[Box], max_side: int = THUMBNAIL_SIDE
                     ) -> int:
    """The largest JPEG DCT scale denominator (1, 2, 4, 8) at which every thumbnail's crop
    still has at least twice the thumbnail's pixels on both sides: never upscaled, and the
    last 2x or more of the downscale is the area filter's, as before (DCT scaling alone
    differs more from it)."""
    best = 8
    for box in boxes:
        (x1, y1, x2, y2), (tw, th) = thumbnail_geometry(size, box, max_side)
        while best > 1 and ((x2 - x1) < 2 * best * tw or (y2 - y1) < 2 * best * th):
            best //= 2
    return best


def _reduced_thumbnail(reduced: Image.Image, size: tuple[int, int], box: Box,
                       max_side: int) -> np.ndarray:
    """The thumbnail of ``box`` (full-resolution pixels of an image of ``size``) from
    ``reduced``, the same image decoded at a smaller scale (or not): the same crop mapped
    onto it, converted to BGR alone, resized to exactly the full-resolution thumbnail's
    size. At scale 1 the pixels are those of :func:`thumbnail`."""
    (x1, y1, x2, y2), (tw, th) = thumbnail_geometry(size, box, max_side)
    fx, fy = reduced.size[0] / size[0], reduced.size[1] / size[1]
    # the reduced pixels covering the crop (whole pixels: a little more than the crop)
    rx1, ry1 = int(np.floor(x1 * fx)), int(np.floor(y1 * fy))
    rx2 = min(reduced.size[0], max(rx1 + 1, int(np.ceil(x2 * fx))))
    ry2 = min(reduced.size[1], max(ry1 + 1, int(np.ceil(y2 * fy))))
    crop = reduced.crop((rx1, ry1, rx2, ry2))
    if crop.mode != "RGB":
        crop = crop.convert("RGB")
    bgr = cv2.cvtColor(np.asarray(crop), cv2.COLOR_RGB2BGR)
    if (rx1, ry1, rx2, ry2) == (x1, y1, x2, y2):  # full scale: exactly thumbnail()'s steps
        if (tw, th) != (x2 - x1, y2 - y1):
            bgr = cv2.resize(bgr, (tw, th), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(bgr)
    # scaled as the crop is scaled into the thumbnail, then the crop's part cut out, so the
    # thumbnail is not shifted or stretched by the whole-pixel rounding of the reduced crop
    sx, sy = tw / (x2 - x1), th / (y2 - y1)
    big = (max(tw, round((rx2 - rx1) / fx * sx)), max(th, round((ry2 - ry1) / fy * sy)))
    bgr = cv2.resize(bgr, big, interpolation=cv2.INTER_AREA)
    ox = min(big[0] - tw, max(0, round((x1 - rx1 / fx) * sx)))
    oy = min(big[1] - th, max(0, round((y1 - ry1 / fy) * sy)))
    return np.ascontiguousarray(bgr[oy:oy + th, ox:ox + tw])


def _bgr_pixels(im: Image.Image, orientation: int) -> np.ndarray:
    """The decoded image as contiguous BGR, EXIF orientation applied. An upright RGB image
    (a camera frame, most uploads) is converted with one copy (cv2.cvtColor) instead of
    four (transpose copy, convert copy, array copy, channel flip: ~7 ms of a 720p frame)."""
    if orientation not in (0, 1):
        im = ImageOps.exif_transpose(im)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return cv2.cvtColor(np.asarray(im), cv2.COLOR_RGB2BGR)


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
              max_side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """A crop around the face (30% margin), scaled down so its longer side is ``max_side``."""
    h, w = image.shape[:2]
    (x1, y1, x2, y2), size = thumbnail_geometry((w, h), box, max_side)
    crop = image[y1:y2, x1:x2]
    if size != (x2 - x1, y2 - y1):
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(crop)


def as_aligned_face(image: np.ndarray, size: int = 112) -> np.ndarray:
    """An already-normalized face (the daemon's ``face0``) brought to ``size`` x ``size``."""
    if image.shape[:2] == (size, size):
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
