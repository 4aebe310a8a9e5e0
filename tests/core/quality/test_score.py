"""Face quality: pure component mappings, and orderings on real MEDS-II mugshots.

Thresholds used with real photos, and why:
* a studio mugshot (sharp, frontal, ~220 px face, YuNet score ~0.95) must be at least "good"
  on the FindFace scale: score >= -1.0;
* a full profile (S001-08-t10_02/03 are 90 degree views) must be at least a "satisfactory
  deviation": direction_score <= -2.5;
* everything else is an ordering: a degraded copy of a face scores below the original.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.conftest import shared_file
from videodetector.core.quality.score import (
    QualityScore,
    confidence_score,
    edge_margin,
    edge_score,
    face_quality,
    sharpness_ratio,
    sharpness_score,
    size_score,
)

LANDMARKS_200 = np.array([[70, 90], [130, 90], [100, 125], [78, 155], [122, 155]], np.float32)


# ---------------------------------------------------------------------------------------
# Components (no media)
# ---------------------------------------------------------------------------------------

def test_component_tables_are_monotonic_and_non_positive():
    conf = [confidence_score(c) for c in np.linspace(0, 1, 21)]
    size = [size_score(s) for s in (8, 16, 24, 30, 40, 48, 64, 80, 100, 200)]
    sharp = [sharpness_score(r) for r in (0.0, 0.001, 0.003, 0.006, 0.01, 0.02, 0.03, 1.0)]
    for values in (conf, size, sharp):
        assert all(v <= 0 for v in values)
        assert all(a <= b for a, b in zip(values, values[1:], strict=False)), values
    assert confidence_score(0.95) == 0 and size_score(100) == 0 and sharpness_score(0.03) == 0
    assert size_score(30) == pytest.approx(-5)  # "recognition may be inefficient"


def test_edge_component():
    frame = (640, 480)
    inside = np.array([100, 100, 200, 200], float)
    touching = np.array([0, 100, 100, 200], float)
    assert edge_margin(inside, frame) == pytest.approx(1.0)
    assert edge_margin(touching, frame) == 0
    lm_inside = LANDMARKS_200 * 0.5 + 50
    assert edge_score(edge_margin(inside, frame), lm_inside, frame) == 0
    assert edge_score(0.0, lm_inside, frame) == pytest.approx(-3)
    assert edge_score(0.02, lm_inside, frame) == pytest.approx(-1.8)
    assert edge_score(0.0, lm_inside - [100, 0], frame) == pytest.approx(-5)  # eye off-frame


def test_flat_face_is_least_sharp_and_texture_is_sharp():
    flat = np.full((200, 200, 3), 128, np.uint8)
    assert sharpness_ratio(flat, LANDMARKS_200) == pytest.approx(0, abs=1e-6)
    noise = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    assert sharpness_score(sharpness_ratio(noise, LANDMARKS_200)) == 0


def test_bad_inputs_raise_value_error():
    img = np.zeros((200, 200, 3), np.uint8)
    box = [40, 40, 160, 180]
    with pytest.raises(ValueError, match="1.5"):
        face_quality(img, box, LANDMARKS_200, 1.5)
    with pytest.raises(ValueError, match="shape"):
        face_quality(img[:, :, 0], box, LANDMARKS_200, 0.9)
    with pytest.raises(ValueError, match="x2 > x1"):
        face_quality(img, [160, 40, 40, 180], LANDMARKS_200, 0.9)
    with pytest.raises(ValueError, match="landmarks"):
        face_quality(img, box, np.zeros((5, 2)), 0.9)


# ---------------------------------------------------------------------------------------
# Real mugshots
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def detector():
    from videodetector.core.models import YuNetDetector

    return YuNetDetector()


def quality_of(detector, image: np.ndarray) -> QualityScore:
    """Quality of the best face YuNet finds in ``image``; fails if it finds none."""
    dets = detector.detect(image)
    assert len(dets), "YuNet found no face"
    i = int(np.argmax(dets.score))
    return face_quality(image, dets.xyxy[i], dets.landmarks[i], float(dets.score[i]))


def mugshot(name: str) -> np.ndarray:
    image = cv2.imread(str(shared_file(f"stills_meds/{name}.jpg")))
    assert image is not None
    return image


@pytest.mark.media
@pytest.mark.parametrize("name", ["S001-01-t10_01", "S029-01-t10_01"])
def test_frontal_mugshot_is_at_least_good(detector, name):
    q = quality_of(detector, mugshot(name))
    assert q.score >= -1.0, q
    assert q.direction_score >= -0.3, q  # within ~15 degrees of frontal
    assert q.score <= 0 and q.direction_score <= 0


@pytest.mark.media
def test_blur_lowers_quality(detector):
    image = mugshot("S001-01-t10_01")
    sharp = quality_of(detector, image)
    blurred = [quality_of(detector, cv2.GaussianBlur(image, (0, 0), s)) for s in (2, 4)]
    assert sharp.score > blurred[0].score > blurred[1].score
    assert sharp.sharpness > blurred[0].sharpness > blurred[1].sharpness
    assert blurred[0].score < -1.0  # sigma 2 on a ~220 px face is no longer "good"


@pytest.mark.media
def test_small_face_lowers_quality(detector):
    image = mugshot("S001-01-t10_01")
    full = quality_of(detector, image)
    small = [
        quality_of(detector, cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA))
        for f in (0.3, 0.2)
    ]
    assert full.score > small[0].score > small[1].score
    assert full.size > small[0].size > small[1].size
    assert small[1].face_size_px < 50 and small[1].score < -2  # worse than "satisfactory"
    # Shrinking costs through ``size`` only: a small sharp face is still sharp.
    assert small[1].sharpness >= -0.5


@pytest.mark.media
def test_face_cut_by_frame_edge_lowers_quality(detector):
    image = mugshot("S001-01-t10_01")  # face box x from ~107 to ~331
    whole = quality_of(detector, image)
    cut = quality_of(detector, np.ascontiguousarray(image[:, 200:]))  # cut through the eye
    assert whole.edge == 0
    assert cut.edge <= -3
    assert cut.score < whole.score - 2


@pytest.mark.media
@pytest.mark.parametrize("profile", ["S001-08-t10_02", "S001-08-t10_03"])
def test_profile_has_lower_direction_score_than_frontal(detector, profile):
    frontal = quality_of(detector, mugshot("S001-01-t10_01"))
    side = quality_of(detector, mugshot(profile))
    assert side.direction_score < frontal.direction_score
    assert side.direction_score <= -2.5
    assert abs(side.yaw) > 45 > abs(frontal.yaw)
