"""Issue 10, crops: rectangles of a decoded frame converted alone are the whole frame's
conversion, cut, bit for bit (what a detector that enlarges a --rot crop gets)."""

from __future__ import annotations

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import shared_file
from videodetector.democlip import Walker, pick_sprites, write_clip
from videodetector.detector.video.pixels import (
    CROP_FORMATS,
    ArrayPixels,
    DecodedPixels,
    check_box,
    crop_frame,
    even_box,
)

SHARED_CLIPS = ["clips_faces/mpf_video_01.mp4", "clips_faces/mpf_ff-region-face-motion.avi",
                "clips_faces/grid_bbaf2n.mpg",
                "clips_smallfaces/mpf_five-second-marathon-clip.mkv"]


@st.composite
def boxes(draw, width: int, height: int) -> tuple[int, int, int, int]:
    x1 = draw(st.integers(0, width - 1))
    y1 = draw(st.integers(0, height - 1))
    return x1, y1, draw(st.integers(x1 + 1, width)), draw(st.integers(y1 + 1, height))


def noise_frame(width: int, height: int, fmt: str, seed: int) -> av.VideoFrame:
    """Random colours (the hardest picture for a chroma mismatch), decoded-like in ``fmt``."""
    rng = np.random.default_rng(seed)
    bgr = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format=fmt)


# -- the rectangle maths ------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(data=st.data(), width=st.integers(1, 5000), height=st.integers(1, 5000))
def test_even_box_holds_the_box_in_whole_2x2_blocks_inside_the_frame(data, width, height):
    box = data.draw(boxes(width, height))
    assert check_box(box, width, height) == box
    x1, y1, x2, y2 = even_box(box, width, height)
    assert x1 % 2 == 0 and y1 % 2 == 0
    assert x2 % 2 == 0 or x2 == width
    assert y2 % 2 == 0 or y2 == height
    assert 0 <= x1 <= box[0] < box[2] <= x2 <= width
    assert 0 <= y1 <= box[1] < box[3] <= y2 <= height
    assert box[0] - x1 <= 1 and x2 - box[2] <= 1 and box[1] - y1 <= 1 and y2 - box[3] <= 1


@settings(max_examples=300, deadline=None)
@given(width=st.integers(1, 300), height=st.integers(1, 300),
       box=st.tuples(*[st.integers(-400, 400)] * 4))
def test_check_box_refuses_empty_and_outside_boxes(width, height, box):
    x1, y1, x2, y2 = box
    inside = 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    if inside:
        assert check_box(box, width, height) == box
    else:
        with pytest.raises(ValueError, match="empty or not inside"):
            check_box(box, width, height)


@pytest.mark.parametrize("box", [(0, 0, 4), (0.0, 0, 4, 4), (0, 0, 4, 4.5), (True, 0, 4, 4),
                                 "0044", (0, 0, 4, None)])
def test_check_box_wants_four_ints(box):
    with pytest.raises(ValueError, match="4 ints"):
        check_box(box, 10, 10)
    assert check_box(tuple(np.int64(v) for v in (0, 0, 4, 4)), 10, 10) == (0, 0, 4, 4)


def test_crop_frame_refuses_other_formats_and_odd_starts():
    with pytest.raises(ValueError, match="yuv444p"):
        crop_frame(noise_frame(8, 8, "yuv444p", 0), (0, 0, 4, 4))
    with pytest.raises(ValueError, match="even"):
        crop_frame(noise_frame(8, 8, "yuv420p", 0), (1, 0, 4, 4))
    with pytest.raises(ValueError, match="empty"):
        crop_frame(noise_frame(8, 8, "yuv420p", 0), (2, 2, 2, 4))


# -- the same pixels as the whole frame's conversion -------------------------------------

FORMATS = st.sampled_from(sorted(CROP_FORMATS))


@settings(max_examples=150, deadline=None)
@given(data=st.data(), width=st.integers(1, 65), height=st.integers(1, 45), fmt=FORMATS,
       seed=st.integers(0, 2**32 - 1), full_range=st.booleans())
def test_a_crop_is_the_whole_conversion_cut_bit_for_bit(data, width, height, fmt, seed,
                                                        full_range):
    """Any box, odd coordinates included, of a random-colour frame with even sides in each
    format of CROP_FORMATS (limited or full range): the same pixels, and nothing converted
    whole."""
    width, height = 2 * width, 2 * height
    frame = noise_frame(width, height, fmt, seed)
    if full_range:
        frame.color_range = 2
    pixels = DecodedPixels(frame)
    x1, y1, x2, y2 = box = data.draw(boxes(width, height))
    crop = pixels.bgr_crop(*box)
    assert crop.shape == (y2 - y1, x2 - x1, 3) and crop.dtype == np.uint8
    assert (not pixels.converted) == (box != (0, 0, width, height))
    assert np.array_equal(crop, DecodedPixels(frame).bgr()[y1:y2, x1:x2])


@settings(max_examples=40, deadline=None)
@given(data=st.data(), width=st.integers(2, 60), height=st.integers(2, 60),
       fmt=st.sampled_from(["yuv444p", "yuvj422p", "nv12", "gray", "bgr24", "yuv420p"]),
       clockwise=st.sampled_from([0, 90, 180, 270]))
def test_other_formats_odd_sizes_and_turned_frames_crop_the_whole_image(data, width, height,
                                                                        fmt, clockwise):
    """nv12 and odd-sized yuv420p frames convert on swscale's general path (chroma
    interpolated between rows): their crops are cut from the whole image, as are those of
    other formats and of turned frames."""
    frame = noise_frame(width, height, fmt, 1) if fmt != "bgr24" else \
        av.VideoFrame.from_ndarray(np.random.default_rng(1).integers(
            0, 256, (height, width, 3), dtype=np.uint8), format="bgr24")
    pixels = DecodedPixels(frame, clockwise)
    w, h = pixels.size
    x1, y1, x2, y2 = box = data.draw(boxes(w, h))
    full = DecodedPixels(frame, clockwise).bgr()
    assert np.array_equal(pixels.bgr_crop(*box), full[y1:y2, x1:x2])
    alone = fmt in CROP_FORMATS and clockwise == 0 and width % 2 == 0 and height % 2 == 0
    assert pixels.converted == (not alone or box == (0, 0, w, h))


def real_frames(path: str, every: int = 7, limit: int = 12) -> list[av.VideoFrame]:
    out = []
    with av.open(path) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % every == 0:
                out.append(frame)
            if len(out) >= limit:
                break
    return out


def assert_crops_match(frames: list[av.VideoFrame], n: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    checked = 0
    for frame in frames:
        full = DecodedPixels(frame).bgr()
        pixels = DecodedPixels(frame)
        h, w = full.shape[:2]
        for _ in range(n):
            x1, y1 = int(rng.integers(0, w - 1)), int(rng.integers(0, h - 1))
            x2 = int(rng.integers(x1 + 1, min(w, x1 + 400) + 1))
            y2 = int(rng.integers(y1 + 1, min(h, y1 + 400) + 1))
            assert np.array_equal(pixels.bgr_crop(x1, y1, x2, y2), full[y1:y2, x1:x2]), \
                (frame.format.name, w, h, (x1, y1, x2, y2))
            checked += 1
        assert not pixels.converted
    return checked


@pytest.fixture(scope="module")
def walker_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """1280x720 yuv420p H.264 (the encoder's real chroma) with a person walking across."""
    (sprite,) = pick_sprites(1)
    path = tmp_path_factory.mktemp("crops") / "walk.mp4"
    return str(write_clip(path, [Walker(sprite, 0.0, 2.0, 200)], seconds=2.0,
                          size=(1280, 720)))


def test_crops_of_a_real_decoded_clip_are_bit_identical(walker_clip):
    frames = real_frames(walker_clip)
    assert frames[0].format.name == "yuv420p"
    full_range = [f.reformat(format="yuvj420p") for f in frames[:4]]
    assert len(frames) == 8
    assert assert_crops_match(frames + full_range, 60, 3) == 60 * 12


@pytest.mark.media
@pytest.mark.parametrize("clip", SHARED_CLIPS)
def test_crops_of_the_shared_clips_are_bit_identical(clip):
    frames = real_frames(str(shared_file(clip)))
    assert frames[0].format.name in CROP_FORMATS
    assert assert_crops_match(frames, 60, 4) == 60 * len(frames)


def test_array_pixels_crop_is_a_view_of_the_checked_box():
    image = np.random.default_rng(5).integers(0, 256, (9, 12, 3), dtype=np.uint8)
    crop = ArrayPixels(image).bgr_crop(3, 2, 11, 9)
    assert np.shares_memory(crop, image) and np.array_equal(crop, image[2:9, 3:11])
    with pytest.raises(ValueError, match="not inside"):
        ArrayPixels(image).bgr_crop(0, 0, 13, 9)
