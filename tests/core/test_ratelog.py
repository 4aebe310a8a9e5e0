"""RateLimitedLog: one line per kind of event per interval, saying how many were held back."""

from __future__ import annotations

import logging

import pytest

from videodetector.core.ratelog import RateLimitedLog


def test_one_line_per_key_per_interval_then_a_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    rl = RateLimitedLog(logging.getLogger("t.ratelog"), interval=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        written = [rl.log(logging.WARNING, "a", "face %d skipped", i) for i in range(5)]
        assert rl.log(logging.WARNING, "b", "other kind")  # keys are independent
        now[0] = 61.0
        assert rl.log(logging.WARNING, "a", "face %d skipped", 99)
    assert written == [True, False, False, False, False]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["face 0 skipped", "other kind",
                     "face 99 skipped (4 more like this since the last such line)"]


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="0"):
        RateLimitedLog(logging.getLogger("t"), interval=0)
