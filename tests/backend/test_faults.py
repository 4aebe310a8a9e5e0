"""Storage faults (issue 7, item 3): a full disk and a failing COMMIT.

Reported: on a full disk the backend answered 503, then ``500 KeyError 'face 14 is already
indexed'`` on every POST /v1/face even after space was freed, until a restart (a failed COMMIT
had left the face in the in-memory index, and SQLite gave the next face the same id); 18
``*.tmp`` files stayed in ``uploads/``. During a fault every write must answer 503, nothing
acknowledged before may be lost, no file may be left behind, and once the fault clears the
same process must accept posts again, with the index and the database in agreement and a
re-sent snapshot (same Idempotency-Key) stored once.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.backend.conftest import Api, error_of, person_photo
from tests.backend.faultkit import CommitFault, DiskFull, assert_consistent, stored_files
from tests.backend.test_idempotency import detector_post
from videodetector.backend.retention import expire_history
from videodetector.backend.server import BackendServer
from videodetector.backend.settings import Settings
from videodetector.backend.storage import CommitFailed, FileStore

DAY = 86400.0


@functools.cache
def snapshot(who: str) -> tuple[list[int], bytes]:
    """The detector's box and normalized face for one of the test people."""
    return detector_post(person_photo(who))


def post(api: Api, who: str, key: str, cam: str | None = "cam1", **data: str
         ) -> requests.Response:
    """One snapshot as the video detector posts it (normalized face0, bbox, Idempotency-Key)."""
    bbox, png = snapshot(who)
    fields = {"bbox": f"[{bbox}]", "timestamp": "2024-05-01T10:00:00", "meta": key, **data}
    if cam is not None:
        fields["cam_id"] = cam
    return api.post("/v1/face", files={"face0": ("n.png", png, "image/png")}, data=fields,
                    headers={"Idempotency-Key": key})


def ids_of(r: requests.Response) -> list[int]:
    assert r.status_code == 200, r.text
    return [f["id"] for f in r.json()["results"]]


def all_face_ids(api: Api) -> list[int]:
    return [f["id"] for f in api.get("/v1/faces").json()["results"]]


def identified(api: Api, who: str) -> set[int]:
    """Every face the index returns for ``who`` (no threshold): all the user's indexed faces."""
    bbox, png = snapshot(who)
    r = api.post("/v1/identify", files={"face0": ("n.png", png, "image/png")},
                 data={"bbox": f"[{bbox}]", "threshold": "none", "n": "1000"})
    assert r.status_code == 200, r.text
    return {m["face"]["id"] for hits in r.json()["results"].values() for m in hits}


def settings(data_dir: Path, **changes: object) -> Settings:
    return Settings(data_dir=data_dir, person_identify=True, friend_count=2,
                    log_level="critical", **changes)


def resend_until_stored(api: Api, failed: dict[str, str], acked: dict[str, list[int]]) -> None:
    """The detector's retries after the fault: each failed snapshot is stored, and a second
    retry of the same key returns the same faces."""
    for key, who in failed.items():
        acked[key] = ids_of(post(api, who, key))
        assert ids_of(post(api, who, key)) == acked[key]


def check_after_fault(srv: BackendServer, api: Api, acked: dict[str, list[int]]) -> None:
    """Everything acknowledged is there, once; the index finds exactly the stored faces."""
    stored = all_face_ids(api)
    expected = sorted((i for ids in acked.values() for i in ids), reverse=True)
    assert stored == expected
    assert identified(api, "A") == set(stored)
    metas = [f["meta"] for f in api.get("/v1/faces").json()["results"]]
    assert sorted(metas) == sorted(acked)  # one face per snapshot: none stored twice
    assert_consistent(srv.backend)


@pytest.mark.sqlite_only("fills the database itself with PRAGMA max_page_count (SQLITE_FULL)")
def test_full_disk_answers_503_and_recovers_without_restart(db_url, tmp_path, monkeypatch):
    with BackendServer(settings(tmp_path, db=db_url)) as srv:
        api = Api(srv.url, srv.create_token())
        acked = {f"ok-{i}": ids_of(post(api, who, f"ok-{i}")) for i, who in enumerate("ABC")}
        disk = DiskFull(monkeypatch)
        failed: dict[str, str] = {}

        # the image files cannot be written
        disk.on = True
        for i, who in enumerate("ABCD"):
            error_of(post(api, who, f"files-{i}"), 503, "SERVICE_UNAVAILABLE")
            failed[f"files-{i}"] = who
        assert disk.hits == 4
        assert_consistent(srv.backend)  # no .tmp file, no image of a failed post
        assert all_face_ids(api) == sorted((i for v in acked.values() for i in v),
                                           reverse=True)
        disk.on = False

        # the database is full as well (SQLITE_FULL: no page left to grow into)
        db = srv.backend.db
        with db.lock:
            pages = db.conn.execute("PRAGMA page_count").fetchone()[0]
            db.conn.execute(f"PRAGMA max_page_count = {pages}")
        statuses = []
        for i in range(60):
            r = post(api, "ABCD"[i % 4], f"db-{i}")
            statuses.append(r.status_code)
            if r.status_code == 200:
                acked[f"db-{i}"] = ids_of(r)
            else:
                error_of(r, 503, "SERVICE_UNAVAILABLE")
                failed[f"db-{i}"] = "ABCD"[i % 4]
                if len(failed) >= 8:
                    break
        assert set(statuses) == {200, 503} or set(statuses) == {503}, statuses
        assert_consistent(srv.backend)

        # space is back: the same process stores the retried snapshots, once each
        with db.lock:
            db.conn.execute("PRAGMA max_page_count = 1073741823")
        resend_until_stored(api, failed, acked)
        for key in list(acked)[:3]:  # snapshots acknowledged before are not stored again
            assert ids_of(post(api, "A", key)) == acked[key]
        check_after_fault(srv, api, acked)


def test_failed_commit_changes_nothing_on_any_write_path(db_url, tmp_path):
    """SQLite refuses the COMMIT: face add, delete, person change, gallery delete and
    history retention all answer 503 (or raise) and leave the index, the database and the
    files as they were; afterwards they all work, without a restart."""
    with BackendServer(settings(tmp_path, db=db_url, friend_interval=DAY,
                                history_max_age=DAY)) as srv:
        api = Api(srv.url, srv.create_token())
        backend = srv.backend
        assert api.post("/v1/galleries/watch").status_code == 201
        watched = ids_of(post(api, "A", "watched", galleries="watch"))[0]
        kept = ids_of(post(api, "B", "kept"))[0]
        acked = {"watched": [watched], "kept": [kept]}
        before = api.get("/v1/faces").json()
        old = {"person_id": api.get(f"/v1/face/id/{kept}").json()["person_id"]}

        with CommitFault(backend.db):
            error_of(post(api, "C", "new"), 503, "SERVICE_UNAVAILABLE")
            assert api.get("/v1/faces").json() == before  # the rolled back face is not read
            error_of(api.delete(f"/v1/face/id/{kept}"), 503, "SERVICE_UNAVAILABLE")
            error_of(api.put(f"/v1/face/id/{kept}", json={"person_id": "new"}), 503,
                     "SERVICE_UNAVAILABLE")
            error_of(api.delete("/v1/galleries/watch"), 503, "SERVICE_UNAVAILABLE")
            with pytest.raises(CommitFailed):  # events of 2024 are long past the 1-day limit
                expire_history(backend)
            assert api.get("/v1/faces").json() == before
            assert api.get(f"/v1/face/id/{kept}").json()["person_id"] == old["person_id"]
            assert api.get("/v1/galleries").json()["results"] == ["default", "watch"]
            assert identified(api, "A") == {watched, kept}
            assert_consistent(backend)

        # the fault is gone: the same process does all of it
        resend_until_stored(api, {"new": "C"}, acked)
        check_after_fault(srv, api, acked)
        face = api.put(f"/v1/face/id/{kept}", json={"person_id": "new"}).json()
        assert face["person_id"] not in (None, old["person_id"])  # a person the server made
        assert_consistent(backend)
        assert api.delete("/v1/galleries/watch").status_code == 204
        assert expire_history(backend)[0] == 2  # "kept" and "new"; "watched" went with its gallery
        assert all_face_ids(api) == [] and identified(api, "A") == set()
        assert_consistent(backend)


def test_leftover_tmp_files_are_removed_at_start(tmp_path):
    day = tmp_path / "uploads" / "1" / "20240501"
    day.mkdir(parents=True)
    (day / "abc_photo.jpeg.tmp").write_bytes(b"half a photo")
    (day / "abc_photo.jpeg").write_bytes(b"a whole photo")
    assert FileStore(tmp_path / "uploads").remove_temporaries() == 1
    assert stored_files(tmp_path / "uploads") == {"1/20240501/abc_photo.jpeg"}


# -- a real full disk: the data directory on a small tmpfs ------------------------


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _write_until_full(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (1 << 16, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)


def fill(path: Path) -> Path:
    """Fill the file system with one file; returns it."""
    filler = path / "filler"
    _write_until_full(filler)
    return filler


def leave_free(filler: Path, free: int) -> None:
    """Fill the disk up again, then free ``free`` bytes."""
    _write_until_full(filler)
    os.truncate(filler, max(0, filler.stat().st_size - free))


def test_real_full_disk_on_tmpfs(tmp_path):
    """The data directory on a 6 MB tmpfs, filled up; each snapshot is posted with a little
    more room left (so the disk runs out at every point: the photo, the thumbnail, the
    normalized face, SQLite's WAL at COMMIT). Every answer is 200 or 503, never 500; once
    there is room again the same process takes every retry, once."""
    with small_tmpfs(tmp_path / "disk", "6m") as disk, \
            BackendServer(settings(disk / "data")) as srv:
        api = Api(srv.url, srv.create_token())
        acked = {f"ok-{i}": ids_of(post(api, who, f"ok-{i}")) for i, who in enumerate("AB")}
        failed: dict[str, str] = {}
        filler = fill(disk)
        statuses = []
        for i, free in enumerate(range(0, 160 * 1024, 8 * 1024)):
            leave_free(filler, free)
            who = "ABCD"[i % 4]
            r = post(api, who, f"full-{i}")
            statuses.append(r.status_code)
            if r.status_code == 200:
                acked[f"full-{i}"] = ids_of(r)
            else:
                error_of(r, 503, "SERVICE_UNAVAILABLE")
                failed[f"full-{i}"] = who
            assert_consistent(srv.backend)
        assert statuses[0] == 503 and set(statuses) <= {200, 503}, statuses
        filler.unlink()
        resend_until_stored(api, failed, acked)
        check_after_fault(srv, api, acked)
        with srv.backend.db.lock:
            assert srv.backend.db.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

