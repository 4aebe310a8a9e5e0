"""Lazy pixels: the motion gate reads the decoder's luma plane; BGR is made only when needed."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from tests.conftest import shared_file
from videodetector.core.models import YuNetDetector
from videodetector.democlip import Walker, pick_sprites, write_clip
from videodetector.detector.config import parse_config
from videodetector.detector.pipeline import CameraSpec, FacePipeline
from videodetector.detector.video.pixels import (
    ArrayPixels,
    DecodedPixels,
    luma_plane,
    stretch_luma,
)
from videodetector.detector.video.source import Frame, open_video, parse_source


def first_frame(path: str) -> av.VideoFrame:
    with av.open(path) as container:
        return next(container.decode(video=0))


@pytest.fixture(scope="module")
def late_walker_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """1280x720 yuv420p: an empty room for 1.5 s, then a person walks across."""
    (sprite,) = pick_sprites(1)
    path = tmp_path_factory.mktemp("pixels") / "late.mp4"
    return str(write_clip(path, [Walker(sprite, 1.5, 3.0, 200)], seconds=3.0, size=(1280, 720)))


def test_luma_of_a_limited_range_frame_matches_the_bgr_grey(late_walker_clip):
    frame = first_frame(late_walker_clip)
    assert frame.format.name == "yuv420p"
    grey = cv2.cvtColor(frame.to_ndarray(format="bgr24"), cv2.COLOR_BGR2GRAY)
    luma = luma_plane(frame)
    assert luma is not None and luma.shape == grey.shape and luma.dtype == np.uint8
    assert np.abs(luma.astype(int) - grey).mean() < 2.0  # range stretched like the conversion


@pytest.mark.media
def test_luma_of_a_full_range_frame_is_the_plane_itself():
    frame = first_frame(str(shared_file("clips_faces/mpf_ff-region-face-motion.avi")))
    assert frame.format.name == "yuvj420p"
    luma = luma_plane(frame)
    assert luma is not None
    assert np.array_equal(luma, frame.to_ndarray(format="gray"))


def test_luma_is_the_decoded_plane_unstretched_and_converts_nothing(late_walker_clip):
    """Issue 10: the motion gate gets the plane as decoded (a view, no 720p LUT pass) and
    whether it is full range; stretched, it is ``gray()``."""
    frame = first_frame(late_walker_clip)
    pixels = DecodedPixels(frame)
    luma, full = pixels.luma()
    assert not full and luma.shape == (720, 1280) and not pixels.converted
    assert np.shares_memory(luma, np.frombuffer(frame.planes[0], np.uint8))  # no copy
    assert np.array_equal(stretch_luma(luma), pixels.gray())
    grey, full = pixels.luma()
    assert full and grey is pixels.gray()  # once grey exists it is the answer
    turned = DecodedPixels(frame, 270).luma()[0]
    assert turned.shape == (1280, 720) and np.array_equal(turned, np.rot90(luma))
    assert ArrayPixels(np.zeros((4, 6, 3), np.uint8)).luma()[1] is True


def test_formats_without_a_luma_plane_fall_back_to_the_bgr_grey():
    bgr = np.random.default_rng(1).integers(0, 255, (48, 64, 3), np.uint8)
    frame = av.VideoFrame.from_ndarray(bgr, format="bgr24")
    assert luma_plane(frame) is None
    pixels = DecodedPixels(frame)
    assert np.array_equal(pixels.gray(), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    luma, full = DecodedPixels(frame).luma()
    assert full and np.array_equal(luma, pixels.gray())


def test_decoded_pixels_convert_once_on_first_use_and_rotate_both_images(late_walker_clip):
    frame = first_frame(late_walker_clip)
    pixels = DecodedPixels(frame, 90)
    assert pixels.gray().shape == (1280, 720)  # turned, and still no BGR made
    assert not pixels.converted and pixels.convert_seconds == 0.0
    bgr = pixels.bgr()
    assert bgr.shape == (1280, 720, 3) and pixels.converted and pixels.convert_seconds > 0
    assert pixels.bgr() is bgr
    with pytest.raises(ValueError, match="clockwise"):
        DecodedPixels(frame, 45)


def test_frame_wraps_an_array_and_is_immutable():
    img = np.zeros((4, 6, 3), np.uint8)
    f = Frame(img, 3, 0.12, 5.0)
    assert f.image is img and f.gray.shape == (4, 6) and isinstance(f.pixels, ArrayPixels)
    g = f.replace(index=7, pts=1.0)
    assert (g.index, g.pts, g.wall_time, g.pixels) == (7, 1.0, 5.0, f.pixels)
    with pytest.raises(AttributeError):
        f.index = 4  # type: ignore[misc]
    with pytest.raises(ValueError, match="exactly one"):
        Frame(None, 0, 0.0, 0.0)


def test_frames_the_motion_gate_stops_are_never_converted(late_walker_clip):
    cfg = parse_config(["--source", late_walker_clip, "--camid", "c1", "--api-url",
                        "127.0.0.1:9", "--api-token", "t"])
    pipe = FacePipeline(cfg, CameraSpec("c1", late_walker_clip), YuNetDetector(), live=False)
    converted = 0
    snaps = []
    with open_video(parse_source(late_walker_clip)) as stream:
        for frame in stream:
            snaps += pipe.process(frame)
            converted += frame.pixels.converted  # type: ignore[attr-defined]
    snaps += pipe.finish()
    assert len(snaps) == 1
    # only frames the detector looked at (and found a face in: see
    # test_moving_frames_without_a_face_are_never_converted_at_full_size) became BGR;
    # the empty room (1.5 s) did not
    assert 0 < converted <= pipe.stats.detector_runs
    assert pipe.stats.frames - converted >= 30
