"""Snapshot <-> bytes, for the on-disk spool.

Layout (all integers big-endian)::

    b"FKSNAP1\\n" | u32 header length | header (JSON, UTF-8) | frame JPEG | face PNG | u32 CRC-32

The header holds every Snapshot field except the two images, plus their lengths
(``frame_len`` is -1 when there is no frame). The CRC covers everything before it, so a
truncated or damaged file is detected (:func:`decode_snapshot` raises ValueError).
``extra`` must be JSON-serialisable; other values are stored as their ``str()``.
"""

from __future__ import annotations

import json
import struct
import zlib
from datetime import datetime
from typing import Any

from videodetector.detector.snapshot import Snapshot

MAGIC = b"FKSNAP1\n"
_U32 = struct.Struct(">I")


def snapshot_to_dict(snap: Snapshot) -> dict[str, Any]:
    """All fields except the images, as JSON-compatible values."""
    return {
        "cam_id": snap.cam_id,
        "track_id": snap.track_id,
        "seq": snap.seq,
        "timestamp": snap.timestamp.isoformat(),
        "bbox": list(snap.bbox),
        "score": snap.score,
        "direction_score": snap.direction_score,
        "track": [list(p) for p in snap.track],
        "label": snap.label,
        "run_id": snap.run_id,
        "extra": snap.extra,
        "position": snap.position,
    }


def snapshot_from_dict(
    data: dict[str, Any], frame_jpeg: bytes | None, face_png: bytes
) -> Snapshot:
    """Inverse of :func:`snapshot_to_dict`. Raises ValueError on missing or bad fields."""
    try:
        x1, y1, x2, y2 = (int(v) for v in data["bbox"])
        return Snapshot(
            cam_id=str(data["cam_id"]),
            track_id=int(data["track_id"]),
            seq=int(data["seq"]),
            timestamp=datetime.fromisoformat(data["timestamp"]),
            bbox=(x1, y1, x2, y2),
            score=float(data["score"]),
            direction_score=float(data["direction_score"]),
            frame_jpeg=frame_jpeg,
            face_png=face_png,
            track=tuple((float(x), float(y)) for x, y in data.get("track", ())),
            label=str(data.get("label", "")),
            run_id=str(data.get("run_id", "")),
            extra=dict(data.get("extra", {})),
            position=None if data.get("position") is None else int(data["position"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"bad snapshot record: {exc!r}") from None


def encode_snapshot(snap: Snapshot) -> bytes:
    header = snapshot_to_dict(snap)
    header["frame_len"] = -1 if snap.frame_jpeg is None else len(snap.frame_jpeg)
    header["face_len"] = len(snap.face_png)
    head = json.dumps(header, default=str, separators=(",", ":")).encode()
    body = b"".join((MAGIC, _U32.pack(len(head)), head, snap.frame_jpeg or b"", snap.face_png))
    return body + _U32.pack(zlib.crc32(body))


def decode_snapshot(blob: bytes) -> Snapshot:
    """Inverse of :func:`encode_snapshot`. Raises ValueError if the data is damaged."""
    if len(blob) < len(MAGIC) + 2 * _U32.size or not blob.startswith(MAGIC):
        raise ValueError("not a snapshot record (bad magic or too short)")
    body, (crc,) = blob[: -_U32.size], _U32.unpack(blob[-_U32.size :])
    if zlib.crc32(body) != crc:
        raise ValueError("snapshot record checksum mismatch")
    pos = len(MAGIC)
    (head_len,) = _U32.unpack_from(body, pos)
    pos += _U32.size
    try:
        header = json.loads(body[pos : pos + head_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"bad snapshot header: {exc}") from None
    pos += head_len
    frame_len, face_len = int(header.get("frame_len", -2)), int(header.get("face_len", -1))
    if frame_len < -1 or face_len < 0 or pos + max(frame_len, 0) + face_len != len(body):
        raise ValueError("snapshot record lengths do not match its size")
    frame = None if frame_len == -1 else body[pos : pos + frame_len]
    face = body[pos + max(frame_len, 0) :]
    return snapshot_from_dict(header, frame, face)
