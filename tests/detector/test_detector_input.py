"""Issue 10: the detector's input comes from the decoder at the detector's size
(``Pixels.bgr_at``); the full-size BGR image is made only for frames with a face."""

from __future__ import annotations

import math

import av
import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import shared_file
from videodetector.core.geometry import parse_geometry
from videodetector.core.models import YuNetDetector
from videodetector.democlip import Walker, background, pick_sprites, render_frame
from videodetector.detector.config import parse_config
from videodetector.detector.pipeline import (
    CameraSpec,
    FacePipeline,
    RegionError,
    detection_scale,
    rot_box,
    scaled_box,
)
from videodetector.detector.video.pixels import ArrayPixels, DecodedPixels
from videodetector.detector.video.source import Frame, open_video, parse_source

BASE = ["--camid", "c1", "--api-url", "127.0.0.1:9", "--api-token", "t"]
SIZE = (1280, 720)


@pytest.fixture(scope="module")
def detector() -> YuNetDetector:
    return YuNetDetector()


@pytest.fixture(scope="module")
def sprite() -> np.ndarray:
    return pick_sprites(1, size=160)[0]


class CountingPixels(DecodedPixels):
    """DecodedPixels that count their full-size and scaled BGR conversions."""

    def __init__(self, frame: av.VideoFrame, clockwise: int = 0) -> None:
        super().__init__(frame, clockwise)
        self.full = 0
        self.scaled = 0

    def bgr(self) -> np.ndarray:
        self.full += not self.converted
        return super().bgr()

    def bgr_at(self, scale: float) -> np.ndarray:
        self.scaled += 1
        return super().bgr_at(scale)


def decoded(bgr: np.ndarray, fmt: str = "yuv420p") -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format=fmt)


def pipeline(detector: YuNetDetector, *extra: str, rot: str | None = None) -> FacePipeline:
    args = [*(["--rot", rot] if rot else []), *extra]
    cfg = parse_config(["--source", "x.mp4", *BASE, *args])
    return FacePipeline(cfg, CameraSpec("c1", "x.mp4", cfg.roi, cfg.rot), detector, live=False)


def scene(walkers: list[Walker], t: float) -> np.ndarray:
    return render_frame(background(*SIZE), walkers, t)


# -- geometry ----------------------------------------------------------------------------

def test_rot_box_is_the_rot_clipped_to_the_frame():
    assert rot_box(None, 640, 480) == (0, 0, 640, 480)
    assert rot_box(parse_geometry("800x600+100+50"), 640, 480) == (100, 50, 640, 480)
    with pytest.raises(RegionError, match="outside"):
        rot_box(parse_geometry("10x10+700+0"), 640, 480)


def test_detection_scale_follows_rescale_height_and_the_detectors_own_scale(detector):
    fit = detector.input_scale
    assert detection_scale((0, 0, 1280, 720), 0, fit) == 0.5
    assert detection_scale((0, 0, 640, 480), 0, fit) == 1.0
    assert detection_scale((0, 0, 360, 288), 0, fit) == pytest.approx(640 / 360)
    assert detection_scale((100, 50, 900, 650), 0, fit) == 0.8  # the ROT crop is what fits
    # --rescale-height (the daemon then gives the detector max_side=None: scale 1 after it)
    def as_is(height: int, width: int) -> float:
        return 1.0

    assert detection_scale((0, 0, 1920, 1080), 540, as_is) == 0.5
    assert detection_scale((0, 0, 1920, 1080), 1440, as_is) == 1.0
    assert detection_scale((0, 0, 1920, 1080), 540, fit) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="empty"):
        detection_scale((5, 5, 5, 9), 0, fit)
    with pytest.raises(ValueError, match="scale"):
        detection_scale((0, 0, 10, 10), 0, lambda h, w: math.nan)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), width=st.integers(1, 4000), height=st.integers(1, 3000),
       scale=st.floats(0.01, 1.0))
def test_scaled_box_holds_the_box_inside_the_scaled_image(data, width, height, scale):
    x1 = data.draw(st.integers(0, width - 1))
    y1 = data.draw(st.integers(0, height - 1))
    x2 = data.draw(st.integers(x1 + 1, width))
    y2 = data.draw(st.integers(y1 + 1, height))
    sw, sh = max(1, round(width * scale)), max(1, round(height * scale))
    a, b, c, d = scaled_box((x1, y1, x2, y2), scale, sw, sh)
    assert 0 <= a < c <= sw and 0 <= b < d <= sh
    assert a <= x1 * scale and b <= y1 * scale  # grown, not shrunk, where the image allows
    assert c >= min(sw, x2 * scale) - 1e-9 and d >= min(sh, y2 * scale) - 1e-9


# -- no full-size conversion without a face ----------------------------------------------

@pytest.mark.parametrize("regions", ["0", "1"])
def test_moving_frames_without_a_face_are_never_converted_at_full_size(detector, regions):
    """A grey block crosses the room: every frame moves, the detector runs on each (whole,
    or on crops around the block) and finds nothing, and not one frame is converted to BGR at
    full size (before issue 10 each was)."""
    block = np.full((160, 160, 3), 90, np.uint8)
    walkers = [Walker(block, 0.0, 1.0, 300)]
    # --search-period 1: the detector runs on every moving frame (what is counted here)
    pipe = pipeline(detector, "--detect-regions", regions, "--search-period", "1")
    frames = [CountingPixels(decoded(scene(walkers, i / 25))) for i in range(10)]
    for i, pixels in enumerate(frames):
        assert pipe.process(Frame(index=i, pts=i / 25, pixels=pixels)) == []
    assert pipe.stats.detector_runs >= 8 and pipe.stats.faces_detected == 0
    assert (pipe.stats.region_runs > 0) == (regions == "1")
    assert [p.full for p in frames] == [0] * len(frames)
    assert not any(p.converted for p in frames)
    assert sum(p.scaled for p in frames) == pipe.stats.detector_runs


@pytest.mark.media
def test_the_cockatoo_is_detected_on_without_any_full_size_conversion(detector):
    """yuv444p 1280x720 with motion everywhere (the conversion FFmpeg has no fast path for)."""
    path = str(shared_file("clips_noface/imageio_cockatoo.mp4"))
    pipe = pipeline(detector, "--search-period", "1")  # YuNet on every frame
    converted = 0
    with open_video(parse_source(path)) as stream:
        for frame in stream:
            assert pipe.process(frame) == []
            converted += frame.pixels.converted
            if frame.index >= 24:
                break
    assert pipe.stats.detector_runs >= 20 and converted == 0


def test_a_frame_with_a_face_is_converted_at_full_size_for_its_snapshot(detector, sprite):
    walkers = [Walker(sprite, 0.0, 4.0, 250)]
    pipe = pipeline(detector, "-r", "0")
    frames = [CountingPixels(decoded(scene(walkers, i / 25))) for i in range(8)]
    snaps, found = [], []
    for i, pixels in enumerate(frames):
        before = pipe.stats.faces_detected
        snaps += pipe.process(Frame(index=i, pts=i / 25, pixels=pixels))
        found.append(pipe.stats.faces_detected > before)
    snaps += pipe.finish()
    assert len(snaps) == 1
    # only frames whose detector run found the face (quality, best frame) are full size
    assert sum(p.full for p in frames) >= 1
    assert all(p.full <= hit for p, hit in zip(frames, found, strict=True))
    jpeg = cv2.imdecode(np.frombuffer(snaps[0].frame_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert jpeg.shape == (720, 1280, 3)


# -- the same faces as from the full-size image ------------------------------------------

@pytest.mark.parametrize("clockwise", [0, 90])
@pytest.mark.parametrize("args", [(), ("--rot", "900x600+200+60"), ("--rescale-height", "540"),
                                  ("--rot", "1000x700+100+0", "--rescale-height", "480")])
def test_scaled_input_finds_the_faces_of_the_full_size_image(detector, sprite, clockwise, args):
    """Whole frame, ROT, --rescale-height and a turned source: the faces found on the frame
    converted at the detector's size are those found on the full-size image (resized by
    OpenCV as before), within a few pixels."""
    walkers = [Walker(sprite, 0.0, 4.0, 250), Walker(sprite, 0.0, 4.0, 60, False)]
    image = scene(walkers, 1.3)
    frame = decoded(image if clockwise == 0 else np.ascontiguousarray(np.rot90(image, -1)))
    fast = DecodedPixels(frame, (360 - clockwise) % 360)
    full = ArrayPixels(DecodedPixels(frame, (360 - clockwise) % 360).bgr())
    if args[:1] == ("--rescale-height",):
        det = YuNetDetector(max_side=None)  # as the daemon builds it with --rescale-height
    else:
        det = detector
    a = pipeline(det, *args)._detect(fast)
    b = pipeline(det, *args)._detect(full)
    assert len(a) == len(b) == 2 and not fast.converted
    order_a, order_b = np.argsort(a.xyxy[:, 0]), np.argsort(b.xyxy[:, 0])
    assert np.abs(a.xyxy[order_a] - b.xyxy[order_b]).max() < 4.0
    assert np.abs(a.landmarks[order_a] - b.landmarks[order_b]).max() < 4.0


def test_a_small_frame_is_enlarged_from_the_full_size_image_as_before(detector, sprite):
    """360x288 (GRID) is enlarged for the detector: from the full-size image, as before."""
    small = render_frame(background(360, 288), [Walker(sprite[::2, ::2], 0.0, 4.0, 100)], 1.0)
    pixels = CountingPixels(decoded(small))
    dets = pipeline(detector)._detect(pixels)
    assert pixels.full == 1 and pixels.scaled == 0 and len(dets) == 1
    same = detector.detect(pixels.bgr())  # the detector enlarges it itself, as before
    assert np.array_equal(dets.xyxy, same.xyxy)


def test_rot_outside_the_frame_is_still_a_region_error(detector):
    pipe = pipeline(detector, rot="100x100+2000+0")
    with pytest.raises(RegionError):
        pipe._detect(DecodedPixels(decoded(np.zeros((720, 1280, 3), np.uint8))))
