"""Snapshot: one face chosen by the best-frame logic, ready to be posted to the backend.

This is the hand-off between the video pipeline (producer) and the poster
(consumer, ``videodetector/post/``). Images are already encoded so that a
snapshot can be spooled to disk and replayed byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Snapshot:
    cam_id: str
    track_id: int
    seq: int  # per-camera, per-track sequence number of posts (0, 1, ...)
    timestamp: datetime  # when the frame was captured (see --start-ts)
    bbox: tuple[int, int, int, int]  # x1, y1, x2, y2 in full-frame pixels (after --bbox-scale)
    score: float  # face quality, 0 = best ... -7 and below = poor
    direction_score: float  # 0 = frontal ... -3.5 = large angle
    frame_jpeg: bytes | None  # full frame, JPEG; None with --only-norm
    face_png: bytes  # normalized (aligned) face, PNG
    track: tuple[tuple[float, float], ...] = ()  # bbox centres, with --send-track
    label: str = ""  # "realtime" / "offline" with --realtime1844, else ""
    run_id: str = ""  # distinguishes daemon runs so keys never collide across restarts
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str:
        """Unique per snapshot: a backend stores a retried snapshot once."""
        label = f":{self.label}" if self.label else ""
        return f"{self.cam_id}:{self.run_id}:{self.track_id}:{self.seq}{label}"
