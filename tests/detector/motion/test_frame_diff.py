"""FrameDiffMotion on hand-built frames."""

from __future__ import annotations

import numpy as np
import pytest

from videodetector.detector.motion import FrameDiffMotion, MotionDetector, MotionResult

H, W = 240, 320


def scene(square_x: int | None = None, size: int = 40) -> np.ndarray:
    img = np.full((H, W), 60, np.uint8)
    img[200:, :] = 120  # some static structure
    if square_x is not None:
        img[100 : 100 + size, square_x : square_x + size] = 230
    return img


def test_is_a_motion_detector() -> None:
    md: MotionDetector = FrameDiffMotion()
    assert isinstance(md.detect(scene()), MotionResult)


def test_first_frame_is_moving_then_static_frames_are_not() -> None:
    md = FrameDiffMotion()
    first = md.detect(scene(50))
    assert first.moving
    assert first.boxes.tolist() == [[0, 0, W, H]]
    for _ in range(5):
        result = md.detect(scene(50))
        assert not result.moving
        assert result.intensity == 0.0
        assert result.boxes.shape == (0, 4)


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.3])
def test_moving_square_gives_box_in_full_resolution(scale: float) -> None:
    md = FrameDiffMotion(scale=scale)
    md.detect(scene(50))
    result = md.detect(scene(150))  # the square jumped 100 px right
    assert result.moving
    assert result.intensity > 0.002
    assert result.boxes.dtype == np.float32 and result.boxes.shape[1] == 4
    slack = 6 / scale + 2  # blur + dilation + rounding of the downscale
    lo = np.array([150 - slack, 100 - slack, 190, 140])
    hi = np.array([150, 100, 190 + slack, 140 + slack])
    around_new = np.all((result.boxes >= lo) & (result.boxes <= hi), axis=1)
    assert around_new.any(), result.boxes
    assert np.all(result.boxes[:, 2] <= W) and np.all(result.boxes[:, 3] <= H)


def test_bgr_input_accepted() -> None:
    md = FrameDiffMotion()
    md.detect(np.dstack([scene(50)] * 3))
    assert md.detect(np.dstack([scene(150)] * 3)).moving


def test_change_below_threshold_is_not_motion() -> None:
    md = FrameDiffMotion(threshold=0.002)
    md.detect(scene())
    frame = scene()
    frame[10:13, 10:13] = 250  # 9 changed pixels of 76800 ~ 0.0001
    result = md.detect(frame)
    assert 0 < result.intensity < 0.002
    assert not result.moving


def test_small_brightness_noise_is_not_motion() -> None:
    rng = np.random.default_rng(0)
    md = FrameDiffMotion()
    md.detect(scene())
    noisy = np.clip(scene().astype(int) + rng.integers(-6, 7, (H, W)), 0, 255).astype(np.uint8)
    assert not md.detect(noisy).moving


def test_threshold_zero_disables_gate() -> None:
    md = FrameDiffMotion(threshold=0)
    for _ in range(3):
        result = md.detect(scene(50))
        assert result.moving
        assert result.boxes.tolist() == [[0, 0, W, H]]


def test_reset_and_resolution_change_restart_background() -> None:
    md = FrameDiffMotion()
    md.detect(scene())
    assert not md.detect(scene()).moving
    md.reset()
    assert md.detect(scene()).moving
    assert md.detect(np.zeros((100, 100), np.uint8)).moving  # new size: unknown yet


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": -0.1},
        {"threshold": 1.5},
        {"threshold": float("nan")},
        {"threshold": "abc"},
        {"scale": 0},
        {"scale": -1},
        {"scale": 2},
        {"alpha": 0},
        {"pixel_threshold": 0},
        {"blur": 4},
    ],
)
def test_invalid_parameters(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=repr(next(iter(kwargs.values())))[:3]):
        FrameDiffMotion(**kwargs)


def test_invalid_images() -> None:
    md = FrameDiffMotion()
    with pytest.raises(ValueError, match="uint8"):
        md.detect(np.zeros((10, 10), np.float32))
    with pytest.raises(ValueError, match="shape"):
        md.detect(np.zeros((10, 10, 4), np.uint8))


def test_boxes_are_traced_only_when_asked_for_and_are_those_of_the_mask(monkeypatch) -> None:
    """Tracing the mask (dilate + contours) is half the gate's cost and most frames never use
    the boxes (issue 10): detect() leaves it to the first access of ``boxes``, which gives
    what tracing the same mask at once gives."""
    traced = []
    real = FrameDiffMotion._boxes

    def spy(self, mask, shape):
        traced.append(mask.copy())
        return real(self, mask, shape)

    monkeypatch.setattr(FrameDiffMotion, "_boxes", spy)
    md = FrameDiffMotion()
    md.detect(scene(50))
    result = md.detect(scene(150))
    assert result.moving and traced == []
    boxes = result.boxes
    assert len(traced) == 1 and result.boxes is boxes  # traced once, kept
    md.detect(scene(160))  # the next frame does not disturb the first one's mask
    assert np.array_equal(real(md, traced[0], (H, W)), boxes)
    assert len(boxes) >= 1


def test_noise_below_the_threshold_costs_no_tracing(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(FrameDiffMotion, "_boxes", lambda *a: calls.append(1) or np.zeros((0, 4)))
    md = FrameDiffMotion(threshold=0.05)
    md.detect(scene(50))
    result = md.detect(scene(60, size=20))  # some change, well under 5 % of the picture
    assert 0 < result.intensity < 0.05 and not result.moving
    assert calls == []
