"""Best-frame selectors on hand-built candidate sequences with explicit stream times."""

from __future__ import annotations

import math

import pytest

from videodetector.detector.bestframe import (
    Candidate,
    OfflineSelector,
    Realtime1844Selector,
    RealtimeDynamicSelector,
    RealtimePermSelector,
    ScoreFilter,
    better,
    make_selector,
)

FPS = 25


def cand(tid: int, t: float, score: float, dscore: float = 0.0) -> Candidate:
    return Candidate(track_id=tid, t=t, score=score, direction_score=dscore, payload=(tid, t))


def run(sel, cands: list[Candidate], end: dict[int, float] | None = None, tick: bool = True):
    """Feed candidates in order (tick after each), end tracks at given times; (t, post) pairs."""
    out: list[tuple[float, Candidate]] = []
    for c in cands:
        out += [(c.t, p) for p in sel.observe(c)]
        if tick:
            out += [(c.t, p) for p in sel.tick(c.t)]
    for tid, t in (end or {}).items():
        out += [(t, p) for p in sel.end_track(tid, t)]
    return out


# --- better ---------------------------------------------------------------------------


def test_better_orders_by_score_then_direction_then_earlier():
    a, b = cand(1, 0.0, -2.0, -1.0), cand(1, 1.0, -1.0, -3.0)
    assert better(a, b) is b and better(b, a) is b
    c, d = cand(1, 0.0, -1.0, -2.0), cand(1, 1.0, -1.0, -0.5)
    assert better(c, d) is d
    e, f = cand(1, 0.0, -1.0, -1.0), cand(1, 1.0, -1.0, -1.0)
    assert better(e, f) is e and better(f, e) is e
    assert better(None, e) is e


# --- offline --------------------------------------------------------------------------


def test_offline_posts_the_best_once_only_at_end():
    scores = [-5.0, -3.0, -1.0, -2.0, -4.0]
    cands = [cand(1, i / FPS, s) for i, s in enumerate(scores)]
    sel = OfflineSelector()
    assert run(sel, cands) == []
    posts = sel.end_track(1, 1.0)
    assert posts == [cands[2]]
    assert sel.end_track(1, 1.1) == []  # forgotten
    assert sel.finish(2.0) == []


def test_offline_two_interleaved_tracks():
    a = [cand(1, i / FPS, -float(i)) for i in range(10)]  # best is the first
    b = [cand(2, i / FPS, -10.0 + i) for i in range(10)]  # best is the last
    inter = [c for pair in zip(a, b, strict=True) for c in pair]
    sel = OfflineSelector()
    posts = run(sel, inter, end={2: 0.5, 1: 0.6})
    assert [p for _, p in posts] == [b[-1], a[0]]


def test_offline_tie_prefers_direction_then_earlier():
    sel = OfflineSelector()
    cs = [cand(1, 0.0, -1.0, -2.0), cand(1, 0.1, -1.0, -1.0), cand(1, 0.2, -1.0, -1.0)]
    run(sel, cs)
    assert sel.end_track(1, 0.3) == [cs[1]]


def test_offline_finish_flushes_all_tracks():
    sel = OfflineSelector()
    run(sel, [cand(1, 0.0, -1.0), cand(2, 0.0, -2.0), cand(3, 0.04, -3.0)])
    assert sorted(p.track_id for p in sel.finish(0.1)) == [1, 2, 3]
    assert sel.finish(0.2) == []


# --- realtime, rt-perm ------------------------------------------------------------------


def wobble(i: int) -> float:
    """A deterministic, non-monotonic quality curve."""
    return -3.0 + math.sin(i * 1.7) + 0.5 * math.cos(i * 0.3)


def test_rt_perm_one_post_per_window_each_best_of_window():
    cands = [cand(1, i / FPS, wobble(i)) for i in range(FPS)]  # 1 s at 25 fps
    sel = RealtimePermSelector(0.2)
    posts = run(sel, cands, end={1: 1.0})
    assert len(posts) == 5
    for k, (_, p) in enumerate(posts):
        window = cands[5 * k : 5 * k + 5]  # frames i/25 with i//5 == k: exact boundaries
        assert p == max(window, key=lambda c: (c.score, c.direction_score, -c.t))
    # the first four are posted when their window closes, i.e. at frame 5(k+1)
    assert [t for t, _ in posts[:4]] == [pytest.approx(5 * (k + 1) / FPS) for k in range(4)]
    assert posts[4][0] == 1.0  # the last one at end_track


def test_rt_perm_window_anchored_at_first_observation_and_closed_by_tick():
    sel = RealtimePermSelector(0.2)
    c0 = cand(7, 10.0, -2.0)
    c1 = cand(7, 10.19, -1.0)
    assert sel.observe(c0) == [] and sel.observe(c1) == []
    assert sel.tick(10.199) == []
    assert sel.tick(10.2) == [c1]  # window end reached with no observation of the track
    assert sel.tick(10.5) == []  # empty windows post nothing
    c2 = cand(7, 10.55, -3.0)
    assert sel.observe(c2) == []
    assert sel.end_track(7, 10.56) == [c2]
    assert sel.end_track(7, 10.6) == []


def test_rt_perm_tracks_have_independent_windows():
    sel = RealtimePermSelector(0.2)
    a, b = cand(1, 0.0, -1.0), cand(2, 0.1, -1.0)
    sel.observe(a)
    sel.observe(b)
    assert sel.tick(0.2) == [a]
    assert sel.tick(0.3) == [b]


def test_rt_perm_finish_flushes_pending():
    sel = RealtimePermSelector(0.2)
    run(sel, [cand(1, 0.0, -1.0), cand(2, 0.04, -2.0)])
    assert sorted(p.track_id for p in sel.finish(0.1)) == [1, 2]
    assert sel.finish(0.2) == []


# --- realtime, dynamic ------------------------------------------------------------------


def test_dynamic_increasing_sequence_posts_increasing_at_least_rt_delay_apart():
    delay = 0.2
    cands = [cand(1, i / FPS, -6.0 + 0.2 * i) for i in range(FPS)]  # -6.0 .. -1.2
    sel = RealtimeDynamicSelector(delay, min_score=-7.0, step=0.1)
    posts = run(sel, cands)
    times = [t for t, _ in posts]
    scores = [p.score for _, p in posts]
    assert [round(t * FPS) for t in times] == [0, 5, 10, 15, 20]  # exactly rt_delay apart
    assert all(b > a for a, b in zip(scores, scores[1:], strict=False))
    assert all(b - a >= delay - 1e-9 for a, b in zip(times, times[1:], strict=False))
    assert posts[0][1] is cands[0]  # first post at once
    # each post is the best seen so far at its time
    for t, p in posts:
        assert p.score == max(c.score for c in cands if c.t <= t)
    # the held best is posted when the face leaves, even within the delay
    last = sel.end_track(1, 1.0)
    assert last == [cands[-1]]


def test_dynamic_decreasing_sequence_posts_once():
    cands = [cand(1, i / FPS, -1.0 - 0.2 * i) for i in range(FPS)]
    sel = RealtimeDynamicSelector(0.2, min_score=-7.0)
    posts = run(sel, cands, end={1: 1.0})
    assert [p for _, p in posts] == [cands[0]]


def test_dynamic_threshold_step_and_below_min_score():
    sel = RealtimeDynamicSelector(0.1, min_score=-5.0, step=0.5)
    assert sel.observe(cand(1, 0.0, -6.0)) == []  # below min_score: never posted
    first = cand(1, 0.1, -4.0)
    assert sel.observe(first) == [first]
    assert sel.observe(cand(1, 0.5, -3.6)) == []  # better but within step
    c = cand(1, 0.6, -3.5)
    assert sel.observe(c) == [c]
    assert sel.end_track(1, 0.7) == []


def test_dynamic_perfect_score_is_not_reposted():
    sel = RealtimeDynamicSelector(0.1, min_score=-7.0)
    c = cand(1, 0.0, 0.0)
    assert sel.observe(c) == [c]
    assert run(sel, [cand(1, 0.2 + i / FPS, 0.0) for i in range(10)], end={1: 1.0}) == []


def test_dynamic_held_candidate_is_replaced_by_better_and_released_by_tick():
    sel = RealtimeDynamicSelector(0.2, min_score=-7.0)
    c0, c1, c2 = cand(1, 0.0, -5.0), cand(1, 0.05, -3.0), cand(1, 0.1, -2.0)
    assert sel.observe(c0) == [c0]
    assert sel.observe(c1) == [] and sel.observe(c2) == []
    assert sel.tick(0.19) == []
    assert sel.tick(0.2) == [c2]
    assert sel.tick(0.5) == []


def test_dynamic_reset_after_end_track():
    sel = RealtimeDynamicSelector(0.2, min_score=-7.0)
    good = cand(1, 0.0, -1.0)
    assert sel.observe(good) == [good]
    assert sel.end_track(1, 0.1) == []
    worse = cand(1, 5.0, -4.0)  # same id, new face: default threshold, no delay carried
    assert sel.observe(worse) == [worse]


# --- realtime1844 -----------------------------------------------------------------------


def test_realtime1844_labels_both_streams():
    cands = [cand(1, i / FPS, wobble(i)) for i in range(10)]
    sel = Realtime1844Selector(RealtimePermSelector(0.2))
    posts = [p for _, p in run(sel, cands, end={1: 0.4})]
    rt = [p for p in posts if p.label == "realtime"]
    off = [p for p in posts if p.label == "offline"]
    assert len(rt) == 2 and len(off) == 1 and len(posts) == 3
    best = max(cands, key=lambda c: c.score)
    assert off[0].t == best.t and off[0].payload == best.payload
    assert posts[-1].label == "offline"  # offline posted at end, after realtime
    assert all(c.label == "" for c in cands)  # inputs are not mutated


# --- filtering and factory ------------------------------------------------------------


def test_score_filter_drops_low_score_and_low_direction():
    sel = ScoreFilter(OfflineSelector(), min_score=-2.0, min_dir_score=-1.0)
    run(sel, [cand(1, 0.0, -3.0, 0.0), cand(1, 0.1, -1.0, -2.0), cand(2, 0.0, -5.0, 0.0)])
    assert sel.end_track(1, 1.0) == [] and sel.finish(1.0) == []
    ok = cand(1, 0.2, -2.0, -1.0)  # exactly at both limits: postable
    sel.observe(ok)
    assert sel.finish(1.0) == [ok]


@pytest.mark.parametrize(
    ("realtime", "rt_perm", "realtime1844", "expected"),
    [
        (False, True, False, 1),  # offline: one post per track
        (True, True, False, 5),  # rt-perm 200 ms over 1 s
        (True, False, False, 1),  # dynamic, decreasing quality
        (False, True, True, 6),  # 1844: 5 realtime + 1 offline
    ],
)
def test_make_selector_modes(realtime, rt_perm, realtime1844, expected):
    cands = [cand(1, i / FPS, -1.0 - 0.1 * i) for i in range(FPS)]
    sel = make_selector(realtime, rt_perm, 200, realtime1844, min_score=-7.0, min_dir_score=-1000)
    posts = run(sel, cands)
    posts += [(1.0, p) for p in sel.finish(1.0)]
    assert len(posts) == expected
    labels = sorted({p.label for _, p in posts})
    assert labels == (["offline", "realtime"] if realtime1844 else [""])


def test_make_selector_filters_min_score():
    sel = make_selector(True, True, 200, True, min_score=-2.0, min_dir_score=-1.0)
    run(sel, [cand(1, i / FPS, -3.0) for i in range(10)])
    run(sel, [cand(2, i / FPS, -1.0, -1.5) for i in range(10)])
    assert sel.finish(1.0) == []


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"rt_delay_ms": 0}, "0"),
        ({"rt_delay_ms": -5}, "-5"),
        ({"rt_delay_ms": float("nan")}, "nan"),
        ({"min_score": float("inf")}, "inf"),
        ({"min_dir_score": "x"}, "'x'"),
    ],
)
def test_make_selector_rejects_bad_values(kwargs, bad):
    args = dict(
        realtime=True,
        rt_perm=False,
        rt_delay_ms=100,
        realtime1844=False,
        min_score=-7.0,
        min_dir_score=-1000.0,
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=bad):
        make_selector(**args)


def test_offline_mode_ignores_rt_delay():
    make_selector(False, True, 0, False, -7.0, -1000.0)  # rt-delay unused with -r 0
