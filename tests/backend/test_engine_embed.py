"""The backend engine's embedder: OpenVINO for the float model (the float model's vectors,
~40 % less CPU than OpenCV's DNN here), OpenCV's DNN when OpenVINO is missing."""

from __future__ import annotations

import sys

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
