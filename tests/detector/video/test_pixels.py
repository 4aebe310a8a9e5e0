"""Lazy pixels: the motion gate reads the decoder's luma plane; BGR is made only when needed."""

from __future__ import annotations

import os
import threading
import time

import av
import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import shared_file
from videodetector.core.models import YuNetDetector
from videodetector.democlip import Walker, pick_sprites, write_clip
from videodetector.detector.config import parse_config
from videodetector.detector.pipeline import CameraSpec, FacePipeline
from videodetector.detector.video.pixels import (
    ArrayPixels,
    DecodedPixels,
    Scaler,
    luma_plane,
    resize_bgr,
    rotate,
    scaled_size,
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


# -- bgr_at: the detector's input at its own size (issue 10) ---------------------------------

def gradient_frame(width: int, height: int, fmt: str) -> av.VideoFrame:
    """A smooth colour picture (so resampling filters agree) decoded-like, in ``fmt``."""
    x = np.linspace(0, 1, width)[None, :]
    y = np.linspace(0, 1, height)[:, None]
    bgr = np.stack([40 + 160 * x + 0 * y, 30 + 180 * y + 0 * x, 200 - 120 * (x + y) / 2],
                   axis=2).astype(np.uint8)
    frame = av.VideoFrame.from_ndarray(bgr, format="bgr24")
    return frame if fmt == "bgr24" else frame.reformat(format=fmt)


FORMATS = st.sampled_from(["yuv420p", "yuv444p", "yuvj422p", "nv12", "gray", "bgr24"])
TURNS = st.sampled_from([0, 90, 180, 270])


@settings(max_examples=40, deadline=None)
@given(width=st.integers(1, 90), height=st.integers(1, 90), scale=st.floats(0.01, 1.0),
       clockwise=TURNS, fmt=FORMATS)
def test_bgr_at_is_the_turned_frame_at_the_scaled_size(width, height, scale, clockwise, fmt):
    frame = gradient_frame(width, height, fmt)
    pixels = DecodedPixels(frame, clockwise)
    small = pixels.bgr_at(scale)
    turned = (width, height) if clockwise in (0, 180) else (height, width)
    w, h = scaled_size(*turned, scale)
    assert small.shape == (h, w, 3) and small.dtype == np.uint8
    assert pixels.bgr_at(scale) is small  # kept
    if (w, h) != turned and luma_plane(frame) is not None:
        assert not pixels.converted  # made without the full-size image
    # turning and scaling commute
    assert np.array_equal(small, rotate(DecodedPixels(frame).bgr_at(scale), clockwise))


@settings(max_examples=30, deadline=None)
@given(width=st.integers(128, 320), height=st.integers(128, 320), scale=st.floats(0.25, 1.0),
       clockwise=TURNS, fmt=FORMATS)
def test_bgr_at_looks_like_the_full_size_image_resized(width, height, scale, clockwise, fmt):
    """The same picture as cv2.INTER_AREA of the full-size image (what the detector was
    given before), up to the filters' rounding and chroma siting. (At a few pixels -- a 2x2
    frame to 1x1, or a subsampled chroma plane shrunk to 4 samples -- the filters differ a lot;
    the detector's input is hundreds of pixels wide.)"""
    frame = gradient_frame(width, height, fmt)
    small = DecodedPixels(frame, clockwise).bgr_at(scale)
    reference = resize_bgr(DecodedPixels(frame, clockwise).bgr(), scale)
    assert np.abs(small.astype(int) - reference).mean() < 4.0


def test_bgr_at_on_a_real_frame_is_one_scaled_conversion(late_walker_clip):
    frame = first_frame(late_walker_clip)
    pixels = DecodedPixels(frame)
    small = pixels.bgr_at(0.5)
    assert small.shape == (360, 640, 3) and not pixels.converted
    assert pixels.convert_seconds > 0  # the scaled conversion counts as conversion time
    full = DecodedPixels(frame).bgr()
    reference = cv2.resize(full, (640, 360), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - reference).mean() < 1.5
    assert pixels.bgr_at(1.0) is pixels.bgr() and pixels.converted  # full size: bgr() itself
    assert np.array_equal(pixels.bgr(), full)
    big = DecodedPixels(frame).bgr_at(1.25)  # enlarged: from the full-size image
    assert np.array_equal(big, cv2.resize(full, (1600, 900), interpolation=cv2.INTER_AREA))


def test_array_pixels_bgr_at_resizes_with_inter_area():
    img = np.random.default_rng(2).integers(0, 255, (45, 81, 3), np.uint8)
    pixels = ArrayPixels(img)
    assert pixels.bgr_at(1.0) is img
    small = pixels.bgr_at(1 / 3)
    assert np.array_equal(small, cv2.resize(img, (27, 15), interpolation=cv2.INTER_AREA))
    assert pixels.bgr_at(1 / 3) is small


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_scaled_size_rejects_a_scale_that_is_not_a_positive_number(scale):
    with pytest.raises(ValueError, match="scale"):
        scaled_size(640, 480, scale)
    with pytest.raises(ValueError, match="scale"):
        ArrayPixels(np.zeros((4, 4, 3), np.uint8)).bgr_at(scale)


def test_scaled_size_rounds_each_side_and_keeps_one_pixel():
    assert scaled_size(1280, 720, 0.5) == (640, 360)
    assert scaled_size(1279, 719, 0.5) == (640, 360)  # rounded like the detector's input
    assert scaled_size(1000, 3, 0.01) == (10, 1)
    with pytest.raises(ValueError, match="size"):
        scaled_size(0, 3, 0.5)


# ---------------------------------------------------------------------------
# one swscale context per stream (issue 10: a context and a thread pool per frame cost
# ~1 ms of process CPU per detector-size conversion of a 720p frame)
# ---------------------------------------------------------------------------

def paced_frames(path: str, n: int) -> list[Frame]:
    """The first ``n`` frames of ``path`` decoded as a camera read in real time is."""
    frames = []
    with open_video(parse_source(path), realtime=True) as stream:  # not file@FPS: no pacing
        for frame in stream:
            frames.append(frame)
            if len(frames) == n:
                break
    return frames


def test_frames_of_a_stream_share_its_scaler_and_convert_as_before(late_walker_clip):
    frames = paced_frames(late_walker_clip, 8)
    scalers = {id(f.pixels.scaler) for f in frames}
    assert len(scalers) == 1 and frames[0].pixels.scaler.threads == 1  # paced: one thread
    for frame in frames:  # the same pixels as PyAV's own per-frame conversion
        av_frame = frame.pixels._frame
        assert np.array_equal(frame.pixels.bgr_at(0.5), av_frame.to_ndarray(
            width=640, height=360, format="bgr24", interpolation="AREA"))
        assert np.array_equal(frame.image, av_frame.to_ndarray(format="bgr24"))


@settings(max_examples=15, deadline=None)
@given(width=st.integers(16, 200), height=st.integers(16, 200), scale=st.floats(0.1, 0.99),
       clockwise=TURNS, fmt=FORMATS, threads=st.integers(0, 2))
def test_a_shared_scaler_gives_the_pixels_of_a_fresh_one(width, height, scale, clockwise, fmt,
                                                         threads):
    """A scaler reused across sizes, formats and both outputs (its contexts set up again
    when the input changes) converts as a new one does."""
    shared = Scaler(threads)
    for w, h in ((width, height), (height, width), (width, height)):
        frame = gradient_frame(w, h, fmt)
        a = DecodedPixels(frame, clockwise, shared)
        b = DecodedPixels(frame, clockwise)
        assert np.array_equal(a.bgr_at(scale), b.bgr_at(scale))
        assert np.array_equal(a.bgr(), b.bgr())


def other_threads_cpu() -> dict[int, float]:
    """CPU seconds of this process's other live threads, by id (Linux /proc)."""
    me = threading.get_native_id()
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0]) / 1e9
        except (OSError, ValueError):
            continue  # ended meanwhile
    out.pop(me, None)
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_a_paced_stream_converts_in_its_own_thread_only(late_walker_clip):
    """No swscale thread pool (nor any other short-lived thread) works for a paced camera's
    conversions: the process's CPU for them is the converting thread's, less what threads
    alive before and after (other tests' background threads) used meanwhile. (PyAV's
    per-frame conversion started swscale's automatic threads for every frame: process CPU
    ~1.6-2x the thread's.)"""
    frames = paced_frames(late_walker_clip, 24)
    for f in frames[:2]:
        f.pixels.bgr_at(0.5)
    others0 = other_threads_cpu()
    thread0, process0 = time.thread_time(), time.process_time()
    for f in frames[2:]:
        f.pixels.bgr_at(0.5)
        f.pixels.bgr()
    thread, process = time.thread_time() - thread0, time.process_time() - process0
    others1 = other_threads_cpu()
    others = sum(cpu - others0.get(tid, 0.0) for tid, cpu in others1.items())
    assert thread > 0
    came_and_went = process - thread - others
    assert came_and_went < 0.15 * thread, (thread, process, others)


def test_scaler_rejects_negative_threads():
    with pytest.raises(ValueError, match="threads"):
        Scaler(-1)
