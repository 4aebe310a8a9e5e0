from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.detector.post.receiver import make_snapshot
from videodetector.detector.post.codec import decode_snapshot, encode_snapshot


def test_roundtrip() -> None:
    snap = make_snapshot(seq=5, label="realtime", extra={"fps": 25, "note": "x"},
                         timestamp=datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
    assert decode_snapshot(encode_snapshot(snap)) == snap


def test_roundtrip_without_frame_and_naive_time() -> None:
    snap = make_snapshot(frame_jpeg=None, track=(),
                         timestamp=datetime(2024, 1, 2, 3, 4, 5) + timedelta(0))
    assert decode_snapshot(encode_snapshot(snap)) == snap


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_damaged_records_raise_value_error(damage: str) -> None:
    blob = bytearray(encode_snapshot(make_snapshot()))
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "flip":
        blob[len(blob) // 2] ^= 0xFF
    elif damage == "garbage":
        blob = bytearray(b"hello world" * 10)
    else:
        blob = bytearray()
    with pytest.raises(ValueError):
        decode_snapshot(bytes(blob))
