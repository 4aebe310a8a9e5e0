"""The YuNet call code that issue 10's sixth round replaced, kept as the reference its
replacement is compared with (``tests/core/test_yunet_call.py``) and timed against
(``bench/yunet_call.py``): a uint8 canvas, ``transpose().astype()``, output names fetched per
call, every cell of every map scored, NMS one IoU row per kept box. Verbatim but for
``self`` -> ``det``."""

from __future__ import annotations

import cv2
import numpy as np

from videodetector.core.detections import Detections
from videodetector.core.geometry import iou_matrix
from videodetector.core.models import YuNetDetector


def former_decode(det: YuNetDetector, out: dict[str, np.ndarray], ch: int, cw: int
                  ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The per-stride decode of the former detect() (every cell of every map scored)."""
    boxes, scores, lms = [], [], []
    for s in det.STRIDES:
        cls = np.clip(out[f"cls_{s}"][0, :, 0], 0, 1)
        obj = np.clip(out[f"obj_{s}"][0, :, 0], 0, 1)
        score = np.sqrt(cls * obj)
        sel = score >= det.score_threshold
        if not sel.any():
            continue
        grid = det._grid(s, ch, cw)[sel]  # noqa: SLF001
        bb = out[f"bbox_{s}"][0][sel]
        kp = out[f"kps_{s}"][0][sel].reshape(-1, 5, 2)
        centre = (grid + bb[:, :2]) * s
        size = np.exp(bb[:, 2:4]) * s
        boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
        lms.append((kp + grid[:, None, :]) * s)
        scores.append(score[sel])
    return boxes, scores, lms


def former_detect(det: YuNetDetector, bgr: np.ndarray, scale: float | None = None
                  ) -> Detections:
    """The detect() this change replaced, verbatim but for ``self`` -> ``det``."""
    h, w = bgr.shape[:2]
    if scale is None:
        scale = det.input_scale(h, w)
    rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
    ch, cw = -(-rh // 32) * 32, -(-rw // 32) * 32
    canvas = np.zeros((ch, cw, 3), np.uint8)
    canvas[:rh, :rw] = bgr if (rh, rw) == (h, w) else cv2.resize(
        bgr, (rw, rh), interpolation=cv2.INTER_AREA)
    blob = canvas.transpose(2, 0, 1)[None].astype(np.float32)
    outs = det._session.run(None, {"input": blob})  # noqa: SLF001
    names = [o.name for o in det._session.get_outputs()]  # noqa: SLF001
    out = dict(zip(names, outs, strict=True))
    boxes, scores, lms = former_decode(det, out, ch, cw)
    if not boxes:
        return Detections.empty()
    xyxy = np.concatenate(boxes) / scale
    lm = np.concatenate(lms) / scale
    sc = np.concatenate(scores)
    xyxy[:, [0, 2]] = np.clip(xyxy[:, [0, 2]], 0, w)
    xyxy[:, [1, 3]] = np.clip(xyxy[:, [1, 3]], 0, h)
    finite = (np.all(np.isfinite(xyxy), axis=1) & np.all(np.isfinite(lm), axis=(1, 2))
              & np.isfinite(sc))
    valid = finite & (xyxy[:, 2] - xyxy[:, 0] > 1) & (xyxy[:, 3] - xyxy[:, 1] > 1)
    xyxy, lm, sc = xyxy[valid], lm[valid], sc[valid]
    keep = former_nms(xyxy, sc, det.nms_threshold)
    return Detections(xyxy[keep], sc[keep], lm[keep])


def former_nms(xyxy: np.ndarray, score: np.ndarray, iou_threshold: float) -> np.ndarray:
    """The nms() this change replaced (one IoU row per kept box), verbatim."""
    order = np.argsort(-score)
    keep: list[int] = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        order = rest[iou_matrix(xyxy[i], xyxy[rest])[0] <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)
