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
:func:`detection_factor` gives the crop (full scale unless the crop is 2560 px or more)
(``engine.locate_scaled``, which a full-scale decode uses as well). An enrolled photo is
stored as uploaded; its thumbnails come from a decode already made when one has their
pixels (by the rule of ``decode_for_thumbnails``, what a detector's snapshot gets), else
from that function.
The answers differ from a full-scale decode only by what the models' inputs differ
(tests/backend/test_identify_probe.py and test_photo_endpoints_probe.py: the measured
tolerance on real photos).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from videodetector.backend.engine import Box, FoundFace, NewFace, no_usable_face, select_faces
from videodetector.backend.imaging import Photo
from videodetector.backend.scales import Decodes, faces_by_scale

if TYPE_CHECKING:
    from videodetector.backend.service import Backend


def analyzed(backend: Backend, d: Decodes, faces: list[FoundFace], want: frozenset[str]
             ) -> list[NewFace | None]:
    """``Backend.analyze_face`` of each face (full-resolution) at its
    :func:`analysis_factor`, its box the full-resolution one; None for an unusable face."""
    out: list[NewFace | None] = [None] * len(faces)
    for factor, indices in faces_by_scale(faces, d.largest, want).items():
        scaled = d.at(factor)
        for i in indices:
            new = backend.analyze_face(scaled.photo, scaled.to_reduced(faces[i]), want)
            out[i] = None if new is None else replace(new, box=faces[i].box)
    return out


def _chosen(d: Decodes, boxes: list[Box] | None, selector: str, param: str,
            bbox_param: str) -> list[FoundFace]:
    if boxes:
        return [d.located(b, bbox_param) for b in boxes]
    return select_faces(d.detected(), selector, param)


def usable(backend: Backend, d: Decodes, faces: list[FoundFace], want: frozenset[str],
           param: str = "photo") -> list[NewFace]:
    """The usable ones of ``faces`` (full-resolution), analysed (:func:`analyzed`; an
    unusable face is skipped and counted); BAD_PARAM naming ``param`` if none is."""
    out = [new for new in analyzed(backend, d, faces, want) if new is not None]
    if not out:
        raise no_usable_face(param)
    return out


def _usable(backend: Backend, d: Decodes, boxes: list[Box] | None, selector: str,
            want: frozenset[str], param: str, bbox_param: str) -> list[NewFace]:
    """The faces chosen on ``d`` (:func:`usable`)."""
    return usable(backend, d, _chosen(d, boxes, selector, param, bbox_param), want, param)


def probe_faces(backend: Backend, data: bytes, selector: str, param: str = "photo", *,
                boxes: list[Box] | None = None, want: frozenset[str] = frozenset(),
                bbox_param: str = "bbox") -> list[NewFace]:
    """The faces of a photo (in the client's ``boxes``, else detected and chosen by
    ``selector``, ``mf_selector``), aligned, embedded and their ``want`` attributes, boxes
    in full-resolution pixels: what a full-scale decode answers (tests/backend/full_scale.py),
    without decoding a large JPEG at full scale."""
    d = Decodes(backend.settings, backend.engine, data, param)
    return _usable(backend, d, boxes, selector, want, param, bbox_param)


def enroll_faces(backend: Backend, data: bytes, boxes: list[Box] | None, selector: str,
                 want: frozenset[str], param: str = "photo", bbox_param: str = "bbox"
                 ) -> tuple[Photo, list[NewFace]]:
    """:func:`probe_faces`, and the photo to store with their thumbnails
    (:meth:`Decodes.stored_photo`)."""
    d = Decodes(backend.settings, backend.engine, data, param)
    faces = _usable(backend, d, boxes, selector, want, param, bbox_param)
    return d.stored_photo([f.box for f in faces]), faces


def detected_faces(backend: Backend, data: bytes, want: frozenset[str], param: str = "photo"
                   ) -> tuple[Photo, list[tuple[Box, NewFace | None]]]:
    """``/detect`` with attributes: (the first decode, for its orientation; every face's
    full-resolution box, largest first, with its analysis or None when it is unusable)."""
    d = Decodes(backend.settings, backend.engine, data, param)
    found = sorted(d.detected(), key=lambda f: f.area, reverse=True)
    return d.first.photo, list(zip([f.box for f in found], analyzed(backend, d, found, want),
                                   strict=True))


def detected_boxes(backend: Backend, data: bytes, param: str = "photo") -> tuple[Photo, list[Box]]:
    """``/detect`` without attributes: (the photo, decoded reduced as for
    :func:`probe_faces`, every face's full-resolution box, largest first)."""
    d = Decodes(backend.settings, backend.engine, data, param)
    return d.first.photo, [f.box for f in sorted(d.detected(), key=lambda f: f.area,
                                                 reverse=True)]
