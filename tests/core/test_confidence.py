"""The FAR-anchored cosine -> confidence map (videodetector/core/confidence.py)."""

from __future__ import annotations

import numpy as np
import pytest

from videodetector.core import confidence as c

ANCHORS = [
    (c.COS_FAR_1E1, 0.5690),
    (c.COS_FAR_1E3, 0.6616),
    (c.COS_FAR_1E5, 0.7834),
]


def test_anchor_cosines_are_ordered_and_inside_range():
    assert -1.0 < c.COS_FAR_1E1 < c.COS_FAR_1E3 < c.COS_FAR_1E5 < 1.0


@pytest.mark.parametrize(("cos", "conf"), ANCHORS)
def test_anchors_map_exactly_to_findface_presets(cos, conf):
    assert c.confidence_from_cosine(cos) == pytest.approx(conf, abs=1e-12)
    assert c.cosine_from_confidence(conf) == pytest.approx(cos, abs=1e-12)


def test_endpoints_and_clipping():
    assert c.confidence_from_cosine(-1.0) == 0.0
    assert c.confidence_from_cosine(1.0) == 1.0
    assert c.confidence_from_cosine(-3.0) == 0.0
    assert c.confidence_from_cosine(1.5) == 1.0
    assert c.cosine_from_confidence(0.0) == -1.0
    assert c.cosine_from_confidence(1.0) == 1.0


def test_strictly_monotonic():
    cos = np.linspace(-1.0, 1.0, 20001)
    conf = c.confidence_from_cosine(cos)
    assert np.all(np.diff(conf) > 0)
    grid = np.linspace(0.0, 1.0, 10001)
    assert np.all(np.diff(c.cosine_from_confidence(grid)) > 0)


def test_default_threshold_sits_between_medium_and_strict():
    cos = c.cosine_from_confidence(0.75)
    assert c.COS_FAR_1E3 < cos < c.COS_FAR_1E5


def test_inverse_round_trips():
    cos = np.linspace(-1.0, 1.0, 1001)
    np.testing.assert_allclose(c.cosine_from_confidence(c.confidence_from_cosine(cos)), cos,
                               atol=1e-12)
    conf = np.linspace(0.0, 1.0, 1001)
    np.testing.assert_allclose(c.confidence_from_cosine(c.cosine_from_confidence(conf)), conf,
                               atol=1e-12)


def test_scalar_in_float_out_array_in_array_out():
    assert isinstance(c.confidence_from_cosine(0.3), float)
    assert isinstance(c.cosine_from_confidence(0.7), float)
    assert isinstance(c.confidence_from_cosine(np.float32(0.3)), float)
    arr = np.array([[-1.0, 0.0], [0.5, 1.0]], np.float32)
    out = c.confidence_from_cosine(arr)
    assert isinstance(out, np.ndarray) and out.shape == (2, 2)
    back = c.cosine_from_confidence(out)
    assert back.shape == (2, 2)
    np.testing.assert_allclose(back, arr, atol=1e-6)
    assert c.confidence_from_cosine([0.1, 0.2]).shape == (2,)
