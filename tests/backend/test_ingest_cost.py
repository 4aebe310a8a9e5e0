"""Issue 10, ingestion CPU outside the model: what a detector's post costs the backend
without changing what it stores or refuses.

* The photo of a face0 post is validated by a 1/8-scale decode of its luma only
  (``imaging.validate_photo``): the same files are refused with the same status and
  message as by the full-colour 1/8 decode it replaces.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from videodetector.backend import imaging
from videodetector.backend.errors import ApiError
from videodetector.backend.imaging import validate_photo


def _jpeg(seed: int, size: tuple[int, int] = (320, 200), progressive: bool = False,
          mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // w), (y * 255 // h), ((x + y) * 127 // (w + h))], -1)
    pixels = np.clip(base + rng.integers(0, 60, (h, w, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, "JPEG", quality=90,
                                               progressive=progressive)
    return out.getvalue()


def _old_validate(data: bytes, param: str, max_bytes: int, max_side: int) -> None:
    """validate_photo before: the same checks with a full-colour decode at 1/8 scale."""
    with imaging._opened(data, param, max_bytes, max_side, "max_size") as (im, _, _):
        imaging._draft(im, 8)
        im.load()


def _outcome(fn, data: bytes):  # noqa: ANN001, ANN202 - a test helper
    try:
        fn(data, "photo", 10**7, 4096)
    except ApiError as exc:  # Pillow's messages may name the BytesIO object's address
        return exc.status, re.sub(r"0x[0-9a-f]+", "0x", repr(exc.body()))
    return "ok"


def test_a_colour_jpeg_is_validated_from_its_luma_only(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    """The decode behind the validation is greyscale at 1/8 scale (before: colour, with the
    chroma's IDCT, upsampling and colour conversion that nothing used)."""
    loads: list[tuple[str, tuple[int, int]]] = []
    load = ImageFile.ImageFile.load

    def spy(self):  # noqa: ANN001, ANN202
        loads.append((self.mode, self.size))
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    photo = validate_photo(_jpeg(1, (640, 480)), "photo", 10**7, 4096)
    assert loads == [("L", (80, 60))]
    assert (photo.ext, photo.mode, photo.size, photo.image) == ("jpeg", "RGB", (640, 480), None)


def _damaged(data: bytes, kind: str, where: float, span: int, byte: int) -> bytes:
    at = min(len(data) - 1, max(2, int(len(data) * where)))
    if kind == "cut":
        return data[:at]
    if kind == "overwrite":
        return data[:at] + bytes([byte]) * span + data[at + span:]
    return data[:at] + data[at + span:]  # bytes removed from the middle


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**16), kind=st.sampled_from(["cut", "overwrite", "drop"]),
       where=st.floats(0.0, 1.0), span=st.integers(1, 64), byte=st.integers(0, 255),
       progressive=st.booleans(), mode=st.sampled_from(["RGB", "L", "CMYK"]))
def test_the_luma_validation_refuses_what_the_colour_one_refused(
        seed: int, kind: str, where: float, span: int, byte: int, progressive: bool,
        mode: str) -> None:
    """Any damage (cut, overwritten, bytes dropped; header or entropy data; baseline or
    progressive; colour, grey or CMYK): accepted or refused alike, with the same status and
    body (message naming ``photo``)."""
    data = _damaged(_jpeg(seed, progressive=progressive, mode=mode), kind, where, span, byte)
    assert _outcome(validate_photo, data) == _outcome(_old_validate, data)


def test_a_truncated_photo_is_still_a_400_naming_photo() -> None:
    data = _jpeg(3, (640, 480))
    for cut in (0.3, 0.7, 0.99):
        with pytest.raises(ApiError) as refused:
            validate_photo(data[: int(len(data) * cut)], "photo", 10**7, 4096)
        body = refused.value.body()
        assert refused.value.status == 400 and body["param"] == "photo"
        assert body["reason"].startswith("photo is not a valid JPEG, PNG or WebP image")
    assert _outcome(validate_photo, data) == "ok"
