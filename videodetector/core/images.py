"""Image encoding shared by the detector (snapshots) and the backend (stored images)."""

from __future__ import annotations

import cv2
import numpy as np


def encode(image: np.ndarray, ext: str = "jpeg", quality: int = 90) -> bytes:
    """A BGR image as JPEG (``ext="jpeg"``, at ``quality``) or PNG / WebP bytes."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == "jpeg" else []
    ok, buf = cv2.imencode("." + ("jpg" if ext == "jpeg" else ext), image, params)
    if not ok:
        raise RuntimeError(f"could not encode a {image.shape} image as {ext}")
    return buf.tobytes()
