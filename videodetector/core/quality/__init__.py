"""Snapshot quality on fkvideo_detector's scales: direction (pose) and total face quality."""

from videodetector.core.quality.direction import direction_score, head_pose
from videodetector.core.quality.score import QualityScore, face_quality

__all__ = ["QualityScore", "direction_score", "face_quality", "head_pose"]
