"""Two ``fkvideo_backend serve`` processes on one PostgreSQL database and one image folder:
a face enrolled on A is identified on B at once; one Idempotency-Key posted to both (at the
same time) stores the face once; one face stream posted to both makes one person, and
friend-or-foe counts the days it was seen through either."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.backend.backend_proc import START_TIMEOUT, spawn_backend, wait_ready
from tests.backend.conftest import Api, person_photo
from tests.pg import PgCluster


@pytest.fixture(scope="module")
def two_backends(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[Api, Api]]:
    person_photo("A")  # skips without the models' photos
    url = pg_cluster.new_database()
    data_dir = tmp_path_factory.mktemp("shared")  # the image store both processes mount
    logs = [tmp_path_factory.mktemp("logs") / f"backend{n}.log" for n in range(2)]
    procs = []
    for log_path in logs:
        with open(log_path, "wb") as log:  # the child keeps its own descriptor
            procs.append(spawn_backend(["--data-dir", str(data_dir), "--db", url,
                                        "--person-identify", "true", "--friend-count", "2"],
                                       log))
    try:
        deadline = time.monotonic() + START_TIMEOUT
        urls = [wait_ready(proc, log_path, None, deadline)
                for proc, log_path in zip(procs, logs, strict=True)]
        out = subprocess.run(
            [sys.executable, "-m", "videodetector.backend.cli", "token", "--data-dir",
             str(data_dir), "--db", url], capture_output=True, text=True, timeout=60,
            check=True).stdout
        token = out.strip().rsplit(" ", 1)[-1]
        yield Api(urls[0], token), Api(urls[1], token)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        for log_path in logs:
            assert "Traceback" not in log_path.read_text(), log_path.read_text()


def test_enroll_on_a_identify_on_b_at_once(two_backends: tuple[Api, Api]) -> None:
    a, b = two_backends
    for name in ("A", "B"):
        face = a.add_face(person_photo(name))
        t0 = time.monotonic()
        r = b.post("/v1/identify", files={"photo": person_photo(name)}, data={"n": 1})
        assert r.status_code == 200, r.text
        (matches,) = r.json()["results"].values()
        assert time.monotonic() - t0 < 1.0 or matches  # found, and not by waiting
        assert [m["face"]["id"] for m in matches] == [face["id"]]
        assert matches[0]["confidence"] > 0.9
        # the image store is shared: B serves the image A wrote
        assert b.get(f"/v1/face/id/{face['id']}").json()["id"] == face["id"]
        assert requests.get(face["photo"].replace(a.url, b.url), timeout=10).content == \
            person_photo(name)


def test_one_idempotency_key_to_both_stores_once(two_backends: tuple[Api, Api]) -> None:
    a, b = two_backends
    photo = person_photo("C")
    headers = {"Idempotency-Key": "cam-1:run:7:0"}

    def post(api: Api) -> requests.Response:
        return api.post("/v1/face", files={"photo": ("p.jpg", photo, "image/jpeg")},
                        data={"meta": "idem"}, headers=headers)

    with ThreadPoolExecutor(2) as pool:
        ra, rb = pool.map(post, (a, b))
    assert ra.status_code == rb.status_code == 200, (ra.text, rb.text)
    ids_a = [f["id"] for f in ra.json()["results"]]
    assert ids_a == [f["id"] for f in rb.json()["results"]]
    # a retry to either process replays; one face with that meta is stored
    assert [f["id"] for f in post(b).json()["results"]] == ids_a
    listed = a.get("/v1/face/meta/idem").json()
    assert [f["id"] for f in listed["results"]] == ids_a


def test_one_face_stream_on_both_processes_is_one_person(two_backends: tuple[Api, Api]
                                                         ) -> None:
    """Dynamic person creation on B knows the person A made a moment ago (B's index caught
    up with A's faces under the shared write lock), and so does A for B's."""
    a, b = two_backends
    first = a.add_face(person_photo("D"), cam_id="door")
    assert first["person_id"] is not None
    assert b.add_face(person_photo("D"), cam_id="door")["person_id"] == first["person_id"]
    other = b.add_face(person_photo("B"), cam_id="door")
    assert other["person_id"] not in (None, first["person_id"])
    assert a.add_face(person_photo("B"), cam_id="door")["person_id"] == other["person_id"]


def test_friend_or_foe_counts_days_seen_through_either_process(two_backends: tuple[Api, Api]
                                                              ) -> None:
    """friend_count=2 days on one camera: day 1 through A, day 2 through B makes a friend,
    whichever process answers."""
    a, b = two_backends

    def post(api: Api, day: int) -> dict:
        return api.add_face(person_photo("A"), cam_id="lobby",
                            timestamp=f"2024-03-{day:02d}T12:00:00")

    first = post(a, 1)
    assert first["friend"] is False
    second = post(b, 2)
    assert second["person_id"] == first["person_id"] and second["friend"] is True
    assert post(a, 3)["friend"] is True
