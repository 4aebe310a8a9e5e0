from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tests.detector.post.receiver import make_snapshot
from videodetector.detector.post.codec import decode_snapshot, encode_snapshot
from videodetector.detector.post.spool import REJECTED, Spool, SpoolLockedError

ITEM = len(encode_snapshot(make_snapshot()))


def seqs_of(spool: Spool) -> list[int]:
    out = []
    while (head := spool.peek_oldest()) is not None:
        out.append(head[1].seq)
        spool.remove(head[0])
    return out


def test_fifo_push_peek_remove(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10**9)
    assert len(spool) == 0 and spool.bytes == 0 and spool.peek_oldest() is None
    for i in range(3):
        spool.push(make_snapshot(seq=i))
    assert len(spool) == 3 and spool.bytes == 3 * ITEM
    seq, snap = spool.peek_oldest()  # type: ignore[misc]
    assert snap == make_snapshot(seq=0)
    assert spool.peek_oldest()[0] == seq  # type: ignore[index]  # peek does not remove
    spool.remove(seq)
    spool.remove(seq)  # twice is harmless
    assert len(spool) == 2 and spool.bytes == 2 * ITEM
    spool.push(make_snapshot(seq=9), front=True)
    assert seqs_of(spool) == [9, 1, 2]
    assert spool.bytes == 0
    assert not list(tmp_path.glob("*.snap"))


def test_survives_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10**9)
    for i in range(4):
        spool.push(make_snapshot(seq=i))
    spool.remove(spool.peek_oldest()[0])  # type: ignore[index]
    spool.close()
    (tmp_path / "00000000000000000099.tmp").write_bytes(b"half an item")  # killed mid-write
    again = Spool(tmp_path, 10**9)
    assert len(again) == 3 and again.bytes == 3 * ITEM
    again.push(make_snapshot(seq=4))
    assert seqs_of(again) == [1, 2, 3, 4]
    assert not list(tmp_path.glob("*.tmp"))


def test_bound_drops_oldest_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path, 3 * ITEM + 10)
    with caplog.at_level(logging.WARNING):
        for i in range(5):
            spool.push(make_snapshot(seq=i))
    assert spool.dropped == 2
    assert len(spool) == 3 and spool.bytes <= 3 * ITEM + 10
    assert "dropped the 1 oldest item(s) (2 dropped since start" in caplog.text
    assert seqs_of(spool) == [2, 3, 4]


def test_newest_item_kept_even_if_too_big(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10)
    spool.push(make_snapshot(seq=0))
    spool.push(make_snapshot(seq=1))
    assert spool.dropped == 1 and seqs_of(spool) == [1]


def test_bound_applied_on_open(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10**9)
    for i in range(4):
        spool.push(make_snapshot(seq=i))
    spool.close()
    smaller = Spool(tmp_path, 2 * ITEM)
    assert smaller.dropped == 2 and seqs_of(smaller) == [2, 3]


def test_corrupt_item_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path, 10**9)
    for i in range(3):
        spool.push(make_snapshot(seq=i))
    first = sorted(tmp_path.glob("*.snap"))[0]
    first.write_bytes(first.read_bytes()[:100])
    with caplog.at_level(logging.ERROR):
        seq, snap = spool.peek_oldest()  # type: ignore[misc]
    assert snap.seq == 1
    assert first.with_suffix(".bad").exists()
    assert "moved aside" in caplog.text
    assert len(spool) == 2 and spool.bytes == 2 * ITEM


def test_directory_lock(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10**9)
    with pytest.raises(SpoolLockedError, match="--spool-dir"):
        Spool(tmp_path, 10**9)
    spool.close()
    Spool(tmp_path, 10**9).close()


def test_rejects_bad_bound(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        Spool(tmp_path, 0)


def _reject(spool: Spool, seqs: list[int]) -> None:
    """Set items aside as the poster does after a refusal, oldest first (distinct mtimes)."""
    for age, seq in enumerate(reversed(seqs)):
        path = spool.set_aside(None, make_snapshot(seq=seq))
        os.utime(path, (1_000_000 - age, 1_000_000 - age))


def test_requeue_rejected_oldest_first_and_bad_items_stay(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10**9)
    spool.push(make_snapshot(seq=0))  # still waiting: the requeued items go after it
    _reject(spool, [3, 1, 2])
    (tmp_path / REJECTED / "garbage.snap").write_bytes(b"not a snapshot")
    assert spool.requeue_rejected() == 3
    assert seqs_of(spool) == [0, 3, 1, 2]
    assert [p.name for p in (tmp_path / REJECTED).glob("*.snap")] == ["garbage.snap"]
    assert spool.requeue_rejected() == 0


def test_requeue_rejected_stops_at_the_bound_without_dropping(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 2 * ITEM)
    _reject(spool, [1, 2, 3])
    assert spool.requeue_rejected() == 2
    assert spool.dropped == 0
    assert seqs_of(spool) == [1, 2]
    (left,) = (tmp_path / REJECTED).glob("*.snap")
    assert decode_snapshot(left.read_bytes()).seq == 3
