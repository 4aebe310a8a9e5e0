"""Backoff (the camera's crash-restart rule is tested in test_camera.py)."""

from __future__ import annotations

import pytest

from videodetector.core.backoff import Backoff


def test_doubles_up_to_the_cap_and_resets():
    b = Backoff(0.5, 3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next() == 0.5


@pytest.mark.parametrize("initial, cap", [(0, 1), (-1, 1), (2, 1)])
def test_rejects_bad_bounds(initial, cap):
    with pytest.raises(ValueError, match=str(initial)):
        Backoff(initial, cap)
