"""--camera-processes: the cameras of a camera list in child processes (detector/groups.py).

The daemon runs as a user runs it (a separate process, ``python -m ...cli``) against a fake
backend: ``GET /v1/camera`` answers the camera list, ``POST /v1/face/`` records snapshots
(``Receiver``), ``POST /v1/camera/<id>/health`` records health reports."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests.detector.post.receiver import Receiver
from tests.ports import hold_port
from videodetector.democlip import Walker, pick_sprites, write_clip
from videodetector.detector.config import ConfigError, parse_config
from videodetector.detector.groups import (
    CAMERAS_PER_PROCESS,
    auto_processes,
    merge_expositions,
    pick_process,
)
from videodetector.detector.status import render_metrics

ROOT = Path(__file__).resolve().parents[2]
BASE = ["--api-url", "127.0.0.1:9", "--api-token", "t"]


# -- the option -----------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(st.integers(-5, 80))
def test_camera_processes_accepts_1_to_64_and_names_itself_otherwise(n: int) -> None:
    if 1 <= n <= 64:
        assert parse_config([*BASE, "--camera-processes", str(n)]).camera_processes == n
    else:
        with pytest.raises(ConfigError, match="--camera-processes"):
            parse_config([*BASE, "--camera-processes", str(n)])


def test_camera_processes_auto_default_file_and_single_source(tmp_path: Path) -> None:
    assert parse_config(BASE).camera_processes == 1  # today's daemon: one process
    assert parse_config([*BASE, "--camera-processes", "auto"]).camera_processes == 0
    ini = tmp_path / "d.ini"
    ini.write_text("[General]\ncamera-processes=3\n")
    assert parse_config([*BASE, "-c", str(ini)]).camera_processes == 3
    ini.write_text("[General]\ncamera-processes=many\n")
    with pytest.raises(ConfigError, match="--camera-processes"):
        parse_config([*BASE, "-c", str(ini)])
    with pytest.raises(ConfigError, match="--camera-processes: 2 needs a camera list"):
        parse_config([*BASE, "--source", "a.mp4", "--camera-processes", "2"])
    assert parse_config([*BASE, "--source", "a.mp4", "--camera-processes", "1"])


# -- the rules ------------------------------------------------------------------------------

@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 20), min_size=1, max_size=10))
def test_a_camera_goes_to_the_process_with_the_fewest(cameras: list[int]) -> None:
    i = pick_process(cameras)
    assert cameras[i] == min(cameras) and i == cameras.index(min(cameras))


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 1000), st.integers(1, 64))
def test_auto_is_one_process_per_8_cameras_at_most_one_per_core(cameras: int,
                                                                  cores: int) -> None:
    n = auto_processes(cameras, cores)
    assert 1 <= n <= cores
    assert n == cores or (n - 1) * CAMERAS_PER_PROCESS < max(cameras, 1) <= n * \
        CAMERAS_PER_PROCESS


def test_merged_expositions_have_each_series_once_and_sum_process_wide_ones() -> None:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    def child(cam: str, frames: int) -> str:
        c = CounterMetricFamily("fkvideo_frames_processed", "Frames", labels=["cam_id"])
        c.add_metric([cam], frames)
        return render_metrics([c, GaugeMetricFamily("fkvideo_up_seconds", "up", value=3),
                               GaugeMetricFamily("x_open_files", "files", value=2)])

    text = render_metrics(merge_expositions([child("a", 5), child("b", 7)]))
    assert text.count("# HELP fkvideo_frames_processed_total") == 1
    assert 'fkvideo_frames_processed_total{cam_id="a"} 5.0' in text
    assert 'fkvideo_frames_processed_total{cam_id="b"} 7.0' in text
    assert "fkvideo_up_seconds" not in text  # the parent writes its own
    assert "x_open_files 4.0" in text
    assert [f.name for f in text_string_to_metric_families(text)] == [
        "fkvideo_frames_processed", "x_open_files"]


# -- the daemon -----------------------------------------------------------------------------

class Backend(Receiver):
    """The Receiver (``POST /v1/face/``) plus the camera list and the health reports."""

    def __init__(self) -> None:
        super().__init__()
        self.cameras: list[dict] = []
        self.health: dict[str, int] = defaultdict(int)
        self.lists = 0  # camera lists answered (the daemon's polls)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        backend = self
        base = super()._handler()

        class Handler(base):  # type: ignore[valid-type,misc]
            def _json(self, obj: object) -> None:
                body = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                backend.lists += 1
                self._json(backend.cameras)

            def do_POST(self) -> None:  # noqa: N802
                if not self.path.endswith("/health"):
                    return super().do_POST()
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                backend.health[self.path.split("/")[-2]] += 1
                self._json({"preview_wanted": False})

        return Handler


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """480x360, 30 s at 25 fps: a face walks across every 2 s (one snapshot per walk)."""
    sprites = pick_sprites(2, size=100)
    walkers = [Walker(sprites[i % 2], 0.3 + 2.0 * i, 1.8 + 2.0 * i, 60 + 80 * (i % 2))
               for i in range(15)]
    return write_clip(tmp_path_factory.mktemp("groups") / "walk.mp4", walkers, seconds=30,
                      size=(480, 360))


@pytest.fixture
def backend() -> Iterator[Backend]:
    b = Backend().start()
    yield b
    b.stop()


class Daemon:
    """fkvideo_detector in its own process, its log in a file."""

    def __init__(self, backend: Backend, tmp_path: Path, *extra: str,
                 wait_status: bool = True) -> None:
        self.log_path = tmp_path / "daemon.log"
        self.log_file = self.log_path.open("w")
        # held, not picked and freed: nobody else takes it while the daemon starts
        # (--status-port 0 means no endpoint); its server binds it (SO_REUSEADDR)
        self.status_port = hold_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "videodetector.detector.cli", "--detector-name", "g",
             "--api-url", backend.url, "--api-token", "t", "--camera-url", "/v1/camera",
             "-t", "1", "--spool-dir", str(tmp_path / "spool"), "--status-port",
             str(self.status_port.getsockname()[1]),
             "-r", "0", "--health-interval", "1", "--start-ts", "2026-01-20 12:34:56", *extra],
            stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.metrics_url = ""
        if not wait_status:
            return
        try:
            found = wait_until(lambda: re.search(r"status endpoint on (http://\S+/metrics)",
                                                 self.log()), 60, "the status endpoint")
        except BaseException:
            self.close()  # no daemon (and its children) left behind
            raise
        self.metrics_url = found.group(1)

    def log(self) -> str:
        return self.log_path.read_text()

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """Every series of /metrics; fails on a series written twice."""
        text = requests.get(self.metrics_url, timeout=10).text
        series: dict[tuple[str, tuple], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                assert key not in series, f"{key} twice in /metrics"
                series[key] = s.value
        return series

    def close(self) -> None:
        """SIGTERM (the children stop with it), then SIGKILL to the whole group."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log_file.close()
        self.status_port.close()


def wait_until(check: Callable[[], object], timeout: float, what: str) -> object:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def value(series: dict, name: str, **labels: str) -> float | None:
    return series.get((name, tuple(sorted(labels.items()))))


def placement(series: dict) -> dict[str, str]:
    """cam_id -> the camera process it runs in."""
    return {dict(labels)["cam_id"]: dict(labels)["process"]
            for (name, labels), v in series.items() if name == "fkvideo_camera_process_of"}


def pids(series: dict) -> dict[str, int]:
    return {dict(labels)["process"]: int(v) for (name, labels), v in series.items()
            if name == "fkvideo_camera_process_pid"}


def posted_cameras(backend: Backend) -> set[str]:
    return {key.split(":")[0] for key in backend.ok_keys()}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_cameras_run_in_two_processes_and_the_daemon_stops_them_all(
        backend: Backend, clip: Path, tmp_path: Path) -> None:
    cams = ["c1", "c2", "c3", "c4"]
    # named: the name reaches the camera processes (their lines' prefix)
    backend.cameras = [{"id": c, "url": f"file@25:{clip}", "detector": "g", "meta": f"hall {c}"}
                       for c in cams]
    daemon = Daemon(backend, tmp_path, "--camera-processes", "2")
    try:
        wait_until(lambda: posted_cameras(backend) >= set(cams), 60, "every camera to post")
        series = daemon.metrics()
        where = placement(series)
        assert sorted(where) == cams and sorted(where.values()) == ["0", "0", "1", "1"]
        children = pids(series)
        assert len(set(children.values())) == 2 and daemon.proc.pid not in children.values()
        for cam in cams:  # every camera once, with today's names and labels
            assert value(series, "fkvideo_frames_processed_total", cam_id=cam) > 0
            assert value(series, "fkvideo_camera_state", cam_id=cam, state="running") == 1
        assert value(series, "fkvideo_cameras_running") == 4
        assert wait_until(lambda: set(backend.health) >= set(cams), 15, "health reports")
        log = daemon.log()
        assert re.search(r"INFO \[hall c1 c1\] camera-process-\d videodetector\.detector\."
                         r"camera: starting \(", log), log

        backend.cameras = backend.cameras[1:]  # c1 removed from the list
        wait_until(lambda: camera_lines(daemon.log(), "hall c1 c1", "stopped"),
                   20, "c1 to stop in its process")
        series = daemon.metrics()
        assert value(series, "fkvideo_frames_processed_total", cam_id="c1") is None
        assert value(series, "fkvideo_cameras_running") == 3
        assert sorted(placement(series)) == cams[1:]

        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(60) == 0, daemon.log()
        assert not [pid for pid in children.values() if alive(pid)]
        assert daemon.log().count("snapshot(s) delivered") == 4  # every poster flushed
    finally:
        daemon.close()


def test_a_killed_camera_process_is_restarted_alone_and_nothing_is_stored_twice(
        backend: Backend, clip: Path, tmp_path: Path) -> None:
    cams = ["c1", "c2", "c3"]
    backend.cameras = [{"id": c, "url": f"file@25:{clip}", "detector": "g"} for c in cams]
    daemon = Daemon(backend, tmp_path, "--camera-processes", "2")
    try:
        wait_until(lambda: posted_cameras(backend) >= set(cams), 60, "every camera to post")
        series = daemon.metrics()
        where, children = placement(series), pids(series)
        victim = "0" if list(where.values()).count("0") == 1 else "1"
        killed = [c for c in cams if where[c] == victim]
        spared = [c for c in cams if where[c] != victim]
        frames = {c: value(series, "fkvideo_frames_processed_total", cam_id=c) for c in spared}
        acked = set(backend.ok_keys())
        os.kill(children[victim], signal.SIGKILL)

        def restarted() -> dict | None:
            s = daemon.metrics()
            done = value(s, "fkvideo_camera_process_restarts_total", process=victim) == 1 and \
                value(s, "fkvideo_camera_process_up", process=victim) == 1 and all(
                    (value(s, "fkvideo_frames_processed_total", cam_id=c) or 0) > 0
                    for c in killed)
            return s if done else None

        series = wait_until(restarted, 40, "the killed process to restart and run its cameras")
        assert pids(series)[victim] != children[victim]
        assert pids(series)[str(1 - int(victim))] == children[str(1 - int(victim))]
        for cam in spared:  # never restarted: their frames went on counting
            assert value(series, "fkvideo_frames_processed_total", cam_id=cam) > frames[cam]
        # the restarted file cameras start their files again (same run id): what they had
        # posted is posted again, with the same keys
        again = {k for k in acked if k.split(":")[0] in killed}
        assert again
        wait_until(lambda: all(backend.ok_keys().count(k) >= 2 for k in again), 30,
                   "the restarted cameras to post again")
        log = daemon.log()
        deaths = [line for line in log.splitlines() if "died" in line]
        assert len(deaths) == 1 and " ERROR " in deaths[0], log
        assert f"pid {children[victim]}" in deaths[0]
        assert all(cam in deaths[0] for cam in killed)
        for cam in spared:
            assert len(camera_lines(log, cam, "starting")) == 1, log
        for cam in killed:
            assert len(camera_lines(log, cam, "starting")) == 2, log

        # a killed parent: its children notice the pipe closing, flush and exit
        now = pids(series)
        os.kill(daemon.proc.pid, signal.SIGKILL)
        daemon.proc.wait(10)
        wait_until(lambda: not any(alive(p) for p in now.values()), 30, "the children to exit")
    finally:
        daemon.close()
    # Nothing acknowledged was lost, and every snapshot (camera, time, box) came with one key
    # only, however often it was posted: a backend that honours the keys stores it once.
    received = backend.received
    assert acked <= {r.key for r in received}
    keys: dict[tuple, set[str]] = defaultdict(set)
    for r in received:
        keys[(r.part("cam_id").text, r.part("timestamp").text, r.part("bbox").text)].add(r.key)
    assert all(len(k) == 1 for k in keys.values()), keys


def camera_lines(log: str, cam_id: str, message: str) -> list[str]:
    """The lines of ``log`` about camera ``cam_id`` (its prefix) whose message starts with
    ``message``."""
    line = re.compile(rf"\[{re.escape(cam_id)}\] (?:camera-process-\d+ )?\S+: {re.escape(message)}")
    return [text for text in log.splitlines() if line.search(text)]


def test_a_camera_its_child_refuses_is_retried_on_every_poll_and_logged_once(
        backend: Backend, clip: Path, tmp_path: Path) -> None:
    """As in one process: a camera whose spool directory another process holds is not
    started, logged once (not once per poll), and starts on the poll after the lock goes;
    a camera whose file ended is not started again."""
    from videodetector.detector.post.spool import Spool

    holder = Spool(tmp_path / "spool" / "locked", 10**9)  # as a second daemon would hold it
    short = write_clip(tmp_path / "short.mp4", [], seconds=0.5)
    backend.cameras = [{"id": "locked", "url": f"file@25:{clip}", "detector": "g"},
                       {"id": "short", "url": f"file@25:{short}", "detector": "g"}]
    daemon = Daemon(backend, tmp_path, "--camera-processes", "2")  # -t 1: a poll a second
    try:
        wait_until(lambda: camera_lines(daemon.log(), "locked", "not started"), 30, "the refusal")
        polls = backend.lists
        wait_until(lambda: backend.lists >= polls + 4, 20, "four more polls")
        log = daemon.log()
        refusals = camera_lines(log, "locked", "not started")
        assert len(refusals) == 1 and " ERROR " in refusals[0], log
        assert "is used by another process" in refusals[0]
        assert not camera_lines(log, "locked", "starting")
        assert len(camera_lines(log, "short", "starting")) == 1, log

        holder.close()
        wait_until(lambda: "locked" in posted_cameras(backend), 30, "the camera to start")
        log = daemon.log()
        assert len(camera_lines(log, "locked", "not started")) == 1, log
        assert len(camera_lines(log, "locked", "starting")) == 1, log
        polls = backend.lists
        wait_until(lambda: backend.lists >= polls + 2, 20, "two more polls")
        log = daemon.log()
        assert len(camera_lines(log, "short", "starting")) == 1, log  # an ended file stays ended
        assert len(camera_lines(log, "locked", "starting")) == 1, log
        series = daemon.metrics()
        assert value(series, "fkvideo_camera_state", cam_id="locked", state="running") == 1
    finally:
        holder.close()
        daemon.close()


def test_the_manager_starts_again_only_a_run_its_child_refused(monkeypatch) -> None:
    """The parent's side alone (no process is started: ``_spawn`` is left out; the child's
    answers are handed to the supervisor's ``_handle``)."""
    from videodetector.detector import groups as groups_module
    from videodetector.detector.manager import CameraManager
    from videodetector.detector.pipeline import CameraSpec

    monkeypatch.setattr(groups_module.CameraGroups, "_spawn", lambda self, slot: None)
    groups = groups_module.CameraGroups(parse_config([*BASE, "--camera-processes", "2"]))
    with groups._lock:
        groups._add_slot()
        groups._add_slot()
    manager = CameraManager(groups.cfg, groups.worker)
    cams = [CameraSpec("locked", "rtsp://cam/1"), CameraSpec("file", "/clips/a.mp4")]
    manager.reconcile(cams)
    first = dict(manager.workers)
    for cam_id, refused in (("locked", True), ("file", False)):
        slot = groups.slots[groups.home[cam_id]]
        groups._handle(slot, groups_module.CameraEnded(
            cam_id, first[cam_id].run, "locked" if refused else None, refused=refused))
    assert not any(run.is_alive() for run in first.values())
    manager.reconcile(cams)
    again = manager.workers["locked"]
    assert again is not first["locked"] and again.is_alive()  # a new run, sent to its child
    assert groups.slots[groups.home["locked"]].runs["locked"] is again
    assert manager.workers["file"] is first["file"]  # an ended file is not started again
    assert manager.refused == {}  # the refusal is logged by the child (once per spec)


def refused_line(record: object, cam_id: str) -> bool:
    """A "not started" line of camera ``cam_id`` (named by its prefix, not in the message)."""
    return (getattr(record, "cam_id", None) == cam_id
            and record.getMessage().startswith("not started: "))  # type: ignore[attr-defined]


def test_a_child_logs_a_refused_camera_once_per_spec(tmp_path: Path, caplog) -> None:
    """Every poll sends the refused camera again: one ERROR for a spec, DEBUG for the next
    tries; a stop (the camera removed or changed in the backend) or another spec logs again."""
    import logging
    import multiprocessing

    from videodetector.detector.cli import Daemon as RealDaemon
    from videodetector.detector.groups import CameraEnded, ChildLoop, StartCamera, StopCamera
    from videodetector.detector.pipeline import CameraSpec
    from videodetector.detector.post.spool import Spool

    holder = Spool(tmp_path / "spool" / "cam", 10**9)
    parent, child = multiprocessing.Pipe()
    daemon = RealDaemon(parse_config([*BASE, "--spool-dir", str(tmp_path / "spool")]))
    loop = ChildLoop(0, daemon, child)
    cam = CameraSpec("cam", "rtsp://cam/1")
    try:
        with caplog.at_level(logging.DEBUG, logger="videodetector.detector.groups"):
            for run in (1, 2, 3):
                loop._handle(StartCamera(cam, run))
            errors = [r for r in caplog.records if refused_line(r, "cam")]
            assert [r.levelname for r in errors] == ["ERROR", "DEBUG", "DEBUG"]
            answers = [parent.recv() for _ in range(3)]
            assert [(a.run, a.refused) for a in answers] == [(1, True), (2, True), (3, True)]
            assert all(isinstance(a, CameraEnded) and "another process" in a.error
                       for a in answers)
            loop._handle(StopCamera("cam", 3))  # removed from the list, then added again
            loop._handle(StartCamera(cam, 4))
            loop._handle(StartCamera(CameraSpec("cam", "rtsp://cam/2"), 5))  # changed
            levels = [r.levelname for r in caplog.records if refused_line(r, "cam")]
            assert levels == ["ERROR", "DEBUG", "DEBUG", "ERROR", "ERROR"]
            assert daemon.workers == {} and daemon.posters == {}
    finally:
        holder.close()
        parent.close()
        child.close()


def test_auto_adds_a_process_per_8_cameras_and_a_camera_stays_at_home(monkeypatch) -> None:
    """The assignment alone (no process is started: ``_spawn`` is left out)."""
    from videodetector.detector import groups as groups_module
    from videodetector.detector.pipeline import CameraSpec

    monkeypatch.setattr(groups_module.CameraGroups, "_spawn", lambda self, slot: None)
    monkeypatch.setattr(groups_module.os, "cpu_count", lambda: 2)
    groups = groups_module.CameraGroups(parse_config([*BASE, "--camera-processes", "auto"]))
    with groups._lock:
        groups._add_slot()  # what start() does, without the supervisor
    runs = [groups.worker(CameraSpec(f"c{i}", "rtsp://cam/1")).start() for i in range(20)]
    assert len(groups.slots) == 2  # 9 cameras and more: 2 processes, at most the 2 cores
    assert [len(s.runs) for s in groups.slots] == [10, 10]
    first = groups.home["c0"]
    runs[0].stop()  # its child is "gone" here: the run ends at once
    assert not runs[0].is_alive()
    groups.worker(CameraSpec("c0", "rtsp://cam/2")).start()
    assert groups.home["c0"] == first  # back where its poster (and spool) is
    with pytest.raises(ValueError, match="unsupported scheme"):
        groups.worker(CameraSpec("bad", "ftp://cam/1"))


def test_single_pass_ends_when_every_camera_of_every_process_has_ended(
        backend: Backend, tmp_path: Path) -> None:
    """A file that ends in its child ends its run in the parent: --single-pass returns."""
    from videodetector.detector.cli import Daemon as RealDaemon

    short = write_clip(tmp_path / "short.mp4", [], seconds=0.5)
    backend.cameras = [{"id": c, "url": str(short), "detector": "g"} for c in ("a", "b", "c")]
    cfg = parse_config(["--detector-name", "g", "--api-url", backend.url, "--api-token", "t",
                        "--camera-url", "/v1/camera", "--single-pass", "--health-interval", "0",
                        "--spool-dir", str(tmp_path / "spool"), "--camera-processes", "2"])
    daemon = RealDaemon(cfg)
    assert daemon.run() == 0
    assert daemon.manager is not None and daemon.groups is not None
    runs = daemon.manager.workers
    assert sorted(runs) == ["a", "b", "c"] and not any(r.is_alive() for r in runs.values())
    assert all(r.error is None for r in runs.values())
    assert not any(alive(pid) for pid in daemon.groups.pids())


def test_check_config_prints_auto_and_it_parses_back(tmp_path: Path) -> None:
    from videodetector.detector.config import format_config

    text = format_config(parse_config([*BASE, "--camera-processes", "auto"]))
    (line,) = [line for line in text.splitlines() if line.startswith("camera-processes=")]
    assert line == "camera-processes=auto"  # not 0, which is refused
    ini = tmp_path / "again.ini"
    ini.write_text(f"[General]\n{line}\n")
    assert parse_config([*BASE, "-c", str(ini)]).camera_processes == 0


def test_a_child_that_cannot_be_started_again_is_tried_later(monkeypatch, caplog) -> None:
    """The supervisor's restart: a failed start (no memory for a process, say) is logged and
    tried again after a longer wait; it never ends the supervision."""
    from videodetector.detector import groups as groups_module

    groups = groups_module.CameraGroups(parse_config([*BASE, "--camera-processes", "2"]))
    monkeypatch.setattr(groups_module.CameraGroups, "_spawn", lambda self, slot: None)
    with groups._lock:
        groups._add_slot()
    slot = groups.slots[0]
    slot.restart_at = 0.0  # dead, its wait over

    def cannot(self, slot):  # type: ignore[no-untyped-def]
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(groups_module.CameraGroups, "_spawn", cannot)
    before = time.monotonic()
    groups._restart_due()
    groups._restart_due()  # not due yet: no second try at once
    assert slot.restart_at is not None and slot.restart_at >= before + 1.0
    assert caplog.text.count("could not be started again") == 1


def test_sigterm_to_the_whole_group_while_the_children_start(backend: Backend, clip: Path,
                                                             tmp_path: Path) -> None:
    """systemd stops a service with SIGTERM to all its processes. A child reached by it while
    it was still starting (before it ignores it) dies of it: that is the stop, not a crash
    to log and restart, and the daemon does not wait for the cameras it would have run."""
    backend.cameras = [{"id": c, "url": f"file@25:{clip}", "detector": "g"} for c in ("a", "b")]
    daemon = Daemon(backend, tmp_path, "--camera-processes", "2", wait_status=False)
    try:
        wait_until(lambda: "camera process 1 started" in daemon.log(), 60, "the children")
        os.killpg(daemon.proc.pid, signal.SIGTERM)
        started = time.monotonic()
        assert daemon.proc.wait(60) == 0, daemon.log()
        log = daemon.log()
        assert " ERROR " not in log, log
        assert time.monotonic() - started < 8, log  # not 10 s per camera for dead children
        assert log.count("camera process 0 started") == 1, log  # not restarted
    finally:
        daemon.close()
