"""SFace cosine similarity -> the API's 0..1 confidence, anchored at FindFace's FAR presets.

FindFace Server SDK 2.6 (reference 9.1) defines the confidence thresholds
``strict`` = 0.7834, ``medium`` = 0.6616 and ``low`` = 0.5690 as the points where the false
accept rate is 1e-5, 1e-3 and 1e-1; the default threshold is 0.75. The map is piecewise
linear through

    cos = -1           -> 0.0
    cos at FAR 1e-1    -> 0.5690  (low)
    cos at FAR 1e-3    -> 0.6616  (medium)
    cos at FAR 1e-5    -> 0.7834  (strict)
    cos = 1            -> 1.0

so a client threshold keeps its FindFace meaning. The anchors are per embedding model
(``ANCHORS``): the backend maps cosines with those of the model that made the vectors it
searches (docs/thresholds-int8.md for the int8 SFace). The anchor cosines were measured with our
pipeline (YuNet -> align_face -> SFace) by ``bench/thresholds.py``; the figures, data and method
are in docs/thresholds.md (1e-1 and 1e-3 measured on 24267 impostor pairs; 1e-5 from a
Gaussian fit to the impostor tail). The default 0.75 lies between medium and strict
(cos 0.471, FAR ~4e-5 by the same fit).
"""

from __future__ import annotations

import numpy as np

# Anchor cosines from docs/thresholds.md (bench/thresholds.py).
COS_FAR_1E1 = 0.2026  # measured
COS_FAR_1E3 = 0.3913  # measured
COS_FAR_1E5 = 0.5013  # Gaussian tail fit (not measurable with our data)

CONF_LOW = 0.5690
CONF_MEDIUM = 0.6616
CONF_STRICT = 0.7834

DEFAULT_MODEL = "sface-2021dec"
# The same for the int8 quantization of SFace (docs/thresholds-int8.md).
INT8_1E1 = 0.2106  # measured
INT8_1E3 = 0.3983  # measured
INT8_1E5 = 0.5029  # Gaussian tail fit
# The same for SFace run in bfloat16 by OpenVINO (docs/thresholds-bf16.md): within 0.001 of
# the float model's, same FRR at each preset.
BF16_1E1 = 0.2022  # measured
BF16_1E3 = 0.3904  # measured
BF16_1E5 = 0.5009  # Gaussian tail fit
# (cos at FAR 1e-1, 1e-3, 1e-5) per embedding model, each measured the same way:
# docs/thresholds.md (SFace), docs/thresholds-int8.md (its int8 quantization),
# docs/thresholds-bf16.md (bfloat16).
ANCHORS = {
    DEFAULT_MODEL: (COS_FAR_1E1, COS_FAR_1E3, COS_FAR_1E5),
    "sface-2021dec-int8": (INT8_1E1, INT8_1E3, INT8_1E5),
    "sface-2021dec-bf16": (BF16_1E1, BF16_1E3, BF16_1E5),
}
_CONF = np.array([0.0, CONF_LOW, CONF_MEDIUM, CONF_STRICT, 1.0])


def _cos_points(model: str) -> np.ndarray:
    try:
        return np.array([-1.0, *ANCHORS[model], 1.0])
    except KeyError:
        raise ValueError(f"no confidence anchors for embedding model {model!r}") from None


def _out(values: np.ndarray, like: object) -> np.ndarray | float:
    return float(values) if np.ndim(like) == 0 else values


def confidence_from_cosine(cos: np.ndarray | float, model: str = DEFAULT_MODEL
                           ) -> np.ndarray | float:
    """Confidence in [0, 1] for cosine(s) in [-1, 1] (clipped outside). Monotonic increasing.
    The anchors are those measured for the embedding ``model`` that made the vectors.

    A scalar in gives a float out; an array gives an array of the same shape.
    """
    return _out(np.interp(np.asarray(cos, dtype=np.float64), _cos_points(model), _CONF), cos)


def cosine_from_confidence(conf: np.ndarray | float, model: str = DEFAULT_MODEL
                           ) -> np.ndarray | float:
    """Inverse of :func:`confidence_from_cosine`: the cosine a confidence threshold stands for."""
    return _out(np.interp(np.asarray(conf, dtype=np.float64), _CONF, _cos_points(model)), conf)
