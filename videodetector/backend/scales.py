"""Photos decoded at a reduced JPEG DCT scale for the face models, and the rules that choose
the scale (the design is described in probe.py, which uses them for the Backend's photo
endpoints; extraction.py uses them for the Extraction API). No import of service.py here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import cv2
import numpy as np
from PIL import Image

from videodetector.backend import emotions
from videodetector.backend.engine import (
    Box,
    FaceEngine,
    FoundFace,
    large_enough,
    locate_scaled,
)
from videodetector.backend.imaging import (
    Photo,
    clamp_box,
    decode_for_thumbnails,
    decode_photo,
    expand_box,
    reduction_factor,
)
from videodetector.backend.settings import Settings

DCT_FACTORS = (8, 4, 2)  # the scales libjpeg decodes at directly (1/8, 1/4, 1/2)
ALIGN_EYE_PX = 70.0  # eye distance (reduced pixels) a face is aligned from without more pixels
# the emotion crop's side (reduced pixels): twice the classifier's 64 px input
EMOTION_SIDE_PX = 2.0 * emotions.SIZE


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


def emotion_factor(box: Box, largest: int) -> int:
    """The coarsest DCT scale denominator, at most ``largest``, at which the emotion crop
    of ``box`` (full-resolution pixels; squared, widened by ``emotions.MARGIN`` a side) is
    at least :data:`EMOTION_SIDE_PX` on a side."""
    side = max(box[2] - box[0], box[3] - box[1]) * (1 + 2 * emotions.MARGIN)
    return next((f for f in (8, 4, 2, 1) if f <= largest and side / f >= EMOTION_SIDE_PX), 1)


def analysis_factor(face: FoundFace, largest: int, want: frozenset[str] = frozenset()
                    ) -> int:
    """The DCT scale denominator ``face`` (full-resolution) is aligned, embedded and its
    ``want`` attributes estimated at."""
    if face.landmarks is None:
        return largest
    factor = align_factor(face.landmarks, largest)
    if "emotions" in want:
        factor = min(factor, emotion_factor(face.box, largest))
    return factor


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

    def reduced_box(self, box: Box) -> Box:
        """``box`` (full-resolution pixels) on these reduced pixels."""
        x1, y1, x2, y2 = box
        return (x1 / self.sx, y1 / self.sy, x2 / self.sx, y2 / self.sy)

    def to_reduced(self, face: FoundFace) -> FoundFace:
        """``face`` (full-resolution pixels) on these reduced pixels."""
        lm = None if face.landmarks is None else face.landmarks / np.array(
            [self.sx, self.sy], np.float32)
        return FoundFace(self.reduced_box(face.box), lm, face.score)


def faces_by_scale(faces: list[FoundFace], largest: int,
                   want: frozenset[str] = frozenset()) -> dict[int, list[int]]:
    """The indices of ``faces`` (full-resolution) grouped by :func:`analysis_factor`."""
    groups: dict[int, list[int]] = {}
    for i, face in enumerate(faces):
        groups.setdefault(analysis_factor(face, largest, want), []).append(i)
    return groups


class Decodes:
    """One upload decoded once per DCT scale asked for: first at the detector's
    (:func:`detection_factor`), then at any finer scale a face needs."""

    def __init__(self, settings: Settings, engine: FaceEngine, data: bytes, param: str,
                 factor_of: Callable[[tuple[int, int]], int] | None = None) -> None:
        """``factor_of``: the first decode's DCT scale for the upright full size (default:
        :func:`detection_factor` of the whole photo)."""
        self.settings = settings
        self.engine = engine
        self.data = data
        self.param = param
        self.max_side = engine.detector().max_side
        self.first = self._decode(factor_of or (
            lambda size: detection_factor(size, self.max_side)))
        self.largest = max(1, round(max(self.first.sx, self.first.sy)))
        self.scales = {self.largest: self.first}
        self._detections: list[FoundFace] | None = None

    def _decode(self, factor_of: Callable[[tuple[int, int]], int]) -> Scaled:
        s = self.settings
        return Scaled.of(decode_photo(self.data, self.param, s.max_photo_bytes, s.max_size,
                                      factor_of=factor_of))

    def at(self, factor: int) -> Scaled:
        """The photo decoded at 1/``factor`` (the first decode for ``largest`` or more)."""
        if factor >= self.largest:
            return self.first
        if factor not in self.scales:
            self.scales[factor] = self._decode(lambda _size: factor)
        return self.scales[factor]

    def detections(self) -> list[FoundFace]:
        """Every face the detector finds on the first decode (reduced pixels), found once."""
        if self._detections is None:
            self._detections = self.engine.detect(self.first.photo.image)
        return self._detections

    def detected(self) -> list[FoundFace]:
        """:meth:`detections` in full-resolution pixels, at least ``min_face_size``."""
        found = [self.first.to_full(f) for f in self.detections()]
        return [f for f in found if large_enough(f.box, self.settings.min_face_size)]

    def located(self, box: Box, param: str = "bbox") -> FoundFace:
        """The face in a client's ``box`` (full-resolution pixels), on the reduced pixels
        (:func:`locate_scaled`): the detected face overlapping it best, else the one found on
        a crop around it decoded at the crop's :func:`detection_factor`."""
        first = self.first
        return locate_scaled(box, self.detections(), (first.sx, first.sy),
                             self._pixels_for_crop, self.engine.detect, param)

    def _pixels_for_crop(self, box: Box) -> tuple[np.ndarray, tuple[float, float]]:
        """The decode a small face's crop (around ``box``, full-resolution) is searched on:
        the one with the pixels the crop needs, and its scale."""
        w, h = self.first.photo.size
        x1, y1, x2, y2 = clamp_box(expand_box(box, 1.0), w, h)
        scaled = self.at(detection_factor((x2 - x1, y2 - y1), self.max_side))
        return scaled.photo.image, (scaled.sx, scaled.sy)  # type: ignore[return-value]

    def stored_photo(self, boxes: list[Box]) -> Photo:
        """The photo to store (as uploaded) with thumbnails of ``boxes``, from the coarsest
        decode made that still has every thumbnail's pixels (``reduction_factor``, the rule
        of ``decode_for_thumbnails``): the full-scale one gives the thumbnails of before bit
        for bit; a reduced one gives them as ``decode_for_thumbnails`` at that scale would
        (its pixels as Pillow's RGB: ~7 ms of a 2016x1512 decode, where decoding the JPEG
        again for the thumbnails alone took ~21 ms of a 4032x3024 one). None fits (small
        faces on a large photo aligned from the reduced pixels): ``decode_for_thumbnails``."""
        needed = reduction_factor(self.first.photo.size, boxes)
        have = [f for f in self.scales if f <= needed]
        if not have:
            s = self.settings
            return decode_for_thumbnails(self.data, self.param, s.max_photo_bytes,
                                         s.max_size, boxes)
        photo = self.scales[max(have)].photo
        if max(have) == 1:
            return photo
        rgb = Image.fromarray(cv2.cvtColor(photo.image, cv2.COLOR_BGR2RGB))
        return replace(photo, image=None, reduced=rgb)
