"""Pure helpers of the Extraction API and batch enrollment: base64 images, facens, ROIs."""

from __future__ import annotations

import base64
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videodetector.backend.errors import ApiError
from videodetector.backend.extraction import facen_b64, facen_from_b64, parse_roi
from videodetector.backend.inline import decode_base64_image


@settings(max_examples=60, deadline=None)
@given(data=st.binary(min_size=1, max_size=300), uri=st.booleans(), wrap=st.booleans())
def test_base64_round_trip(data: bytes, uri: bool, wrap: bool):
    text = base64.b64encode(data).decode()
    if wrap:  # MIME line breaks are accepted
        text = "\n".join(text[i:i + 76] for i in range(0, len(text), 76))
    if uri:
        text = "data:image/jpeg;base64," + text
    assert decode_base64_image(text, "p", 300) == data


@settings(max_examples=40, deadline=None)
@given(size=st.integers(301, 2000))
def test_base64_over_the_limit_is_refused_before_decoding(size: int):
    with pytest.raises(ApiError) as err:
        decode_base64_image(base64.b64encode(b"x" * size).decode(), "p", 300)
    assert err.value.status == 413 and err.value.extra["param"] == "p"


@pytest.mark.parametrize("text", ["***", "data:text/plain,hello", "", "QQ=x"])
def test_bad_base64_is_a_bad_param(text: str):
    with pytest.raises(ApiError) as err:
        decode_base64_image(text, "items[3].photo", 1000)
    assert err.value.code == "BAD_PARAM" and err.value.extra["param"] == "items[3].photo"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1, 1, width=32), min_size=128, max_size=128))
def test_facen_round_trip(values: list[float]):
    vec = np.array(values, np.float32)
    assert np.array_equal(facen_from_b64(facen_b64(vec)), vec)
    assert len(base64.b64decode(facen_b64(vec))) == 512


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(),
                          st.booleans(), st.text(max_size=3)), min_size=4, max_size=4))
def test_roi_is_accepted_only_when_valid(values: list):
    roi = dict(zip(("left", "top", "right", "bottom"), values, strict=True))
    def number(v) -> bool:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return False
        try:
            return math.isfinite(float(v))
        except OverflowError:  # an int beyond any float
            return False

    ok = all(number(v) for v in values) and values[2] > values[0] and values[3] > values[1]
    if ok:
        assert parse_roi(roi, "roi").right == float(values[2])
    else:
        with pytest.raises(ApiError):
            parse_roi(roi, "roi")
