"""The faces of a probe photo (``/identify``, ``/detect`` with a whole photo), found without
decoding a large JPEG at full resolution.

YuNet sees the photo scaled so that its longer side is ``max_side`` (640): a 4032x3024 phone
photo is decoded (~12 Mpx) only to be shrunk 6x. Here a JPEG is decoded at the coarsest DCT
scale (1/2, 1/4, 1/8) whose longer side is still at least ``2 * max_side``, so the detector's
own area filter still does the last 2x or more of the downscale (rule of
:func:`detection_factor`: photos under 2560 px are decoded exactly as before). Boxes and
landmarks are mapped back to full-resolution pixels. A face is aligned from the reduced
pixels when its eyes are at least :data:`ALIGN_EYE_PX` apart there (the 112x112 aligned face
has them ~35 px apart, so the warp still halves it); a smaller face's pixels are decoded at a
finer scale (once per scale, full scale at worst). The answers differ from a full-scale
decode only by what the detector's input differs (tests/backend/test_identify_probe.py: the
measured tolerance on real photos).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from videodetector.backend.engine import Box, FoundFace
from videodetector.backend.imaging import Photo, decode_photo
from videodetector.backend.service import NewFace, no_usable_face, select_faces

if TYPE_CHECKING:
    from videodetector.backend.service import Backend

DCT_FACTORS = (8, 4, 2)  # the scales libjpeg decodes at directly (1/8, 1/4, 1/2)
ALIGN_EYE_PX = 70.0  # eye distance (reduced pixels) a face is aligned from without more pixels


def detection_factor(size: tuple[int, int], max_side: int | None) -> int:
    """The DCT scale denominator (1, 2, 4, 8) to decode a photo of ``size`` at for a
    detector that scales photos to ``max_side`` (None: it does not scale; nothing reduced):
    the largest whose longer side stays at least twice ``max_side``."""
    if max_side is None:
        return 1
    longest = max(size)
    return next((f for f in DCT_FACTORS if longest / f >= 2 * max_side), 1)


def align_factor(landmarks: np.ndarray, largest: int) -> int:
    """The coarsest DCT scale denominator, at most ``largest``, at which the eyes of
    ``landmarks`` (full-resolution pixels) are at least :data:`ALIGN_EYE_PX` apart."""
    eyes = float(np.linalg.norm(np.asarray(landmarks[0]) - np.asarray(landmarks[1])))
    return next((f for f in (8, 4, 2, 1) if f <= largest and eyes / f >= ALIGN_EYE_PX), 1)


@dataclass(frozen=True)
class Scaled:
    """A photo decoded at some DCT scale and how its pixels map to full resolution."""

    photo: Photo  # ``image``: the reduced pixels; ``size``: the full-resolution size
    sx: float  # full-resolution pixels per reduced pixel, horizontally
    sy: float

    @classmethod
    def of(cls, photo: Photo) -> Scaled:
        h, w = photo.image.shape[:2]  # type: ignore[union-attr]
        return cls(photo, photo.size[0] / w, photo.size[1] / h)

    def to_full(self, face: FoundFace) -> FoundFace:
        """``face`` found on the reduced pixels, in full-resolution pixels."""
        x1, y1, x2, y2 = face.box
        box = (x1 * self.sx, y1 * self.sy, x2 * self.sx, y2 * self.sy)
        lm = None if face.landmarks is None else face.landmarks * np.array(
            [self.sx, self.sy], np.float32)
        return FoundFace(box, lm, face.score)

    def to_reduced(self, face: FoundFace) -> FoundFace:
        """``face`` (full-resolution pixels) on these reduced pixels."""
        x1, y1, x2, y2 = face.box
        box = (x1 / self.sx, y1 / self.sy, x2 / self.sx, y2 / self.sy)
        lm = None if face.landmarks is None else face.landmarks / np.array(
            [self.sx, self.sy], np.float32)
        return FoundFace(box, lm, face.score)


def faces_by_scale(faces: list[FoundFace], largest: int) -> dict[int, list[int]]:
    """The indices of ``faces`` (full-resolution) grouped by the scale each is aligned at."""
    groups: dict[int, list[int]] = {}
    for i, face in enumerate(faces):
        f = largest if face.landmarks is None else align_factor(face.landmarks, largest)
        groups.setdefault(f, []).append(i)
    return groups


def probe_faces(backend: Backend, data: bytes, selector: str, param: str = "photo"
                ) -> list[NewFace]:
    """The faces of a whole photo chosen by ``selector`` (``mf_selector``), aligned and
    embedded, boxes in full-resolution pixels: ``Backend.faces_of_request`` of a photo with
    no bbox and no face0, without decoding a large JPEG at full scale."""
    s = backend.settings
    max_side = backend.engine.detector().max_side

    def decode(factor_of: Callable[[tuple[int, int]], int]) -> Scaled:
        return Scaled.of(decode_photo(data, param, s.max_photo_bytes, s.max_size,
                                      factor_of=factor_of))

    first = decode(lambda size: detection_factor(size, max_side))
    largest = max(1, round(max(first.sx, first.sy)))
    scales = {largest: first}
    found = [first.to_full(f) for f in backend.engine.detect(first.photo.image)]
    found = [f for f in found if min(f.box[2] - f.box[0], f.box[3] - f.box[1])
             >= s.min_face_size]
    chosen = select_faces(found, selector, param)
    out: list[NewFace | None] = [None] * len(chosen)
    for factor, indices in faces_by_scale(chosen, largest).items():
        if factor not in scales:
            scales[factor] = decode(lambda _size, f=factor: f)
        scaled = scales[factor]
        for i in indices:
            new = backend.analyze_face(scaled.photo, scaled.to_reduced(chosen[i]), frozenset())
            out[i] = None if new is None else replace(new, box=chosen[i].box)
    usable = [new for new in out if new is not None]
    if not usable:
        raise no_usable_face(param)
    return usable


def detected_boxes(backend: Backend, data: bytes, param: str = "photo") -> tuple[Photo, list[Box]]:
    """``/detect`` without attributes: (the photo, decoded reduced as for
    :func:`probe_faces`, every face's full-resolution box, largest first)."""
    s = backend.settings
    max_side = backend.engine.detector().max_side
    scaled = Scaled.of(decode_photo(data, param, s.max_photo_bytes, s.max_size,
                                    factor_of=lambda size: detection_factor(size, max_side)))
    found = [scaled.to_full(f) for f in backend.engine.detect(scaled.photo.image)]
    found = [f for f in found if min(f.box[2] - f.box[0], f.box[3] - f.box[1])
             >= s.min_face_size]
    return scaled.photo, [f.box for f in sorted(found, key=lambda f: f.area, reverse=True)]
