"""Issue 10, crops: ``quality_box`` bounds every pixel the face quality reads, so a frame
converted only inside it scores the same, bit for bit (the detector converts no more)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.core.quality.test_same_scores import ODD_LANDMARKS, faces, images, outcome, same_quality
from videodetector.core.models import TEMPLATE_112
from videodetector.core.quality import align, score

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def only_inside(image: np.ndarray, box: tuple[int, int, int, int], fill: int) -> np.ndarray:
    """``image`` with every pixel outside ``box`` replaced by ``fill`` (-1: noise)."""
    x1, y1, x2, y2 = box
    if fill < 0:
        out = np.random.default_rng(7).integers(0, 256, image.shape, dtype=np.uint8)
    else:
        out = np.full_like(image, fill)
    out[y1:y2, x1:x2] = image[y1:y2, x1:x2]
    return out


@SETTINGS
@given(data=st.data(), image=images(), det=st.floats(0.0, 1.0), fill=st.sampled_from([0, 255, -1]))
def test_face_quality_reads_nothing_outside_its_box(data, image, det, fill):
    box, lm = data.draw(faces(image))
    h, w = image.shape[:2]
    qbox = score.quality_box(lm, w, h)
    x1, y1, x2, y2 = qbox
    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
    whole = outcome(score.face_quality, image, box, lm, det)
    part = outcome(score.face_quality, only_inside(image, qbox, fill), box, lm, det)
    assert same_quality(whole, part), (whole, part, qbox)


@SETTINGS
@given(data=st.data(), image=images(), upsample=st.booleans(),
       size=st.sampled_from([16, 40, 112, 150]), fill=st.sampled_from([0, 255]))
def test_the_aligned_crop_reads_nothing_outside_read_box(data, image, upsample, size, fill):
    _, lm = data.draw(faces(image))
    h, w = image.shape[:2]
    try:
        pts = score.check_landmarks(lm)
    except ValueError:
        return
    rbox = align.read_box(pts, size, w, h)
    whole = align.aligned_grey_crop(image, pts, size, upsample)
    part = align.aligned_grey_crop(only_inside(image, rbox, fill), pts, size, upsample)
    assert np.array_equal(whole, part)


@pytest.mark.parametrize("lm", ODD_LANDMARKS, ids=range(len(ODD_LANDMARKS)))
def test_landmarks_that_place_no_face_give_the_whole_frame_else_a_pixel_box(lm):
    x1, y1, x2, y2 = score.quality_box(lm, 160, 120)
    assert 0 <= x1 < x2 <= 160 and 0 <= y1 < y2 <= 120
    if outcome(score.check_landmarks, lm)[0] == "raised":
        assert (x1, y1, x2, y2) == (0, 0, 160, 120)


@pytest.mark.parametrize("size", [(0, 10), (10, 0), (-1, 5)])
def test_quality_box_refuses_an_empty_frame(size):
    with pytest.raises(ValueError, match="frame size"):
        score.quality_box(TEMPLATE_112, *size)


def test_the_template_square_lies_within_its_side_of_the_landmark_mean():
    """read_box's premise: the 112 crop's corners lie at most 0.86 of its side from the
    template's landmark mean (the square of half side 1.0 leaves room for the rest)."""
    mean = TEMPLATE_112.astype(np.float64).mean(axis=0)
    reach = max(math.dist(mean, c) for c in [(0, 0), (112, 0), (0, 112), (112, 112)])
    assert reach / 112 < 0.86


def test_a_face_box_is_a_small_part_of_a_720p_frame():
    """A 100 px face (eyes ~35 px apart) in a 1280x720 frame: the box the score needs is
    about a tenth of the frame (what converting it alone saves)."""
    lm = (TEMPLATE_112 - TEMPLATE_112.mean(0)) * (35 / 35.2) + (640, 360)
    x1, y1, x2, y2 = score.quality_box(lm, 1280, 720)
    assert (x2 - x1) * (y2 - y1) < 0.15 * 1280 * 720
    assert x1 < 640 < x2 and y1 < 360 < y2
