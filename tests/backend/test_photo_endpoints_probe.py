"""/identify with a bbox, /verify, /detect with attributes and POST /face with a photo: a large
JPEG (>= 2560 px) is decoded at the detector's reduced DCT scale, each face analysed at the
scale its models need (videodetector/backend/probe.py). Photos under 2560 px answer exactly
as before; larger ones within the stated tolerance, on real photos (MEDS-II mugshots scaled
up to phone-photo sizes). Full-scale reference: tests/backend/full_scale.py."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.backend.full_scale import decode, full_scale, record_decode_factors
from tests.backend.test_identify_probe import enlarged, jpeg, meds
from videodetector.backend import scales
from videodetector.backend.emotions import MARGIN
from videodetector.backend.engine import FoundFace
from videodetector.backend.errors import ApiError
from videodetector.backend.imaging import thumbnail
from videodetector.backend.probe import detected_faces, enroll_faces, probe_faces
from videodetector.backend.scales import EMOTION_SIDE_PX, analysis_factor, emotion_factor
from videodetector.backend.service import Backend
from videodetector.backend.settings import Settings
from videodetector.core.confidence import confidence_from_cosine
from videodetector.core.images import encode

ATTRS = frozenset({"gender", "age", "emotions"})
SMALL = ("S001-02-t10_01.jpg", "S003-01-t10_01.jpg", "S008-06-t10_01.jpg")
LARGE = [("S001-01-t10_01.jpg", 5.04), ("S005-01-t10_01.jpg", 5.04),
         ("S015-01-t10_01.jpg", 5.04), ("S029-03-t10_01.jpg", 5.04)]
# tolerance for a photo decoded reduced, besides test_identify_probe's (boxes within 2
# detector pixels, cosine >= 0.97): measured on 21 MEDS mugshots at 3024 px (notes/probe.md):
# the same gender (when the full-scale one is >= 0.75 sure) with a confidence within 0.06,
# the age within 2 years, the same first emotion
GENDER_SURE = 0.75
GENDER_CONF_TOLERANCE = 0.06
AGE_TOLERANCE = 2
MIN_COSINE = 0.97
BOX_DETECTOR_PX = 2.0


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Backend:
    b = Backend(Settings(data_dir=tmp_path_factory.mktemp("photo-probe"), gae=True,
                         preload_models=False))
    yield b
    b.close()


def full_detect(backend: Backend, data: bytes, want: frozenset[str]) -> list:
    """/detect with attributes as before: (face, analysis) of a full-scale decode."""
    photo = decode(backend, data)
    found = backend.engine.detect(photo.image, backend.settings.min_face_size)
    return [(f, backend.analyze_face(photo, f, want))
            for f in sorted(found, key=lambda f: f.area, reverse=True)]


def jittered(box: tuple, jitter: tuple[float, float, float, float]) -> tuple:
    """``box`` with each side moved by ``jitter`` times the box's width/height."""
    w, h = box[2] - box[0], box[3] - box[1]
    return (box[0] + jitter[0] * w, box[1] + jitter[1] * h, box[2] + jitter[2] * w,
            box[3] + jitter[3] * h)


JITTER = st.tuples(*[st.floats(-0.15, 0.15)] * 4)
FIXTURE = [HealthCheck.function_scoped_fixture,  # the module's backend: no per-example state
           HealthCheck.too_slow]  # draw time on a loaded machine (as the "ci" profile)


# -- the rules ------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(side=st.floats(1.0, 4000.0), largest=st.sampled_from([1, 2, 4, 8]))
def test_emotion_factor_keeps_the_crop_at_twice_the_model_side(side: float,
                                                               largest: int) -> None:
    """The emotion crop keeps >= 128 px at the factor chosen (unless at full scale), and
    the next coarser factor (within ``largest``) would not."""
    f = emotion_factor((10.0, 20.0, 10.0 + side, 20.0 + side / 2), largest)
    crop = side * (1 + 2 * MARGIN)
    assert f <= largest and (f == 1 or crop / f >= EMOTION_SIDE_PX)
    assert f == largest or crop / (2 * f) < EMOTION_SIDE_PX


def test_analysis_factor_takes_the_finer_of_alignment_and_emotions() -> None:
    lm = np.array([[100, 100], [400, 100], [250, 200], [150, 300], [350, 300]], np.float32)
    wide = FoundFace((0.0, 0.0, 500.0, 600.0), lm)  # eyes 300 px, box 600 px: 1/4 both
    narrow = FoundFace((0.0, 0.0, 150.0, 180.0), lm)  # a 180 px box: emotions at 1/1
    assert analysis_factor(wide, 8) == 4 and analysis_factor(wide, 8, ATTRS) == 4
    assert analysis_factor(narrow, 8) == 4 and analysis_factor(narrow, 8, ATTRS) == 1
    assert analysis_factor(narrow, 8, frozenset({"gender", "age"})) == 4
    assert analysis_factor(FoundFace(wide.box, None), 2, ATTRS) == 2


# -- photos under 2560 px: exactly as before -----------------------------------------------

@settings(max_examples=8, deadline=None, suppress_health_check=FIXTURE)
@given(name=st.sampled_from(SMALL), jitter=JITTER)
def test_small_photo_with_a_bbox_answers_exactly_as_before(backend: Backend, name: str,
                                                           jitter: tuple) -> None:
    data = meds(name).read_bytes()
    box = jittered(full_scale(backend, data)[0].box, jitter)
    old = full_scale(backend, data, boxes=[box])
    new = probe_faces(backend, data, "biggest", boxes=[box])
    assert [f.box for f in new] == [f.box for f in old] == [box]
    assert np.array_equal(new[0].embedding, old[0].embedding)


def test_small_photo_detect_with_attributes_answers_exactly_as_before(backend: Backend) -> None:
    for name in SMALL:
        data = meds(name).read_bytes()
        old = full_detect(backend, data, ATTRS)
        photo, new = detected_faces(backend, data, ATTRS)
        assert [box for box, _ in new] == [f.box for f, _ in old]
        assert [n.attrs for _, n in new] == [a.attrs for _, a in old]
        assert photo.orientation == decode(backend, data).orientation


def test_small_photo_enrolls_exactly_as_before(backend: Backend) -> None:
    """The stored photo is the upload; its thumbnails are the full decode's, bit for bit."""
    for name in SMALL:
        data = meds(name).read_bytes()
        full = decode(backend, data)
        old = full_scale(backend, data, "all", want=ATTRS)
        photo, new = enroll_faces(backend, data, None, "all", ATTRS)
        assert photo.data == data and photo.sha256 == full.sha256 and photo.ext == "jpeg"
        assert [f.box for f in new] == [f.box for f in old]
        assert [f.attrs for f in new] == [f.attrs for f in old]
        for face in new:
            np.testing.assert_array_equal(photo.thumbnail(face.box),
                                          thumbnail(full.image, face.box))


# -- photos of 2560 px and more: within tolerance ---------------------------------------------

@settings(max_examples=4, deadline=None, suppress_health_check=FIXTURE)
@given(case=st.sampled_from(LARGE), jitter=JITTER)
def test_large_photo_with_a_bbox_answers_within_tolerance(backend: Backend, case: tuple,
                                                          jitter: tuple) -> None:
    """The client's box is answered as given; the face found in it embeds at cosine >= 0.97
    of the full-scale one."""
    data = enlarged(meds(case[0]), case[1])
    box = jittered(full_scale(backend, data)[0].box, jitter)
    old = full_scale(backend, data, boxes=[box])
    new = probe_faces(backend, data, "biggest", boxes=[box])
    assert [f.box for f in new] == [box]
    assert float(old[0].embedding @ new[0].embedding) >= MIN_COSINE


def test_small_face_in_a_large_photo_is_located_on_a_full_scale_crop(backend: Backend) -> None:
    """A bbox around a face too small for the reduced photo's detection (a 30 px face at the
    detector's 640 px): the crop around it is detected at full scale, as before, so the
    answer is the same bit for bit."""
    face = cv2.resize(cv2.imread(str(meds("S001-02-t10_01.jpg"))), None, fx=0.25, fy=0.25,
                      interpolation=cv2.INTER_AREA)
    canvas = np.full((3024, 4032, 3), 128, np.uint8)
    canvas[1400:1400 + face.shape[0], 2000:2000 + face.shape[1]] = face
    data = jpeg(canvas)
    fb = backend.engine.detect(face)[0].box
    box = (fb[0] + 2000, fb[1] + 1400, fb[2] + 2000, fb[3] + 1400)
    old = full_scale(backend, data, boxes=[box])
    new = probe_faces(backend, data, "biggest", boxes=[box])
    assert np.array_equal(new[0].embedding, old[0].embedding)
    with pytest.raises(ApiError) as err:  # no face anywhere near: refused as before
        probe_faces(backend, data, "biggest", boxes=[(100.0, 100.0, 160.0, 170.0)])
    assert err.value.extra["param"] == "bbox" and "no face found inside bbox" in err.value.reason


def test_large_photo_detect_with_attributes_within_tolerance(backend: Backend) -> None:
    for name, k in LARGE:
        data = enlarged(meds(name), k)
        old = full_detect(backend, data, ATTRS)
        _, new = detected_faces(backend, data, ATTRS)
        assert len(new) == len(old), name
        for (face, a), (box, n) in zip(old, new, strict=True):
            diff = max(abs(u - v) for u, v in zip(face.box, box, strict=True)) * 640 / 4032
            assert diff <= BOX_DETECTOR_PX, (name, face.box, box)
            if a.attrs["gender_confidence"] >= GENDER_SURE:
                assert n.attrs["gender"] == a.attrs["gender"], name
            assert abs(n.attrs["gender_confidence"] - a.attrs["gender_confidence"]) \
                <= GENDER_CONF_TOLERANCE, name
            assert abs(n.attrs["age"] - a.attrs["age"]) <= AGE_TOLERANCE, name
            assert n.attrs["emotions"][0] == a.attrs["emotions"][0], name
            assert float(a.embedding @ n.embedding) >= MIN_COSINE, name


def test_large_photo_enrolls_with_thumbnails_within_jpeg_noise(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stored photo is the upload as it came; its thumbnail comes from the detector's
    1/2 decode (no decode of its own) with the full decode's size, no further from it than
    the stored JPEG (quality 85) is."""
    data = enlarged(meds("S001-01-t10_01.jpg"), 5.04)
    full = decode(backend, data)
    decodes: list[int] = []
    real = scales.decode_photo
    monkeypatch.setattr(scales, "decode_photo", lambda *a, **k: decodes.append(1) or real(*a, **k))
    monkeypatch.setattr(scales, "decode_for_thumbnails", lambda *a, **k: pytest.fail("decoded"))
    photo, faces = enroll_faces(backend, data, None, "biggest", frozenset())
    assert decodes == [1] and photo.reduced.size == (1210, 1512)  # of 2419x3024
    assert photo.data == data and photo.size == full.size and photo.image is None
    old = thumbnail(full.image, faces[0].box)
    new = photo.thumbnail(faces[0].box)
    assert new.shape == old.shape
    stored = cv2.imdecode(np.frombuffer(encode(old, "jpeg", 85), np.uint8), 1)
    noise = np.abs(stored.astype(int) - old.astype(int)).mean()
    assert np.abs(new.astype(int) - old.astype(int)).mean() <= 2 * noise + 1


# -- the routes ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - (TestClient, auth)
    from fastapi.testclient import TestClient

    from videodetector.backend.app import create_app
    from videodetector.backend.auth import create_token

    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("photo-routes"), gae=True,
                              preload_models=False))
    key = create_token(app.state.backend.db)
    with TestClient(app) as c:
        yield c, {"Authorization": f"Token {key}"}, app.state.backend
    app.state.backend.close()


def _routes(client, auth: dict, one: bytes, two: bytes, box: list[int]) -> dict:  # noqa: ANN001
    def post(path: str, data: dict | None = None, **photos: bytes):  # noqa: ANN202
        files = {k: (f"{k}.jpg", v, "image/jpeg") for k, v in photos.items()}
        return client.post(path, headers=auth, files=files, data=data or {})

    return {
        "detect": post("/v1/detect", {"gender": "true", "age": "true", "emotions": "true"},
                       photo=one),
        "identify": post("/v1/identify", {"bbox": json.dumps([box])}, photo=one),
        "verify": post("/v1/verify", photo1=one, photo2=two),
        "face": post("/v1/face", photo=one),
    }


def test_routes_do_not_decode_a_large_photo_at_full_scale(
        client, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """/detect with attributes, /identify with a bbox, /verify, POST /face, PUT /face/id and
    a /faces/batch item with a 2419x3024 photo decode it at 1/2 (never at full scale), and
    answer within tolerance of the full-scale answers."""
    c, auth, backend = client
    one = enlarged(meds("S001-01-t10_01.jpg"), 5.04)
    two = enlarged(meds("S001-05-t10_01.jpg"), 5.04)
    old1, old2 = full_scale(backend, one), full_scale(backend, two)
    box = [round(v) for v in old1[0].box]
    factors = record_decode_factors(monkeypatch)  # in any backend module
    answers = _routes(c, auth, one, two, box)
    face_id = answers["face"].json()["results"][0]["id"]  # PUT /face/id: a new photo
    answers["put"] = c.put(f"/v1/face/id/{face_id}", headers=auth,
                           files={"photo": ("p.jpg", two, "image/jpeg")})
    # a batch item: each file part one item (the same enroll path as POST /face)
    answers["batch"] = c.post("/v1/faces/batch", headers=auth,
                              files={"a": ("a.jpg", one, "image/jpeg")})
    assert {k: r.status_code for k, r in answers.items()} == dict.fromkeys(answers, 200), \
        {k: r.text for k, r in answers.items()}
    assert sorted(set(factors)) == [("photo", 2), ("photo1", 2), ("photo2", 2)]
    assert list(answers["identify"].json()["results"]) == [json.dumps(box)]
    conf = answers["verify"].json()["results"][0]["confidence"]
    expected = float(confidence_from_cosine(float(old1[0].embedding @ old2[0].embedding)))
    assert abs(conf - expected) <= 0.02
    face = answers["face"].json()["results"][0]
    got = [face["x1"], face["y1"], face["x2"], face["y2"]]
    assert max(abs(u - v) for u, v in zip(got, box, strict=True)) * 640 / 4032 \
        <= BOX_DETECTOR_PX
    (item,) = answers["batch"].json()["results"]
    assert item["status"] == "success" and len(item["face_ids"]) == 1, item


def test_routes_refuse_a_truncated_large_photo(client) -> None:  # noqa: ANN001
    """Decoded reduced, every byte of the photo still is: a truncated 4032x3024 JPEG is
    refused (400 BAD_PARAM naming the photo) by each route, and nothing is enrolled."""
    c, auth, backend = client
    whole = enlarged(meds("S001-01-t10_01.jpg"), 5.04)
    cut = whole[: len(whole) // 2]
    box = [round(v) for v in full_scale(backend, whole)[0].box]
    before = c.get("/v1/faces", headers=auth).json()
    answers = _routes(c, auth, cut, whole, box)
    for name, r in answers.items():
        assert r.status_code == 400, (name, r.text)
        body = r.json()
        assert body["code"] == "BAD_PARAM", (name, body)
        assert body["param"] == ("photo1" if name == "verify" else "photo"), (name, body)
    assert c.get("/v1/faces", headers=auth).json() == before


def test_bench_builds_a_phone_photo(bench) -> None:
    """bench_photo_endpoints: the photo it posts is a 4032x3024 JPEG with the face in it."""
    mod = bench("bench_photo_endpoints")
    data = mod.phone_photo(meds("S001-02-t10_01.jpg"), 4032)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (3024, 4032, 3)


# -- the Extraction API (extraction.py) ------------------------------------------------------

EXTRACT_ALL = {"need_facen": True, "need_gender": True, "need_age": True,
               "need_emotions": True, "need_normalized": True}


def _extract(backend: Backend, data: bytes, **fields: object) -> list[dict]:
    from videodetector.backend.extraction import Extractor, parse_request

    req = parse_request({"image": "multipart:p", **EXTRACT_ALL, **fields}, 0)
    return Extractor(backend.settings, backend.engine).extract(req, data, "image")["faces"]


def _extract_full_scale(backend: Backend, data: bytes, monkeypatch: pytest.MonkeyPatch,
                        **fields: object) -> list[dict]:
    """The answer of a full-scale decode (every DCT scale factor 1), as before."""
    import videodetector.backend.extraction as extraction

    with monkeypatch.context() as m:
        m.setattr(extraction, "detection_factor", lambda size, max_side: 1)
        return _extract(backend, data, **fields)


def _same_within_tolerance(old: list[dict], new: list[dict], side: int) -> None:
    from videodetector.backend.extraction import facen_from_b64

    assert len(new) == len(old)
    for a, b in zip(old, new, strict=True):
        diff = max(abs(a["bbox"][k] - b["bbox"][k]) for k in a["bbox"]) * 640 / side
        assert diff <= BOX_DETECTOR_PX, (a["bbox"], b["bbox"])
        assert float(facen_from_b64(a["facen"]) @ facen_from_b64(b["facen"])) >= MIN_COSINE
        if a["gender"]["score"] >= GENDER_SURE:
            assert b["gender"]["gender"] == a["gender"]["gender"]
        assert abs(a["gender"]["score"] - b["gender"]["score"]) <= GENDER_CONF_TOLERANCE
        assert abs(a["age"] - b["age"]) <= AGE_TOLERANCE
        assert a["emotions"][0]["emotion"] == b["emotions"][0]["emotion"]


def test_extract_answers_exactly_as_before_under_2560_px(backend: Backend,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """Under 2560 px (and for a ROI under 2560 px of a larger photo: the detector upscales
    a small ROI to 640, so it gets every pixel) the answer is the full-scale one exactly."""
    for name in SMALL:
        data = meds(name).read_bytes()
        assert _extract(backend, data) == _extract_full_scale(backend, data, monkeypatch)
    data = enlarged(meds("S001-01-t10_01.jpg"), 5.04)  # 2419x3024, its face ~1100x1600
    roi = {"left": 300, "top": 600, "right": 2000, "bottom": 2700}  # 1700x2100: full scale
    old = _extract_full_scale(backend, data, monkeypatch, roi=roi)
    assert _extract(backend, data, roi=roi) == old and len(old) == 1


def test_extract_large_photo_within_tolerance(backend: Backend,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2419x3024 photo, whole or through a ROI of 2600 px (both decoded at 1/2): the
    same faces within the /detect tolerance; the ROI's faces in the photo's pixels."""
    for name, k in LARGE[:2]:
        data = enlarged(meds(name), k)
        old = _extract_full_scale(backend, data, monkeypatch)
        _same_within_tolerance(old, _extract(backend, data), 3024)
    data = enlarged(meds("S001-01-t10_01.jpg"), 5.04)
    roi = {"left": 200, "top": 300, "right": 2419, "bottom": 2900}
    old = _extract_full_scale(backend, data, monkeypatch, roi=roi)
    _same_within_tolerance(old, _extract(backend, data, roi=roi), 3024)


def test_extract_does_not_decode_a_large_photo_at_full_scale(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Extraction API decodes a 2419x3024 JPEG at 1/2 only (before: at full scale), and
    a truncated one is still refused (BAD_PARAM naming the image)."""
    import videodetector.backend.extraction as extraction

    data = enlarged(meds("S001-01-t10_01.jpg"), 5.04)
    factors: list[int] = []
    real = scales.decode_photo

    def recording(data, param, *args, factor_of=None, **kwargs):  # noqa: ANN001, ANN202
        factors.append(1 if factor_of is None else factor_of((2419, 3024)))
        return real(data, param, *args, factor_of=factor_of, **kwargs)

    monkeypatch.setattr(scales, "decode_photo", recording)
    monkeypatch.setattr(extraction, "decode_photo", recording)
    assert len(_extract(backend, data)) == 1
    assert factors == [2]
    with pytest.raises(ApiError) as err:
        _extract(backend, data[: len(data) // 2])
    assert err.value.code == "BAD_PARAM" and err.value.extra["param"] == "image"
