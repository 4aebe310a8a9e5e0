"""How many snapshots per second the write-ahead spool accepts on a given disk.

Run from the project root:

    python bench/spool_rate.py [--dir DIR] [--count 300]

Every accepted snapshot is written durably before ``Poster.submit`` returns (``Spool.push``:
write ``<seq>.tmp``, fsync the file, rename it to ``<seq>.snap``, fsync the directory), so
this rate is the most snapshots per second one camera can accept, and the latency is what
``submit`` costs the camera's pipeline thread. The snapshot is the daemon's usual one: a
full frame as JPEG (quality 90; frame 50 of the first test clip, or a synthetic 720p image
without test media) and a 112x112 PNG face.

``DIR`` defaults to a new folder under ``$TMPDIR``; point it at the file system of the
daemon's state directory (``--spool-dir``) to measure that disk. Printed per mode: items/s,
MB/s, p50 and p99 latency of one push. The ``no fsync`` row shows what the fsyncs cost
(it is not a mode the daemon offers).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from unittest import mock

import _env  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)
import cv2
import numpy as np

from videodetector.core.images import encode
from videodetector.detector.post.codec import encode_snapshot
from videodetector.detector.post.spool import Spool
from videodetector.detector.snapshot import Snapshot

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def sample_frame(data: Path) -> tuple[np.ndarray, str]:
    """Frame 50 of the first clip in ``data/clips_faces`` (what a camera sends), else a
    synthetic 1280x720 image (smooth gradients, shapes and sensor noise)."""
    for clip in sorted((data / "clips_faces").glob("*.mp4")):
        cap = cv2.VideoCapture(str(clip))
        frame = None
        for _ in range(50):
            ok, img = cap.read()
            frame = img if ok else frame
        cap.release()
        if frame is not None:
            return frame, clip.name
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:720, 0:1280]
    img = np.dstack([(xx / 5) % 256, (yy / 3) % 256, ((xx + yy) / 8) % 256]).astype(np.uint8)
    for i in range(12):
        cv2.circle(img, (100 * i + 50, 360), 40 + 5 * i, (20 * i, 255 - 20 * i, 128), -1)
    noise = rng.normal(0, 4, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8), "synthetic 1280x720"


def sample_snapshot(frame: np.ndarray, seq: int) -> Snapshot:
    """The daemon's snapshot: the frame as JPEG (quality 90) and a 112x112 PNG face."""
    face = cv2.resize(frame[100:300, 200:400], (112, 112))
    return Snapshot(cam_id="bench", track_id=1, seq=seq, timestamp=datetime(2026, 1, 1),
                    bbox=(200, 100, 400, 300), score=-1.0, direction_score=-0.5,
                    frame_jpeg=encode(frame, "jpeg"), face_png=encode(face, "png"),
                    run_id="bench")


@contextmanager
def without_fsync() -> Iterator[None]:
    with mock.patch("videodetector.detector.post.spool.os.fsync", lambda fd: None):
        yield


def measure(directory: Path, snaps: Sequence[Snapshot], label: str) -> dict[str, object]:
    spool = Spool(directory, 1 << 40)
    latencies = []
    try:
        t0 = time.perf_counter()
        for snap in snaps:
            t = time.perf_counter()
            spool.push(snap)
            latencies.append(time.perf_counter() - t)
        wall = time.perf_counter() - t0
        size = spool.bytes
    finally:
        spool.close()
        shutil.rmtree(directory, ignore_errors=True)
    latencies.sort()
    return {
        "mode": label, "items": len(snaps), "item_kb": round(size / len(snaps) / 1024, 1),
        "items_per_s": round(len(snaps) / wall), "mb_per_s": round(size / wall / 1e6, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
    }


def format_table(rows: Sequence[dict[str, object]]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, help="where to write (default: a folder in $TMPDIR)")
    ap.add_argument("--count", type=int, default=300, help="snapshots per mode (300)")
    ap.add_argument("--data", type=Path, default=DATA, help="test media (../shared/data)")
    args = ap.parse_args(argv)
    if args.count < 1:
        ap.error(f"--count must be >= 1, got {args.count}")
    base = Path(tempfile.mkdtemp(prefix="spool-rate-", dir=args.dir))
    frame, source = sample_frame(args.data)
    snaps = [sample_snapshot(frame, i) for i in range(args.count)]
    print(f"frame: {source} {frame.shape[1]}x{frame.shape[0]}; one spooled snapshot "
          f"{len(encode_snapshot(snaps[0])) / 1024:.1f} KB; writing under {base}")
    try:
        rows = [measure(base / "fsync", snaps, "fsync file + dir (the daemon)")]
        with without_fsync():
            rows.append(measure(base / "nofsync", snaps, "no fsync (for comparison)"))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    load = os.getloadavg()
    table = format_table(rows)
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(table)
    return {"rows": rows, "table": table}


if __name__ == "__main__":
    main()
