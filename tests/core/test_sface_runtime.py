"""SFace through OpenVINO (the backend's runtime): same vectors as onnxruntime for the float
model, batches equal single runs, a bad face is named, and the bf16 model still separates
people. Real models and real faces (MEDS-II stills from ../shared/data)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import shared_file
from videodetector.core import models
from videodetector.core.models import (
    SFACE_BF16_NAME,
    SFACE_NAME,
    SFaceEmbedder,
    YuNetDetector,
    align_face,
    model_path,
    sface_blob,
)

pytest.importorskip("openvino")

# S029 x3 and S008 x2: two people, same-person and different-person pairs
STILLS = ("S029-01-t10_01.jpg", "S029-02-t10_01.jpg", "S029-03-t10_01.jpg",
          "S008-01-t10_01.jpg", "S008-02-t10_01.jpg")
# the float model through another runtime: float rounding only (measured max 3.4e-7)
F32_ATOL = 1e-5


@pytest.fixture(scope="module")
def faces() -> list[np.ndarray]:
    det = YuNetDetector()
    out = []
    for name in STILLS:
        img = cv2.imread(str(shared_file(f"stills_meds/{name}")))
        found = det.detect(img)
        out.append(align_face(img, found.landmarks[int(np.argmax(found.score))]))
    return out


@pytest.fixture(scope="module")
def reference(faces: list[np.ndarray]) -> np.ndarray:
    return SFaceEmbedder().embed_batch(faces)  # onnxruntime, one face per run


def test_openvino_f32_embeds_as_onnxruntime_does_from_many_threads(faces, reference):
    emb = SFaceEmbedder(runtime="openvino", workers=2)
    assert emb.runtime == "openvino" and emb._ov.precision == "f32"  # noqa: SLF001
    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(emb.embed, faces * 4))
    for i, vec in enumerate(got):
        np.testing.assert_allclose(vec, reference[i % len(faces)], atol=F32_ATOL)


@pytest.mark.parametrize("runtime", ["openvino", "opencv", "onnxruntime"])
def test_a_batch_equals_one_face_per_run_in_order_for_every_size(faces, reference, runtime):
    emb = SFaceEmbedder(runtime=runtime)
    for n in range(1, len(faces) + 1):
        order = [(3 * k + n) % len(faces) for k in range(n)]  # a different order per size
        got = emb.embed_batch([faces[k] for k in order])
        assert got.shape == (n, SFaceEmbedder.DIM) and got.dtype == np.float32
        np.testing.assert_allclose(got, reference[order], atol=F32_ATOL)
    assert emb.embed_batch([]).shape == (0, SFaceEmbedder.DIM)


def test_a_batch_longer_than_max_batch_runs_in_chunks_bit_for_bit(faces):
    emb = SFaceEmbedder(runtime="openvino", workers=2, max_batch=3)
    # each request ran max_batch faces at load: its buffers were sized for them then
    for _ in range(2):
        req = emb._ov._free.get()  # noqa: SLF001
        assert tuple(req.get_input_tensor(0).shape) == (3, 3, 112, 112)
        emb._ov._free.put(req)  # noqa: SLF001
    seen: list[int] = []
    infer = emb._ov._infer  # noqa: SLF001
    emb._ov._infer = lambda blob: seen.append(len(blob)) or infer(blob)  # noqa: SLF001
    batch = (faces * 2)[:7]
    got = emb.embed_batch(batch)
    assert seen == [3, 3, 1]
    assert np.array_equal(got, np.stack([emb.embed(f) for f in batch]))


def test_a_bad_face_in_a_batch_is_named_and_the_pool_keeps_working(faces, reference):
    emb = SFaceEmbedder(runtime="openvino", workers=1)
    for bad in (np.zeros((112, 112, 3), np.float32), np.zeros((96, 112, 3), np.uint8), None):
        with pytest.raises(ValueError, match="112x112x3 uint8"):
            emb.embed_batch([faces[0], bad, faces[1]])
    # the single infer request went back to the pool: the next call does not block
    np.testing.assert_allclose(emb.embed(faces[2]), reference[2], atol=F32_ATOL)


def test_sface_blob_is_rgb_channels_first():
    face = np.zeros((112, 112, 3), np.uint8)
    face[..., 0], face[..., 2] = 10, 200  # B, R
    blob = sface_blob([face, face])
    assert blob.shape == (2, 3, 112, 112) and blob.dtype == np.float32
    assert blob[1, 0, 5, 5] == 200 and blob[1, 2, 5, 5] == 10


def test_bf16_model_is_close_to_the_float_one_and_separates_people(faces, reference):
    """sface-2021dec-bf16: the float weights run in bfloat16 (AMX here): a different model
    name since its vectors differ beyond float rounding, but by little (measured cosine to
    the float vector >= 0.9998 on 116 real faces); same person stays far above different
    people."""
    emb = SFaceEmbedder(model=SFACE_BF16_NAME)
    assert emb.runtime == "openvino"
    vecs = emb.embed_batch(faces)
    assert np.all((vecs * reference).sum(1) > 0.999)
    sims = vecs @ vecs.T
    same = [sims[0, 1], sims[0, 2], sims[1, 2], sims[3, 4]]
    different = [sims[i, j] for i in range(3) for j in (3, 4)]
    assert min(same) > 0.5 > 0.3 > max(different)


def test_openvino_runtime_and_pool_are_validated():
    with pytest.raises(ValueError, match="runtime openvino runs"):
        SFaceEmbedder(model=models.SFACE_INT8_NAME, runtime="openvino")
    with pytest.raises(ValueError, match="runtime opencv runs"):
        SFaceEmbedder(model=SFACE_BF16_NAME, runtime="opencv")
    with pytest.raises(ValueError, match="runtime onnxruntime runs"):
        SFaceEmbedder(model=SFACE_BF16_NAME, runtime="onnxruntime")
    with pytest.raises(ValueError, match="precision"):
        models.OvPool(model_path(models.SFACE), precision="f16")
    with pytest.raises(ValueError, match="workers"):
        models.OvPool(model_path(models.SFACE), workers=0)
    with pytest.raises(ValueError, match="max_batch"):
        models.OvPool(model_path(models.SFACE), max_batch=0)
    assert SFaceEmbedder(model=SFACE_NAME).runtime == "onnxruntime"  # the default is kept


# -- issue 10: the SFace call's own cost (input, copies; threads measured, kept) ---------

def _old_pool_vectors(faces: list[np.ndarray], precision: str) -> np.ndarray:
    """The raw outputs of the pool as it was before: the blob made by stack + astype (not
    contiguous), copied into the request's own input tensor."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(model_path(models.SFACE)))
    model.reshape({0: [-1, *list(model.inputs[0].get_shape())[1:]]})
    compiled = core.compile_model(model, "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "NUM_STREAMS": 2, "INFERENCE_NUM_THREADS": 2,
        "ENABLE_CPU_PINNING": False})
    req = compiled.create_infer_request()
    old_blob = np.stack([f[:, :, ::-1].transpose(2, 0, 1) for f in faces]).astype(np.float32)
    return np.concatenate([np.array(req.infer({0: b[None]})[0]) for b in old_blob])


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_the_pool_gives_the_vectors_of_before_bit_for_bit(faces, precision):
    pool = models.OvPool(model_path(models.SFACE), workers=2, precision=precision)
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda f: pool.forward(sface_blob([f]))[0], faces * 2))
    old = _old_pool_vectors(faces, precision)
    for i, vec in enumerate(got):
        assert np.array_equal(vec, old[i % len(faces)])


def test_the_pool_hands_the_blob_to_openvino_without_a_copy(faces):
    pool = models.OvPool(model_path(models.SFACE), workers=1, max_batch=2)
    blob = sface_blob(faces[:2])
    out = pool.forward(blob)
    req = pool._free.get()  # noqa: SLF001 - the one request, after the call
    assert np.shares_memory(req.get_input_tensor(0).data, blob)
    assert not np.shares_memory(out, req.get_output_tensor(0).data)  # the answer is a copy
    pool._free.put(req)  # noqa: SLF001


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 4))
def test_sface_blob_is_the_old_blob_and_contiguous(seed: int, n: int):
    rng = np.random.default_rng(seed)
    faces = [rng.integers(0, 256, (112, 112, 3), np.uint8) for _ in range(n)]
    faces[0] = faces[0][::-1] if seed % 2 else faces[0]  # a strided view is taken too
    blob = sface_blob(faces)
    old = np.stack([f[:, :, ::-1].transpose(2, 0, 1) for f in faces]).astype(np.float32)
    assert blob.dtype == np.float32 and blob.flags.c_contiguous
    assert np.array_equal(blob, old)
