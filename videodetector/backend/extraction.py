"""Extraction API (reference 8.5): faces, facens, normalized images and attributes of images,
without the database.

Request (8.5.2): ``{"requests": [request1, ...]}`` as a JSON body, or a multipart body whose
``request`` part is that JSON and whose other parts are images named by ``"multipart:NAME"``.
Each request: ``image`` (``multipart:NAME``, an http(s) URL with ``fetch_urls``, or -- an
addition -- base64 / a ``data:`` URI), ``roi`` ``{left, top, right, bottom}`` (clipped to the
image), ``detector`` (``nnd`` | ``legacy``: detect; ``prenormalized``: the image is a
normalized face), ``need_facen``, ``need_gender``, ``need_age``, ``need_emotions``,
``need_normalized``, ``auto_rotate``.

Response (8.5.3, as its examples spell it): ``{"responses": [{"faces": [...]}, ...]}``, one per
request, in order; a request that fails has ``"faces": []`` and ``"error": {code, desc}``
without failing the others. A face: ``bbox`` ``{left, top, right, bottom}``,
``detection_score`` (the detector's confidence 0..1; no quality estimator here), ``facen``
(base64 of the little-endian float32 L2-normalised embedding), ``gender`` ``{gender:
MALE|FEMALE, score}``, ``age`` (float years), ``normalized`` (base64 PNG, 112x112, postable
to ``/v1/face`` as ``face0``). What this backend cannot do is named in the response's
``unavailable`` (``{"emotions": reason, ...}``) instead of failing the request.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from videodetector.backend.engine import FaceEngine, FoundFace, large_enough
from videodetector.backend.errors import ApiError, bad_param
from videodetector.backend.imaging import Photo, as_aligned_face, decode_photo
from videodetector.backend.inline import b64
from videodetector.backend.scales import Decodes, analysis_factor, detection_factor
from videodetector.backend.settings import Settings
from videodetector.core.images import encode
from videodetector.core.models import TEMPLATE_112

log = logging.getLogger(__name__)

MAX_REQUESTS = 64  # requests per call (the multipart parser's file limit is the same)
DETECTORS = ("nnd", "legacy", "prenormalized")
FLAGS = ("need_facen", "need_gender", "need_age", "need_emotions", "need_normalized",
         "auto_rotate")
EMOTIONS_DISABLED = ("emotion recognition is disabled; start the backend (or extraction-api) "
                     "with --gae; the other attributes are answered")
AUTO_ROTATE_UNAVAILABLE = ("auto-rotation needs a face quality estimator, which this backend "
                           "does not have; faces are detected in the upright image only")
GAE_UNAVAILABLE = ("gender/age recognition is disabled; start the backend (or extraction-api) "
                   "with --gae")


@dataclass(frozen=True)
class Roi:
    left: float
    top: float
    right: float
    bottom: float


@dataclass(frozen=True)
class ExtractRequest:
    image: str
    roi: Roi | None = None
    detector: str = "nnd"
    need_facen: bool = False
    need_gender: bool = False
    need_age: bool = False
    need_emotions: bool = False
    need_normalized: bool = False
    auto_rotate: bool = False


def parse_requests(body: Any) -> list[Any]:
    """The list of requests of a body ``{"requests": [...]}`` (BAD_PARAM otherwise)."""
    if not isinstance(body, dict) or "requests" not in body:
        raise bad_param("requests", 'the body must be {"requests": [request, ...]} (a JSON body, '
                        "or a multipart part named 'request')")
    items = body["requests"]
    if not isinstance(items, list) or not items:
        raise bad_param("requests", "requests must be a non-empty list", items)
    if len(items) > MAX_REQUESTS:
        raise bad_param("requests", f"at most {MAX_REQUESTS} requests per call, got "
                        f"{len(items)}", len(items), status=413)
    return items


def parse_request(item: Any, i: int) -> ExtractRequest:
    """One request of the set; BAD_PARAM naming ``requests[i].field`` otherwise."""
    where = f"requests[{i}]"
    if not isinstance(item, dict):
        raise bad_param(where, f"{where} must be an object", item)
    unknown = sorted(set(item) - {"image", "roi", "detector", *FLAGS})
    if unknown:
        raise bad_param(f"{where}.{unknown[0]}", f"{where}: unknown field {unknown[0]!r}")
    image = item.get("image")
    if not isinstance(image, str) or not image:
        raise bad_param(f"{where}.image", f"{where}.image must be multipart:NAME, an http(s) "
                        "URL or base64", image)
    detector = item.get("detector", "nnd")
    if detector not in DETECTORS:
        raise bad_param(f"{where}.detector", f"{where}.detector must be one of "
                        f"{', '.join(DETECTORS)}", detector)
    flags = {}
    for name in FLAGS:
        value = item.get(name, False)
        if not isinstance(value, bool):
            raise bad_param(f"{where}.{name}", f"{where}.{name} must be true or false", value)
        flags[name] = value
    roi = parse_roi(item.get("roi"), f"{where}.roi")
    return ExtractRequest(image=image, roi=roi, detector=detector, **flags)


def parse_roi(value: Any, param: str) -> Roi | None:
    if value is None:
        return None
    keys = ("left", "top", "right", "bottom")
    if not isinstance(value, dict) or set(value) != set(keys):
        raise bad_param(param, f"{param} must be {{left, top, right, bottom}}", value)
    nums = [finite(value[k]) for k in keys]
    if any(v is None for v in nums):
        raise bad_param(param, f"{param}: left, top, right, bottom must be finite numbers",
                        value)
    roi = Roi(*nums)
    if roi.right <= roi.left or roi.bottom <= roi.top:
        raise bad_param(param, f"{param} needs right > left and bottom > top", value)
    return roi


def finite(value: Any) -> float | None:
    """``value`` as a finite float, or None (not a number, a bool, inf/nan, or too large)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def emotions_unavailable(gae: bool, engine: FaceEngine) -> str | None:
    """Why emotions cannot be answered (disabled, or the model/runtime failed to load), or
    None when they can. Emotions come with gender and age (``--gae``), as in FindFace."""
    if not gae:
        return EMOTIONS_DISABLED
    _, error = engine.emotion_classifier()
    if error is not None:
        return (f"the emotion model could not be loaded ({error}); the other attributes are "
                "answered")
    return None


def unavailable(req: ExtractRequest, gae: bool, emotions_reason: str | None = EMOTIONS_DISABLED
                ) -> dict[str, str]:
    """What ``req`` asks for that this backend cannot answer (the rest is answered)."""
    out = {}
    if req.need_emotions and emotions_reason is not None:
        out["emotions"] = emotions_reason
    if req.auto_rotate:
        out["auto_rotate"] = AUTO_ROTATE_UNAVAILABLE
    if not gae:
        for name in ("gender", "age"):
            if getattr(req, f"need_{name}"):
                out[name] = GAE_UNAVAILABLE
    return out


def attrs_unavailable(emotions: bool, reason: str | None) -> dict[str, str]:
    """The ``unavailable`` member of a /detect, /face or /faces/batch answer (8.1): emotions
    asked and not answered (``reason``, None when they are answered) are said to be
    unavailable, so the manual's own examples (gender + age + emotions) get everything
    else."""
    return {"emotions": reason} if emotions and reason is not None else {}


def error_json(exc: ApiError) -> dict[str, Any]:
    """A response's ``error``: ``{code, desc}`` (8.5.3), plus ``param`` when known."""
    code = exc.code
    if exc.extra.get("param") and "image" in str(exc.extra["param"]) and exc.status in (400,
                                                                                          413):
        code = "IMAGE_DECODING_FAILED" if exc.status == 400 else "IMAGE_TOO_LARGE"
    out = {"code": code, "desc": exc.reason}
    if exc.extra.get("param"):
        out["param"] = exc.extra["param"]
    return out


class Extractor:
    """Runs extraction requests with the backend's face models (no database)."""

    def __init__(self, settings: Settings, engine: FaceEngine) -> None:
        self.settings = settings
        self.engine = engine

    def decode(self, data: bytes, param: str) -> Photo:
        s = self.settings
        return decode_photo(data, param, s.max_photo_bytes, s.max_size)

    def extract(self, req: ExtractRequest, data: bytes, param: str) -> dict[str, Any]:
        """One response: ``{"faces": [...]}`` (+ ``unavailable``). A large JPEG is decoded
        at the DCT scale the detector needs for the ``roi`` (or the whole image), each face
        at the scale its models need (scales.py; exactly as before under 2560 px)."""
        if req.detector == "prenormalized":
            photo = self.decode(data, param)
        else:
            max_side = self.engine.detector().max_side
            decodes = Decodes(self.settings, self.engine, data, param, lambda size:
                              detection_factor(roi_size(req.roi, size), max_side))
        emo = (emotions_unavailable(self.settings.gae, self.engine) if req.need_emotions
               else None)
        missing = unavailable(req, self.settings.gae, emo)
        want_gae = {n for n in ("gender", "age") if getattr(req, f"need_{n}")} - set(missing)
        if req.detector == "prenormalized":
            faces = [self._prenormalized(photo, req, want_gae)]
        else:
            faces = [self._face(decodes, f, req, want_gae) for f in self._detect(decodes, req)]
        out: dict[str, Any] = {"faces": faces}
        if missing:
            out["unavailable"] = missing
        return out

    def _detect(self, decodes: Decodes, req: ExtractRequest) -> list[FoundFace]:
        """The faces in ``roi`` (or the whole image) of the first decode, largest first,
        in full-resolution pixels."""
        scaled = decodes.first
        image = scaled.photo.image
        x0 = y0 = 0
        if req.roi is not None:
            h, w = image.shape[:2]
            left, top, right, bottom = scaled.reduced_box(
                (req.roi.left, req.roi.top, req.roi.right, req.roi.bottom))
            x0, y0 = max(0, math.floor(left)), max(0, math.floor(top))
            x1, y1 = min(w, math.ceil(right)), min(h, math.ceil(bottom))
            if x1 - x0 < 2 or y1 - y0 < 2:
                return []
            image = np.ascontiguousarray(image[y0:y1, x0:x1])
        found = sorted(self.engine.detect(image), key=lambda f: f.area, reverse=True)
        if x0 or y0:
            shift = np.array([x0, y0], np.float32)
            found = [FoundFace((f.box[0] + x0, f.box[1] + y0, f.box[2] + x0, f.box[3] + y0),
                               None if f.landmarks is None else f.landmarks + shift, f.score)
                     for f in found]
        full = (scaled.to_full(f) for f in found)
        return [f for f in full if large_enough(f.box, self.settings.min_face_size)]

    def _face(self, decodes: Decodes, face: FoundFace, req: ExtractRequest,
              want_gae: set[str]) -> dict[str, Any]:
        """``face`` (full-resolution pixels) described from the decode at its
        ``analysis_factor``; its bbox in full-resolution pixels."""
        want = frozenset({"emotions"} if req.need_emotions and self.settings.gae else ())
        scaled = decodes.at(analysis_factor(face, decodes.largest, want))
        reduced = scaled.to_reduced(face)
        image = scaled.photo.image
        aligned, embedding = self.engine.embed(image, reduced)
        out = {"bbox": bbox_json(face.box), "detection_score": round(face.score, 6)}
        return self._describe(out, image, reduced.landmarks, aligned, embedding, req, want_gae,
                              reduced.box)

    def _prenormalized(self, photo: Photo, req: ExtractRequest, want_gae: set[str]
                       ) -> dict[str, Any]:
        aligned = as_aligned_face(photo.image)
        embedding = self.engine.embed_aligned(aligned)
        w, h = photo.size
        out: dict[str, Any] = {"bbox": bbox_json((0, 0, w, h))}
        landmarks = TEMPLATE_112 * (aligned.shape[0] / 112.0)
        return self._describe(out, aligned, landmarks, aligned, embedding, req, want_gae,
                              (0.0, 0.0, float(aligned.shape[1]), float(aligned.shape[0])))

    def _describe(self, out: dict[str, Any], image: np.ndarray, landmarks: np.ndarray | None,
                  aligned: np.ndarray, embedding: np.ndarray, req: ExtractRequest,
                  want_gae: set[str], box: tuple[float, float, float, float]
                  ) -> dict[str, Any]:
        if req.need_facen:
            out["facen"] = facen_b64(embedding)
        if want_gae:
            d = self.engine.age_gender().estimate_detail(image, landmarks)
            if "gender" in want_gae:
                out["gender"] = {"gender": d["gender"].upper(),
                                 "score": round(d["gender_confidence"], 6)}
            if "age" in want_gae:
                out["age"] = round(d["age_exact"], 2)
        if req.need_emotions and self.settings.gae:
            out.update(self._emotions(image, box))
        if req.need_normalized:
            out["normalized"] = b64(encode(aligned, "png"))
        return out


    def _emotions(self, image: np.ndarray, box: tuple[float, float, float, float]
                  ) -> dict[str, Any]:
        """``{"emotions": [{emotion, score}, ...]}`` by descending score (8.5.3); nothing when
        the classifier is unavailable (``unavailable`` says why)."""
        classifier, _ = self.engine.emotion_classifier()
        return {} if classifier is None else {"emotions": classifier.classify(image, box)}


def roi_size(roi: Roi | None, size: tuple[int, int]) -> tuple[int, int]:
    """The pixel size of ``roi`` clipped to an image of ``size`` (the whole size without one;
    (0, 0) when nothing is left)."""
    if roi is None:
        return size
    w = min(size[0], math.ceil(roi.right)) - max(0, math.floor(roi.left))
    h = min(size[1], math.ceil(roi.bottom)) - max(0, math.floor(roi.top))
    return max(0, w), max(0, h)


def bbox_json(box: tuple[float, float, float, float]) -> dict[str, int]:
    return {"left": round(box[0]), "top": round(box[1]), "right": round(box[2]),
            "bottom": round(box[3])}


def facen_b64(embedding: np.ndarray) -> str:
    """The facen as the reference ships it: base64 of the raw little-endian float32 vector."""
    return b64(np.asarray(embedding, dtype="<f4").tobytes())


def facen_from_b64(text: str) -> np.ndarray:
    """The inverse of :func:`facen_b64` (for clients and tests)."""
    import base64

    return np.frombuffer(base64.b64decode(text), dtype="<f4")
