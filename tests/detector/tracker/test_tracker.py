"""Tracker behaviour on tiny hand-built detections (no media, no models)."""

from __future__ import annotations

import numpy as np
import pytest

from videodetector.core.detections import Detections
from videodetector.detector.tracker import Tracker


def box(cx: float, cy: float, side: float = 60.0) -> list[float]:
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def dets(*boxes: list[float], scores: list[float] | None = None) -> Detections:
    if not boxes:
        return Detections.empty()
    score = scores if scores is not None else [0.9] * len(boxes)
    return Detections(np.array(boxes, np.float32), np.array(score, np.float32))


def ids_by_det(update) -> dict[int, int]:
    """det_index -> track id for the tracks matched in this update."""
    return {t.det_index: t.id for t in update.active if t.det_index >= 0}


def test_single_moving_face_keeps_its_id():
    tr = Tracker()
    seen = set()
    for f in range(30):
        upd = tr.update(dets(box(100 + 7 * f, 200 + 2 * f)))
        if f == 0:
            assert upd.active == []  # min_hits=2: not confirmed yet
            continue
        assert len(upd.active) == 1 and upd.active[0].det_index == 0
        seen.add(upd.active[0].id)
        assert upd.ended == []
    assert seen == {1}
    track = upd.active[0]
    assert track.hits == 30 and track.missed == 0 and track.age == 29 and track.confirmed
    assert len(track.history) == 30
    # The filtered box follows the face closely once the velocity is learnt.
    assert np.allclose(track.xyxy, box(100 + 7 * 29, 200 + 2 * 29), atol=2.0)


def test_two_faces_crossing_keep_their_ids():
    tr = Tracker()
    id_of_left_starter = id_of_right_starter = None
    for f in range(40):
        a = box(100 + 8 * f, 200)  # moves right
        b = box(420 - 8 * f, 215)  # moves left, passes through a around f = 20
        upd = tr.update(dets(a, b))
        if f == 1:
            m = ids_by_det(upd)
            id_of_left_starter, id_of_right_starter = m[0], m[1]
        elif f > 1:
            assert ids_by_det(upd) == {0: id_of_left_starter, 1: id_of_right_starter}, f
    assert {id_of_left_starter, id_of_right_starter} == {1, 2}


def test_short_occlusion_keeps_the_id():
    tr = Tracker(max_missed=15)
    for f in range(10):
        upd = tr.update(dets(box(100 + 5 * f, 200)))
    tid = upd.active[0].id
    for f in range(10, 15):  # hidden for 5 frames: we look and see nothing
        upd = tr.update(dets())
        assert [t.id for t in upd.active] == [tid]
        assert upd.active[0].det_index == -1 and upd.active[0].missed == f - 9
        assert upd.ended == []
    upd = tr.update(dets(box(100 + 5 * 15, 200)))
    assert ids_by_det(upd) == {0: tid}
    assert upd.active[0].missed == 0


def test_long_disappearance_ends_the_track_and_reappearance_gets_new_id():
    tr = Tracker(max_missed=5)
    for _ in range(5):
        upd = tr.update(dets(box(200, 200)))
    assert [t.id for t in upd.active] == [1]
    ended = []
    for _ in range(6):
        upd = tr.update(dets())
        ended += upd.ended
    assert [t.id for t in ended] == [1]
    assert ended[0].missed == 6 and ended[0].hits == 5
    assert upd.active == []
    tr.update(dets(box(200, 200)))
    upd = tr.update(dets(box(200, 200)))
    assert [t.id for t in upd.active] == [2]


def test_skipped_detector_does_not_end_tracks_and_prediction_moves():
    tr = Tracker(max_missed=3)
    for f in range(10):
        upd = tr.update(dets(box(100 + 4 * f, 300)))
    before = np.array(upd.active[0].xyxy)
    for k in range(1, 5):  # 20 frames without looking, far beyond max_missed
        upd = tr.update(None, period=5)
        assert [t.id for t in upd.active] == [1] and upd.ended == []
        assert upd.active[0].missed == 0 and upd.active[0].det_index == -1
        moved = np.array(upd.active[0].xyxy) - before
        assert moved[0] == pytest.approx(4 * 5 * k, abs=2.0)  # x moves with the velocity
        assert moved[1] == pytest.approx(0.0, abs=1.0)
    # The face is where the prediction says: same id.
    upd = tr.update(dets(box(100 + 4 * 29, 300)), period=1)
    assert ids_by_det(upd) == {0: 1}


def test_period_counts_missed_frames():
    tr = Tracker(max_missed=8)
    for _ in range(3):
        tr.update(dets(box(100, 100)), period=4)
    upd = tr.update(dets(), period=4)
    assert upd.active[0].missed == 4
    upd = tr.update(dets(), period=4)
    assert upd.active[0].missed == 8 and upd.ended == []
    upd = tr.update(dets(), period=4)
    assert upd.active == [] and [t.id for t in upd.ended] == [1]


def test_max_tracks_cap_refuses_lowest_scores():
    tr = Tracker(max_tracks=2)
    faces = [box(100, 100), box(300, 100), box(500, 100)]
    scores = [0.7, 0.95, 0.8]
    for _ in range(3):
        upd = tr.update(dets(*faces, scores=scores))
    assert sorted(ids_by_det(upd)) == [1, 2]  # the two best: det 1 (0.95) and det 2 (0.8)
    assert upd.not_started == 1
    assert tr.not_started_total == 3


def test_one_frame_false_positive_never_surfaces():
    tr = Tracker(min_hits=2)
    tr.update(dets(box(200, 200)))
    tr.update(dets(box(200, 200), box(600, 400)))  # false positive at (600, 400)
    everything = []
    for _ in range(20):
        upd = tr.update(dets(box(200, 200)))
        everything += upd.active + upd.ended
    everything += tr.finish()
    assert {t.id for t in everything} == {1}


def test_min_hits_one_confirms_immediately():
    upd = Tracker(min_hits=1).update(dets(box(50, 50)))
    assert [(t.id, t.det_index) for t in upd.active] == [(1, 0)]


def test_finish_returns_confirmed_tracks_and_clears():
    tr = Tracker()
    for _ in range(3):
        tr.update(dets(box(100, 100), box(400, 100)))
    tr.update(dets(box(100, 100), box(400, 100), box(700, 100)))  # third one stays tentative
    assert sorted(t.id for t in tr.finish()) == [1, 2]
    assert tr.finish() == []
    assert tr.update(dets()).active == []


def test_ids_are_per_tracker():
    for _ in range(2):
        tr = Tracker()
        tr.update(dets(box(100, 100)))
        assert [t.id for t in tr.update(dets(box(100, 100))).active] == [1]


def test_fast_small_face_is_kept_by_centre_distance():
    tr = Tracker()
    for f in range(15):  # 20 px face jumping 16 px per frame: boxes barely overlap
        upd = tr.update(dets(box(50 + 16 * f, 100, side=20)))
    assert [t.id for t in upd.active] == [1] and upd.active[0].hits == 15


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_tracks": 0},
        {"max_tracks": 2.5},
        {"iou_threshold": 0.0},
        {"iou_threshold": 1.5},
        {"max_missed": -1},
        {"min_hits": 0},
    ],
)
def test_invalid_arguments_raise_value_error(kwargs):
    bad = next(iter(kwargs.values()))
    with pytest.raises(ValueError, match=str(bad)):
        Tracker(**kwargs)


@pytest.mark.parametrize("period", [0, -3, 1.5])
def test_invalid_period_raises_value_error(period):
    with pytest.raises(ValueError, match=str(period)):
        Tracker().update(dets(), period=period)


def test_after_dropped_frames_a_face_found_where_it_was_last_seen_keeps_its_track():
    """After a gap (period > 1) the prediction extrapolates the estimated velocity over every
    frame of it; a face that stopped meanwhile (or a camera that shook back) is found where
    it was last matched, far from that prediction: it keeps its track, not a new one."""
    tr = Tracker()
    for f in range(6):
        upd = tr.update(dets(box(100, 100 + 8 * f, side=40)))
    assert [t.id for t in upd.active] == [1]
    upd = tr.update(dets(box(100, 140, side=40)), period=10)  # stopped where last seen
    assert [(t.id, t.det_index) for t in upd.active] == [(1, 0)]
    assert tr.update(dets(box(100, 140, side=40))).active[0].id == 1


def test_without_dropped_frames_matching_is_on_the_prediction_only():
    """period 1 (every frame, offline files): the box where a face was last matched is not
    looked at, so nothing changes when nothing is dropped."""
    tr = Tracker()
    for f in range(6):
        tr.update(dets(box(100, 100 + 8 * f, side=40)))
    for _ in range(9):
        tr.update(None)  # coasts on: the prediction runs 72 px ahead
    upd = tr.update(dets(box(100, 140, side=40)))
    assert [t.det_index for t in upd.active] == [-1]  # a new tentative track instead


def test_a_face_found_where_it_was_last_seen_after_a_gap_and_a_skipped_frame_keeps_its_track():
    """The frames after a gap may be skipped by the detector (update(None)) before it looks
    again with period 1: the track was still predicted over the gap since it was last
    matched, so the box where it was last matched still counts."""
    tr = Tracker()
    for f in range(6):
        tr.update(dets(box(100, 100 + 8 * f, side=40)))
    tr.update(None, period=9)  # frames dropped, then a frame the detector skipped
    upd = tr.update(dets(box(100, 140, side=40)))
    assert [(t.id, t.det_index) for t in upd.active] == [(1, 0)]


def test_a_box_size_that_jitters_is_not_extrapolated_into_a_miss_over_a_gap():
    """A walking face whose detected box size jitters: the estimated rate of size change,
    extrapolated over a gap of 8 frames, shrinks the predicted box below half the face; the
    last matched box's size at the predicted centre still matches it."""
    tr = Tracker()
    sides = [90, 64, 92, 62, 88, 60]  # jitter, shrinking on the last ones
    for f, side in enumerate(sides):
        tr.update(dets(box(100 + 12 * f, 300, side=side)))
    upd = tr.update(dets(box(100 + 12 * 13, 300, side=70)), period=8)
    assert [(t.id, t.det_index) for t in upd.active] == [(1, 0)]
