"""Latency histograms of the detector (prometheus_client), observed on the per-frame path.

``DetectorHistograms`` holds the histograms of one daemon (not registered anywhere: the
daemon's collector yields them, restricted to the cameras it still runs). ``CameraTimers``
binds one camera's children once, so an observation on the frame path costs one
``Histogram.observe`` (a lock and a bucket search, about 2 us) and no label lookup.
Code that runs without a daemon (tests, tools) gets ``CameraTimers.null()``: no-ops.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Histogram, disable_created_metrics

# No *_created series: the exposition stays as it was (one line per figure), and it is
# process-wide on purpose: each program owns its process.
disable_created_metrics()

# Per-frame stages: decode (the video decoder), convert (to a BGR array, rotation; only frames the
# detector or a snapshot needs are converted, observed by the pipeline), motion
# (grey conversion + frame difference), detect (crop, face detector, box cleaning), track
# (Kalman tracker update), select (quality scoring, best-frame selection), snapshot (align,
# uniqueness filter, JPEG/PNG encoding of the chosen faces; only on frames that post).
STAGES = ("decode", "convert", "motion", "detect", "track", "select", "snapshot")

# 0.5 ms .. 10 s: a stage takes from well under a millisecond (tracking) to tens of ms (the
# detector on a loaded host); a post from a few ms to its timeout.
FRAME_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
POST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Observer(Protocol):
    def observe(self, amount: float) -> None: ...


class _Null:
    def observe(self, amount: float) -> None:
        pass


NULL = _Null()


@dataclass(frozen=True)
class CameraTimers:
    """One camera's histogram children (or no-ops)."""

    decode: Observer
    convert: Observer
    motion: Observer
    detect: Observer
    track: Observer
    select: Observer
    snapshot: Observer
    detector: Observer  # the face detector's own call (YuNet), inside "detect"
    post: Observer  # one HTTP round trip of the poster

    @classmethod
    def null(cls) -> CameraTimers:
        return cls(*([NULL] * 9))


class DetectorHistograms:
    """The daemon's histograms; ``for_camera(cam_id)`` gives a camera its timers."""

    def __init__(self) -> None:
        self.stage = Histogram(
            "fkvideo_frame_stage_seconds", "Time per frame spent in each pipeline stage",
            ["cam_id", "stage"], registry=None, buckets=FRAME_BUCKETS)
        self.detector = Histogram(
            "fkvideo_detect_seconds", "Face detector (YuNet) latency per detector run",
            ["cam_id"], registry=None, buckets=FRAME_BUCKETS)
        self.post = Histogram(
            "fkvideo_post_seconds",
            "Poster HTTP round trip (request sent to answer received, any status)",
            ["cam_id"], registry=None, buckets=POST_BUCKETS)
        self.all = (self.stage, self.detector, self.post)

    def for_camera(self, cam_id: str) -> CameraTimers:
        stages = {name: self.stage.labels(cam_id, name) for name in STAGES}
        return CameraTimers(**stages, detector=self.detector.labels(cam_id),
                            post=self.post.labels(cam_id))


def ewma_interval(previous: float | None, dt: float, weight: float = 0.1) -> float:
    """The moving average of the time between frames after one more ``dt`` (s); its inverse
    is the frame rate. (An average of 1/dt instead counted one frame taken 1 ms after the one
    before as 1000 fps: a 25 fps camera showed 1733 fps after a stall.)"""
    dt = max(dt, 0.0)
    return dt if previous is None else (1.0 - weight) * previous + weight * dt


def process_age() -> float | None:
    """Seconds since this process started (Linux: its start time in /proc against the boot
    clock, so the interpreter's own start and the imports count); None where unknown."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        # field 22 (starttime, clock ticks after boot); fields are counted after the
        # parenthesised command name, which may itself contain spaces
        ticks = int(stat[stat.rindex(b")") + 2:].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
