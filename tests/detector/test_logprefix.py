"""The camera's prefix in the detector's log lines (logprefix.py): the camera named once, by
its name and id, in the prefix; a hostile name can neither forge a line nor flood one."""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.detector.post.receiver import Receiver
from videodetector.core.models import YuNetDetector
from videodetector.democlip import Walker, pick_sprites, write_clip
from videodetector.detector.camera import CameraWorker
from videodetector.detector.cli import log_handler
from videodetector.detector.config import parse_config
from videodetector.detector.logprefix import NAME_MAX, camera_label, clean_text, name_camera
from videodetector.detector.manager import parse_camera
from videodetector.detector.pipeline import CameraSpec
from videodetector.detector.post.poster import Poster
from videodetector.detector.post.spool import Spool

CAM = "24f0c1d2-9b7e-4c1a-8d2f-0123456789ab"
HOSTILE = ("x\nERROR [-] fkvideo_detector: forged\r\x1b[2J\x1b[31m\u2028\u202e"
           + "A" * 10_000)
# a line as log_handler writes it: time, level, [prefix], logger: message
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
                  r"\[([^\]\n]*)\] (\S+): (.*)$")


# -- the label, a pure function ---------------------------------------------------------

@pytest.mark.parametrize(("cam_id", "name", "label"), [
    (CAM, "lobby", "lobby 24f0c1d2"),  # a UUID: its first group, a prefix to grep for
    (CAM, "", "24f0c1d2"),
    (CAM.upper(), "", "24F0C1D2"),  # as given: still a prefix of the id
    ("cam1", "", "cam1"),  # any other id in full
    ("cam1", "Front door", "Front door cam1"),
    ("cam1", "  two\tspaced\n  words ", "two spaced words cam1"),
    ("cam1", "room [B]", "room (B) cam1"),  # the prefix ends at the first ]
    ("cam1", "\x1b[31m", "(31m cam1"),
    ("cam1", "\x00\x07\u202e", "cam1"),  # nothing printable left: no name
    (None, "lobby", "-"),
    ("", "", "-"),
])
def test_the_label_is_the_name_and_the_id(cam_id: str | None, name: str, label: str) -> None:
    assert camera_label(cam_id, name) == label


def test_a_long_name_is_cut_and_marked() -> None:
    name = "Entrance north gate, building B, level -2"
    assert clean_text(name, NAME_MAX) == "Entrance north gate, building B…"
    assert len(clean_text(name, NAME_MAX)) == NAME_MAX
    assert clean_text("a" * 10_000_000, NAME_MAX) == "a" * (NAME_MAX - 1) + "…"
    assert clean_text(" " * 200 + "lobby" + "A" * 100, NAME_MAX) == "…"  # cut, and says so
    assert camera_label("x" * 1000) == "x" * 63 + "…"  # an id, too


# -- the lines of a real camera -----------------------------------------------------------

@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """What the daemon's handler (log_handler) writes, at INFO, for this test's records."""
    stream = io.StringIO()
    handler = log_handler(stream)
    root, package = logging.getLogger(), logging.getLogger("videodetector")
    before = package.level
    root.addHandler(handler)
    package.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        package.setLevel(before)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    (a,) = pick_sprites(1)
    path = tmp_path_factory.mktemp("clip") / "walk.mp4"
    return write_clip(path, [Walker(a, 0.0, 2.0, 100)], seconds=2.0)


def run_camera(camera: CameraSpec, tmp_path: Path,
               stop_after: float | None = None) -> CameraWorker:
    """The camera's worker and poster (against a real receiver), as the daemon runs them:
    to the file's end, or stopped after ``stop_after`` seconds."""
    rx = Receiver().start()
    cfg = parse_config(["--source", camera.url, "--camid", camera.cam_id, "--api-url", rx.url,
                        "--api-token", "t", "--spool-dir", str(tmp_path / "spool")])
    poster = Poster(cfg, spool=Spool(cfg.spool_dir, cfg.spool_max_bytes), cam_id=camera.cam_id)
    poster.start()
    worker = CameraWorker(cfg, camera, YuNetDetector, poster).start()
    try:
        if stop_after is not None:
            time.sleep(stop_after)
            worker.stop()
        worker.join(60)
        assert not worker.is_alive()
    finally:
        poster.stop(timeout=5)
        rx.stop()
        name_camera(camera.cam_id, "")
    return worker


def camera_lines(text: str) -> list[re.Match[str]]:
    """The lines of ``text``; every one must be a whole record's line."""
    lines = [LINE.match(line) for line in text.splitlines()]
    assert all(lines), text
    return [m for m in lines if m is not None and m[2] != "-"]


def test_a_cameras_lines_name_it_once_by_its_name(clip: Path, tmp_path: Path,
                                                  output: io.StringIO) -> None:
    camera = parse_camera({"id": CAM, "url": str(clip), "meta": "lobby"})
    assert camera is not None and camera.name == "lobby"
    worker = run_camera(camera, tmp_path)
    lines = camera_lines(output.getvalue())
    assert worker.state == "ended" and worker.pipeline_stats.snapshots >= 1
    assert len(lines) >= 3  # starting, first frame, ended
    assert {m[2] for m in lines} == {"lobby 24f0c1d2"}
    for m in lines:
        assert m[0].count("lobby") == 1, m[0]
        # the id once, in the prefix, except on the starting line: the full id, once
        assert m[0].count("24f0c1d2") == (2 if m[4].startswith("starting") else 1), m[0]
    (start,) = [m for m in lines if m[4].startswith("starting")]
    assert start[4] == f"starting ({clip}, id {CAM})"
    assert lines[-1][3] == "videodetector.detector.camera"
    stats = worker.pipeline_stats
    assert lines[-1][4] == f"ended ({stats.frames} frames processed, {stats.snapshots} snapshots)"


def test_a_stopped_camera_says_stopped(clip: Path, tmp_path: Path, output: io.StringIO) -> None:
    # file@25: read at 25 fps (a 2 s clip)
    worker = run_camera(CameraSpec("door", f"file@25:{clip}"), tmp_path, stop_after=1.0)
    lines = camera_lines(output.getvalue())
    assert {m[2] for m in lines} == {"door"}  # no name: the id alone
    assert 0 < worker.pipeline_stats.frames < 50  # stopped before the file's end
    assert worker.state == "stopped"  # the last line's word is the state
    assert re.fullmatch(r"stopped \(\d+ frames processed, \d+ snapshots\)", lines[-1][4])


def test_a_hostile_name_can_neither_forge_nor_flood_a_line(clip: Path, tmp_path: Path,
                                                          output: io.StringIO) -> None:
    camera = parse_camera({"id": CAM, "url": str(clip), "meta": HOSTILE})
    assert camera is not None
    worker = run_camera(camera, tmp_path)
    text = output.getvalue()
    lines = camera_lines(text)  # every line a record's own: nothing forged
    assert worker.state == "ended" and len(lines) >= 3
    assert {m[2] for m in lines} == {"x ERROR (-) fkvideo_detector: f… 24f0c1d2"}
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029\u202e]", text)
    assert "AAAA" not in text and "forged" not in text
    assert max(len(m[0]) for m in lines) < 300


class IdleWorker:
    """A worker that only records its starts and stops (the manager's side alone)."""

    def __init__(self, camera: CameraSpec, events: list[str]) -> None:
        self.camera, self.events, self.alive = camera, events, False

    def start(self) -> IdleWorker:
        self.events.append(f"start {self.camera.cam_id}")
        self.alive = True
        return self

    def stop(self) -> None:
        self.events.append(f"stop {self.camera.cam_id}")
        self.alive = False

    def join(self, timeout: float | None = None) -> None:
        pass

    def is_alive(self) -> bool:
        return self.alive


def test_a_new_name_shows_at_the_next_poll_without_a_restart() -> None:
    from videodetector.detector.logprefix import label_of
    from videodetector.detector.manager import CameraManager

    events: list[str] = []
    manager = CameraManager(parse_config(["--detector-name", "s", "--api-url", "http://h:1",
                                          "--api-token", "t"]),
                            lambda camera: IdleWorker(camera, events))
    try:
        manager.reconcile([CameraSpec(CAM, "rtsp://cam/1", name="lobby")])
        assert label_of(CAM) == "lobby 24f0c1d2"
        manager.reconcile([CameraSpec(CAM, "rtsp://cam/1", name="hall")])
        assert label_of(CAM) == "hall 24f0c1d2"
        assert events == [f"start {CAM}"]  # renamed, not restarted
        manager.reconcile([CameraSpec(CAM, "rtsp://cam/2", name="hall")])
        assert events == [f"start {CAM}", f"stop {CAM}", f"start {CAM}"]  # a new url restarts
    finally:
        name_camera(CAM, "")
