"""The tracker's period over frames the reader dropped (``frames_elapsed``)."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videodetector.detector.tracker import frames_elapsed

INDEXES = st.integers(min_value=-5, max_value=10**6)


@settings(max_examples=200, deadline=None)
@given(previous=st.one_of(st.none(), INDEXES), index=INDEXES,
       max_period=st.integers(min_value=1, max_value=100))
def test_the_period_is_at_least_one_frame_and_at_most_the_cap(previous, index, max_period):
    period = frames_elapsed(previous, index, max_period)
    assert 1 <= period <= max_period
    if previous is not None and previous >= 0 and 1 <= index - previous <= max_period:
        assert period == index - previous  # the frames elapsed, the dropped ones included


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(st.integers(min_value=-50, max_value=50), min_size=1, max_size=60),
       max_period=st.integers(min_value=1, max_value=30))
def test_any_index_sequence_advances_by_its_gaps_bounded(steps, max_period):
    """A source that jumps back (a restarted reader counts from 0 again), repeats an index
    or leaps ahead never gives a period below 1 or above the cap; one that only moves ahead
    by at most the cap advances the tracker by exactly the frames it spans."""
    indexes, last = [], 0
    for step in steps:
        last = max(0, last + step)
        indexes.append(last)
    previous, total = None, 0
    for index in indexes:
        period = frames_elapsed(previous, index, max_period)
        assert 1 <= period <= max_period
        total += period
        previous = index
    if all(1 <= b - a <= max_period for a, b in pairwise(indexes)):
        assert total == indexes[-1] - indexes[0] + 1


@pytest.mark.parametrize("max_period", [0, -1, 1.5, True])
def test_the_cap_must_be_a_positive_integer(max_period):
    with pytest.raises(ValueError, match="max_period"):
        frames_elapsed(0, 1, max_period)
