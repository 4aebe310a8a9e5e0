"""The real Poster in its own process, for the kill -9 test.

Run as ``python -m tests.detector.post.poster_proc``.

Usage: ``poster_proc URL SPOOL_DIR FIRST COUNT``. Submits snapshots ``FIRST .. FIRST+COUNT-1``
(``make_snapshot(seq=i)``) and prints ``accepted <key> <outcome>`` once ``submit`` returned,
then ``submitted``; then keeps posting until killed.
"""

from __future__ import annotations

import sys
import time

from tests.detector.post.receiver import make_snapshot
from videodetector.detector.config import DetectorConfig
from videodetector.detector.post.poster import Poster


def main(url: str, spool_dir: str, first: int, count: int) -> None:
    cfg = DetectorConfig(api_url=url, api_token="tok", spool_dir=spool_dir, post_queue=100,
                         req_timeout=5.0, retry_max_delay=0.2)
    poster = Poster(cfg, backoff_initial=0.05, cam_id="cam-1")
    poster.start()
    for i in range(first, first + count):
        snap = make_snapshot(seq=i)
        outcome = poster.submit(snap)
        print("accepted", snap.idempotency_key, getattr(outcome, "value", outcome), flush=True)
    print("submitted", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
