"""Multi-face tracking: Kalman box filter (filter.py), matching (distances.py), tracker."""

from videodetector.detector.tracker.tracker import Track, Tracker, TrackerUpdate, frames_elapsed

__all__ = ["Track", "Tracker", "TrackerUpdate", "frames_elapsed"]
