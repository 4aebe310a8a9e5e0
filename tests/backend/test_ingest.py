"""The ingestion path of detector snapshots (``/v1/face`` with photo, bbox and face0) and
what makes it fast: kept-alive connections without Nagle delays, no needless re-encoding,
group commit of concurrent requests."""

from __future__ import annotations

import asyncio
import errno
import io
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from tests.backend.conftest import SERVER_SETTINGS, Api, person_photo
from videodetector.backend.imaging import decode_photo
from videodetector.backend.server import BackendServer, bind_socket
from videodetector.backend.settings import Settings
from videodetector.backend.storage import Database, FileStore, SyncFailed
from videodetector.core import durable


def test_accepted_connections_have_nagle_off() -> None:
    """asyncio sets TCP_NODELAY only on sockets whose ``proto`` is IPPROTO_TCP; with the
    listener made as ``socket(family, SOCK_STREAM)`` (proto 0) every second write of a
    response on a kept-alive connection waited for the client's delayed ACK (~40 ms)."""
    listener = bind_socket("127.0.0.1", 0)
    port = listener.getsockname()[1]
    seen: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, sock=listener)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(main())
    assert seen and seen[0] != 0


def _old_decode(data: bytes) -> np.ndarray:
    """decode_photo's pixels as they were made before (four copies)."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        rgb = ImageOps.exif_transpose(im).convert("RGB")
    return np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])


def _encoded(image: Image.Image, fmt: str, orientation: int = 1) -> bytes:
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    image.save(buf, format=fmt, exif=exif.tobytes()) if fmt == "JPEG" else image.save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("mode,fmt,orientation", [
    ("RGB", "JPEG", 1), ("RGB", "JPEG", 6), ("RGB", "JPEG", 3), ("L", "JPEG", 1),
    ("RGBA", "PNG", 1), ("P", "PNG", 1), ("RGB", "WEBP", 1)])
def test_decoded_pixels_are_those_of_before(mode: str, fmt: str, orientation: int) -> None:
    """decode_photo converts an upright RGB image with one copy now; every kind of image
    still decodes to the same BGR pixels (EXIF rotation, grey, alpha, palette)."""
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 255, (37, 53, 3), np.uint8)).convert(mode)
    data = _encoded(image, fmt, orientation)
    photo = decode_photo(data, "photo", 10**7, 4096)
    assert photo.orientation == orientation
    assert photo.image.flags["C_CONTIGUOUS"] and photo.image.dtype == np.uint8
    np.testing.assert_array_equal(photo.image, _old_decode(data))


class FsyncSpy:
    """Records every fsync made through videodetector.core.durable (what it synced, when it
    started and ended); ``delay`` makes each one slow, like a real disk under load;
    ``fail`` (a path suffix) makes the fsync of matching paths fail with EIO."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, delay: float = 0.0) -> None:
        self.delay = delay
        self.fail: str | None = None
        self.calls: list[tuple[str, float, float]] = []
        self.lock = threading.Lock()
        real = os.fsync

        def fsync(fd: int) -> None:
            path = os.readlink(f"/proc/self/fd/{fd}")
            start = time.monotonic()
            if self.fail and path.endswith(self.fail):
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            time.sleep(self.delay)
            real(fd)
            with self.lock:
                self.calls.append((path, start, time.monotonic()))

        monkeypatch.setattr(durable.os, "fsync", fsync)

    def of(self, suffix: str) -> list[tuple[str, float, float]]:
        return [c for c in self.calls if c[0].endswith(suffix)]


def _concurrently(n: int, work: Callable[[int], None]) -> list[tuple[float, float]]:
    """Run work(0..n-1) in n threads started together; (call, return) times of each."""
    spans: list[tuple[float, float]] = [(0.0, 0.0)] * n
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        t0 = time.monotonic()
        work(i)
        spans[i] = (t0, time.monotonic())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return spans


def _covered(spans: list[tuple[float, float]], fsyncs: list[tuple[str, float, float]]) -> bool:
    """Every call returned after an fsync that started after the call's change."""
    return all(any(t0 <= start and end <= t1 for _, start, end in fsyncs) for t0, t1 in spans)


def test_group_fsync_shares_one_fsync_between_concurrent_callers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = FsyncSpy(monkeypatch, delay=0.05)
    target = tmp_path / "f"
    target.write_bytes(b"x")
    group = durable.GroupFsync(target)
    spans = _concurrently(8, lambda i: group.sync())
    assert _covered(spans, spy.calls)
    assert 1 <= len(spy.calls) <= 4 < 8  # one per caller before


def test_concurrent_transactions_share_the_wal_fsync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Group commit: 8 threads committing at once fsync the WAL far fewer than 8 times, and
    each transaction returns only after a WAL fsync begun after its COMMIT (as durable as
    synchronous=FULL, where SQLite fsynced once per COMMIT under the write lock)."""
    db = Database(tmp_path / "b.sqlite3")
    spy = FsyncSpy(monkeypatch, delay=0.05)

    def commit(i: int) -> None:
        with db.transaction() as conn:
            conn.execute("INSERT INTO settings VALUES (?, 'v')", (f"k{i}",))

    spans = _concurrently(8, commit)
    wal = spy.of("b.sqlite3-wal")
    assert _covered(spans, wal)
    assert 1 <= len(wal) < 8
    assert db.scalar("SELECT COUNT(*) FROM settings WHERE key LIKE 'k%'") == 8
    assert db.scalar("PRAGMA synchronous") == 2  # FULL for anything outside transaction()
    db.close()


def test_a_failed_wal_fsync_is_not_acknowledged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(tmp_path / "b.sqlite3")
    spy = FsyncSpy(monkeypatch)
    spy.fail = "-wal"
    with pytest.raises(SyncFailed, match="durable"), db.transaction() as conn:
        conn.execute("INSERT INTO settings VALUES ('k', 'v')")
    assert isinstance(SyncFailed("x"), sqlite3.OperationalError)  # the API answers 503
    spy.fail = None
    with db.transaction() as conn:  # the next transaction is served normally
        conn.execute("INSERT INTO settings VALUES ('k2', 'v')")
    db.close()


def test_image_writes_fsync_their_directory(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The rename of an image into place is durable (its directory fsynced) before the row
    that refers to it is committed; a new day directory is made durable in its parent."""
    store = FileStore(tmp_path / "uploads")
    spy = FsyncSpy(monkeypatch)
    store.write_all([("1/20260101/a_photo.jpeg", b"a"), ("1/20260101/a_thumb.jpeg", b"b")])
    synced = [p for p, _, _ in spy.calls]
    day = str(tmp_path / "uploads" / "1" / "20260101")
    assert synced.count(day) == 1  # once for both files
    assert str(tmp_path / "uploads" / "1") in synced  # the new day directory's entry
    assert str(tmp_path / "uploads") in synced  # the new user directory's entry
    assert synced.index(day) > max(synced.index(p) for p in synced if p.endswith(".tmp"))
    store.write("1/20260101/b_norm.png", b"c")
    assert [p for p, _, _ in spy.calls].count(day) == 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, store: str | None
           ) -> Iterator[BackendServer]:
    """conftest's server with the embedding model pinned to sface-2021dec: the snapshot test
    compares the stored vector with that model's float values (auto would serve bf16 on a
    new store on a CPU with native bf16)."""
    with BackendServer(Settings(data_dir=tmp_path_factory.mktemp("backend"), db=store,
                                embedding_model="sface-2021dec", **SERVER_SETTINGS)) as srv:
        yield srv


def test_detector_snapshot_stored_with_the_embedding_of_before(api: Api) -> None:
    """A snapshot as fkvideo_detector posts it (photo, bbox, face0, detectorParams, an
    Idempotency-Key; post.request.build_request) is stored with face0's SFace embedding as
    the onnxruntime session of the shipped file computes it (the backend now runs the graph
    through OpenCV, its weights folded), its box, and a thumbnail and normalized image
    that can be read back; posting it again stores nothing new."""
    import cv2

    from tests.detector.post.receiver import make_snapshot
    from videodetector.backend.extraction import facen_from_b64
    from videodetector.core.models import SFaceEmbedder, YuNetDetector, align_face
    from videodetector.detector.config import DetectorConfig
    from videodetector.detector.post.request import build_request

    photo = person_photo("A")
    image = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)
    found = YuNetDetector().detect(image)
    best = int(np.argmax(found.score))
    aligned = align_face(image, found.landmarks[best])
    face_png = cv2.imencode(".png", aligned)[1].tobytes()
    box = tuple(int(v) for v in found.xyxy[best])
    snap = make_snapshot(frame_jpeg=photo, face_png=face_png, bbox=box)
    req = build_request(snap, DetectorConfig(api_url=api.url, api_token=api.token or ""))
    first = api.session.post(req.url, headers=dict(req.headers), data=list(req.data),
                             files=list(req.files), timeout=60)
    assert first.status_code == 200, first.text
    (face,) = first.json()["results"]
    assert [face["x1"], face["y1"], face["x2"], face["y2"]] == list(box)
    stored = facen_from_b64(api.get(f"/v1/face/id/{face['id']}/facen").json()["facen"])
    before = SFaceEmbedder().embed(cv2.imdecode(np.frombuffer(face_png, np.uint8),
                                                cv2.IMREAD_COLOR))
    np.testing.assert_allclose(stored, before, atol=1e-5)
    for url in (face["thumbnail"], face["normalized"]):
        assert api.session.get(url, timeout=30).status_code == 200
    again = api.session.post(req.url, headers=dict(req.headers), data=list(req.data),
                             files=list(req.files), timeout=60)
    assert [f["id"] for f in again.json()["results"]] == [face["id"]]


def test_a_post_fsyncs_its_files_then_their_directory_once_then_the_wal(
        server: BackendServer, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """POST /face: photo, thumbnail and normalized image each fsynced, their directory
    once for the three, then the WAL (the row committed after the images are durable)."""
    spy = FsyncSpy(monkeypatch)
    api.add_face(person_photo("B"))
    paths = [p for p, _, _ in spy.calls]
    tmp_files = [i for i, p in enumerate(paths) if p.endswith(".tmp")]
    assert len(tmp_files) == 3
    day_dirs = [i for i, p in enumerate(paths) if os.path.isdir(p)
                and os.path.basename(p).isdigit() and len(os.path.basename(p)) == 8]
    assert len(day_dirs) == 1 and day_dirs[0] > max(tmp_files)
    if server.settings.db is None:  # SQLite: its WAL after the images (PostgreSQL syncs itself)
        wal = [i for i, p in enumerate(paths) if p.endswith("-wal")]
        assert wal and wal[-1] > day_dirs[0]


def _png(image: Image.Image, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", **params)
    return buf.getvalue()


@settings(max_examples=30, deadline=None)
@given(side=st.sampled_from([112, 111, 160]), mode=st.sampled_from(["RGB", "RGBA", "P", "L"]),
       bits16=st.booleans(), interlace=st.booleans(), seed=st.integers(0, 2**16))
def test_a_png_is_stored_as_uploaded_only_when_it_is_the_stored_pixels(
        side: int, mode: str, bits16: bool, interlace: bool, seed: int) -> None:
    """png_as_uploaded gives the upload's bytes back only for a plain 8-bit RGB PNG at the
    model's size, and then those bytes decode (as every reader of a stored normalized image
    does: cv2.imread) to exactly the pixels that were embedded; any other face0 is
    re-encoded, as before."""
    import cv2

    from videodetector.backend.imaging import as_aligned_face, png_as_uploaded

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (side, side, 3), np.uint8)
    if bits16:  # a 48-bit RGB PNG: Pillow reads it as 8-bit "RGB"
        ok, buf = cv2.imencode(".png", pixels.astype(np.uint16) * 257)
        data = buf.tobytes()
    else:
        data = _png(Image.fromarray(pixels).convert(mode), optimize=interlace)
    photo = decode_photo(data, "face0", 10**7, 512)
    aligned = as_aligned_face(photo.image)
    kept = png_as_uploaded(photo, aligned)
    plain = side == 112 and mode == "RGB" and not bits16
    assert (kept is not None) == plain
    if kept is not None:
        assert kept is data
        np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(kept, np.uint8),
                                                   cv2.IMREAD_COLOR), aligned)


def test_the_daemons_face0_is_stored_as_uploaded_and_others_reencoded(api: Api) -> None:
    """POST /face with face0: the daemon's normalized PNG (plain RGB, 112x112) is stored
    byte for byte (no re-encode); an RGBA PNG, a PNG of another size and a JPEG face0 are
    still stored as a 112x112 PNG of the pixels that were embedded. With face0 alone
    (--only-norm), the photo stored is that same PNG."""
    import cv2

    from videodetector.core.images import encode

    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 255, (112, 112, 3), np.uint8)
    daemon_png = encode(pixels, "png")
    photo = encode(rng.integers(0, 255, (240, 320, 3), np.uint8), "jpeg")
    rgba = Image.fromarray(pixels[:, :, ::-1]).convert("RGBA")
    other_encoder = _png(Image.fromarray(pixels[:, :, ::-1]), compress_level=9)
    assert other_encoder != daemon_png  # so a re-encode would not give the upload back
    cases = [(daemon_png, True), (other_encoder, True), (_png(rgba), False),
             (encode(cv2.resize(pixels, (120, 120)), "png"), False),
             (encode(pixels, "jpeg", 95), False)]
    for i, (face0, as_uploaded) in enumerate(cases):
        for with_photo in (True, False):
            files = {"face0": ("f.png", face0, "image/png")}
            if with_photo:
                files["photo"] = ("p.jpg", photo, "image/jpeg")
            r = api.post("/v1/face", files=files, data={"bbox": "[[10,10,60,70]]",
                                                        "meta": f"{i}-{with_photo}"})
            assert r.status_code == 200, r.text
            (face,) = r.json()["results"]
            stored = api.session.get(face["normalized"], timeout=30).content
            expected = cv2.imdecode(np.frombuffer(face0, np.uint8), cv2.IMREAD_COLOR)
            expected = cv2.resize(expected, (112, 112), interpolation=cv2.INTER_AREA) \
                if expected.shape[:2] != (112, 112) else expected
            assert stored[:8] == b"\x89PNG\r\n\x1a\n"
            assert (stored == face0) == as_uploaded
            np.testing.assert_array_equal(
                cv2.imdecode(np.frombuffer(stored, np.uint8), cv2.IMREAD_COLOR), expected)
            if not with_photo:
                assert api.session.get(face["photo"], timeout=30).content == stored


def _photo(mode: str, fmt: str, size: tuple[int, int], orientation: int, seed: int) -> bytes:
    """A smooth photo (a real frame's texture, not noise) in ``mode`` and ``fmt``."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (max(2, size[1] // 24), max(2, size[0] // 24), 3), np.uint8)
    pixels = cv2.resize(small, size, interpolation=cv2.INTER_CUBIC)
    return _encoded(Image.fromarray(pixels).convert(mode), fmt, orientation)


@settings(max_examples=25, deadline=None, phases=[Phase.explicit, Phase.generate])
@given(mode_fmt=st.sampled_from([("RGB", "JPEG"), ("L", "JPEG"), ("RGBA", "PNG"),
                                 ("P", "PNG")]),
       size=st.sampled_from([(1280, 720), (640, 480), (333, 517)]),
       orientation=st.sampled_from([1, 3, 6, 8]),
       box=st.tuples(st.floats(-0.1, 0.9), st.floats(-0.1, 0.9), st.floats(0.02, 0.9),
                     st.floats(0.02, 0.9)),
       whole=st.booleans(), seed=st.integers(0, 2**16))
def test_thumbnails_from_the_reduced_decode_are_those_of_before(
        mode_fmt: tuple[str, str], size: tuple[int, int], orientation: int,
        box: tuple[float, float, float, float], whole: bool, seed: int) -> None:
    """decode_for_thumbnails (photo + face0 posts) decodes a JPEG at a reduced DCT scale
    when every thumbnail still has its pixels there, and converts only the crops: each
    thumbnail has exactly the size it had from the full decode, the same pixels when no
    reduction was possible, and within JPEG-scaling noise otherwise; the photo's size (the
    default box) is the same."""
    import cv2

    from videodetector.backend.imaging import (
        decode_for_thumbnails,
        reduction_factor,
        thumbnail,
    )
    from videodetector.core.images import encode

    data = _photo(*mode_fmt, size, orientation, seed)
    before = decode_photo(data, "photo", 10**8, 4096)
    w, h = before.size
    boxes = None if whole else [(box[0] * w, box[1] * h, (box[0] + box[2]) * w,
                                 (box[1] + box[3]) * h)]
    photo = decode_for_thumbnails(data, "photo", 10**8, 4096, boxes)
    assert photo.size == (w, h) and photo.image is None and photo.ext == before.ext
    assert photo.sha256 == before.sha256 and photo.orientation == before.orientation
    used = boxes or [(0.0, 0.0, float(w), float(h))]
    factor = reduction_factor((w, h), used) if mode_fmt[1] == "JPEG" else 1
    for b in used:
        old, new = thumbnail(before.image, b), photo.thumbnail(b)
        assert new.shape == old.shape and new.dtype == np.uint8 and new.flags["C_CONTIGUOUS"]
        if factor == 1:
            np.testing.assert_array_equal(new, old)
        else:  # no further from before than the stored JPEG (quality 85) is from it
            stored = cv2.imdecode(np.frombuffer(encode(old, "jpeg", 85), np.uint8), 1)
            noise = np.abs(stored.astype(int) - old.astype(int)).mean()
            diff = np.abs(new.astype(int) - old.astype(int)).mean()
            assert diff <= 2 * noise + 1, (factor, diff, noise)


@pytest.mark.parametrize("size,box,factor", [
    ((1280, 720), (419, 227, 481, 311), 1),  # the bench's faces: crop < 160 px, full scale
    ((1920, 1080), (800, 300, 950, 500), 1),  # a crop of 240x320 px for a 120x160 thumbnail
    ((1920, 1080), (800, 300, 1100, 700), 2),  # a close face: a crop of 480x640 px
    ((1280, 720), None, 4),  # no bbox: a thumbnail (160x90) of the whole frame
])
def test_reduction_factor_never_upscales(size: tuple[int, int], box: tuple | None,
                                         factor: int) -> None:
    from videodetector.backend.imaging import reduction_factor, thumbnail_geometry

    boxes = [box] if box else [(0, 0, *size)]
    assert reduction_factor(size, boxes) == factor
    (x1, y1, x2, y2), (tw, th) = thumbnail_geometry(size, boxes[0])
    w, h = x2 - x1, y2 - y1
    assert factor == 1 or (w // factor >= 2 * tw and h // factor >= 2 * th)
    assert factor == 8 or w < 4 * factor * tw or h < 4 * factor * th  # the next one is not


def test_a_truncated_photo_with_face0_is_still_refused(api: Api) -> None:
    """The photo of a face0 post is decoded at a reduced scale, but every byte of it still
    is: a truncated JPEG is refused (400 naming photo) and nothing is stored."""
    from videodetector.core.images import encode

    rng = np.random.default_rng(9)
    photo = encode(rng.integers(0, 255, (720, 1280, 3), np.uint8), "jpeg")
    face0 = encode(rng.integers(0, 255, (112, 112, 3), np.uint8), "png")
    for box in ("[[10,10,60,70]]", "[[100,100,900,700]]"):  # full scale, then 1/2..1/8
        r = api.post("/v1/face", files={"photo": ("p.jpg", photo[: len(photo) * 2 // 3],
                                                  "image/jpeg"),
                                        "face0": ("f.png", face0, "image/png")},
                     data={"bbox": box})
        assert r.status_code == 400, r.text
        assert r.json().get("param") == "photo", r.text
    assert api.get("/v1/faces").json()["results"] == []
