"""Cost of the detector's latency histograms on the per-frame path (printed, not asserted).

Times what the histograms add to one frame: the ``time.perf_counter()`` calls around each
stage and one ``Histogram.observe`` per stage (decode, convert, motion, track, select on every
frame; detect + the detector's own latency on frames where the detector runs), against the
same loop with the no-op timers a daemon-less pipeline gets. Then the whole pipeline on a
synthetic clip, with and without histograms, as a sanity check of the per-frame figure.

    python bench/metrics_overhead.py [--frames 200000]
"""

from __future__ import annotations

import argparse
import os
import time

import _env  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)

from videodetector.detector.timing import CameraTimers, DetectorHistograms


def per_frame_seconds(timers: CameraTimers, frames: int, detect_every: int) -> float:
    """Seconds per frame for the timing work alone (no stage does anything)."""
    clock = time.perf_counter
    t_start = clock()
    for i in range(frames):
        for stage in (timers.decode, timers.convert, timers.motion):
            t0 = clock()
            stage.observe(clock() - t0)
        if i % detect_every == 0:
            t0 = clock()
            t1 = clock()
            timers.detector.observe(t1 - t0)
            timers.detect.observe(clock() - t0)
        t0 = clock()
        t1 = clock()
        timers.track.observe(t1 - t0)
        timers.select.observe(clock() - t1)
    return (clock() - t_start) / frames


def pipeline_seconds(timers: CameraTimers, clip: str) -> tuple[float, int]:
    from videodetector.core.models import YuNetDetector
    from videodetector.detector.config import parse_config
    from videodetector.detector.pipeline import CameraSpec, FacePipeline
    from videodetector.detector.video.source import open_video, parse_source

    cfg = parse_config(["--source", clip, "--camid", "c", "--api-url", "127.0.0.1:9",
                        "--api-token", "t", "-r", "0"])
    with open_video(parse_source(clip), {}, 0, realtime=False) as video:
        frames = [f for f in video]
    pipe = FacePipeline(cfg, CameraSpec("c", clip), YuNetDetector(), live=False, timers=timers)
    t0 = time.perf_counter()
    for frame in frames:
        pipe.process(frame)
    pipe.finish()
    return time.perf_counter() - t0, len(frames)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=200_000)
    p.add_argument("--clip", help="a clip for the whole-pipeline check (default: a synthetic "
                                  "640x480 clip with one face walking past)")
    args = p.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f}")
    real = DetectorHistograms().for_camera("bench")
    for label, every in (("detector every frame", 1), ("detector every 5th frame", 5)):
        null = min(per_frame_seconds(CameraTimers.null(), args.frames, every) for _ in range(3))
        hist = min(per_frame_seconds(real, args.frames, every) for _ in range(3))
        print(f"{label}: timing with no-op timers {null * 1e6:.2f} us/frame, with histograms "
              f"{hist * 1e6:.2f} us/frame: histograms add {(hist - null) * 1e6:.2f} us/frame")
    clip = args.clip
    if clip is None:
        import tempfile
        from pathlib import Path

        from videodetector.democlip import Walker, pick_sprites, write_clip

        (sprite,) = pick_sprites(1)
        clip = str(write_clip(Path(tempfile.mkdtemp()) / "walk.mp4",
                              [Walker(sprite, 0.0, 4.0, 100)], seconds=4.0))
    rows = []
    for _ in range(2):
        for name, timers in (("no-op", CameraTimers.null()),
                             ("histograms", DetectorHistograms().for_camera("c"))):
            seconds, n = pipeline_seconds(timers, clip)
            rows.append((name, seconds / n))
    for name in ("no-op", "histograms"):
        best = min(s for r, s in rows if r == name)
        print(f"pipeline ({name} timers): {best * 1e3:.2f} ms/frame")


if __name__ == "__main__":
    main()
