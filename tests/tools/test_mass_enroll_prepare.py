"""``findface-mass-enroll prepare`` / ``print`` (reference 8.4.1) and the pure parts of ``run``:
glob patterns, each meta source, --split, the job file, the progress line, answer handling.
No backend here (see test_mass_enroll_run.py)."""

from __future__ import annotations

import functools
import http.server
import importlib
import json
import os
import sqlite3
import threading
import tomllib
from pathlib import Path

import pytest

from videodetector.tools import enroll_run
from videodetector.tools.enroll_job import JobError, JobFile
from videodetector.tools.enroll_prepare import MetaOptions, read_meta_csv
from videodetector.tools.enroll_run import Done, Failed, Fatal, Retry, RunOptions, Stats, classify
from videodetector.tools.mass_enroll import main


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The reference's example layout (dir1, dir2 with photos), plus noise; cwd = tmp_path."""
    for rel in ("dir1/photo1.jpg", "dir1/photo2.jpg", "dir1/photo3.jpg", "dir2/photo1.jpg",
                "dir2/photo2.jpg", "dir2/deep/photo3.JPEG", "top.png", "dir1/notes.txt"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"not decoded by prepare")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def printed(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict]:
    capsys.readouterr()
    assert main([*args, "print"]) == 0
    return json.loads(capsys.readouterr().out)


def metas(rows: list[dict], root: Path) -> dict[str, str]:
    return {os.path.relpath(r["image"], root): r["meta"] for r in rows}


def test_meta_const_and_recursive_globs(tree: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["prepare", "--meta-const=Phillip J. Fry", "**/*.jpg", "**/*.jpeg"]) == 0
    out = capsys.readouterr().out
    assert "Looking for images matching '**/*.jpg'" in out
    assert "5 files prepared for upload" in out and "5 files in job file ffmassenroll.job" in out
    rows = printed(capsys)
    # ** spans any depth; extensions are matched as given by the pattern (JPEG via *.jpeg
    # only on case-insensitive file systems), paths are absolute, order is sorted
    assert metas(rows, tree) == {f"dir1/photo{i}.jpg": "Phillip J. Fry" for i in (1, 2, 3)} | {
        "dir2/photo1.jpg": "Phillip J. Fry", "dir2/photo2.jpg": "Phillip J. Fry"}
    assert all(Path(r["image"]).is_absolute() and r["state"] == "pending" for r in rows)
    assert [r["image"] for r in rows] == sorted(r["image"] for r in rows)
    # preparing again adds only what is new to the same job file
    assert main(["prepare", "--meta-const=Leela", "**/*"]) == 0
    out = capsys.readouterr().out
    assert "7 files prepared for upload" in out  # + photo3.JPEG and top.png, not notes.txt
    assert "2 matching files are not images" in out  # notes.txt and the job file
    assert "5 of them were already in the job file" in out and "7 files in job file" in out
    got = metas(printed(capsys), tree)
    assert got["dir1/photo1.jpg"] == "Phillip J. Fry" and got["top.png"] == "Leela"


def test_meta_companion(tree: Path, capsys: pytest.CaptureFixture[str]):
    (tree / "dir1/photo1.txt").write_text("Phillip J. Fry\n")
    (tree / "dir1/photo2.txt").write_text("  Turanga Leela  ")
    (tree / "dir1/photo3.txt").write_bytes(b"\xff\xfe bad utf-8")
    assert main(["prepare", "--meta-companion=txt", "dir1/*.jpg"]) == 0
    out = capsys.readouterr().out
    assert "1 images have no readable .txt companion" in out and "photo3.jpg" in out
    assert metas(printed(capsys), tree) == {"dir1/photo1.jpg": "Phillip J. Fry",
                                            "dir1/photo2.jpg": "Turanga Leela",
                                            "dir1/photo3.jpg": ""}


def test_meta_csv(tree: Path, capsys: pytest.CaptureFixture[str]):
    (tree / "meta.csv").write_text('"Phillip J. Fry","dir1/photo1.jpg"\n'
                                   '"Phillip J. Fry","dir1/photo2.jpg"\n\n'
                                   '"Turanga Leela, Captain","dir2/photo1.jpg"\n'
                                   f'"Bender","{tree}/dir2/photo2.jpg"\n'
                                   '"Nobody","dir9/missing.jpg"\n')
    assert main(["prepare", "--meta-csv=meta.csv", "**/*.jpg"]) == 0
    assert "1 images are not listed in meta.csv: their meta is empty" in capsys.readouterr().out
    assert metas(printed(capsys), tree) == {
        "dir1/photo1.jpg": "Phillip J. Fry", "dir1/photo2.jpg": "Phillip J. Fry",
        "dir1/photo3.jpg": "", "dir2/photo1.jpg": "Turanga Leela, Captain",
        "dir2/photo2.jpg": "Bender"}
    # a relative path is also found from the CSV's own folder
    os.chdir(tree / "dir2")
    assert read_meta_csv("../meta.csv")[str(tree / "dir1/photo1.jpg")] == "Phillip J. Fry"
    os.chdir(tree)
    (tree / "bad.csv").write_text('"a","dir1/photo1.jpg"\n"b","c","dir1/photo2.jpg"\n')
    assert main(["--job", "other.job", "prepare", "--meta-csv=bad.csv", "**/*.jpg"]) == 2
    assert "bad.csv:2: expected 2 columns" in capsys.readouterr().err
    (tree / "twice.csv").write_text('"a","dir1/photo1.jpg"\n"b","dir1/photo1.jpg"\n')
    with pytest.raises(ValueError, match="twice.csv:2: 'dir1/photo1.jpg' already has"):
        read_meta_csv("twice.csv")


def test_meta_filename_and_split(tree: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["--job", "parts", "prepare", "--meta-filename", "--split", "2",
                 "dir*/*.jpg"]) == 0
    assert not (tree / "parts").exists()
    part1, part2 = (printed(capsys, "--job", f"parts.{k}") for k in (1, 2))
    assert [len(part1), len(part2)] == [3, 2]
    assert metas(part1 + part2, tree) == {"dir1/photo1.jpg": "photo1", "dir1/photo2.jpg": "photo2",
                                          "dir1/photo3.jpg": "photo3", "dir2/photo1.jpg": "photo1",
                                          "dir2/photo2.jpg": "photo2"}
    with JobFile("parts.1") as a, JobFile("parts.2") as b:
        assert a.job_id != b.job_id  # idempotency keys differ between the parts
    # parts are never overwritten; more parts than images is refused
    assert main(["--job", "parts", "prepare", "--split", "2", "dir1/*.jpg"]) == 2
    assert "would overwrite parts.1, parts.2" in capsys.readouterr().err
    assert main(["--job", "p", "prepare", "--split", "9", "dir1/*.jpg"]) == 2
    assert "--split 9: only 3 images" in capsys.readouterr().err


def test_prepare_refusals(tree: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["prepare", "--meta-const=x", "--meta-filename", "*.png"]) == 2
    assert "at most one meta source, not --meta-const and --meta-filename" in \
        capsys.readouterr().err
    assert main(["prepare", "nothing/*.jpg"]) == 2
    assert "no images match 'nothing/*.jpg'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prepare", "--split", "0", "*.png"])
    with pytest.raises(ValueError, match="--meta-companion must be a file extension"):
        MetaOptions(companion=".")
    assert main(["print"]) == 2  # no job file yet
    assert "does not exist (run prepare first)" in capsys.readouterr().err
    sqlite3.connect(tree / "foreign.db").execute("CREATE TABLE t (x)")
    with pytest.raises(JobError, match="not a mass-enroll job file"):
        JobFile(tree / "foreign.db")
    (tree / "text.job").write_text("hello, this is no database at all" * 10)
    with pytest.raises(JobError, match="not a mass-enroll job file"):
        JobFile(tree / "text.job")


def test_print_failed_and_job_states(tree: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["--job", "j", "prepare", "--meta-filename", "dir1/*.jpg"]) == 0
    with JobFile("j") as job:
        one, two, three = job.images()
        job.mark_done(one, [11, 12])
        job.mark_failed(two, "BAD_PARAM: No faces found on photo (photo)")
        assert job.idempotency_key(one) != job.idempotency_key(two)
        assert [i.path for i in job.images(["pending"])] == [three.path]
    rows = printed(capsys, "--job", "j")
    assert rows[0]["state"] == "done" and rows[0]["face_ids"] == [11, 12]
    capsys.readouterr()
    assert main(["print", "--failed", "--job", "j"]) == 0  # --job after the command too
    failed = json.loads(capsys.readouterr().out)
    assert failed == [{"image": two.path, "meta": "photo2", "state": "failed",
                       "reason": "BAD_PARAM: No faces found on photo (photo)", "attempts": 1}]


def test_progress_line_and_summary():
    stats = Stats(total=2055, skipped=10, succeeded=4, failed=9, faces=5, started=100.0)
    assert stats.line(now=117.5) == ("[23/2055] faces processed (4 succeeded, 9 failed, "
                                     "10 skipped). 0.74 rps. [00:00:17/00:45:35]")
    assert Stats(total=3, skipped=0, started=0.0).line(now=5.0).endswith(
        "0.00 rps. [00:00:05/--:--:--]")
    summary = stats.summary("interrupted")
    assert "Found 2055 images in job file\nSkipped 10 already processed images\n" \
           "Successfully processed 4 images (5 faces enrolled)\nFailed to process 9 images" \
           in summary
    assert "Not processed yet 2032 images" in summary and "Stopped: interrupted" in summary


def test_answers_classified():
    assert classify(200, {"results": [{"id": 3}, {"id": 4}]}, "") == Done([3, 4])
    too_many = {"code": "BAD_PARAM", "reason": "Too many faces: 2", "param": "mf_selector"}
    assert classify(400, too_many, "") == Failed("BAD_PARAM: Too many faces: 2 (mf_selector)")
    assert isinstance(classify(413, {"code": "BAD_PARAM", "reason": "big"}, ""), Failed)
    assert isinstance(classify(401, {"code": "AUTH_FAILED", "reason": "x"}, ""), Fatal)
    assert isinstance(classify(404, None, "Not Found"), Fatal)
    assert isinstance(classify(400, {"code": "BAD_PARAM", "reason": "no emotion model",
                                     "param": "emotions"}, ""), Fatal)
    for status in (429, 502, 503, 504):
        assert classify(status, None, "busy") == Retry(f"HTTP {status}: busy")
    assert classify(500, None, "boom") == Retry("HTTP 500: boom", server_error=True)
    assert classify(200, {"oops": 1}, "{oops}") == Failed("unexpected answer: {oops}")


def test_run_options_validated():
    with pytest.raises(ValueError, match="--token is required"):
        RunOptions(token=" ")
    with pytest.raises(ValueError, match="--api must be an http"):
        RunOptions(token="t", api="127.0.0.1:8000")
    with pytest.raises(ValueError, match="--parallel must be 1..256, not 0"):
        RunOptions(token="t", parallel=0)
    with pytest.raises(ValueError, match="--stats-interval must be > 0"):
        RunOptions(token="t", stats_interval=0)
    assert RunOptions(token="t").base_url == "http://127.0.0.1:8000/v1"
    assert RunOptions(token="t", api="http://h:1/v0/").base_url == "http://h:1/v0"
    form = RunOptions(token="t", gallery="g", mf_selector="reject", age=True).form("m")
    assert form == {"meta": "m", "galleries": "g", "mf_selector": "reject", "age": "true"}
    assert enroll_run.SERVER_ERROR_TRIES >= 2


def test_retries(monkeypatch: pytest.MonkeyPatch):
    """Backend down/busy: retried until it answers; a 500 fails the image after a few tries;
    a stopped run stops retrying."""
    said: list[str] = []
    stop = threading.Event()
    client = enroll_run.Client(RunOptions(token="t", max_backoff=0.01), stop, said.append)

    def answers(*outcomes):
        it = iter(outcomes)
        return lambda: next(it)

    down = Retry("backend unreachable (ConnectionError)")
    assert client.with_retries(answers(down, down, down, down, Done([7])), "POST") == Done([7])
    assert said == ["POST: backend unreachable (ConnectionError); retrying (next try in "
                    "0.01 s)"]  # one line per 10 s, however many threads retry
    boom = Retry("HTTP 500: boom", server_error=True)
    assert client.with_retries(answers(boom, down, boom, boom, Done([1])), "POST") == \
        Failed("HTTP 500: boom")
    stop.set()
    assert isinstance(client.with_retries(answers(down), "POST"), enroll_run.Stopped)


def test_entry_points(tree: Path, capsys: pytest.CaptureFixture[str]):
    """``fkvideo_backend mass-enroll ...`` and the ``findface-mass-enroll`` console script."""
    from videodetector.backend.cli import main as backend_main

    assert backend_main(["mass-enroll", "--job", "b.job", "prepare", "--meta-const", "x",
                         "*.png"]) == 0
    assert "1 files in job file b.job" in capsys.readouterr().out
    assert backend_main(["mass-enroll", "--job", "b.job", "print"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["meta"] == "x"
    with pytest.raises(SystemExit):
        backend_main(["--help"])
    assert "mass-enroll" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        backend_main(["mass-enroll", "run", "--help"])
    assert "usage: fkvideo_backend mass-enroll run" in capsys.readouterr().out
    with open(Path(__file__).resolve().parents[2] / "pyproject.toml", "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    module, func = scripts["findface-mass-enroll"].split(":")
    assert getattr(importlib.import_module(module), func) is main


def test_not_a_backend_is_refused_at_once(tree: Path, capsys: pytest.CaptureFixture[str]):
    """--api pointing at some other web server (200 with HTML): stop, do not retry forever."""
    (tree / "v1").mkdir()
    (tree / "v1/galleries").write_text("<html>hello</html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tree))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        assert main(["prepare", "*.png"]) == 0
        url = f"http://127.0.0.1:{httpd.server_address[1]}/"
        assert main(["run", "--api", url, "--token", "t"]) == 2
        httpd.shutdown()
    out = capsys.readouterr().out
    assert "Stopped: GET http://127.0.0.1:" in out and "not a FindFace API answer" in out
    with JobFile("ffmassenroll.job") as job:
        assert job.count("pending") == 1
