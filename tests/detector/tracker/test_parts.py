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


# --- the tracker's libraries against the references they replaced (scipy, filterpy) --------

def _allowed_pairs(pairs, allowed):
    return [(r, c) for r, c in pairs if allowed[r, c]]


def test_assignment_keeps_small_cost_differences():
    """lapjv's tolerance is absolute: with 1e6 on the forbidden pairs it took the 1.22 pair
    instead of the 0.25 one here (the matrix a random comparison with scipy found)."""
    from videodetector.detector.tracker.distances import _hungarian

    cost = np.array([[9.0, 9.0, 9.0], [0.2526, 1.2203, 9.0]])
    allowed = np.array([[False, False, False], [True, True, False]])
    assert _hungarian(cost, allowed) == [(1, 0)]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**32 - 1), st.booleans())
def test_assignment_matches_scipy_optimum(rows, cols, seed, ties):
    """As many allowed pairs as scipy's linear_sum_assignment finds, at the same total cost."""
    scipy_optimize = pytest.importorskip("scipy.optimize")
    from videodetector.detector.tracker.distances import _hungarian

    rng = np.random.default_rng(seed)
    cost = rng.uniform(-1, 3, (rows, cols)) * rng.choice([0.01, 1.0, 50.0])
    if ties:
        cost = np.round(cost, 1)
    allowed = rng.random((rows, cols)) < 0.6
    ours = _hungarian(cost, allowed)
    if not allowed.any():
        assert ours == []
        return
    ref_r, ref_c = scipy_optimize.linear_sum_assignment(np.where(allowed, cost, 1e6))
    ref = _allowed_pairs(zip(ref_r.tolist(), ref_c.tolist(), strict=True), allowed)
    assert len(ours) == len(ref)
    assert len({r for r, _ in ours}) == len(ours) == len({c for _, c in ours})
    assert all(allowed[r, c] for r, c in ours)
    assert sum(cost[p] for p in ours) == pytest.approx(sum(cost[p] for p in ref), abs=1e-7)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_box_filter_matches_filterpy(seed):
    """The OpenCV-based filter gives filterpy's KalmanFilter results (same F, H, Q, R, P),
    including a shrinking box clamped at MIN_SIDE and an update right after creation."""
    kalman = pytest.importorskip("filterpy.kalman")
    from videodetector.detector.tracker import filter as bf

    rng = np.random.default_rng(seed)
    box = np.r_[rng.uniform(0, 500, 2), 0, 0]
    box[2:] = box[:2] + rng.uniform(2, 200, 2)
    ours = bf.BoxKalmanFilter(box)
    z = bf.xyxy_to_z(box)
    side = ours._side(z)
    ref = kalman.KalmanFilter(dim_x=8, dim_z=4)
    ref.x = np.r_[z, np.zeros(4)].reshape(8, 1)
    ref.H = np.hstack([np.eye(4), np.zeros((4, 4))])
    ref.P = np.diag([(bf.INITIAL_POSITION_STD * side) ** 2] * 4
                    + [(bf.INITIAL_VELOCITY_STD * side) ** 2] * 4)
    shrink = rng.random() < 0.3
    for step in range(25):
        if step or rng.random() < 0.5:
            dt = int(rng.integers(1, 6))
            ref.predict(F=bf.transition_matrix(dt),
                        Q=bf.process_noise(dt, ours._side(ref.x[:, 0])))
            for i in (2, 3):
                if ref.x[i, 0] < bf.MIN_SIDE:
                    ref.x[i, 0], ref.x[i + 4, 0] = bf.MIN_SIDE, 0.0
            np.testing.assert_allclose(ours.predict(dt), bf.z_to_xyxy(ref.x[:4, 0]),
                                       rtol=1e-7, atol=1e-6)
        if rng.random() < 0.7:
            seen = box + rng.normal(0, 3, 4)
            seen[2:] = np.maximum(seen[2:], seen[:2] + 0.5)
            zs = bf.xyxy_to_z(seen)
            ref.update(zs.reshape(4, 1), R=np.eye(4) * (bf.MEASUREMENT_STD * ours._side(zs)) ** 2)
            np.testing.assert_allclose(ours.update(seen), bf.z_to_xyxy(ref.x[:4, 0]),
                                       rtol=1e-7, atol=1e-6)
        if shrink:
            box = np.r_[box[:2], box[:2] + (box[2:] - box[:2]) * 0.7 + 0.01]
    np.testing.assert_allclose(ours.velocity, ref.x[4:, 0], rtol=1e-6, atol=1e-6)
