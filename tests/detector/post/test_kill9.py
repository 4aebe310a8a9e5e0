"""kill -9 of a detector whose backend is slow: every snapshot the poster accepted reaches the
backend after the restart, under its Idempotency-Key, none twice but the one in flight.

The real Poster runs in its own process (``tests/detector/post/poster_proc.py``) against a real HTTP
receiver; the test kills it with SIGKILL right after the last ``submit`` returned.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.detector.post.receiver import Receiver, wait_for

ROOT = Path(__file__).resolve().parents[3]
SUBMITTED = 40


def start_poster(url: str, spool: Path, first: int, count: int) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    return subprocess.Popen(
        [sys.executable, "-m", "tests.detector.post.poster_proc", url, str(spool), str(first),
         str(count)],
        stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def read_accepted(proc: subprocess.Popen[str]) -> list[str]:
    """The keys ``submit`` accepted, until the process says it submitted everything."""
    assert proc.stdout is not None
    keys = []
    for line in proc.stdout:
        if line.strip() == "submitted":
            return keys
        word, key, outcome = line.split()
        assert word == "accepted" and outcome in ("spooled", "None"), line
        keys.append(key)
    raise AssertionError(f"the poster process ended early: {proc.wait()}")


@pytest.mark.timeout(90)
def test_kill_9_loses_no_accepted_snapshot(tmp_path: Path) -> None:
    rx = Receiver(delay=0.5).start()  # a slow backend: the snapshots pile up
    spool = tmp_path / "spool"
    first = start_poster(rx.url, spool, 0, SUBMITTED)
    try:
        accepted = read_accepted(first)
        first.send_signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
        in_flight_or_done = rx.attempts
        assert len(accepted) == SUBMITTED
        assert in_flight_or_done < SUBMITTED // 2, "the backend was not slow enough to matter"

        rx.delay = 0.0
        second = start_poster(rx.url, spool, SUBMITTED, 0)  # the restart: nothing new
        try:
            # done when the spool is empty (each item leaves it after its 2xx answer)
            delivered = wait_for(lambda: set(accepted) <= set(rx.ok_keys())
                                 and not list(spool.glob("*.snap")), timeout=30)
        finally:
            second.kill()
            second.wait(10)
        got = rx.ok_keys()
        lost = [k for k in accepted if k not in got]
        assert delivered and not lost, f"{len(lost)} accepted snapshot(s) lost: {lost[:5]}"
        # at most the one in flight at the kill reached the backend twice (it stores it once,
        # by its Idempotency-Key); the order of first arrival is the order of acceptance
        twice = {k for k in got if got.count(k) > 1}
        assert len(twice) <= 1 and all(got.count(k) == 2 for k in twice)
        assert list(dict.fromkeys(got)) == accepted
    finally:
        if first.poll() is None:
            first.kill()
        rx.stop()
