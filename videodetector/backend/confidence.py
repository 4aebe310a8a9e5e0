"""Cosine similarity of SFace embeddings -> API confidence (0..1).

PLACEHOLDER mapping (cos + 1) / 2 until the measured, FAR-anchored mapping lands.
"""

from __future__ import annotations

import numpy as np


def confidence_from_cosine(cos: np.ndarray | float) -> np.ndarray | float:
    return np.clip((np.asarray(cos, dtype=np.float64) + 1.0) / 2.0, 0.0, 1.0)


def cosine_from_confidence(conf: float) -> float:
    return float(conf) * 2.0 - 1.0
