"""Issue 10, ingestion: the CPU a detector's POST /v1/face costs outside the models.

Each cut keeps the behaviour it replaces: the same answers, the same stored files and the
same refusals; these tests pin both the cut (it fails on the code before it) and the
behaviour (it holds on either)."""

from __future__ import annotations

import io
import re
import types
from pathlib import Path

import anyio.to_thread
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.backend.conftest import Api, person_photo
from videodetector.backend import imaging
from videodetector.backend.errors import ApiError
from videodetector.backend.imaging import decode_photo, decode_plain_png, plain_png_size
from videodetector.backend.server import BackendServer
from videodetector.backend.service import Backend
from videodetector.backend.settings import Settings
from videodetector.backend.storage import FileStore


def _daemon_post(api: Api, seq: int) -> dict:
    """A snapshot as fkvideo_detector posts it (photo, bbox, face0, Idempotency-Key)."""
    import cv2

    from tests.detector.post.receiver import make_snapshot
    from videodetector.detector.config import DetectorConfig
    from videodetector.detector.post.request import build_request

    photo = person_photo("C")
    face = cv2.resize(cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR),
                      (112, 112))
    face_png = cv2.imencode(".png", face)[1].tobytes()
    snap = make_snapshot(seq, frame_jpeg=photo, face_png=face_png, bbox=(10, 12, 90, 100),
                         run_id="test-ingest-cpu")
    req = build_request(snap, DetectorConfig(api_url=api.url, api_token=api.token or ""))
    resp = api.session.post(req.url, headers=dict(req.headers), data=list(req.data),
                            files=list(req.files), timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_a_face_post_takes_one_worker_thread_hop(api: Api,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """With a token the backend already knows, a detector's POST /face (uploads and an
    Idempotency-Key) runs one thing in the threadpool: its handler, which looks the key up
    too. The backend and the user are answered on the event loop and no response model is
    validated (each was a thread hop: ~0.1 ms of CPU and two context switches; 5 before)."""
    _daemon_post(api, 1)  # the token is known from now on
    hops: list[str] = []
    real = anyio.to_thread.run_sync

    async def counting(func, *args, **kwargs):  # noqa: ANN001, ANN202 - a spy
        name = getattr(func, "__name__", repr(func))
        if "Deliverer" not in name:  # the webhook deliverer's own background polls
            hops.append(name)
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    _daemon_post(api, 2)
    assert len(hops) == 1, hops


def test_an_unknown_or_bad_token_is_still_refused(api: Api) -> None:
    """The event-loop answer is only for tokens already checked against the database."""
    for header in ("Token nosuchtoken", "Bearer x", "Token", ""):
        r = api.session.post(api.url + "/v1/face", files={"photo": person_photo("A")},
                             headers={"Authorization": header}, timeout=30)
        assert r.status_code == 401, (header, r.text)


def test_a_post_without_galleries_reads_no_gallery_list(server: BackendServer,
                                                        api: Api) -> None:
    """The gallery names were read twice per post (to check the posted ones) even when
    none was posted; a post naming one still has it checked."""
    backend = server.backend
    if backend is None or backend.db.dialect != "sqlite":
        pytest.skip("statement trace of the SQLite connection")
    statements: list[str] = []
    backend.db.conn.set_trace_callback(statements.append)
    try:
        api.add_face(person_photo("D"))
    finally:
        backend.db.conn.set_trace_callback(None)
    assert not [s for s in statements if "FROM galleries" in s], statements
    r = api.post("/v1/face", files={"photo": person_photo("D")}, data={"galleries": "nosuch"})
    assert r.status_code == 400 and r.json()["param"] == "galleries"


def _png(pixels: np.ndarray, mode: str, **params: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, "PNG", **params)
    return buf.getvalue()


def _outcome(decode, data: bytes):  # noqa: ANN001, ANN202
    try:
        photo = decode(data, "face0", 10**6, 160, "max_normalized_size")
    except ApiError as exc:
        body = exc.body()  # Pillow's message may name its BytesIO object: not the address
        return ("refused", exc.status, re.sub(r"0x[0-9a-f]+", "0x", body.pop("reason")), body)
    return (photo.image.tobytes(), photo.image.shape, photo.ext, photo.sha256,
            photo.orientation, photo.mode)


@settings(max_examples=40, deadline=None)
@given(side=st.sampled_from([112, 64, 161]), mode=st.sampled_from(["RGB", "RGBA", "P", "L"]),
       interlace=st.booleans(), exif=st.booleans(), transparency=st.booleans(),
       cut=st.sampled_from([None, 1, 4, 12, 13, 200]), flip=st.integers(0, 4000),
       seed=st.integers(0, 2**16))
def test_decode_plain_png_answers_as_decode_photo(side: int, mode: str, interlace: bool,
                                                  exif: bool, transparency: bool,
                                                  cut: int | None, flip: int,
                                                  seed: int) -> None:
    """Any PNG (plain RGB or not, interlaced, with EXIF or a transparency key, truncated,
    a byte flipped, over the side limit) decodes to the same pixels and fields, or is
    refused the same way, by the cv2 fast path as by Pillow."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (side, side, 3), np.uint8)
    params: dict[str, object] = {"interlace": 1} if interlace else {}
    if exif:
        ex = Image.Exif()
        ex[0x0112] = 6
        params["exif"] = ex.tobytes()
    if transparency and mode == "RGB":
        params["transparency"] = (1, 2, 3)
    data = _png(pixels, mode, **params)
    if cut is not None:
        data = data[:-cut]
    if flip and flip < len(data) - 8:
        data = data[:flip + 8] + bytes([data[flip + 8] ^ 0x41]) + data[flip + 9:]
    assert _outcome(decode_plain_png, data) == _outcome(decode_photo, data)


def test_the_daemons_face0_is_decoded_without_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backend.decode_normalized of the daemon's face0 (8-bit RGB 112x112 PNG) is one
    cv2.imdecode: Pillow's open, EXIF probe, load and conversion cost ~0.3 ms more."""
    import cv2

    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, (112, 112, 3), np.uint8)
    data = cv2.imencode(".png", pixels)[1].tobytes()  # as the daemon encodes face0
    assert plain_png_size(data) == (112, 112)
    expected = decode_photo(data, "face0", 10**6, 160).image

    def no_pillow(*args: object, **kwargs: object) -> None:
        raise AssertionError("Pillow opened the face0")

    monkeypatch.setattr(imaging.Image, "open", no_pillow)
    stub = types.SimpleNamespace(settings=Settings(data_dir=Path("unused")))
    photo = Backend.decode_normalized(stub, data, "face0")  # type: ignore[arg-type]
    np.testing.assert_array_equal(photo.image, expected)
    assert (photo.ext, photo.mode, photo.orientation) == ("png", "RGB", 1)


def test_new_upload_paths_are_checked_without_resolving(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """FileStore.write_all of names it made is checked by their text (resolve() walked
    every component with lstat: ~60 us a file); a name leaving the store is refused."""
    store = FileStore(tmp_path / "uploads")
    names = [store.new_name(7, kind, "png") for kind in ("photo", "thumb", "norm")]

    def no_resolve(self: Path, strict: bool = False) -> Path:
        raise AssertionError(f"resolve({self})")

    monkeypatch.setattr(Path, "resolve", no_resolve)
    store.write_all([(n, n.encode()) for n in names])
    monkeypatch.undo()
    for n in names:
        assert (store.root / n).read_bytes() == n.encode()
    for bad in ("../x.png", "/etc/x.png", "7//x.png", "7/./x.png", "7/\x00.png", "7\\..\\x"):
        with pytest.raises(ValueError):
            store.write_all([(bad, b"x")])
    assert not list(tmp_path.glob("*.png"))


def test_the_face_answer_is_documented_and_rendered_as_before(api: Api) -> None:
    """Without the inferred response model the spec still documents POST /v1/face's answer as
    a JSON object, and the answer is the rendered faces (replayed identically)."""
    spec = api.session.get(api.url + "/v1/openapi.json", timeout=30).json()
    ok = spec["paths"]["/v1/face"]["post"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {
        "additionalProperties": True, "title": "Response Add Face V1 Face Post",
        "type": "object"}
    first, again = _daemon_post(api, 50), _daemon_post(api, 50)
    assert first == again and set(first) == {"results"}
    (face,) = first["results"]
    assert api.get(f"/v1/face/id/{face['id']}").json() == face


def test_a_face0_is_not_hashed_and_the_photo_hash_is_the_photos(
        server: BackendServer, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The content hash of a decoded image is worked out only when read: a face0's never
    was (it is not stored), the photo's is stored as before (sha256 of the file)."""
    import hashlib

    import cv2

    data = cv2.imencode(".png", np.zeros((112, 112, 3), np.uint8))[1].tobytes()
    stub = types.SimpleNamespace(settings=Settings(data_dir=Path("unused")))
    hashed: list[int] = []
    real = imaging.hashlib.sha256
    monkeypatch.setattr(imaging.hashlib, "sha256", lambda b=b"": hashed.append(1) or real(b))
    photo = Backend.decode_normalized(stub, data, "face0")  # type: ignore[arg-type]
    assert not hashed
    assert photo.sha256 == hashlib.sha256(data).hexdigest() and hashed
    monkeypatch.undo()
    face = _daemon_post(api, 60)["results"][0]
    backend = server.backend
    assert backend is not None
    user = backend.tokens.user_for_header(f"Token {api.token}")
    (row,) = backend.faces_store.rows(user, [face["id"]])
    assert row["photo_hash"] == hashlib.sha256(person_photo("C")).hexdigest()


def routes_tried(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the API routes tried from now on, in order (a spy on APIRoute.matches)."""
    from fastapi.routing import APIRoute

    tried: list[str] = []
    real = APIRoute.matches

    def counting(self, scope):  # noqa: ANN001, ANN202 - a spy
        tried.append(self.path)
        return real(self, scope)

    monkeypatch.setattr(APIRoute, "matches", counting)
    return tried


def test_a_get_of_an_upload_tries_no_api_route(api: Api,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A GET of a stored image (photo, normalized face, a thumbnail made on first read)
    matches its route first, not after every /v1 and /v0 route (~0.5 ms of CPU each); the
    answers are the same: the files, and NOT_FOUND for a name no file has."""
    face = _daemon_post(api, 1)["results"][0]
    tried = routes_tried(monkeypatch)
    for url in (face["photo"], face["normalized"], face["thumbnail"]):
        tried.clear()
        r = api.session.get(url, timeout=60)
        assert r.status_code == 200 and r.content[:2] in (b"\xff\xd8", b"\x89P"), url
        assert tried == ["/uploads/{rel:path}"], tried
    r = api.session.get(face["photo"] + "x", timeout=60)
    assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND", r.text


@pytest.mark.parametrize(("upload_path", "first"), [("uploads", True), ("img/a", True),
                                                     ("static", False), ("v1/img", False)])
def test_the_upload_route_goes_first_only_where_no_route_can_match(
        tmp_path: Path, upload_path: str, first: bool) -> None:
    """An upload_path whose first segment an API or console route has (``/v1/...``,
    ``/static/{name}``) keeps the route last, so those routes answer as before."""
    from videodetector.backend.app import create_app

    app = create_app(Settings(data_dir=tmp_path, upload_path=upload_path))
    upload = f"/{upload_path}/{{rel:path}}"
    assert (getattr(app.router.routes[0], "path", None) == upload) is first
    assert upload in [getattr(r, "path", None) for r in app.router.routes]


def test_a_replayed_upload_is_answered_without_embedding(server: BackendServer, api: Api,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """The replay lookup of an upload post moved into the handler: a retry is still
    answered from the first run, before any model runs."""
    first = _daemon_post(api, 70)
    assert server.backend is not None

    def no_model(*args: object) -> None:
        raise AssertionError("a replay ran the embedding")

    monkeypatch.setattr(server.backend.engine, "embed_aligned", no_model)
    assert _daemon_post(api, 70) == first


def test_a_v1_face_post_tries_no_v0_route(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Routes are tried in the order they were added, each one costing Python: a detector's
    POST /v1/face reaches its route after the few routes before faces.router's /face, not
    after every /v0 route (~0.2 ms of CPU per post); /v0 is still served."""
    tried = routes_tried(monkeypatch)
    _daemon_post(api, 1)
    assert 0 < len(tried) <= 16, tried
    assert tried[-1] == "/face", tried
    monkeypatch.undo()
    r = api.session.post(api.url + "/v0/face", files={"photo": person_photo("B")},
                         headers={"Authorization": f"Token {api.token}"}, timeout=60)
    assert r.status_code == 200, r.text
