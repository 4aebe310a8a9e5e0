"""The full-scale reference of the photo endpoints: the photo decoded whole, its faces found
and analysed on every pixel. This is what ``Backend.decode``, ``find_faces`` and ``analyze``
did before the product decoded large JPEGs at a reduced scale (videodetector/backend/
probe.py); only the tests use it now, to compare the product's answers with it
(test_identify_probe.py, test_photo_endpoints_probe.py)."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

from videodetector.backend import imaging
from videodetector.backend.engine import (
    FULL_SCALE,
    Box,
    FaceEngine,
    FoundFace,
    NewFace,
    locate_scaled,
    no_usable_face,
    select_faces,
)
from videodetector.backend.imaging import Photo, decode_photo
from videodetector.backend.service import Backend


def decode(backend: Backend, data: bytes, param: str = "photo") -> Photo:
    """The photo decoded at full scale, within the backend's limits."""
    s = backend.settings
    return decode_photo(data, param, s.max_photo_bytes, s.max_size)


def locate(engine: FaceEngine, image: np.ndarray, box: Box, param: str = "bbox") -> FoundFace:
    """The face inside a client's box, found on the whole ``image`` (else a crop of it)."""
    return locate_scaled(box, engine.detect(image), FULL_SCALE,
                         lambda _box: (image, FULL_SCALE), engine.detect, param)


def find_faces(backend: Backend, photo: Photo, boxes: list[Box] | None, selector: str,
               photo_param: str = "photo", bbox_param: str = "bbox") -> list[FoundFace]:
    """Faces on a photo: in the given boxes, or detected and chosen by ``mf_selector``."""
    if boxes:
        return [locate(backend.engine, photo.image, b, bbox_param) for b in boxes]
    found = backend.engine.detect(photo.image, backend.settings.min_face_size)
    return select_faces(found, selector, photo_param)


def analyze(backend: Backend, photo: Photo, found: list[FoundFace], want: frozenset[str],
            param: str = "photo") -> list[NewFace]:
    """The usable faces of ``found``; BAD_PARAM naming ``param`` when none is."""
    out = [new for face in found if (new := backend.analyze_face(photo, face, want)) is not None]
    if found and not out:
        raise no_usable_face(param)
    return out


def full_scale(backend: Backend, data: bytes, selector: str = "biggest",
               boxes: list | None = None, want: frozenset[str] = frozenset()) -> list[NewFace]:
    """The answer of a photo endpoint at full scale."""
    photo = decode(backend, data)
    return analyze(backend, photo, find_faces(backend, photo, boxes, selector), want)


def record_decode_factors(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every ``decode_photo`` the backend makes from now on, as (param, DCT scale
    denominator; 1: full scale), in whichever backend module calls it."""
    factors: list[tuple[str, int]] = []
    real = imaging.decode_photo

    def recording(data: bytes, param: str, *args: Any, factor_of: Any = None,
                  **kwargs: Any) -> Photo:
        def factor(size: tuple[int, int]) -> int:
            factors.append((param, factor_of(size)))
            return factors[-1][1]

        if factor_of is None:
            factors.append((param, 1))
        return real(data, param, *args, factor_of=factor_of and factor, **kwargs)

    for name, module in list(sys.modules.items()):
        if name.startswith("videodetector.backend") and getattr(
                module, "decode_photo", None) is real:
            monkeypatch.setattr(module, "decode_photo", recording)
    return factors
