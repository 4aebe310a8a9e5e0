"""Issue 10, ingestion: a detector's post (photo + one face0) makes no thumbnail; the first
GET of the thumbnail's URL makes and stores it (backend/thumbs.py).

The thumbnail read is byte for byte the one the post used to store; the post still refuses
a photo that cannot be decoded; only names the server signed are made."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.backend.conftest import Api
from videodetector.backend import thumbs
from videodetector.backend.errors import ApiError
from videodetector.backend.imaging import decode_for_thumbnails, validate_photo
from videodetector.backend.server import BackendServer
from videodetector.backend.service import Backend, FacePost
from videodetector.backend.settings import Settings
from videodetector.core.images import encode


def _frame(seed: int, size: tuple[int, int] = (1280, 720)) -> bytes:
    """A camera-like JPEG frame: smooth gradients with noise (compresses like a photo)."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // w), (y * 255 // h), ((x + y) * 127 // (w + h))], -1)
    noise = rng.integers(0, 40, (h, w, 3))
    return encode(np.clip(base + noise, 0, 255).astype(np.uint8), "jpeg")


def _face0(seed: int) -> bytes:
    return encode(np.random.default_rng(seed).integers(0, 255, (112, 112, 3), np.uint8), "png")


def _post(backend: Backend, photo: bytes, boxes: list[tuple[float, ...]],
          faces: int = 1) -> list[dict]:
    ids = backend.add_faces(1, FacePost(photo=photo, face_images=[_face0(i) for i in
                                                                  range(faces)],
                                        boxes=[tuple(float(v) for v in b) for b in boxes]))
    return backend.face_rows(1, ids)


def _read(backend: Backend, rel: str) -> Path | bytes | None:
    """A first read of the thumbnail ``rel`` (what ``GET /<upload_path>/<rel>`` does)."""
    return thumbs.make_on_read(backend.files, backend.thumbnail_keys, rel,
                               backend.faces_store.thumbnail_in_use)


BOXES = [(98.5, 227.25, 161.0, 309.75), (974, 108, 1045, 198), (400, 100, 900, 650),
         (-20, -10, 60, 90), (1200, 650, 1300, 760)]


@pytest.mark.parametrize("box", BOXES)
def test_the_thumbnail_made_on_read_is_the_one_the_post_stored(tmp_path: Path,
                                                               box: tuple) -> None:
    """The same post to a backend that makes thumbnails at post time and to one that makes
    them on first read: the second stores no thumbnail file, and the one made when its
    name is read has exactly the bytes the first stored (small face: full scale; large
    face: a reduced DCT scale; a box over the frame's edges)."""
    photo = _frame(len(str(box)))
    before = Backend(Settings(data_dir=tmp_path / "a", thumbnails_on_read=False))
    lazy = Backend(Settings(data_dir=tmp_path / "b"))
    try:
        (old,) = _post(before, photo, [box])
        (new,) = _post(lazy, photo, [box])
        assert lazy.files.path(new["photo"]).read_bytes() == photo  # stored as uploaded
        assert not lazy.files.path(new["thumbnail"]).exists()
        made = _read(lazy, new["thumbnail"])
        assert made is not None and made.read_bytes() == before.files.path(
            old["thumbnail"]).read_bytes()
        # read again: the stored file, not made again
        stamp = made.stat().st_mtime_ns
        assert _read(lazy, new["thumbnail"]) == made
        assert made.stat().st_mtime_ns == stamp
    finally:
        before.close()
        lazy.close()


def test_posts_of_several_faces_or_without_the_setting_store_the_thumbnail(
        tmp_path: Path) -> None:
    """Only a post of one face0 with its photo leaves its thumbnail to be read: two faces
    (their thumbnails share one reduced decode), or thumbnails_on_read off, store them."""
    photo = _frame(3)
    lazy = Backend(Settings(data_dir=tmp_path / "b"))
    off = Backend(Settings(data_dir=tmp_path / "c", thumbnails_on_read=False))
    try:
        for row in _post(lazy, photo, BOXES[:2], faces=2) + _post(off, photo, BOXES[:1]):
            assert not thumbs.is_lazy_name(row["thumbnail"])
            assert row["thumbnail"].endswith("_thumb.jpeg")
        (one,) = _post(lazy, photo, BOXES[:1])
        assert thumbs.is_lazy_name(one["thumbnail"])
    finally:
        lazy.close()
        off.close()


def _daemon_post(api: Api, photo: bytes, box: tuple[int, int, int, int], seq: int) -> dict:
    from tests.detector.post.receiver import make_snapshot
    from videodetector.detector.config import DetectorConfig
    from videodetector.detector.post.request import build_request

    snap = make_snapshot(seq, frame_jpeg=photo, face_png=_face0(seq), bbox=box,
                         run_id="test-ingest-thumbs")
    req = build_request(snap, DetectorConfig(api_url=api.url, api_token=api.token or ""))
    r = api.session.post(req.url, headers=dict(req.headers), data=list(req.data),
                         files=list(req.files), timeout=60)
    assert r.status_code == 200, r.text
    (face,) = r.json()["results"]
    return face


def test_concurrent_first_reads_of_a_thumbnail_get_the_same_bytes(
        server: BackendServer, api: Api) -> None:
    """A detector's post over HTTP: its answer's thumbnail URL is served (made once by
    whichever of 8 concurrent readers comes first: every reader gets the same JPEG, one
    file is left and no temporary file), by GET /v1/face/id too."""
    photo = _frame(11)
    face = _daemon_post(api, photo, (300, 200, 360, 280), 1)
    assert api.get(f"/v1/face/id/{face['id']}").json()["thumbnail"] == face["thumbnail"]
    rel = face["thumbnail"].split(f"/{server.settings.upload_path}/", 1)[1]
    path = server.backend.files.path(rel)
    assert not path.exists()
    got: list[bytes] = []
    barrier = threading.Barrier(8)

    def read() -> None:
        barrier.wait()
        r = requests.get(face["thumbnail"], timeout=60)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        got.append(r.content)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = thumbs.thumbnail_jpeg(photo, (300.0, 200.0, 360.0, 280.0))
    assert got == [expected] * 8
    assert path.read_bytes() == expected
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_only_signed_names_are_made_and_deleted_faces_are_not(server: BackendServer,
                                                              api: Api) -> None:
    """A name with another box, another photo or another signature is a 404 and writes
    nothing; so is the thumbnail of a deleted face (its photo went with it)."""
    face = _daemon_post(api, _frame(12), (300, 200, 360, 280), 2)
    url = face["thumbnail"]
    folder = server.backend.files.path(url.split(f"/{server.settings.upload_path}/", 1)[1]
                                       ).parent
    mac = url.rsplit("_", 1)[1][:32]
    forged = [url.replace("_300.0_", "_0.0_"),  # another box, the same signature
              url.replace(mac, "0" * 32),
              url.replace("_tb_jpeg_", "_tb_png_")]
    for bad in forged:
        assert bad != url
        assert requests.get(bad, timeout=30).status_code == 404, bad
    assert not any("_tb_" in p.name for p in folder.iterdir())
    assert api.delete(f"/v1/face/id/{face['id']}").status_code in (200, 204)
    assert requests.get(url, timeout=30).status_code == 404
    assert not any("_tb_" in p.name for p in folder.iterdir())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), cut=st.floats(0.05, 1.0), png=st.booleans())
def test_validation_refuses_what_the_thumbnail_decode_refuses(seed: int, cut: float,
                                                              png: bool) -> None:
    """validate_photo (the post of a thumbnail made on read) accepts and refuses exactly
    the photos decode_for_thumbnails (the post before) does: a photo cut anywhere."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (120, 200, 3), np.uint8)
    data = encode(pixels, "png" if png else "jpeg")
    data = data[: max(1, int(len(data) * cut))]

    def outcome(fn, *args):  # noqa: ANN001, ANN202
        try:
            fn(data, "photo", 10**7, 4096, *args)
        except ApiError as exc:
            return exc.status, exc.body().get("param")
        return "ok"

    assert outcome(validate_photo) == outcome(decode_for_thumbnails, [(10, 10, 60, 70)])


def test_a_post_makes_two_files_not_three(server: BackendServer, api: Api,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A detector's post writes and fsyncs the photo and the normalized face only."""
    from tests.backend.test_ingest import FsyncSpy

    _daemon_post(api, _frame(13), (300, 200, 360, 280), 3)  # the key made, the folder too
    spy = FsyncSpy(monkeypatch)
    _daemon_post(api, _frame(14), (300, 200, 360, 280), 4)
    assert len([p for p, _, _ in spy.calls if p.endswith(".tmp")]) == 2


def test_a_migrated_data_dir_verifies_the_names_its_source_signed(tmp_path: Path) -> None:
    """migrate-db copies the images to another data directory: thumbs.add_keys gives it
    the source's keys, so names the source signed still make their thumbnails there; the
    target's own key still signs; a name signed by neither is refused."""
    src, dst, other = tmp_path / "src", tmp_path / "dst", tmp_path / "other"
    for d in (src, dst, other):
        d.mkdir()
    src_keys, dst_keys, other_keys = (thumbs.load_keys(d) for d in (src, dst, other))
    photo = "1/20260101/" + "ab" * 12 + "_photo.jpeg"
    name = thumbs.lazy_name(src_keys[0], photo, (1.0, 2.0, 30.5, 40.0))
    assert name is not None and thumbs.parse_lazy(dst_keys, name) is None
    assert thumbs.add_keys(src, dst) == 1 and thumbs.add_keys(src, dst) == 0
    merged = thumbs.load_keys(dst)
    assert merged[0] == dst_keys[0] and src_keys[0] in merged
    assert thumbs.parse_lazy(merged, name) == (photo, (1.0, 2.0, 30.5, 40.0))
    assert thumbs.parse_lazy(merged, thumbs.lazy_name(other_keys[0], photo, (1, 2, 3, 4))
                             ) is None
    assert thumbs.load_keys(src) == src_keys  # made once, then read


def test_a_thumbnail_that_cannot_be_stored_is_served_anyway(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk when a thumbnail is first read: the reader still gets its bytes (made
    again on the next read), nothing half-written is left, and the failure is logged once,
    not once per read."""
    lazy = Backend(Settings(data_dir=tmp_path / "b"))
    try:
        (row,) = _post(lazy, _frame(5), [BOXES[1]])
        expected = thumbs.thumbnail_jpeg(lazy.files.path(row["photo"]).read_bytes(), BOXES[1])

        def full(*_args: object, **_kwargs: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(lazy.files, "write_all", full)
        with caplog.at_level("WARNING", logger="videodetector.backend.thumbs"):
            for _ in range(3):
                assert _read(lazy, row["thumbnail"]) == expected
        assert not lazy.files.path(row["thumbnail"]).exists()
        assert sum("not stored" in r.getMessage() for r in caplog.records) == 1
        monkeypatch.undo()  # space again: stored on the next read
        made = _read(lazy, row["thumbnail"])
        assert isinstance(made, Path) and made.read_bytes() == expected
    finally:
        lazy.close()


def _stored(backend: Backend) -> list[str]:
    return sorted(str(p.relative_to(backend.files.root))
                  for p in backend.files.root.rglob("*") if p.is_file())


def test_a_face_deleted_while_its_thumbnail_is_made_leaves_no_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The face is deleted (rows and files) after the first read took its photo and before
    the thumbnail is written: the read answers None (a 404) and leaves no file."""
    backend = Backend(Settings(data_dir=tmp_path))
    try:
        (row,) = _post(backend, _frame(6), [BOXES[1]])
        real = thumbs.thumbnail_jpeg

        def deleting_meanwhile(photo: bytes, box: tuple) -> bytes:  # the seam
            data = real(photo, box)
            assert backend.delete_faces(1, [row["id"]]) == 1
            return data

        monkeypatch.setattr(thumbs, "thumbnail_jpeg", deleting_meanwhile)
        assert _read(backend, row["thumbnail"]) is None
        assert _stored(backend) == []
    finally:
        backend.close()


def test_a_first_read_between_the_deletions_file_removals_leaves_no_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole first read that runs right after the deletion removed the thumbnail (not yet
    made) and before it removed anything else: no file is left once the deletion is done
    (the deletion removes the photo first, so the read finds it gone)."""
    backend = Backend(Settings(data_dir=tmp_path))
    try:
        (row,) = _post(backend, _frame(7), [BOXES[1]])
        real = backend.files.delete
        reads: list[object] = []

        def delete_then_read(rel: str) -> None:  # the seam
            real(rel)
            if rel == row["thumbnail"]:
                reads.append(_read(backend, rel))

        monkeypatch.setattr(backend.files, "delete", delete_then_read)
        assert backend.delete_faces(1, [row["id"]]) == 1
        assert reads == [None]
        assert _stored(backend) == []
    finally:
        backend.close()


def _regenerate_thumbs(data_dir: Path, face_id: int) -> None:
    from videodetector.backend.regenerate import Options, Regenerator
    from videodetector.core.models import SFACE_NAME

    regen = Regenerator(data_dir, Options(kinds=frozenset({"thumbs"}), model=SFACE_NAME))
    try:
        assert regen.regenerate_face(face_id) == "done"
    finally:
        regen.close()


@pytest.mark.parametrize("read_first", [True, False])
def test_the_old_thumbnail_name_of_a_regenerated_face_is_not_made_again(
        tmp_path: Path, read_first: bool) -> None:
    """After ``regenerate --regenerate thumbs`` a face has a new thumbnail: a GET of its old
    signed name (read before or never) is a 404 and makes no file no face refers to."""
    backend = Backend(Settings(data_dir=tmp_path))
    try:
        (row,) = _post(backend, _frame(8), [BOXES[1]])
        if read_first:
            assert isinstance(_read(backend, row["thumbnail"]), Path)
    finally:
        backend.close()
    _regenerate_thumbs(tmp_path, row["id"])
    with BackendServer(Settings(data_dir=tmp_path)) as server:
        base = f"{server.url}/{server.settings.upload_path}/"
        (new,) = server.backend.face_rows(1, [row["id"]])
        assert new["thumbnail"] != row["thumbnail"]
        assert requests.get(base + new["thumbnail"], timeout=30).status_code == 200
        assert requests.get(base + row["thumbnail"], timeout=30).status_code == 404
        assert sorted(_stored(server.backend)) == sorted([new["photo"], new["thumbnail"],
                                                          new["normalized"]])


def test_a_face_regenerated_while_its_old_thumbnail_is_made_leaves_no_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``regenerate`` gives the face a new thumbnail (and removes the old name's file) after
    a first read of the old name checked it and before it wrote it: the read answers None
    and leaves no file."""
    backend = Backend(Settings(data_dir=tmp_path))
    try:
        (row,) = _post(backend, _frame(10), [BOXES[1]])
        real = thumbs.thumbnail_jpeg
        ran: list[int] = []

        def regenerating_meanwhile(photo: bytes, box: tuple) -> bytes:  # the seam
            data = real(photo, box)
            if not ran:
                ran.append(1)
                _regenerate_thumbs(tmp_path, row["id"])  # calls this again (ran: real only)
            return data

        monkeypatch.setattr(thumbs, "thumbnail_jpeg", regenerating_meanwhile)
        assert _read(backend, row["thumbnail"]) is None and ran
        (new,) = backend.face_rows(1, [row["id"]])
        assert _stored(backend) == sorted([new["photo"], new["thumbnail"], new["normalized"]])
    finally:
        backend.close()
