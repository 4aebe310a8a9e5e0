"""Motion detection that gates the face detector (``--md-threshold``, ``--scale``)."""

from .detector import DEFAULT_THRESHOLD, FrameDiffMotion, MotionDetector, MotionResult

__all__ = ["DEFAULT_THRESHOLD", "FrameDiffMotion", "MotionDetector", "MotionResult"]
