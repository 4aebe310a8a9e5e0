from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.detector.post.receiver import Receiver, make_snapshot, wait_for
from videodetector.detector.config import DetectorConfig
from videodetector.detector.post.codec import decode_snapshot
from videodetector.detector.post.poster import (
    MAX_RETRY_AFTER,
    MAX_SERVER_ERRORS_PER_ITEM,
    Poster,
    retry_after,
)
from videodetector.detector.post.spool import Spool


def make_cfg(url: str, spool_dir: Path, **changes: object) -> DetectorConfig:
    base: dict[str, object] = dict(
        api_url=url, api_token="tok", spool_dir=str(spool_dir), post_queue=100,
        req_timeout=1.0, retry_max_delay=0.2,
    )
    base.update(changes)
    return DetectorConfig(**base)  # type: ignore[arg-type]


def keys(n: int, start: int = 0) -> list[str]:
    return [make_snapshot(seq=i).idempotency_key for i in range(start, start + n)]


@pytest.fixture
def receiver():
    rx = Receiver().start()
    yield rx
    rx.stop()


def started(cfg: DetectorConfig) -> Poster:
    poster = Poster(cfg, backoff_initial=0.05)
    poster.start()
    return poster


def test_delivers_in_order(receiver: Receiver, tmp_path: Path) -> None:
    poster = started(make_cfg(receiver.url, tmp_path))
    for i in range(10):
        poster.submit(make_snapshot(seq=i))
    assert wait_for(lambda: poster.stats()["ok"] == 10)
    poster.stop(1)
    assert receiver.ok_keys() == keys(10)
    # write-ahead: every accepted snapshot went through the spool, and left it on 2xx
    assert poster.stats() == {"ok": 10, "failed": 0, "spooled": 10, "retries": 0,
                              "queue_len": 0, "spool_len": 0, "spool_bytes": 0,
                              "spool_dropped": 0, "spool_write_errors": 0, "spool_ok": 1,
                              "dropped_spool_unwritable": 0, "dropped_at_stop": 0}


def test_server_down_then_up(tmp_path: Path) -> None:
    rx = Receiver().start()
    rx.stop()  # the port is known, nothing listens: connection refused
    poster = started(make_cfg(rx.url, tmp_path))
    try:
        for i in range(5):
            poster.submit(make_snapshot(seq=i))
        assert wait_for(lambda: poster.stats()["spool_len"] == 5)
        assert wait_for(lambda: poster.stats()["retries"] >= 2)
        for i in range(5, 8):  # while down, new items queue behind the spooled ones
            poster.submit(make_snapshot(seq=i))
        rx.start()
        assert wait_for(lambda: poster.stats()["ok"] == 8)
        assert receiver_keys_once(rx) == keys(8)
        stats = poster.stats()
        assert stats["spool_len"] == 0 and stats["queue_len"] == 0 and stats["failed"] == 0
        assert stats["spooled"] >= 5
    finally:
        poster.stop(1)
        rx.stop()


def receiver_keys_once(rx: Receiver) -> list[str]:
    got = rx.ok_keys()
    assert len(got) == len(set(got)), "a snapshot was delivered twice"
    return got


def test_5xx_and_429_are_retried(tmp_path: Path) -> None:
    answers = [500, 503, 429, 408]
    rx = Receiver(status=lambda n: answers[n] if n < len(answers) else 200).start()
    poster = started(make_cfg(rx.url, tmp_path))
    try:
        for i in range(3):
            poster.submit(make_snapshot(seq=i))
        assert wait_for(lambda: poster.stats()["ok"] == 3)
        assert receiver_keys_once(rx) == keys(3)
        assert rx.attempts == 3 + len(answers)
        assert poster.stats()["retries"] == len(answers)
    finally:
        poster.stop(1)
        rx.stop()


def test_4xx_fails_without_retry(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rx = Receiver(status=lambda n: 400 if n == 1 else 200).start()
    poster = started(make_cfg(rx.url, tmp_path))
    try:
        for i in range(3):
            poster.submit(make_snapshot(seq=i))
        assert wait_for(lambda: poster.stats()["ok"] == 2)
        time.sleep(0.3)  # a retry, if any, would happen now
        stats = poster.stats()
        assert stats["failed"] == 1 and stats["retries"] == 0
        assert rx.attempts == 3
        assert rx.ok_keys() == [keys(3)[0], keys(3)[2]]
        refused = [r for r in caplog.records if '"status": 400' in r.getMessage()]
        assert refused and all(r.cam_id == "cam-1" for r in refused)  # the snapshot's camera
        # not lost: the refused snapshot is kept on disk, readable, for an operator
        (kept,) = (tmp_path / "rejected").glob("*.snap")
        assert decode_snapshot(kept.read_bytes()).idempotency_key == keys(3)[1]
    finally:
        poster.stop(1)
        rx.stop()


def test_a_refused_snapshot_requeued_after_the_fix_is_delivered_with_its_key(
    tmp_path: Path,
) -> None:
    rx = Receiver(status=lambda n: 403).start()  # e.g. the token was wrong
    try:
        poster = started(make_cfg(rx.url, tmp_path))
        poster.submit(make_snapshot(seq=0))
        assert wait_for(lambda: poster.stats()["failed"] == 1)
        poster.stop(1)
        assert poster.stats()["spool_len"] == 0
        spool = Spool(tmp_path, 10**9)
        assert spool.requeue_rejected() == 1
        spool.close()
        assert not list((tmp_path / "rejected").glob("*.snap"))
        rx.status = lambda n: 200  # fixed
        again = started(make_cfg(rx.url, tmp_path))
        assert wait_for(lambda: again.stats()["ok"] == 1)
        again.stop(1)
        assert rx.ok_keys() == keys(1)
    finally:
        rx.stop()


def test_an_item_the_server_keeps_failing_on_does_not_block_the_rest(tmp_path: Path) -> None:
    poison = keys(1)[0]
    rx = Receiver().start()
    rx.status = lambda n: 500 if rx.last_key == poison else 200
    poster = started(make_cfg(rx.url, tmp_path))
    try:
        for i in range(3):
            poster.submit(make_snapshot(seq=i))
        assert wait_for(lambda: poster.stats()["ok"] == 2, timeout=30)
        assert rx.ok_keys() == keys(3)[1:]
        stats = poster.stats()
        assert stats["failed"] == 1 and stats["retries"] == MAX_SERVER_ERRORS_PER_ITEM - 1
        (kept,) = (tmp_path / "rejected").glob("*.snap")
        assert decode_snapshot(kept.read_bytes()).idempotency_key == poison
        assert stats["spool_len"] == 0
    finally:
        poster.stop(1)
        rx.stop()


def test_spool_survives_restart(tmp_path: Path) -> None:
    rx = Receiver().start()
    rx.stop()
    first = started(make_cfg(rx.url, tmp_path))
    for i in range(6):
        first.submit(make_snapshot(seq=i))
    first.stop(0.3)  # cannot deliver: everything ends up on disk
    assert first.stats()["spool_len"] == 6
    assert len(list(tmp_path.glob("*.snap"))) == 6

    rx.start()
    second = started(make_cfg(rx.url, tmp_path))  # a new process, same spool directory
    try:
        second.submit(make_snapshot(seq=6))
        assert wait_for(lambda: second.stats()["ok"] == 7)
        assert receiver_keys_once(rx) == keys(7)
    finally:
        second.stop(1)
        rx.stop()


def test_queue_overflow_keeps_order(tmp_path: Path) -> None:
    rx = Receiver(delay=0.02).start()
    poster = started(make_cfg(rx.url, tmp_path, post_queue=3))
    try:
        for i in range(30):
            poster.submit(make_snapshot(seq=i))
        assert poster.stats()["spooled"] > 0
        assert wait_for(lambda: poster.stats()["ok"] == 30)
        assert receiver_keys_once(rx) == keys(30)
    finally:
        poster.stop(1)
        rx.stop()


def test_submit_never_blocks_on_a_hanging_server(tmp_path: Path) -> None:
    rx = Receiver(delay=3.0).start()
    poster = started(make_cfg(rx.url, tmp_path, post_queue=4, req_timeout=5.0))
    try:
        slowest = 0.0
        for i in range(20):
            t0 = time.monotonic()
            poster.submit(make_snapshot(seq=i))
            slowest = max(slowest, time.monotonic() - t0)
        # the server answers after 3 s: a submit waiting for it would take that long (a
        # submit that spools writes a file, which a loaded disk can make slow: not 0.5 s)
        assert slowest < 1.5
        assert wait_for(lambda: rx.attempts == 1)  # the first post is hanging
    finally:
        t0 = time.monotonic()
        poster.stop(0.2)
        # bounded, even with a post in flight (that post alone would take 3 s)
        assert time.monotonic() - t0 < 2.5
        rx.stop()
    # nothing accepted is lost: all 20, including the one in flight, are on disk
    spool = Spool(tmp_path, 10**9)
    assert len(spool) == 20
    head = spool.peek_oldest()
    assert head is not None and head[1].seq == 0
    spool.close()


def test_stop_flushes_when_server_is_up(receiver: Receiver, tmp_path: Path) -> None:
    poster = Poster(make_cfg(receiver.url, tmp_path), backoff_initial=0.05)
    for i in range(5):
        poster.submit(make_snapshot(seq=i))  # accepted before start
    poster.start()
    poster.stop(2)
    assert receiver.ok_keys() == keys(5)
    assert poster.stats()["spool_len"] == 0


def test_stop_without_start_spools_everything(tmp_path: Path) -> None:
    poster = Poster(make_cfg("http://127.0.0.1:9", tmp_path))
    for i in range(3):
        poster.submit(make_snapshot(seq=i))
    poster.stop(0)
    assert poster.stats()["spool_len"] == 3
    poster.submit(make_snapshot(seq=3))  # after stop: still not lost
    assert poster.stats()["spool_len"] == 4


def test_needs_a_spool_dir() -> None:
    with pytest.raises(ValueError, match="spool"):
        Poster(DetectorConfig(api_url="http://h:1", api_token="t"))


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    assert retry_after("7") == 7.0
    assert retry_after("Mon, 23 Nov 2026 12:00:30 GMT", now) == 30.0
    assert retry_after("Mon, 23 Nov 2026 11:00:00 GMT", now) == 0.0  # in the past
    assert retry_after("86400") == MAX_RETRY_AFTER
    assert retry_after(None) is None and retry_after("soon") is None and retry_after("-5") is None


def test_a_busy_server_s_retry_after_is_honoured(tmp_path: Path) -> None:
    rx = Receiver(status=lambda n: 429 if n == 0 else 200)
    rx.retry_after = "2"
    rx.start()
    poster = started(make_cfg(rx.url, tmp_path))  # its own back-off is 0.2 s at most
    try:
        t0 = time.monotonic()
        poster.submit(make_snapshot(seq=0))
        assert wait_for(lambda: poster.stats()["ok"] == 1)
        assert time.monotonic() - t0 >= 1.9
        assert rx.attempts == 2
    finally:
        poster.stop(1)
        rx.stop()
