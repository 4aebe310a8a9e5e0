"""The spool's disk is full: memory stays bounded, drops are counted and logged once per
interval, and once space is back the spool works again; nothing accepted is lost.

Runs twice: with a fault-injection seam (ENOSPC on write; always) and on a real 1 MiB tmpfs
(when the test runs as root and may mount one; skipped with the reason otherwise).
"""

from __future__ import annotations

import logging

import pytest

from tests.detector.post.disks import SeamDisk, TmpfsDisk
from tests.detector.post.receiver import Receiver, make_snapshot, wait_for
from tests.detector.post.test_poster import make_cfg
from videodetector.detector.metrics import posts_dropped_metric
from videodetector.detector.post.poster import Accepted, Poster
from videodetector.detector.post.trouble import Trouble
from videodetector.detector.status import render_metrics

QUEUE = 5
BEFORE, DURING, AFTER = 3, 60, 3  # snapshots submitted before, while and after the disk is full


@pytest.fixture(params=["seam", "tmpfs"])
def disk(request: pytest.FixtureRequest) -> SeamDisk | TmpfsDisk:
    return request.getfixturevalue(f"{request.param}_disk")


def spool_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name.startswith("videodetector.detector.post") and "spool" in r.getMessage()]


def test_full_disk_bounded_counted_logged_once_and_recovers(
    disk: SeamDisk | TmpfsDisk, caplog: pytest.LogCaptureFixture
) -> None:
    rx = Receiver().start()
    rx.stop()  # the backend is down: nothing leaves the spool or the memory queue
    poster = Poster(make_cfg(rx.url, disk.directory / "spool", post_queue=QUEUE),
                    backoff_initial=0.05, cam_id="cam-1")
    poster.start()
    caplog.set_level(logging.INFO)
    results: dict[str, Accepted] = {}

    def submit(i: int) -> Accepted:
        snap = make_snapshot(seq=i)
        results[snap.idempotency_key] = outcome = poster.submit(snap)
        return outcome

    try:
        assert [submit(i) for i in range(BEFORE)] == [Accepted.SPOOLED] * BEFORE
        disk.fill()
        peak = 0
        for i in range(BEFORE, BEFORE + DURING):
            submit(i)
            peak = max(peak, poster.stats()["queue_len"])
        during = list(results.values())[BEFORE:]
        assert during == [Accepted.MEMORY] * QUEUE + [Accepted.DROPPED] * (DURING - QUEUE)
        stats = poster.stats()
        assert peak == stats["queue_len"] == QUEUE  # bounded by --post-queue
        assert stats["dropped_spool_unwritable"] == DURING - QUEUE
        assert stats["spool_ok"] == 0 and stats["spool_write_errors"] >= DURING
        # one line when the trouble starts, not one per snapshot
        (error,) = spool_records(caplog)
        assert error.levelno == logging.ERROR and "No space left on device" in error.getMessage()
        text = render_metrics([posts_dropped_metric({"cam-1": stats})])
        assert f'fkvideo_posts_dropped_total{{cam_id="cam-1",reason="spool_unwritable"}} ' \
               f"{DURING - QUEUE}" in text

        disk.free()  # space is back: no restart needed
        after = [submit(i) for i in range(BEFORE + DURING, BEFORE + DURING + AFTER)]
        assert after == [Accepted.SPOOLED] * AFTER
        stats = poster.stats()
        assert stats["queue_len"] == 0 and stats["spool_ok"] == 1
        assert stats["spool_len"] == BEFORE + QUEUE + AFTER  # memory moved to disk, in order
        recovered = spool_records(caplog)[1:]
        assert len(recovered) == 1 and "works again" in recovered[0].getMessage()

        rx.start()
        kept = [key for key, outcome in results.items() if outcome.kept]
        assert wait_for(lambda: poster.stats()["ok"] == len(kept), timeout=20)
        assert rx.ok_keys() == kept  # all of them, once each, in order; no dropped one
    finally:
        poster.stop(1)
        rx.stop()


def test_a_full_disk_does_not_stop_delivery_while_the_backend_is_up(seam_disk: SeamDisk) -> None:
    rx = Receiver().start()
    poster = Poster(make_cfg(rx.url, seam_disk.directory, post_queue=QUEUE),
                    backoff_initial=0.05)
    poster.start()
    seam_disk.fill()
    try:
        sent = []
        for i in range(3 * QUEUE):
            snap = make_snapshot(seq=i)
            assert poster.submit(snap) is Accepted.MEMORY
            sent.append(snap.idempotency_key)
            assert wait_for(lambda: poster.stats()["queue_len"] == 0)  # sent from memory
        assert wait_for(lambda: poster.stats()["ok"] == len(sent))
        assert rx.ok_keys() == sent
        assert poster.stats()["dropped_spool_unwritable"] == 0
    finally:
        poster.stop(1)
        rx.stop()


def test_memory_items_are_spooled_at_stop_once_the_disk_has_room(seam_disk: SeamDisk) -> None:
    rx = Receiver().start()
    rx.stop()
    poster = Poster(make_cfg(rx.url, seam_disk.directory, post_queue=QUEUE),
                    backoff_initial=0.05)
    poster.start()
    seam_disk.fill()
    assert poster.submit(make_snapshot(seq=0)) is Accepted.MEMORY
    seam_disk.free()
    poster.stop(0.2)
    stats = poster.stats()
    assert stats["spool_len"] == 1 and stats["dropped_at_stop"] == 0


def test_memory_items_lost_at_stop_are_counted(seam_disk: SeamDisk,
                                               caplog: pytest.LogCaptureFixture) -> None:
    rx = Receiver().start()
    rx.stop()
    poster = Poster(make_cfg(rx.url, seam_disk.directory, post_queue=QUEUE),
                    backoff_initial=0.05)
    poster.start()
    seam_disk.fill()
    for i in range(3):
        assert poster.submit(make_snapshot(seq=i)) is Accepted.MEMORY
    poster.stop(0.2)
    assert poster.stats()["dropped_at_stop"] == 3
    assert "3 snapshot(s) could not be spooled and are lost" in caplog.text


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_trouble_logs_once_per_interval_with_counts(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    trouble = Trouble(logging.getLogger("t"), "writing", interval=10, clock=clock)
    caplog.set_level(logging.INFO)
    for second in range(25):  # 4 failures a second for 25 s
        clock.now = float(second)
        for _ in range(4):
            trouble.failed(OSError(28, "No space left on device"), dropped=1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3  # the start, then at 10 s and at 20 s
    assert lines[0].startswith("writing failed: [Errno 28] No space left on device")
    assert "dropped 40, failures 40" in lines[1] and "dropped 40, failures 40" in lines[2]
    trouble.recovered("5 moved")
    assert caplog.records[-1].getMessage() == (
        "writing works again; 5 moved (while it failed: dropped 100, failures 100)")
    trouble.recovered()  # only once
    assert len(caplog.records) == 4


def test_trouble_rejects_a_bad_interval() -> None:
    with pytest.raises(ValueError, match="interval"):
        Trouble(logging.getLogger("t"), "x", interval=0)
