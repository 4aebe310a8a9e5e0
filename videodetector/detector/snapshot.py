"""Snapshot: one face chosen by the best-frame logic, ready to be posted to the backend.

This is the hand-off between the video pipeline (producer) and the poster
(consumer, ``videodetector/detector/post/``). Images are already encoded so that a
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
    # What the snapshot's source is: for a file a fingerprint of the file (the same file gives
    # the same keys in every run), for a live source one id per daemon run of the camera.
    run_id: str = ""
    extra: dict[str, object] = field(default_factory=dict)
    position: int | None = None  # index of the snapshot's frame in its source (Frame.index)

    @property
    def idempotency_key(self) -> str:
        """What the snapshot is: camera, source, frame, track, post number (and label).

        Derived from the snapshot, never from a per-attempt id, so a snapshot made again
        (a retry, a spool replay, a file processed again) carries the same key and the
        backend stores it once.
        """
        label = f":{self.label}" if self.label else ""
        pos = "" if self.position is None else f"{self.position}:"
        return f"{self.cam_id}:{self.run_id}:{pos}{self.track_id}:{self.seq}{label}"
