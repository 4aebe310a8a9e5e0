"""Degenerate faces never crash a loop: property-based tests over the whole per-camera pipeline
and the per-face functions shared with the backend (alignment, quality, embedding, and the
backend's engine.locate_scaled (bbox) and FaceEngine.embed).

The only thing faked is the face detector's *output* (a seam: a model may return anything);
quality, tracking, best-frame selection, alignment, SFace and encoding are the real ones.
"""

from __future__ import annotations

import math
import types
from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from videodetector.core.models import TEMPLATE_112, SFaceEmbedder, align_face
from videodetector.core.quality.score import face_quality
from videodetector.detector.config import parse_config
from videodetector.detector.pipeline import SKIP_BAD_BOX, CameraSpec, FacePipeline
from videodetector.detector.video.source import Frame

W, H = 160, 120
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SPECIAL = [0.0, -1.0, -1e-9, float(W), float(H), W + 0.5, 1e30, -1e30,
           math.nan, math.inf, -math.inf]
coord = st.one_of(st.floats(-2 * W, 2 * W, allow_nan=False), st.sampled_from(SPECIAL))
any_box = st.tuples(coord, coord, coord, coord)
# A box on the frame: sometimes empty or inverted, sometimes at or beyond the edge.
frame_box = st.builds(
    lambda x, y, w, h: (x, y, x + w, y + h),
    st.floats(-40, W + 10), st.floats(-40, H + 10), st.floats(-20, 120), st.floats(-20, 120),
)


@st.composite
def landmarks_for(draw: st.DrawFn, box: tuple[float, float, float, float]) -> list:
    """5 landmarks of a kind: a face in a random order, collinear, all at one point, random,
    outside the box, or with NaN/inf."""
    kind = draw(st.sampled_from(["face", "collinear", "point", "random", "outside", "special"]))
    x1, y1, x2, y2 = (v if math.isfinite(v) else 0.0 for v in box)
    w, h = max(abs(x2 - x1), 1.0), max(abs(y2 - y1), 1.0)
    if kind == "face":
        order = draw(st.permutations(range(5)))
        pts = TEMPLATE_112[list(order)] / 112.0 * (w, h) + (x1, y1)
    elif kind == "collinear":
        pts = np.stack([np.linspace(x1, x1 + w, 5), np.full(5, y1 + h / 2)], axis=1)
    elif kind == "point":
        pts = np.full((5, 2), (x1 + w / 2, y1 + h / 2))
    elif kind == "outside":
        pts = TEMPLATE_112 / 112.0 * (w, h) + (x1 + draw(st.sampled_from([-3 * w, 3 * w])), y1)
    else:
        elems = coord if kind == "special" else st.floats(-W, 2 * W)
        pts = np.array(draw(st.lists(st.tuples(elems, elems), min_size=5, max_size=5)))
    return np.asarray(pts, np.float64).tolist()


@st.composite
def raw_detection(draw: st.DrawFn) -> tuple:
    box = draw(st.one_of(frame_box, any_box))
    score = draw(st.one_of(st.floats(0, 1), st.sampled_from([-0.5, 1.5, math.nan, math.inf])))
    return box, score, draw(landmarks_for(box))


def as_raw(dets: list[tuple]) -> types.SimpleNamespace:
    """What a detector model might hand back, unchecked (a Detections refuses empty boxes)."""
    n = len(dets)
    return types.SimpleNamespace(
        xyxy=np.array([d[0] for d in dets], np.float64).reshape(n, 4),
        score=np.array([d[1] for d in dets], np.float64).reshape(n),
        landmarks=np.array([d[2] for d in dets], np.float64).reshape(n, 5, 2),
    )


class ScriptedDetector:
    """Returns the same raw detections for every frame (so tracks form and get scored)."""

    def __init__(self, raw: types.SimpleNamespace) -> None:
        self.raw = raw

    def detect(self, bgr: np.ndarray) -> types.SimpleNamespace:
        return self.raw


def frames(n: int, seed: int = 1) -> list[Frame]:
    rng = np.random.default_rng(seed)
    return [Frame(rng.integers(0, 255, (H, W, 3), np.uint8), i, i / 25, 1000.0 + i / 25)
            for i in range(n)]


@cache
def cfg(mode: str, uniq: bool):
    args = ["--source", "x.mp4", "--camid", "c", "--api-url", "127.0.0.1:9", "--api-token", "t",
            "--md-threshold", "0", "--min-score", "-1000", "-r", "1" if mode != "off" else "0",
            "--rt-delay", "40"]
    if mode == "1844":
        args.append("--realtime1844")
    if uniq:
        args.append("--post-uniq")
    return parse_config(args)


@SETTINGS
@given(dets=st.lists(raw_detection(), max_size=4), mode=st.sampled_from(["off", "rt", "1844"]),
       uniq=st.booleans())
def test_any_detections_go_through_the_whole_pipeline_without_a_crash(dets, mode, uniq):
    raw = as_raw(dets)
    pipe = FacePipeline(cfg(mode, uniq), CameraSpec("c", "x.mp4"), ScriptedDetector(raw),
                        live=False)
    clip = frames(6)
    snaps = [s for fr in clip for s in pipe.process(fr)] + pipe.finish()
    stats = pipe.stats
    # every detection is either used or counted as dropped
    assert stats.faces_detected + stats.faces_skipped[SKIP_BAD_BOX] == len(dets) * len(clip)
    assert pipe.last_index == len(clip) - 1
    keys = [s.idempotency_key for s in snaps]
    assert len(keys) == len(set(keys))
    for s in snaps:
        x1, y1, x2, y2 = s.bbox
        assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H
        assert math.isfinite(s.score) and math.isfinite(s.direction_score)
        assert s.face_png.startswith(b"\x89PNG") and s.position in range(len(clip))


def test_a_face_with_the_mouth_above_the_eyes_is_skipped_not_a_crash():
    """The TV clip case: YuNet's landmarks on a tilted face put the mouth above the eyes."""
    box = (40.0, 20.0, 100.0, 90.0)
    upside_down = (TEMPLATE_112[[3, 4, 2, 0, 1]] / 112.0 * 60 + (40, 20)).tolist()
    good = (TEMPLATE_112 / 112.0 * 40 + (110, 30)).tolist()
    raw = as_raw([(box, 0.9, upside_down), ((110.0, 30.0, 150.0, 75.0), 0.9, good)])
    pipe = FacePipeline(cfg("off", False), CameraSpec("c", "x.mp4"), ScriptedDetector(raw),
                        live=False)
    snaps = [s for fr in frames(6) for s in pipe.process(fr)] + pipe.finish()
    assert pipe.stats.faces_skipped["unscorable"] >= 4  # the upside-down face, every frame
    assert len(snaps) == 1 and snaps[0].bbox[0] >= 100  # the good face is still posted


# ----------------------------------------------------------------------- shared per-face code

image_st = st.sampled_from([(H, W), (1, 1), (2, 3), (480, 640)]).map(
    lambda hw: np.random.default_rng(hw[0]).integers(0, 255, (*hw, 3), np.uint8))


@cache
def embedder() -> SFaceEmbedder:
    return SFaceEmbedder()


@SETTINGS
@given(image=image_st, box=st.one_of(frame_box, any_box), data=st.data())
def test_alignment_quality_and_embedding_accept_a_face_or_refuse_it_with_value_error(
    image, box, data
):
    lm = np.array(data.draw(landmarks_for(box)))
    finite = bool(np.all(np.isfinite(lm)))
    if not finite or np.ptp(lm, axis=0).max() < 1e-3 or np.abs(lm).max() > 1e7:
        with pytest.raises(ValueError):  # no face can be placed: refused, not a garbage crop
            align_face(image, lm)
    else:
        aligned = align_face(image, lm)
        assert aligned.shape == (112, 112, 3) and aligned.dtype == np.uint8
        vec = embedder().embed(aligned)
        assert vec.shape == (128,) and np.all(np.isfinite(vec))
    try:
        q = face_quality(image, np.array(box), lm, data.draw(st.floats(0, 1)))
    except ValueError:
        pass
    else:
        assert all(math.isfinite(v) for v in (q.score, q.direction_score, q.sharpness_ratio))


@SETTINGS
@given(image=image_st, box=st.one_of(frame_box, any_box), data=st.data())
def test_backend_engine_embed_and_locate_take_odd_boxes_and_landmarks(image, box, data):
    """The backend's analysis path (called directly): embed() refuses landmarks that cannot
    place a face with ValueError; locate() answers a FoundFace or the API's BAD_PARAM."""
    from tests.backend.full_scale import locate  # engine.locate_scaled at full scale
    from videodetector.backend.engine import FoundFace, shared_engine
    from videodetector.backend.errors import ApiError

    engine = shared_engine(1, 0.6)
    lm = np.array(data.draw(landmarks_for(box)), np.float32)
    try:
        aligned, vec = engine.embed(image, FoundFace(box, lm))
    except ValueError:
        pass
    else:
        assert aligned.shape == (112, 112, 3) and np.all(np.isfinite(vec))
    if not all(math.isfinite(v) for v in box):
        return  # the API's bbox parser refuses these before they reach the engine
    try:
        found = locate(engine, image, box)
    except ApiError as exc:
        assert exc.code == "BAD_PARAM"
    else:
        assert found.box == box and found.landmarks.shape == (5, 2)


def test_align_face_names_the_bad_landmarks():
    img = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError, match="finite"):
        align_face(img, np.full((5, 2), np.nan))
    with pytest.raises(ValueError, match="one point"):
        align_face(img, np.ones((5, 2)))
    with pytest.raises(ValueError, match="5"):
        align_face(img, np.ones((4, 2)))


def test_a_restarted_pipeline_goes_on_with_the_track_ids_of_its_camera():
    """After a crash restart track ids continue, so (run id, track, seq) never repeats a key
    of the crashed pipeline (a live camera keeps its run id across restarts)."""
    good = (TEMPLATE_112 / 112.0 * 40 + (110, 30)).tolist()
    raw = as_raw([((110.0, 30.0, 150.0, 75.0), 0.9, good)])
    pipe = FacePipeline(cfg("off", False), CameraSpec("c", "x.mp4"), ScriptedDetector(raw),
                        live=True, run_id="r1", first_track_id=42)
    snaps = [s for fr in frames(4) for s in pipe.process(fr)] + pipe.finish()
    assert [s.track_id for s in snaps] == [42] and pipe.next_track_id == 43
    assert snaps[0].idempotency_key.startswith("c:r1:")


@pytest.mark.media
def test_yunet_drops_a_face_whose_model_output_is_not_finite():
    """A broken model output (NaN landmarks, an overflowing box) is no face: YuNet leaves it
    out instead of handing NaN landmarks to the tracker, the pipeline or the backend."""
    import cv2

    from tests.conftest import shared_file
    from videodetector.core.models import YuNetDetector

    img = cv2.imread(str(shared_file("stills_meds/S029-02-t10_01.jpg")))
    det = YuNetDetector()
    assert len(det.detect(img)) == 1
    real_run = det._session.run

    def run(names, feeds):
        outs = real_run(names, feeds)
        outputs = [o.name for o in det._session.get_outputs()]
        for stride in YuNetDetector.STRIDES:
            kps = outs[outputs.index(f"kps_{stride}")]
            kps[..., 4] = np.nan  # one landmark coordinate of every anchor
        return outs

    det._session = types.SimpleNamespace(run=run, get_outputs=det._session.get_outputs)
    assert len(det.detect(img)) == 0
