"""--post-uniq duplicate suppression."""

from __future__ import annotations

import pytest

from videodetector.detector.uniq import UniqFilter


def test_within_time_and_distance_at_most_max_dup_allowed():
    f = UniqFilter(max_time_diff_s=1.0, max_dup=3, max_avg_shift_px=10.0)
    got = [f.allow(0.1 * i, (100.0 + i, 50.0)) for i in range(8)]
    assert got == [True, True, True, False, False, False, False, False]
    assert f.suppressed == 5


def test_farther_than_shift_is_allowed():
    f = UniqFilter(1.0, 1, 10.0)
    assert f.allow(0.0, (0.0, 0.0))
    assert not f.allow(0.1, (6.0, 8.0))  # distance exactly 10: duplicate
    assert f.allow(0.2, (0.0, 10.5))
    assert f.allow(0.3, (300.0, 0.0))


def test_allowed_again_after_time_window():
    f = UniqFilter(1.0, 2, 10.0)
    assert f.allow(0.0, (0.0, 0.0)) and f.allow(0.5, (0.0, 0.0))
    assert not f.allow(1.0, (0.0, 0.0))  # t=0 is exactly 1 s old: still in the window
    assert f.allow(1.01, (0.0, 0.0))  # t=0 has expired; one dup (t=0.5) < 2
    assert not f.allow(1.2, (0.0, 0.0))  # 0.5 and 1.01 are in the window
    assert f.allow(2.6, (0.0, 0.0))


def test_rejected_posts_do_not_extend_the_window():
    f = UniqFilter(1.0, 1, 10.0)
    assert f.allow(0.0, (0.0, 0.0))
    assert not f.allow(0.9, (0.0, 0.0))
    assert f.allow(1.5, (0.0, 0.0))


def test_similarity_callback():
    calls = []

    def same_track(a, b):
        calls.append((a, b))
        return a == b

    f = UniqFilter(1.0, 1, 10.0, similar=same_track)
    assert f.allow(0.0, (0.0, 0.0), key="A")
    assert f.allow(0.1, (1.0, 0.0), key="B")  # close, but not similar
    assert not f.allow(0.2, (2.0, 0.0), key="A")
    assert ("A", "B") in calls
    assert f.suppressed == 1


def test_similar_not_called_when_far():
    def boom(a, b):
        raise AssertionError("similarity must only be estimated for close faces")

    f = UniqFilter(1.0, 1, 10.0, similar=boom)
    assert f.allow(0.0, (0.0, 0.0), key=1)
    assert f.allow(0.1, (100.0, 0.0), key=2)
    assert f.allow(5.0, (0.0, 0.0), key=3)


@pytest.mark.parametrize(
    ("args", "bad"),
    [
        ((-1.0, 3, 10.0), "max_time_diff_s.*-1.0"),
        ((float("nan"), 3, 10.0), "max_time_diff_s.*nan"),
        ((1.0, 0, 10.0), "max_dup.*0"),
        ((1.0, 2.5, 10.0), "max_dup.*2.5"),
        ((1.0, True, 10.0), "max_dup.*True"),
        ((1.0, 3, -2.0), "max_avg_shift_px.*-2.0"),
        ((1.0, 3, "far"), "max_avg_shift_px.*far"),
    ],
)
def test_invalid_args(args, bad):
    with pytest.raises(ValueError, match=bad):
        UniqFilter(*args)


def test_invalid_allow_inputs():
    f = UniqFilter(1.0, 3, 10.0)
    with pytest.raises(ValueError, match="t .*inf"):
        f.allow(float("inf"), (0.0, 0.0))
    with pytest.raises(ValueError, match="centre"):
        f.allow(0.0, (0.0,))
    with pytest.raises(ValueError, match="centre"):
        f.allow(0.0, (0.0, float("nan")))
