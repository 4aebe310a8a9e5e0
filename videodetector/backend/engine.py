"""Face models behind the API: detection, face localisation in a bbox, embedding, gender/age;
and the faces they give (``FoundFace``, ``NewFace``, the ``mf_selector`` choice), shared by
service.py and probe.py.

Models load lazily, once per process (shared by every app in the process, since
they hold no per-request state), on first use or at startup with ``preload_models``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from videodetector.backend.errors import ApiError, bad_param
from videodetector.backend.imaging import clamp_box, expand_box
from videodetector.core.batcher import MicroBatcher
from videodetector.core.geometry import box_centre, iou_matrix
from videodetector.core.images import encode
from videodetector.core.models import SFACE_NAME, TEMPLATE_112, align_face, check_aligned

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class FoundFace:
    """A face on a photo: its box (reported to the client) and landmarks (for alignment)."""

    box: Box
    landmarks: np.ndarray | None  # (5, 2) in photo pixels; None for an aligned face upload
    score: float = 1.0

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


@dataclass
class NewFace:
    """A face ready to store or search: where it is, its normalized image and embedding."""

    box: Box
    aligned: np.ndarray
    embedding: np.ndarray
    # gender, gender_confidence, age, emotions (the two most likely names)
    attrs: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # plugin annotations: {"plugins": ..}
    aligned_png: bytes | None = None  # ``aligned`` as the uploaded PNG (imaging.png_as_uploaded)

    def normalized_png(self) -> bytes:
        return self.aligned_png if self.aligned_png is not None else encode(self.aligned, "png")


# faces per batched SFace call at most (Settings.embed_max_batch, whose default this is): with
# 8 clients a call carries 1.6-1.8 faces at any cap from 2 up, and each face of the cap costs
# ~4.7 MB per infer request (server RSS 340 / 356 / 381 / 426 MB at caps 1 / 2 / 4 / 8)
EMBED_MAX_BATCH = 2


class FaceEngine:
    """YuNet detection + SFace embedding (+ the optional gender/age estimator)."""

    def __init__(self, threads: int = 1, detector_threshold: float = 0.6,
                 embedding_model: str = SFACE_NAME,
                 embed_max_batch: int = EMBED_MAX_BATCH) -> None:
        if not isinstance(embed_max_batch, int) or not 1 <= embed_max_batch <= 64:
            raise ValueError(f"embed_max_batch must be an integer in 1..64, got "
                             f"{embed_max_batch!r}")
        self.threads = threads
        self.detector_threshold = detector_threshold
        self.embedding_model = embedding_model
        self.embed_max_batch = embed_max_batch
        self._lock = threading.Lock()
        self._detector: Any = None
        self._embedder: Any = None
        self._batcher: MicroBatcher | None = None  # set with the embedder (openvino only)
        self._gae: Any = None
        self._gae_error: str | None = None
        self._emotions: Any = None
        self._emotions_error: str | None = None

    def load(self) -> None:
        """Load the detector and the embedder now (they are otherwise loaded on first use)."""
        self.detector()
        self.embedder()

    def detector(self) -> Any:
        with self._lock:
            if self._detector is None:
                from videodetector.core.models import YuNetDetector

                log.info("loading the face detector")
                self._detector = YuNetDetector(self.detector_threshold, threads=self.threads)
            return self._detector

    def embedder(self) -> Any:
        with self._lock:
            if self._embedder is None:
                self._embedder = self._load_embedder()
                self._batcher = embed_batcher(self._embedder, self.embed_max_batch)
            return self._embedder

    def _load_embedder(self) -> Any:
        """SFace through OpenVINO's CPU plugin (f32: the float model's vectors within float
        rounding, ~40 % less CPU per face than OpenCV's DNN on this graph), else through
        OpenCV's DNN when OpenVINO is not installed; one infer request / net per core, so
        concurrent requests embed in parallel. The int8 variant runs through onnxruntime, the
        bf16 one through OpenVINO."""
        from videodetector.core.models import SFACE_INT8_NAME, SFaceEmbedder

        runtime = embed_runtime(self.embedding_model)
        log.info("loading the face embedder %s (%s)", self.embedding_model, runtime)
        if self.embedding_model == SFACE_INT8_NAME:
            return SFaceEmbedder(threads=self.threads, model=self.embedding_model)
        if runtime == "opencv":
            cv2.setNumThreads(self.threads)  # like onnxruntime's intra-op threads per call
        return SFaceEmbedder(threads=self.threads, model=self.embedding_model,
                             runtime=runtime, workers=embed_workers(),
                             max_batch=self.embed_max_batch)

    def age_gender(self) -> Any:
        """The gender/age estimator, or BAD_PARAM if it cannot be loaded."""
        with self._lock:
            if self._gae is None and self._gae_error is None:
                try:
                    from videodetector.backend.gae import AgeGenderEstimator

                    self._gae = AgeGenderEstimator(threads=self.threads)
                except Exception as exc:  # noqa: BLE001 - any failure means "not available"
                    log.exception("gender/age estimator unavailable")
                    self._gae_error = f"{type(exc).__name__}: {exc}"
            if self._gae is None:
                raise bad_param("gender", "gender/age recognition is enabled (gae) but its "
                                f"model could not be loaded: {self._gae_error}")
            return self._gae

    def emotion_classifier(self) -> tuple[Any, str | None]:
        """(the emotion classifier, None) or (None, why it cannot be loaded); loaded once."""
        with self._lock:
            if self._emotions is None and self._emotions_error is None:
                try:
                    from videodetector.backend.emotions import EmotionClassifier

                    self._emotions = EmotionClassifier(threads=self.threads)
                except Exception as exc:  # noqa: BLE001 - any failure means "not available"
                    log.exception("emotion classifier unavailable")
                    self._emotions_error = f"{type(exc).__name__}: {exc}"
            return self._emotions, self._emotions_error

    # -- operations ---------------------------------------------------------

    def detect(self, image: np.ndarray, min_face_size: int = 0) -> list[FoundFace]:
        dets = self.detector().detect(image)
        faces = []
        for box, score, lm in zip(dets.xyxy, dets.score, dets.landmarks, strict=True):
            if not large_enough(box, min_face_size):
                continue
            faces.append(FoundFace(tuple(float(v) for v in box), lm.copy(), float(score)))
        return faces

    def embed(self, image: np.ndarray, face: FoundFace) -> tuple[np.ndarray, np.ndarray]:
        """(aligned 112x112 face, L2-normalised embedding)."""
        aligned = align_face(image, face.landmarks)
        return aligned, self.embed_aligned(aligned)

    def embed_aligned(self, aligned: np.ndarray) -> np.ndarray:
        """The embedding of one aligned face; concurrent callers' faces are embedded
        together (``embed_batcher``), each caller getting its own face's vector, bit for bit
        the vector of a call of its own; ValueError (its caller only) for a bad face."""
        embedder = self.embedder()
        if self._batcher is None:
            return embedder.embed(aligned)
        return self._batcher.submit(check_aligned(aligned))

    def estimate_age_gender(self, image: np.ndarray, landmarks: np.ndarray | None,
                            aligned: np.ndarray, wanted: frozenset[str] = frozenset(
                                {"gender", "age"}), box: Box | None = None) -> dict[str, Any]:
        """``{"gender": "male"|"female", "gender_confidence": float, "age": int, "emotions":
        [name, name]}``, limited to the ``wanted`` attributes. ``box``: the face's box on
        ``image`` (for emotions; the whole image for an uploaded normalized face)."""
        if landmarks is None:  # an uploaded normalized face: its landmarks are the template
            image, landmarks = aligned, TEMPLATE_112 * (aligned.shape[0] / 112.0)
            box = None
        attrs: dict[str, Any] = {}
        if wanted & {"gender", "age"}:
            out = self.age_gender().estimate(image, landmarks)
            gender = out.get("gender") or {}
            if "gender" in wanted:
                attrs["gender"] = gender.get("gender")
                attrs["gender_confidence"] = gender.get("confidence")
            if "age" in wanted:
                attrs["age"] = out.get("age")
        classifier = self.emotion_classifier()[0] if "emotions" in wanted else None
        if classifier is not None:
            from videodetector.backend.emotions import classic

            h, w = image.shape[:2]
            attrs["emotions"] = classic(classifier.classify(image, box or (0, 0, w, h)))
        return attrs


def _best_match(faces: list[FoundFace], box: Box, offset: tuple[float, float]
                ) -> FoundFace | None:
    """The face (shifted by ``offset``) overlapping ``box`` most, if any overlaps enough."""
    dx, dy = offset
    best, best_key = None, (-1.0, -1.0)
    for face in faces:
        fb = (face.box[0] + dx, face.box[1] + dy, face.box[2] + dx, face.box[3] + dy)
        cx, cy = box_centre(fb)
        inside = box[0] <= cx <= box[2] and box[1] <= cy <= box[3]
        key = (float(iou_matrix(fb, box)[0, 0]), face.score)
        if (inside or key[0] > 0.3) and key > best_key:
            best_key = key
            best = FoundFace(fb, face.landmarks + np.array([dx, dy], np.float32), face.score)
    return best


best_match = _best_match  # used by regenerate.py to find a stored face again

Scale = tuple[float, float]  # full-resolution pixels per pixel, horizontally and vertically
FULL_SCALE: Scale = (1.0, 1.0)


def _on_scale(box: Box, scale: Scale) -> Box:
    """``box`` (full-resolution pixels) on pixels at ``scale``."""
    if scale == FULL_SCALE:
        return box
    sx, sy = scale
    return (box[0] / sx, box[1] / sy, box[2] / sx, box[3] / sy)


def locate_scaled(box: Box, detections: list[FoundFace], scale: Scale,
                  pixels_for_crop: Callable[[Box], tuple[np.ndarray, Scale]],
                  detect: Callable[[np.ndarray], list[FoundFace]], param: str = "bbox"
                  ) -> FoundFace:
    """The face inside a client's ``box`` (full-resolution pixels); the box reported stays
    the client's, the landmarks are full-resolution.

    The face of ``detections`` (found on pixels at ``scale``) that overlaps the box best;
    if none does (a small face), the best of ``detect`` on a crop around the box (twice its
    size, clamped) of the pixels ``pixels_for_crop(box)`` gives (with their scale).
    """
    best = _best_match(detections, _on_scale(box, scale), (0.0, 0.0))
    if best is None:
        image, scale = pixels_for_crop(box)
        scaled_box = _on_scale(box, scale)
        h, w = image.shape[:2]
        x1, y1, x2, y2 = clamp_box(expand_box(scaled_box, 1.0), w, h)
        crop = np.ascontiguousarray(image[y1:y2, x1:x2])
        best = _best_match(detect(crop), scaled_box, (float(x1), float(y1)))
    if best is None:
        raise no_face_inside(param, box)
    landmarks = best.landmarks
    if scale != FULL_SCALE and landmarks is not None:
        landmarks = landmarks * np.array(scale, np.float32)
    return FoundFace(box, landmarks, best.score)


def large_enough(box: Box | np.ndarray, min_face_size: float) -> bool:
    """Whether ``box``'s shorter side is at least ``min_face_size`` (the setting's rule:
    smaller detections are ignored; full-resolution pixels)."""
    return min(box[2] - box[0], box[3] - box[1]) >= min_face_size


def no_face_inside(param: str, box: Box) -> Exception:
    """BAD_PARAM: no face found inside the client's ``box`` (given as ``param``)."""
    return bad_param(param, f"no face found inside {param} "
                     f"[{', '.join(str(round(v)) for v in box)}]",
                     value=[round(v) for v in box])


def face_box_json(box: Box) -> dict[str, int]:
    return {"x1": round(box[0]), "x2": round(box[2]), "y1": round(box[1]), "y2": round(box[3])}


def select_faces(found: list[FoundFace], selector: str, photo_param: str = "photo"
                 ) -> list[FoundFace]:
    """The detected faces ``mf_selector`` keeps, largest first; BAD_PARAM when none was
    found, or several with ``reject``."""
    if not found:
        raise bad_param(photo_param, f"No faces found on {photo_param}")
    found = sorted(found, key=lambda f: f.area, reverse=True)
    if selector == "reject" and len(found) > 1:
        raise bad_param("mf_selector", f"Too many faces: {len(found)}", "reject",
                        faces=[face_box_json(f.box) for f in found])
    return found if selector == "all" else found[:1]


def no_usable_face(param: str) -> ApiError:
    return bad_param(param, f"no usable face on {param}: the face landmarks cannot "
                     "place a face (degenerate or far outside the image)")


def embed_runtime(model: str) -> str:
    """The runtime the backend embeds ``model`` with: openvino when it is installed (it is
    a dependency; the fallback keeps a backend without it working at OpenCV's cost), the
    int8 model through onnxruntime."""
    from videodetector.core.models import SFACE_BF16_NAME, SFACE_INT8_NAME

    if model == SFACE_INT8_NAME:
        return "onnxruntime"
    try:
        import openvino  # noqa: F401
    except ImportError as exc:
        if model == SFACE_BF16_NAME:
            raise ImportError(f"embedding model {model} runs through OpenVINO, which is not "
                              f"installed (pip install openvino)") from exc
        log.warning("openvino is not installed: embedding through OpenCV's DNN "
                    "(~1.7x the CPU per face)")
        return "opencv"
    return "openvino"


def embed_workers() -> int:
    """Concurrent embeddings a backend process runs: one per core it may use (2-4)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(2, min(4, cores or 1))


def embed_batcher(embedder: Any, max_batch: int = EMBED_MAX_BATCH) -> MicroBatcher | None:
    """A micro-batcher over ``embedder.embed_batch`` when its runtime takes a batch in one
    call (OpenVINO), up to ``max_batch`` faces per call, with one slot per infer request (an
    idle backend embeds at once, concurrent requests in parallel up to the requests, the
    ones arriving meanwhile together in the next call); None for the runtimes that loop over
    a batch anyway, and for ``max_batch`` 1 (every face in a run of its own)."""
    if getattr(embedder, "runtime", None) != "openvino" or max_batch <= 1:
        return None
    return MicroBatcher(embedder.embed_batch, slots=embedder.workers,
                        max_batch=max_batch, max_pending=256)


@functools.lru_cache(maxsize=4)
def shared_engine(threads: int, detector_threshold: float,
                  embedding_model: str = SFACE_NAME,
                  embed_max_batch: int = EMBED_MAX_BATCH) -> FaceEngine:
    """One engine per configuration per process."""
    return FaceEngine(threads, detector_threshold, embedding_model, embed_max_batch)
