"""Kalman box filter and association functions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videodetector.detector.tracker.distances import associate, centre_distance_matrix, iou_matrix
from videodetector.detector.tracker.filter import BoxKalmanFilter, process_noise, transition_matrix


def test_iou_matrix_values():
    a = np.array([[0, 0, 10, 10], [100, 100, 110, 110]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [50, 50, 60, 60]], float)
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 3)
    assert iou[0, 0] == pytest.approx(1.0)
    assert iou[0, 1] == pytest.approx(50 / 150)
    assert iou[0, 2] == 0 and not iou[1].any()
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def test_centre_distance_is_in_box_sides_and_refuses_size_mismatch():
    a = np.array([[0, 0, 20, 20]], float)
    b = np.array([[20, 0, 40, 20], [0, 0, 100, 100]], float)
    d = centre_distance_matrix(a, b)
    assert d[0, 0] == pytest.approx(1.0)
    assert np.isinf(d[0, 1])


def test_associate_prefers_best_total_iou():
    tracks = np.array([[0, 0, 10, 10], [6, 0, 16, 10]], float)
    dets = np.array([[7, 0, 17, 10], [1, 0, 11, 10], [200, 200, 210, 210]], float)
    matches, lost, fresh = associate(tracks, dets, iou_threshold=0.3)
    assert matches == [(0, 1), (1, 0)]
    assert lost == [] and fresh == [2]


def test_associate_centre_fallback_and_disable():
    tracks = np.array([[0, 0, 10, 10]], float)
    dets = np.array([[9, 0, 19, 10]], float)  # IoU 1/19, centre 0.9 side away
    assert associate(tracks, dets, 0.2)[0] == [(0, 0)]
    assert associate(tracks, dets, 0.2, max_centre_distance=0)[0] == []
    assert associate(tracks, dets, 0.2, max_centre_distance=0.5)[0] == []


def test_associate_empty_inputs():
    assert associate(np.zeros((0, 4)), np.zeros((0, 4)), 0.2) == ([], [], [])
    assert associate(np.zeros((0, 4)), np.array([[0, 0, 5, 5]]), 0.2) == ([], [], [0])
    assert associate(np.array([[0, 0, 5, 5]]), np.zeros((0, 4)), 0.2) == ([], [0], [])


def test_associate_rejects_bad_threshold():
    with pytest.raises(ValueError, match="1.2"):
        associate(np.zeros((0, 4)), np.zeros((0, 4)), 1.2)


def test_matrices_for_multi_frame_step():
    f = transition_matrix(5)
    assert f[0, 4] == 5 and f[3, 7] == 5 and f[4, 4] == 1 and f[0, 5] == 0
    q1, q5 = process_noise(1, 100), process_noise(5, 100)
    assert q5[0, 0] == pytest.approx(125 * q1[0, 0])  # position variance grows as dt^3
    assert q5[4, 4] == pytest.approx(5 * q1[4, 4])  # velocity variance grows as dt
    assert np.allclose(q5, q5.T)


@settings(max_examples=40, deadline=None)
@given(dt=st.sampled_from([1, 2, 3, 4, 1.5, 7]), side=st.floats(1, 2000))
def test_matrices_are_made_once_per_step_and_equal_the_formula(dt, side):
    """F and the unit Q are cached per dt (a track predicts every frame; np.kron was most of
    its cost): the same read-only F object each time, and Q exactly as the formula makes it."""
    assert transition_matrix(dt) is transition_matrix(dt)
    assert not transition_matrix(dt).flags.writeable
    q = (0.05 * side) ** 2
    expected = np.kron(q * np.array([[dt**3 / 3, dt**2 / 2], [dt**2 / 2, dt]]), np.eye(4))
    assert np.array_equal(process_noise(dt, side), expected)


def test_filter_learns_velocity_and_predicts_several_frames():
    kf = BoxKalmanFilter(np.array([0, 0, 50, 50], float))
    for k in range(1, 12):
        kf.predict(1)
        kf.update(np.array([3 * k, 0, 50 + 3 * k, 50], float))
    assert kf.velocity[0] == pytest.approx(3.0, abs=0.3)
    box = kf.predict(10)
    assert box[0] == pytest.approx(33 + 30, abs=3.0)
    assert box[2] - box[0] == pytest.approx(50, abs=2.0)


def test_filter_rejects_bad_input():
    with pytest.raises(ValueError, match="x2 > x1"):
        BoxKalmanFilter(np.array([10, 0, 5, 5], float))
    kf = BoxKalmanFilter(np.array([0, 0, 5, 5], float))
    with pytest.raises(ValueError, match="0"):
        kf.predict(0)


def _eager_filterpy(xyxy: np.ndarray):
    """The filter as BoxKalmanFilter made it before it was made lazily: filterpy's
    KalmanFilter built at once from the first box (the same numbers as filter._make)."""
    from filterpy.kalman import KalmanFilter

    from videodetector.detector.tracker import filter as box_filter

    z = box_filter.xyxy_to_z(xyxy)
    side = max((z[2] + z[3]) / 2, box_filter.MIN_SIDE)
    kf = KalmanFilter(dim_x=8, dim_z=4)
    kf.x = np.concatenate([z, np.zeros(4)]).reshape(8, 1)
    kf.F = transition_matrix(1.0)
    kf.H = np.hstack([np.eye(4), np.zeros((4, 4))])
    kf.P = np.diag([(box_filter.INITIAL_POSITION_STD * side) ** 2] * 4
                   + [(box_filter.INITIAL_VELOCITY_STD * side) ** 2] * 4)
    kf.Q = process_noise(1.0, side)
    kf.R = np.eye(4) * (box_filter.MEASUREMENT_STD * side) ** 2
    return kf


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.booleans(),
                          st.floats(-30, 30), st.floats(-30, 30), st.floats(0.8, 1.25)),
                max_size=12))
def test_a_filter_made_on_first_use_is_filterpys_filter_made_at_once(steps):
    """BoxKalmanFilter makes filterpy's KalmanFilter when first predicted or updated (start-up,
    issue 10); its boxes are those of a KalmanFilter made with the track (unchanged output)."""
    from videodetector.detector.tracker import filter as box_filter

    first = np.array([100.0, 80.0, 160.0, 150.0])
    lazy, eager = BoxKalmanFilter(first), _eager_filterpy(first)
    assert np.array_equal(lazy.xyxy, box_filter.z_to_xyxy(eager.x[:4, 0]))
    box = first
    for dt, seen, dx, dy, grow in steps:
        got = lazy.predict(dt)
        side = max((eager.x[2, 0] + eager.x[3, 0]) / 2, box_filter.MIN_SIDE)
        eager.predict(F=transition_matrix(dt), Q=process_noise(dt, side))
        for i in (2, 3):
            if eager.x[i, 0] < box_filter.MIN_SIDE:
                eager.x[i, 0], eager.x[i + 4, 0] = box_filter.MIN_SIDE, 0.0
        # bit-identical: the lazily made filter is filterpy's own
        np.testing.assert_array_equal(got, box_filter.z_to_xyxy(eager.x[:4, 0]))
        np.testing.assert_array_equal(lazy._kf.P, eager.P)
        if seen:
            cx, cy = (box[0] + box[2]) / 2 + dx, (box[1] + box[3]) / 2 + dy
            w, h = (box[2] - box[0]) * grow, (box[3] - box[1]) * grow
            box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
            got = lazy.update(box)
            z = box_filter.xyxy_to_z(box)
            r = np.eye(4) * (box_filter.MEASUREMENT_STD * max((z[2] + z[3]) / 2, 1.0)) ** 2
            eager.update(z.reshape(4, 1), R=r)
            np.testing.assert_array_equal(got, box_filter.z_to_xyxy(eager.x[:4, 0]))
            np.testing.assert_array_equal(lazy._kf.P, eager.P)
    np.testing.assert_array_equal(lazy.velocity, eager.x[4:, 0])


def _associate_both_rounds(tracks: np.ndarray, dets: np.ndarray, iou_threshold: float,
                           max_centre_distance: float):
    """The module docstring's two rounds, the second always run (scipy on what is left)."""
    from scipy.optimize import linear_sum_assignment

    def assign(cost, allowed):
        if cost.size == 0 or not allowed.any():
            return []
        rows, cols = linear_sum_assignment(np.where(allowed, cost, 1e6))
        return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if allowed[r, c]]

    iou = iou_matrix(tracks, dets)
    matches = assign(-iou, iou >= iou_threshold)
    left_t = [i for i in range(len(tracks)) if i not in {t for t, _ in matches}]
    left_d = [i for i in range(len(dets)) if i not in {d for _, d in matches}]
    dist = centre_distance_matrix(tracks[left_t].reshape(-1, 4), dets[left_d].reshape(-1, 4))
    matches += [(left_t[r], left_d[c]) for r, c in assign(dist, dist <= max_centre_distance)]
    matches.sort()
    return (matches, [i for i in range(len(tracks)) if i not in {t for t, _ in matches}],
            [i for i in range(len(dets)) if i not in {d for _, d in matches}])


_box = st.tuples(st.integers(0, 300), st.integers(0, 300), st.integers(8, 120),
                 st.integers(8, 120)).map(lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]])


@settings(max_examples=150, deadline=None)
@given(st.lists(_box, max_size=4), st.lists(_box, max_size=4), st.sampled_from([0.2, 0.5]),
       st.sampled_from([0.0, 1.0, 3.0]))
def test_associate_equals_both_rounds_always_run(tracks, dets, iou_threshold, max_distance):
    """associate skips the distance round when one side is all matched (GIL work per frame,
    issue gil); its result is the two rounds' as the docstring defines them."""
    t = np.array(tracks, np.float64).reshape(-1, 4)
    d = np.array(dets, np.float64).reshape(-1, 4)
    want = _associate_both_rounds(t, d, iou_threshold, max_distance) if max_distance > 0 else None
    got = associate(t, d, iou_threshold, max_distance)
    if want is not None:
        assert got == want
    assert sorted({i for i, _ in got[0]} | set(got[1])) == list(range(len(t)))


def test_associate_also_matches_a_track_by_its_other_box():
    """``also_xyxy``: a detection far from a track's (predicted) box but on its other box
    (where it was last matched) is matched to it, by IoU; without it, it is not."""
    predicted = np.array([[300.0, 100, 340, 140]])
    held = np.array([[100.0, 100, 140, 140]])
    det = np.array([[102.0, 101, 142, 141]])
    assert associate(predicted, det, 0.2) == ([], [0], [0])
    assert associate(predicted, det, 0.2, also_xyxy=[held]) == ([(0, 0)], [], [])
    with pytest.raises(ValueError, match="also_xyxy"):
        associate(predicted, det, 0.2, also_xyxy=[np.zeros((2, 4))])
