"""Two ``fkvideo_backend serve`` processes on one PostgreSQL database and one image folder:
a face enrolled on A is identified on B at once; one Idempotency-Key posted to both (at the
same time) stores the face once; one face stream posted to both makes one person, and
friend-or-foe counts the days it was seen through either."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.backend.conftest import Api, person_photo
from tests.pg import PgCluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(data_dir: Path, url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "videodetector.backend.cli", "serve", "--port", str(port),
         "--data-dir", str(data_dir), "--db", url, "--log-level", "warning",
         "--person-identify", "true", "--friend-count", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, f"http://127.0.0.1:{port}"


def _wait_up(proc: subprocess.Popen[bytes], url: str, deadline: float) -> None:
    while True:
        try:
            requests.get(url + "/v1/galleries", timeout=5)
            return
        except requests.RequestException:  # not listening yet, or busy starting
            if proc.poll() is not None:
                pytest.fail(f"fkvideo_backend serve exited: {proc.communicate()[1].decode()}")
            assert time.monotonic() < deadline, "fkvideo_backend serve did not start"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def two_backends(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[Api, Api]]:
    person_photo("A")  # skips without the models' photos
    url = pg_cluster.new_database()
    data_dir = tmp_path_factory.mktemp("shared")  # the image store both processes mount
    procs = [_serve(data_dir, url) for _ in range(2)]
    try:
        deadline = time.monotonic() + 120
        for proc, base in procs:
            _wait_up(proc, base, deadline)
        out = subprocess.run(
            [sys.executable, "-m", "videodetector.backend.cli", "token", "--data-dir",
             str(data_dir), "--db", url], capture_output=True, text=True, timeout=60,
            check=True).stdout
        token = out.strip().rsplit(" ", 1)[-1]
        yield Api(procs[0][1], token), Api(procs[1][1], token)
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            _, err = proc.communicate(timeout=30)
            assert b"Traceback" not in err, err.decode()


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
