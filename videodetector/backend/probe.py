"""The faces of an uploaded photo (``/identify``, ``/verify``, ``/detect``, ``POST /face`` and
``PUT /face/id`` with a photo rather than a normalized ``face0``), found without decoding a
large JPEG at full resolution.

YuNet sees the photo scaled so that its longer side is ``max_side`` (640): a 4032x3024 phone
photo is decoded (~12 Mpx) only to be shrunk 6x. Here a JPEG is decoded at the coarsest DCT
scale (1/2, 1/4, 1/8) whose longer side is still at least ``2 * max_side``, so the detector's
own area filter still does the last 2x or more of the downscale (rule of
:func:`detection_factor`: photos under 2560 px are decoded exactly as before). Boxes and
landmarks are mapped back to full-resolution pixels. A face is aligned from the reduced
pixels when its eyes are at least :data:`ALIGN_EYE_PX` apart there (the 112x112 aligned face
has them ~35 px apart, so the warp still halves it); a smaller face's pixels are decoded at a
finer scale (once per scale, full scale at worst); with emotions asked, also finer when
the face's emotion crop (its box squared, +10 %) would be under :data:`EMOTION_SIDE_PX`
there. Gender/age chips (64 and 32 px, eyes ~24 px apart in the 64 px one) need less than
the aligned face. A client's ``bbox`` is matched to the faces detected on the reduced
pixels; when none matches (a small face), the crop around it is detected at the scale
:func:`detection_factor` gives the crop (full scale unless the crop is 2560 px or more), as
``FaceEngine.locate`` does at full scale. An enrolled photo is stored as uploaded; its
thumbnails come from a decode already made when one has their pixels (by the rule of
``decode_for_thumbnails``, what a detector's snapshot gets), else from that function.
The answers differ from a full-scale decode only by what the models' inputs differ
(tests/backend/test_identify_probe.py and test_photo_endpoints_probe.py: the measured
tolerance on real photos).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image

from videodetector.backend import emotions
from videodetector.backend.engine import Box, FoundFace, best_match, no_face_inside
from videodetector.backend.imaging import (
    Photo,
    clamp_box,
    decode_for_thumbnails,
    decode_photo,
    expand_box,
    reduction_factor,
)
from videodetector.backend.service import NewFace, no_usable_face, select_faces

if TYPE_CHECKING:
    from videodetector.backend.service import Backend

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

    def __init__(self, backend: Backend, data: bytes, param: str) -> None:
        self.backend = backend
        self.data = data
        self.param = param
        self.max_side = backend.engine.detector().max_side
        self.first = self._decode(lambda size: detection_factor(size, self.max_side))
        self.largest = max(1, round(max(self.first.sx, self.first.sy)))
        self.scales = {self.largest: self.first}
        self._detections: list[FoundFace] | None = None

    def _decode(self, factor_of: Callable[[tuple[int, int]], int]) -> Scaled:
        s = self.backend.settings
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
            self._detections = self.backend.engine.detect(self.first.photo.image)
        return self._detections

    def detected(self) -> list[FoundFace]:
        """:meth:`detections` in full-resolution pixels, at least ``min_face_size``."""
        found = [self.first.to_full(f) for f in self.detections()]
        return [f for f in found if min(f.box[2] - f.box[0], f.box[3] - f.box[1])
                >= self.backend.settings.min_face_size]

    def located(self, box: Box, param: str = "bbox") -> FoundFace:
        """``FaceEngine.locate`` of a client's ``box`` (full-resolution pixels), on the
        reduced pixels: the detected face overlapping it best, else the one found on a crop
        around it decoded at the crop's :func:`detection_factor`; the box stays the
        client's, the landmarks are full-resolution."""
        scaled = self.first
        best = best_match(self.detections(), scaled.reduced_box(box), (0.0, 0.0))
        if best is None:  # a small face: the crop around the box, with the pixels it needs
            w, h = scaled.photo.size
            x1, y1, x2, y2 = clamp_box(expand_box(box, 1.0), w, h)
            scaled = self.at(detection_factor((x2 - x1, y2 - y1), self.max_side))
            rh, rw = scaled.photo.image.shape[:2]  # type: ignore[union-attr]
            reduced = scaled.reduced_box(box)
            x1, y1, x2, y2 = clamp_box(expand_box(reduced, 1.0), rw, rh)
            crop = np.ascontiguousarray(scaled.photo.image[y1:y2, x1:x2])  # type: ignore[index]
            best = best_match(self.backend.engine.detect(crop), reduced, (float(x1), float(y1)))
        if best is None:
            raise no_face_inside(param, box)
        return FoundFace(box, scaled.to_full(best).landmarks, best.score)

    def analyzed(self, faces: list[FoundFace], want: frozenset[str]) -> list[NewFace | None]:
        """``Backend.analyze_face`` of each face (full-resolution) at its
        :func:`analysis_factor`, its box the full-resolution one; None for an unusable face."""
        out: list[NewFace | None] = [None] * len(faces)
        for factor, indices in faces_by_scale(faces, self.largest, want).items():
            scaled = self.at(factor)
            for i in indices:
                new = self.backend.analyze_face(scaled.photo, scaled.to_reduced(faces[i]), want)
                out[i] = None if new is None else replace(new, box=faces[i].box)
        return out

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
            s = self.backend.settings
            return decode_for_thumbnails(self.data, self.param, s.max_photo_bytes,
                                         s.max_size, boxes)
        photo = self.scales[max(have)].photo
        if max(have) == 1:
            return photo
        rgb = Image.fromarray(cv2.cvtColor(photo.image, cv2.COLOR_BGR2RGB))
        return replace(photo, image=None, reduced=rgb)


def _chosen(d: Decodes, boxes: list[Box] | None, selector: str, param: str,
            bbox_param: str) -> list[FoundFace]:
    if boxes:
        return [d.located(b, bbox_param) for b in boxes]
    return select_faces(d.detected(), selector, param)


def _usable(faces: list[NewFace | None], param: str) -> list[NewFace]:
    usable = [new for new in faces if new is not None]
    if not usable:
        raise no_usable_face(param)
    return usable


def probe_faces(backend: Backend, data: bytes, selector: str, param: str = "photo", *,
                boxes: list[Box] | None = None, want: frozenset[str] = frozenset(),
                bbox_param: str = "bbox") -> list[NewFace]:
    """The faces of a photo (in the client's ``boxes``, else detected and chosen by
    ``selector``, ``mf_selector``), aligned, embedded and their ``want`` attributes, boxes
    in full-resolution pixels: what ``Backend.find_faces`` + ``analyze`` of a full-scale
    decode answer, without decoding a large JPEG at full scale."""
    d = Decodes(backend, data, param)
    return _usable(d.analyzed(_chosen(d, boxes, selector, param, bbox_param), want), param)


def enroll_faces(backend: Backend, data: bytes, boxes: list[Box] | None, selector: str,
                 want: frozenset[str], param: str = "photo", bbox_param: str = "bbox"
                 ) -> tuple[Photo, list[NewFace]]:
    """:func:`probe_faces`, and the photo to store with their thumbnails
    (:meth:`Decodes.stored_photo`)."""
    d = Decodes(backend, data, param)
    faces = _usable(d.analyzed(_chosen(d, boxes, selector, param, bbox_param), want), param)
    return d.stored_photo([f.box for f in faces]), faces


def detected_faces(backend: Backend, data: bytes, want: frozenset[str], param: str = "photo"
                   ) -> tuple[Photo, list[tuple[Box, NewFace | None]]]:
    """``/detect`` with attributes: (the first decode, for its orientation; every face's
    full-resolution box, largest first, with its analysis or None when it is unusable)."""
    d = Decodes(backend, data, param)
    found = sorted(d.detected(), key=lambda f: f.area, reverse=True)
    return d.first.photo, list(zip([f.box for f in found], d.analyzed(found, want),
                                   strict=True))


def detected_boxes(backend: Backend, data: bytes, param: str = "photo") -> tuple[Photo, list[Box]]:
    """``/detect`` without attributes: (the photo, decoded reduced as for
    :func:`probe_faces`, every face's full-resolution box, largest first)."""
    d = Decodes(backend, data, param)
    return d.first.photo, [f.box for f in sorted(d.detected(), key=lambda f: f.area,
                                                 reverse=True)]
