from __future__ import annotations

import pytest

from videodetector.core.geometry import (
    Rect,
    box_centre,
    parse_geometry,
    parse_resolution,
    scale_box,
)


def test_parse_geometry_reference_examples() -> None:
    assert parse_geometry("150x123+300+155") == Rect(x=300, y=155, w=150, h=123)
    assert parse_geometry(" 123X122+159+220 ") == Rect(x=159, y=220, w=123, h=122)


@pytest.mark.parametrize(
    "text", ["", "150x123", "150x123+300", "150x123-300+155", "0x10+0+0", "axb+1+2", "1x1+1+1+1"]
)
def test_parse_geometry_rejects_bad_strings_naming_them(text: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_geometry(text)
    assert repr(text) in str(err.value)


def test_rect_properties() -> None:
    r = Rect(x=10, y=20, w=30, h=40)
    assert r.xyxy == (10, 20, 40, 60)
    assert r.contains_point(10, 20)
    assert r.contains_point(39.9, 59.9)
    assert not r.contains_point(40, 30)
    assert not r.contains_point(9, 30)
    assert r.contains_box((10, 20, 40, 60))
    assert not r.contains_box((9, 20, 40, 60))
    assert not r.contains_box((10, 20, 41, 60))
    assert str(r) == "30x40+10+20"


def test_rect_rejects_empty() -> None:
    with pytest.raises(ValueError):
        Rect(0, 0, 0, 5)
    with pytest.raises(ValueError):
        Rect(-1, 0, 5, 5)


def test_parse_resolution() -> None:
    assert parse_resolution("1280x720") == (1280, 720)
    for bad in ("1280", "1280x", "0x720", "1280*720"):
        with pytest.raises(ValueError, match="bad resolution"):
            parse_resolution(bad)


def test_box_centre() -> None:
    assert box_centre((0, 0, 10, 20)) == (5.0, 10.0)


def test_scale_box_about_centre() -> None:
    assert scale_box((100, 100, 200, 200), 1.0, 1000, 1000) == (100, 100, 200, 200)
    assert scale_box((100, 100, 200, 200), 1.5, 1000, 1000) == (75, 75, 225, 225)
    assert scale_box((100, 100, 200, 200), 0.5, 1000, 1000) == (125, 125, 175, 175)


def test_scale_box_clips_to_frame() -> None:
    assert scale_box((0, 0, 100, 50), 2.0, 120, 60) == (0, 0, 120, 60)
    assert scale_box((590, 400, 640, 480), 3.0, 640, 480) == (540, 320, 640, 480)


def test_scale_box_never_empty() -> None:
    x1, y1, x2, y2 = scale_box((700, 700, 710, 710), 1.0, 640, 480)
    assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480


def test_scale_box_rejects_bad_factor() -> None:
    with pytest.raises(ValueError, match="factor"):
        scale_box((0, 0, 1, 1), 0, 10, 10)
