"""The backend engine's embedder: OpenVINO for the float model (the float model's vectors,
~40 % less CPU than OpenCV's DNN here), OpenCV's DNN when OpenVINO is missing."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from tests.conftest import shared_file
from videodetector.backend.engine import FaceEngine, embed_runtime, embed_workers
from videodetector.core.models import (
    SFACE_BF16_NAME,
    SFACE_INT8_NAME,
    SFACE_NAME,
    SFaceEmbedder,
)


def test_the_backend_embeds_the_float_model_through_openvino_with_its_vectors():
    pytest.importorskip("openvino")
    engine = FaceEngine(1, 0.6)
    img = cv2.imread(str(shared_file("stills_meds/S029-02-t10_01.jpg")))
    face = max(engine.detect(img), key=lambda f: f.area)
    aligned, vec = engine.embed(img, face)
    emb = engine.embedder()
    assert emb.runtime == "openvino" and emb.model == SFACE_NAME
    assert emb._ov._free.qsize() == embed_workers()  # noqa: SLF001 - one request per core
    np.testing.assert_allclose(vec, SFaceEmbedder().embed(aligned), atol=1e-5)
    np.testing.assert_allclose(engine.embed_aligned(aligned), vec, atol=0)


def test_runtime_choice_per_model_and_without_openvino(monkeypatch):
    pytest.importorskip("openvino")
    assert embed_runtime(SFACE_NAME) == "openvino"
    assert embed_runtime(SFACE_BF16_NAME) == "openvino"
    assert embed_runtime(SFACE_INT8_NAME) == "onnxruntime"
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    assert embed_runtime(SFACE_NAME) == "opencv"
    assert embed_runtime(SFACE_INT8_NAME) == "onnxruntime"
    with pytest.raises(ImportError, match=f"{SFACE_BF16_NAME} runs through OpenVINO"):
        embed_runtime(SFACE_BF16_NAME)
    assert FaceEngine(1, 0.6).embedder().runtime == "opencv"


def _faces(n: int, seed: int = 0) -> list[np.ndarray]:
    """Face-sized images (blurred noise: the cost and the batching do not depend on the
    pixels, and no test media is needed)."""
    rng = np.random.default_rng(seed)
    return [cv2.GaussianBlur(rng.integers(0, 256, (112, 112, 3), np.uint8), (5, 5), 0)
            for _ in range(n)]


@pytest.mark.parametrize("model", [SFACE_NAME, SFACE_BF16_NAME])
def test_a_batch_of_every_size_the_batcher_forms_is_bit_for_bit_one_face_per_run(model):
    pytest.importorskip("openvino")
    cap = 8  # above the default: any cap a setting may give forms such batches
    emb = FaceEngine(1, 0.6, model, embed_max_batch=cap).embedder()
    faces = _faces(cap + 3)
    alone = np.stack([emb.embed(f) for f in faces])
    for n in range(1, cap + 1):
        for start in (0, 3):
            got = emb.embed_batch(faces[start:start + n])
            assert np.array_equal(got, alone[start:start + n]), (model, n, start)


@pytest.mark.parametrize("model", [SFACE_NAME, SFACE_BF16_NAME])
def test_concurrent_embeddings_are_batched_and_each_caller_gets_its_own_vector(model):
    pytest.importorskip("openvino")
    engine = FaceEngine(1, 0.6, model)
    emb = engine.embedder()
    batcher = engine._batcher  # noqa: SLF001
    assert batcher is not None and batcher.slots == embed_workers()
    faces = _faces(24, seed=1)
    alone = [emb.embed(f) for f in faces]
    for _ in range(5):  # until some call carried several faces (the first round, as a rule)
        with ThreadPoolExecutor(12) as pool:
            got = list(pool.map(engine.embed_aligned, faces))
        for i, vec in enumerate(got):
            assert np.array_equal(vec, alone[i]), i
        if batcher.items > batcher.calls:
            break
    assert batcher.items > batcher.calls  # batched, and still every vector its own


def test_a_bad_face_fails_only_its_own_caller_among_concurrent_ones():
    pytest.importorskip("openvino")
    engine = FaceEngine(1, 0.6)
    emb = engine.embedder()
    faces = _faces(8, seed=2)
    alone = [emb.embed(f) for f in faces]
    items: list = [*faces[:4], np.zeros((112, 111, 3), np.uint8), *faces[4:]]

    def one(face):
        try:
            return engine.embed_aligned(face)
        except ValueError as exc:
            return exc

    with ThreadPoolExecutor(9) as pool:
        got = list(pool.map(one, items))
    assert isinstance(got[4], ValueError) and "112x112x3" in str(got[4])
    for vec, ref in zip(got[:4] + got[5:], alone, strict=True):
        assert np.array_equal(vec, ref)


def test_runtimes_that_loop_over_a_batch_get_no_batcher(monkeypatch):
    pytest.importorskip("openvino")
    assert FaceEngine(1, 0.6, SFACE_INT8_NAME).embedder() is not None
    engine = FaceEngine(1, 0.6, SFACE_INT8_NAME)
    engine.embedder()
    assert engine._batcher is None  # noqa: SLF001 - onnxruntime runs faces one by one
    monkeypatch.setitem(sys.modules, "openvino", None)  # OpenCV's DNN
    engine = FaceEngine(1, 0.6)
    face = _faces(1)[0]
    assert np.array_equal(engine.embed_aligned(face), engine.embedder().embed(face))
    assert engine._batcher is None  # noqa: SLF001


@pytest.mark.parametrize("model", [SFACE_NAME, SFACE_BF16_NAME])
def test_the_batch_cap_is_the_engines_setting_and_1_means_no_batcher(model):
    pytest.importorskip("openvino")
    engine = FaceEngine(1, 0.6, model, embed_max_batch=3)
    emb = engine.embedder()
    assert engine._batcher.max_batch == 3 and emb._ov.max_batch == 3  # noqa: SLF001
    faces = _faces(10, seed=3)
    alone = [emb.embed(f) for f in faces]
    with ThreadPoolExecutor(10) as pool:
        got = list(pool.map(engine.embed_aligned, faces))
    assert all(np.array_equal(g, a) for g, a in zip(got, alone, strict=True))
    assert engine._batcher.items <= 3 * engine._batcher.calls  # noqa: SLF001
    single = FaceEngine(1, 0.6, model, embed_max_batch=1)
    assert np.array_equal(single.embed_aligned(faces[0]), alone[0])
    assert single._batcher is None and single.embedder()._ov.max_batch == 1  # noqa: SLF001
    for bad in (0, 65, 2.0):
        with pytest.raises(ValueError, match="embed_max_batch"):
            FaceEngine(1, 0.6, model, embed_max_batch=bad)


def test_the_settings_default_cap_is_the_engines():
    from videodetector.backend.engine import EMBED_MAX_BATCH
    from videodetector.backend.settings import Settings

    assert Settings().embed_max_batch == EMBED_MAX_BATCH == FaceEngine().embed_max_batch
