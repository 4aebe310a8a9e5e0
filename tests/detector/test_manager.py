"""The camera list as the daemon fetches it: shapes a backend may answer, and bad answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from videodetector.detector.config import parse_config
from videodetector.detector.manager import CameraManager, fetch_cameras


class ListServer:
    """Answers every GET with ``self.body`` (bytes) and records the query strings."""

    def __init__(self) -> None:
        self.body = b"[]"
        self.paths: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"


@pytest.fixture
def server() -> Iterator[ListServer]:
    srv = ListServer()
    yield srv
    srv.http.shutdown()


def config(url: str):
    return parse_config(["--detector-name", "site1", "--api-url", url, "--api-token", "t"])


CAM = {"id": "door", "url": "rtsp://cam/1", "detector": "site1", "enabled": True,
       "roi": [100, 50, 10, 20], "rot": "640x480+0+0"}


@pytest.mark.parametrize("body", [[CAM], {"cameras": [CAM]}, {"results": [CAM]}])
def test_the_list_shapes_a_backend_may_answer(server: ListServer, body) -> None:
    server.body = json.dumps(body).encode()
    (cam,) = fetch_cameras(config(server.url), requests.Session())
    assert (cam.cam_id, cam.url) == ("door", "rtsp://cam/1")
    assert cam.roi is not None and cam.rot is not None
    assert server.paths == ["/v0/camera?detector=site1"]  # --camera-url's default (5.3.1)


def test_other_detectors_disabled_and_broken_entries_are_left_out(server: ListServer) -> None:
    server.body = json.dumps([
        CAM, {**CAM, "id": "yard", "detector": "site2"}, {**CAM, "id": "off", "enabled": False},
        {**CAM, "id": "bad", "roi": "nonsense"}, {**CAM, "id": "worse", "rot": [1, 2, {}, 4]},
        {"id": "no-url"}, "not an object", 7,
    ]).encode()
    assert [c.cam_id for c in fetch_cameras(config(server.url), requests.Session())] == ["door"]


@pytest.mark.parametrize("body", [b"<html>", b'{"cameras": null}', b"42", b'"text"'])
def test_a_bad_answer_keeps_the_running_cameras(server: ListServer, body: bytes) -> None:
    server.body = body
    manager = CameraManager(config(server.url), make_worker=lambda cam: None)  # never called
    assert manager.poll_once() is False
    assert manager.fetch_errors == 1 and manager.workers == {}


def test_an_out_of_frame_rot_fails_only_that_camera_and_single_pass_ends(
    server: ListServer, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 7, item 9: a rot outside the frame used to crash that camera on every frame for
    ever, so --single-pass never ended."""
    import logging

    from videodetector.democlip import write_clip
    from videodetector.detector.cli import Daemon
    from videodetector.detector.metrics import collect_metrics
    from videodetector.detector.status import render_metrics

    clip = str(write_clip(tmp_path / "empty.mp4", [], seconds=1.0))  # 25 frames, 640x480
    server.body = json.dumps([
        {"id": "bad", "url": clip, "detector": "site1", "rot": "1x1+5000+5000"},
        {"id": "huge", "url": clip, "detector": "site1", "rot": [1, 1, 10**20, 10**20]},
        {"id": "good", "url": clip, "detector": "site1"},
    ]).encode()
    cfg = parse_config(["--detector-name", "site1", "--api-url", server.url, "--api-token", "t",
                        "--single-pass", "--spool-dir", str(tmp_path / "spool")])
    daemon = Daemon(cfg)
    result: list[int] = []
    with caplog.at_level(logging.ERROR):
        thread = threading.Thread(target=lambda: result.append(daemon.run()), daemon=True)
        thread.start()
        thread.join(40)
    assert not thread.is_alive() and result == [0]
    workers = daemon.workers
    for cam in ("bad", "huge"):
        assert workers[cam].state == "failed" and workers[cam].config_error
        assert workers[cam].counters.crashes == 0 and workers[cam].pipeline_stats.frames == 0
        lines = [r for r in caplog.records if "configuration error" in r.getMessage()
                 and getattr(r, "cam_id", None) == cam]
        assert len(lines) == 1 and "rot" in lines[0].getMessage()
    assert workers["good"].state == "ended" and workers["good"].pipeline_stats.frames == 25
    text = render_metrics(collect_metrics(daemon))
    assert 'fkvideo_camera_state{cam_id="bad",state="failed"} 1' in text
    assert 'fkvideo_camera_state{cam_id="good",state="failed"} 0' in text
    assert 'fkvideo_camera_state{cam_id="good",state="ended"} 1' in text


def test_a_single_source_with_its_rot_outside_the_frame_exits_with_the_config_code(tmp_path):
    from videodetector.democlip import write_clip
    from videodetector.detector.cli import Daemon

    clip = str(write_clip(tmp_path / "empty.mp4", [], seconds=0.5))
    cfg = parse_config(["--source", clip, "--camid", "c", "--api-url", "127.0.0.1:9",
                        "--api-token", "t", "--rot", "1x1+5000+5000",
                        "--spool-dir", str(tmp_path / "spool")])
    assert Daemon(cfg).run() == 2


def test_a_camera_list_runs_opencv_with_one_thread_and_restores_it(
    server: ListServer, tmp_path
) -> None:
    """Issue 10: several cameras share the cores one thread each; OpenCV's own pool (a thread
    per core by default) only added hand-offs and spin-waits to every frame's motion gate.
    A single source keeps OpenCV's default."""
    import cv2

    from videodetector.democlip import write_clip
    from videodetector.detector.cli import Daemon, opencv_threads

    assert opencv_threads(camera_list=True) == 1
    assert opencv_threads(camera_list=False) is None
    clip = str(write_clip(tmp_path / "empty.mp4", [], seconds=0.2))
    server.body = json.dumps([{"id": "a", "url": clip, "detector": "site1"}]).encode()
    cfg = parse_config(["--detector-name", "site1", "--api-url", server.url, "--api-token", "t",
                        "--single-pass", "--spool-dir", str(tmp_path / "spool")])
    seen: list[int] = []

    class Spy(Daemon):
        def make_worker(self, camera):  # type: ignore[no-untyped-def]
            seen.append(cv2.getNumThreads())  # what the camera's frames will run with
            return super().make_worker(camera)

    before = cv2.getNumThreads()
    cv2.setNumThreads(2)  # as on a 2-core host, whatever this machine has
    try:
        assert Spy(cfg).run() == 0
        assert seen == [1]
        assert cv2.getNumThreads() == 2  # restored when the daemon returns
    finally:
        cv2.setNumThreads(before)
