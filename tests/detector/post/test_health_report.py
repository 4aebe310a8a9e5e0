"""Camera health reports from fkvideo_detector (camera-list mode) to a real backend."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import requests

from videodetector.backend.server import BackendServer
from videodetector.backend.settings import Settings
from videodetector.detector.config import DetectorConfig, parse_config
from videodetector.detector.post.health import HealthReporter, preview_jpeg
from videodetector.detector.video.reader import ReaderStats


def wait_until(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_a_cameras_health_and_preview_reach_the_backend(tmp_path: Path):
    from videodetector.democlip import write_clip
    from videodetector.detector.cli import Daemon

    (tmp_path / "clips").mkdir()
    clip = write_clip(tmp_path / "clips" / "empty.mp4", [], seconds=2.0)  # 640x480
    settings = Settings(data_dir=tmp_path / "data", log_level="warning",
                        camera_file_roots=(tmp_path / "clips",))
    with BackendServer(settings) as srv:
        token = srv.create_token()
        api = requests.Session()
        api.headers["Authorization"] = f"Token {token}"
        cam = api.post(srv.url + "/v1/camera", json={
            "url": f"file@25:{clip}", "detector": "site1", "meta": "door"}).json()
        health_url = f"{srv.url}/v1/camera/{cam['id']}/health"
        assert api.get(health_url).json()["status"] == "none"
        cfg = parse_config(["--detector-name", "site1", "--api-url", srv.url, "--api-token",
                            token, "--camera-url", "/v1/camera", "--reload-timeout", "1",
                            "--health-interval", "1", "--spool-dir", str(tmp_path / "spool")])
        daemon = Daemon(cfg)
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        try:
            health = wait_until(lambda: (h := api.get(health_url).json())["preview"] and h)
        finally:
            daemon.stop_event.set()
            thread.join(30)
        assert not thread.is_alive()
        report = health["report"]
        assert health["status"] == "ok"
        assert report["detector"] == "site1" and report["state"] in ("running", "ended")
        assert report["frames_in"] > 0 and report["last_frame_time"] > time.time() - 60
        assert (report["frame_width"], report["frame_height"]) == (640, 480)
        assert health["preview"]["frame_width"] == 640
        picture = api.get(f"{srv.url}/v1/camera/{cam['id']}/preview.jpg")
        image = cv2.imdecode(np.frombuffer(picture.content, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape[:2] == (480, 640)


def fake_worker(image: np.ndarray | None = None) -> SimpleNamespace:
    """What the reporter reads of a camera worker (counters, reader stats, last frame)."""
    stats = ReaderStats(frames_in=10, dropped=1, reconnects=3, last_frame_time=time.time(),
                        fps_in=25.0)
    return SimpleNamespace(
        reader=SimpleNamespace(stats=lambda: stats), state="running", error=None,
        counters=SimpleNamespace(fps_processed=12.0, crashes=0),
        pipeline_stats=SimpleNamespace(frames=9), last_image=image)


def one_camera(srv: BackendServer) -> tuple[str, dict[str, str], str, DetectorConfig]:
    """A token, its auth header, one camera of detector site1, and that detector's config."""
    token = srv.create_token()
    auth = {"Authorization": f"Token {token}"}
    cam = requests.post(srv.url + "/v1/camera", headers=auth,
                        json={"url": "rtsp://cam/1", "detector": "site1"}).json()["id"]
    cfg = parse_config(["--detector-name", "site1", "--api-url", srv.url, "--api-token",
                        token, "--camera-url", "/v1/camera"])
    return token, auth, cam, cfg


def test_a_refused_camera_does_not_stop_the_others_and_an_outage_logs_once(tmp_path: Path,
                                                                            caplog):
    with BackendServer(Settings(data_dir=tmp_path / "data", log_level="warning")) as srv:
        token, auth, cam, cfg = one_camera(srv)
        frame = np.zeros((1080, 1920, 3), np.uint8)
        workers = {"deleted-a-moment-ago": fake_worker(), cam: fake_worker(frame)}
        reporter = HealthReporter(cfg, lambda: workers)
        with caplog.at_level(logging.INFO, logger="videodetector.detector.post.health"):
            reporter.report_all()
        assert "camera deleted-a-moment-ago: 404" in caplog.text
        caplog.clear()
        assert reporter.reports == 1 and reporter.previews == 1
        health = requests.get(f"{srv.url}/v1/camera/{cam}/health", headers=auth).json()
        assert health["report"]["reconnects"] == 3 and health["report"]["frames_dropped"] == 1
        assert (health["preview"]["width"], health["preview"]["height"]) == (1280, 720)
        assert health["preview"]["frame_width"] == 1920
        url = srv.url
    # the backend is gone: one ERROR line for the outage, however many rounds fail
    down = HealthReporter(parse_config(["--detector-name", "site1", "--api-url", url,
                                        "--api-token", token, "--req-timeout", "1"]),
                          lambda: workers)
    with caplog.at_level(logging.INFO, logger="videodetector.detector.post.health"):
        for _ in range(3):
            down.report_all()
    lines = [r for r in caplog.records if r.name == "videodetector.detector.post.health"]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR


def test_preview_is_downscaled_and_bounded():
    rng = np.random.default_rng(2)
    noisy = rng.integers(0, 255, (2160, 3840, 3), dtype=np.uint8)
    jpeg = preview_jpeg(noisy)
    assert jpeg is not None and len(jpeg) <= 1 << 20
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape[:2] == (720, 1280)
    assert preview_jpeg(noisy, max_bytes=1000) is None


class _FirstFrameArrives:
    """A worker whose first frame arrives while a report is being made: ``last_image`` is
    None when first read and the frame afterwards."""

    def __init__(self, frame: np.ndarray) -> None:
        self._base = fake_worker()
        self._reads = [None, frame]

    def __getattr__(self, name: str):
        return getattr(self._base, name)

    @property
    def last_image(self) -> np.ndarray | None:
        return self._reads.pop(0) if len(self._reads) > 1 else self._reads[0]


def test_a_report_and_its_preview_describe_the_same_frame(tmp_path: Path):
    """The report read the camera's last frame once for its frame size and again for the
    preview: a frame arriving in between gave a preview with a report that had no frame size
    (seen in CI). Now both come from one read."""
    with BackendServer(Settings(data_dir=tmp_path / "data", log_level="warning")) as srv:
        token, auth, cam, cfg = one_camera(srv)
        workers = {cam: _FirstFrameArrives(np.zeros((480, 640, 3), np.uint8))}
        reporter = HealthReporter(cfg, lambda: workers)
        reporter.report_all()  # the frame was not there yet: no size, no preview
        health = requests.get(f"{srv.url}/v1/camera/{cam}/health", headers=auth).json()
        assert health["preview"] is None and health["report"].get("frame_width") is None
        reporter.report_all()  # now it is: both
        health = requests.get(f"{srv.url}/v1/camera/{cam}/health", headers=auth).json()
        assert health["report"]["frame_width"] == 640
        assert health["preview"]["frame_width"] == 640
