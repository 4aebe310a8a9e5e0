"""Backoff and the camera's crash-restart delay."""

from __future__ import annotations

import pytest

from videodetector.backoff import Backoff
from videodetector.camera import CRASH_BACKOFF, HEALTHY_RUN, restart_delay


def test_doubles_up_to_the_cap_and_resets():
    b = Backoff(0.5, 3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next() == 0.5


@pytest.mark.parametrize("initial, cap", [(0, 1), (-1, 1), (2, 1)])
def test_rejects_bad_bounds(initial, cap):
    with pytest.raises(ValueError, match=str(initial)):
        Backoff(initial, cap)


def test_crashes_in_a_row_wait_longer_a_crash_after_a_healthy_run_does_not():
    b = Backoff(*CRASH_BACKOFF)
    quick = [restart_delay(b, ran_for=0.1) for _ in range(7)]
    assert quick[0] == CRASH_BACKOFF[0] and quick[-1] == CRASH_BACKOFF[1]
    assert quick == sorted(quick)
    assert restart_delay(b, ran_for=HEALTHY_RUN) == CRASH_BACKOFF[0]
    assert restart_delay(b, ran_for=0.1) == 2 * CRASH_BACKOFF[0]
