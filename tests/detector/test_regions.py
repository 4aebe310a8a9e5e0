"""Where the detector looks (--detect-regions): crops from motion and tracked faces, and the
mapping of the faces found in a crop back to full-frame coordinates (real YuNet)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import shared_file
from videodetector.core.models import YuNetDetector
from videodetector.democlip import Walker, pick_sprites, write_clip
from videodetector.detector.config import parse_config
from videodetector.detector.pipeline import CameraSpec, FacePipeline
from videodetector.detector.regions import (
    RegionPolicy,
    align_region,
    any_in_image,
    area,
    detection_regions,
    grow_boxes,
    input_region,
    merge_regions,
)
from videodetector.detector.video.source import open_video, parse_source

W, H = 1280, 720


@st.composite
def boxes(draw: st.DrawFn, max_n: int = 6) -> np.ndarray:
    n = draw(st.integers(0, max_n))
    out = []
    for _ in range(n):
        x1 = draw(st.floats(-50, W - 1))
        y1 = draw(st.floats(-50, H - 1))
        out.append([x1, y1, x1 + draw(st.floats(1, 400)), y1 + draw(st.floats(1, 300))])
    return np.array(out, np.float64).reshape(-1, 4)


def inside(box: np.ndarray, region: tuple[int, int, int, int]) -> bool:
    return bool(region[0] <= box[0] and region[1] <= box[1] and box[2] <= region[2]
                and box[3] <= region[3])


def clipped(box: np.ndarray) -> np.ndarray:
    return np.clip(box, 0, [W, H, W, H])


@settings(max_examples=150, deadline=None)
@given(motion=boxes(), tracked=boxes(3))
def test_regions_hold_every_grown_box_do_not_overlap_and_stay_small(motion, tracked):
    policy = RegionPolicy()
    regions = detection_regions(motion, tracked, W, H, policy)
    if regions is None:
        return
    assert 1 <= len(regions) <= policy.max_regions
    assert sum(area(r) for r in regions) <= policy.max_area * W * H
    for r in regions:
        assert 0 <= r[0] < r[2] <= W and 0 <= r[1] < r[3] <= H
    for i, a in enumerate(regions):  # no face can be cut in two by a border between crops
        for b in regions[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])
    grown = [*grow_boxes(motion, policy.motion_grow, policy.motion_pad),
             *grow_boxes(tracked, policy.track_grow, policy.track_pad)]
    for box in grown:  # every moving thing and tracked face, with its margin, is looked at
        box = clipped(box)
        if box[2] > box[0] and box[3] > box[1]:
            assert any(inside(box, r) for r in regions), (box, regions)


def test_a_small_moving_face_gives_a_small_crop_and_a_whole_frame_gives_none():
    face = np.array([[600, 300, 660, 380]], np.float32)
    regions = detection_regions(face, face, W, H)
    assert regions is not None and len(regions) == 1
    assert area(regions[0]) < 0.05 * W * H
    assert detection_regions(np.array([[0, 0, W, H]]), np.zeros((0, 4)), W, H) is None
    assert detection_regions(np.zeros((0, 4)), np.zeros((0, 4)), W, H) is None  # look at all
    many = np.array([[x, 10, x + 4, 14] for x in range(0, 1280, 10)], np.float32)
    assert detection_regions(many, np.zeros((0, 4)), W, H) is None  # noise everywhere


def test_far_apart_faces_get_one_crop_each():
    a, b = [100, 100, 160, 180], [1000, 500, 1060, 580]
    regions = detection_regions(np.array([a, b]), np.zeros((0, 4)), W, H)
    assert regions is not None and len(regions) == 2


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 200), st.integers(1, 80),
                          st.integers(1, 80)), max_size=8))
def test_merge_regions_covers_the_same_pixels_without_overlaps(rects):
    regions = [(x, y, x + w, y + h) for x, y, w, h in rects]
    merged = merge_regions(regions)
    for r in regions:
        assert any(inside(np.array(r), m) for m in merged)
    for i, a in enumerate(merged):
        for b in merged[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


@settings(max_examples=150, deadline=None)
@given(x=st.integers(0, 1200), y=st.integers(0, 650), w=st.integers(1, 400),
       h=st.integers(1, 300), dx=st.integers(0, 300), dy=st.integers(0, 200),
       factor=st.sampled_from([1.0, 1.5, 2.0, 2.25, 3.0]))
def test_input_region_maps_back_over_the_full_frame_region(x, y, w, h, dx, dy, factor):
    """A crop in the detector's input, mapped back (input * factor + offset), covers the part
    of the full-frame region inside the input, and stays inside the input."""
    in_w, in_h = int((W - dx) / factor), int((H - dy) / factor)
    region = (x, y, x + w, y + h)
    sub = input_region(region, dx, dy, factor, in_w, in_h)
    inside_w, inside_h = dx + in_w * factor, dy + in_h * factor
    overlap = (max(x, dx), max(y, dy), min(x + w, inside_w), min(y + h, inside_h))
    if overlap[2] <= overlap[0] or overlap[3] <= overlap[1]:
        assert sub is None
        return
    assert sub is not None
    assert 0 <= sub[0] < sub[2] <= in_w and 0 <= sub[1] < sub[3] <= in_h
    back = (sub[0] * factor + dx, sub[1] * factor + dy, sub[2] * factor + dx,
            sub[3] * factor + dy)
    assert back[0] <= overlap[0] + 1e-9 and back[1] <= overlap[1] + 1e-9
    assert back[2] >= overlap[2] - 1e-9 and back[3] >= overlap[3] - 1e-9


def test_region_policy_rejects_bad_values():
    with pytest.raises(ValueError, match="motion_pad"):
        RegionPolicy(motion_pad=-1)
    with pytest.raises(ValueError, match="max_area"):
        RegionPolicy(max_area=0)
    with pytest.raises(ValueError, match="image size"):
        detection_regions(np.zeros((0, 4)), np.zeros((0, 4)), 0, 10)


@pytest.mark.media
def test_faces_found_in_a_crop_map_back_onto_the_whole_frame_detection():
    """Real YuNet: the faces of mpf_video_01's first frame, found in crops around them at the
    whole frame's scale, land where the whole-frame detection puts them."""
    with open_video(parse_source(str(shared_file("clips_faces/mpf_video_01.mp4")))) as stream:
        image = next(iter(stream)).image
    detector = YuNetDetector()
    whole = detector.detect(image)
    assert len(whole) >= 3
    scale = detector.input_scale(*image.shape[:2])
    for box in whole.xyxy:
        regions = detection_regions(box[None], np.zeros((0, 4)), image.shape[1], image.shape[0])
        assert regions is not None
        x1, y1, x2, y2 = regions[0]
        found = detector.detect(image[y1:y2, x1:x2], scale=scale).shifted(x1, y1)
        best = np.abs(found.xyxy - box).max(axis=1).min()
        assert best < 4.0, (box, found.xyxy)


@settings(max_examples=150, deadline=None)
@given(x=st.integers(0, 1200), y=st.integers(0, 650), w=st.integers(1, 400),
       h=st.integers(1, 400), step=st.sampled_from([32.0, 18.0, 16.0, 8.5]))
def test_align_region_grows_onto_the_grid_by_less_than_a_step(x, y, w, h, step):
    region = (x, y, min(W, x + w), min(H, y + h))
    x1, y1, x2, y2 = align_region(region, step, W, H)
    assert x1 <= region[0] and y1 <= region[1] and x2 >= region[2] and y2 >= region[3]
    assert region[0] - x1 < step and region[1] - y1 < step
    assert x2 - region[2] < step + 1 and y2 - region[3] < step + 1
    assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H
    if step == int(step):  # an integer grid: the corners lie on it (or on the image's edge)
        assert x1 % step == 0 and y1 % step == 0
        assert x2 % step == 0 or x2 == W
        assert y2 % step == 0 or y2 == H


def test_align_region_rejects_bad_values():
    with pytest.raises(ValueError, match="step"):
        align_region((0, 0, 10, 10), 0.0, W, H)
    with pytest.raises(ValueError, match="outside"):
        align_region((W + 40, 0, W + 80, 10), 32.0, W, H)


@pytest.mark.media
def test_faces_in_grid_aligned_crops_get_the_whole_frames_landmarks_and_scores():
    """Real YuNet on mpf_video_01: a crop around the tracked faces whose corner lies on the
    grid of YuNet's coarsest stride (32 px at the detector's scale) puts every face on the
    same cells as the whole frame: landmarks within 1 px and scores within 0.02 of the
    whole-frame run (what the quality score and the best-frame choice are made of); the
    same crops off the grid move landmarks by several pixels."""
    with open_video(parse_source(str(shared_file("clips_faces/mpf_video_01.mp4")))) as stream:
        images = [f.image for i, f in zip(range(33), stream, strict=False)
                  if i % 8 == 0]
    detector = YuNetDetector()
    errors: dict[bool, list[float]] = {False: [], True: []}
    for image in images:
        h, w = image.shape[:2]
        whole = detector.detect(image)
        scale = detector.input_scale(h, w)
        regions = detection_regions(np.zeros((0, 4)), whole.xyxy, w, h)
        assert regions is not None and len(whole) == 5
        for aligned in (False, True):
            for region in regions:
                x1, y1, x2, y2 = align_region(region, 32 / scale, w, h) if aligned else region
                found = detector.detect(image[y1:y2, x1:x2], scale=scale).shifted(x1, y1)
                for i, box in enumerate(whole.xyxy):
                    if not (x1 <= box[0] and box[2] <= x2 and y1 <= box[1] and box[3] <= y2):
                        continue
                    j = int(np.abs(found.xyxy - box).max(axis=1).argmin())
                    errors[aligned].append(
                        float(np.abs(found.landmarks[j] - whole.landmarks[i]).max()))
                    if aligned:
                        assert abs(found.score[j] - whole.score[i]) < 0.02
    assert len(errors[True]) == len(errors[False]) == 5 * len(images)
    assert max(errors[True]) < 1.0
    assert np.mean(errors[False]) > 3 * np.mean(errors[True])


@pytest.fixture(scope="module")
def walkers_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two people crossing a static 1280x720 room, far apart (crops pay off)."""
    a, b = pick_sprites(2)
    path = tmp_path_factory.mktemp("regions") / "walkers.mp4"
    return str(write_clip(path, [Walker(a, 0.0, 3.0, 60), Walker(b, 0.5, 3.0, 450)],
                          seconds=3.0, size=(1280, 720)))


def run(path: str, *extra: str) -> tuple[FacePipeline, list]:
    cfg = parse_config(["--source", path, "--camid", "c1", "--api-url", "127.0.0.1:9",
                        "--api-token", "t", *extra])
    pipe = FacePipeline(cfg, CameraSpec("c1", path), YuNetDetector(), live=False)
    snaps = []
    with open_video(parse_source(path)) as stream:
        for fr in stream:
            snaps += pipe.process(fr)
    return pipe, snaps + pipe.finish()


def test_crops_find_the_same_people_as_whole_frames(walkers_clip):
    whole, whole_snaps = run(walkers_clip, "--detect-regions", "0")
    crops, crop_snaps = run(walkers_clip)
    assert whole.stats.region_runs == 0
    assert crops.stats.region_runs > crops.stats.detector_runs // 2  # crops were used
    assert crops.stats.detector_runs == whole.stats.detector_runs
    assert len(crop_snaps) == len(whole_snaps) == 2
    for a, b in zip(sorted(whole_snaps, key=lambda s: s.track_id),
                    sorted(crop_snaps, key=lambda s: s.track_id), strict=True):
        # a face of the same quality and size (the frame chosen may differ: the walkers'
        # faces are the same picture all along)
        assert abs(a.score - b.score) <= 0.3
        size = np.subtract(a.bbox[2:], a.bbox[:2]), np.subtract(b.bbox[2:], b.bbox[:2])
        assert np.abs(size[0] - size[1]).max() <= 6


def test_crops_inside_rot_and_rescale_height_find_the_same_faces(walkers_clip):
    """With --rot (an offset) and --rescale-height (a factor) the crops are mapped into the
    detector's input and back: the same people, boxes of the same size."""
    extra = ("--rot", "1100x700+100+10", "--rescale-height", "540")
    whole, whole_snaps = run(walkers_clip, "--detect-regions", "0", *extra)
    crops, crop_snaps = run(walkers_clip, *extra)
    assert crops.stats.region_runs > crops.stats.detector_runs // 2
    assert len(crop_snaps) == len(whole_snaps) == 2
    for a, b in zip(sorted(whole_snaps, key=lambda s: s.track_id),
                    sorted(crop_snaps, key=lambda s: s.track_id), strict=True):
        assert abs(a.score - b.score) <= 0.3
        size = np.subtract(a.bbox[2:], a.bbox[:2]), np.subtract(b.bbox[2:], b.bbox[:2])
        assert np.abs(size[0] - size[1]).max() <= 6


@settings(max_examples=60, deadline=None)
@given(x=st.floats(-2000, 2000), y=st.floats(-2000, 2000), side=st.floats(1, 400))
def test_a_tracked_face_is_in_the_image_when_its_crop_would_overlap_it(x, y, side):
    """any_in_image is True exactly when detection_regions would make a crop of that face
    (its box grown by the policy, clipped to the image, non-empty)."""
    box = np.array([[x, y, x + side, y + side]])
    crops = detection_regions(np.zeros((0, 4)), box, 640, 480)
    grown = grow_boxes(box, 0.5, 16.0)[0]
    overlaps = grown[0] < 640 and grown[2] > 0 and grown[1] < 480 and grown[3] > 0
    assert any_in_image(box, 640, 480) == overlaps
    if crops is not None:  # (None also when the crop is over 60 % of the image)
        assert bool(crops) == overlaps
    assert not any_in_image(np.zeros((0, 4)), 640, 480)
    with pytest.raises(ValueError, match="size"):
        any_in_image(box, 0, 480)
