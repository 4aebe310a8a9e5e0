"""The daemon's /metrics endpoint: prometheus_client rendering, the HTTP server, and a real
daemon's figures (per-camera counters and gauges, the latency histograms)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from videodetector.detector.config import parse_config
from videodetector.detector.metrics import posts_dropped_metric
from videodetector.detector.status import StatusServer, render_metrics
from videodetector.detector.timing import STAGES

# every name the README's Health paragraph, the e2e tests and bench/soak.py read
README_NAMES = (
    "fkvideo_fps_in", "fkvideo_fps_processed", "fkvideo_frames_in_total",
    "fkvideo_frames_processed_total", "fkvideo_frames_dropped_total", "fkvideo_motion_ratio",
    "fkvideo_faces_detected_total", "fkvideo_tracks_total", "fkvideo_snapshots_total",
    "fkvideo_posts_ok_total", "fkvideo_posts_failed_total", "fkvideo_posts_spooled_total",
    "fkvideo_posts_dropped_total", "fkvideo_spool_items", "fkvideo_spool_dropped_total",
    "fkvideo_post_queue_items", "fkvideo_spool_write_errors_total", "fkvideo_spool_writable",
    "fkvideo_reconnects_total", "fkvideo_pipeline_crashes_total", "fkvideo_sink_frames_total",
    "fkvideo_sink_dropped_total", "fkvideo_sink_reconnects_total",
    "fkvideo_last_frame_timestamp_seconds", "fkvideo_source_consecutive_failures",
    "fkvideo_source_looks_permanent", "fkvideo_files_incomplete_total",
    "fkvideo_snapshots_salvaged_total", "fkvideo_faces_skipped_total", "fkvideo_camera_state",
    "fkvideo_cameras_running", "fkvideo_up_seconds",
)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parsed exposition text: {(sample name, sorted labels): value}."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_render_metrics_is_prometheus_text():
    gauge = GaugeMetricFamily("fkvideo_fps_in", "Frames per second", labels=["cam_id"])
    gauge.add_metric(["b"], 25.0)
    gauge.add_metric(['a"x'], 12.5)
    text = render_metrics([gauge, posts_dropped_metric({"c": {"dropped_at_stop": 3}})])
    got = samples(text)
    assert got[("fkvideo_fps_in", (("cam_id", 'a"x'),))] == 12.5
    assert got[("fkvideo_fps_in", (("cam_id", "b"),))] == 25.0
    assert got[("fkvideo_posts_dropped_total", (("cam_id", "c"), ("reason", "at_stop")))] == 3
    assert "# TYPE fkvideo_posts_dropped_total counter" in text


class _Flaky(Collector):
    def __init__(self) -> None:
        self.calls = 0

    def collect(self):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("boom")
        yield GaugeMetricFamily("fkvideo_cameras_running", "Cameras", value=2)


def test_status_server_serves_metrics_and_survives_a_collector_bug():
    registry = CollectorRegistry()
    registry.register(_Flaky())
    server = StatusServer("127.0.0.1", 0, registry).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        first = requests.get(base + "/metrics", timeout=5)
        assert first.status_code == 200
        assert samples(first.text)[("fkvideo_cameras_running", ())] == 2
        assert first.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert requests.get(base + "/metrics", timeout=5).status_code == 500
        assert requests.get(base + "/metrics", timeout=5).status_code == 200
        assert requests.get(base + "/healthz", timeout=5).text == "ok\n"
        assert requests.get(base + "/nope", timeout=5).status_code == 404
    finally:
        server.stop()


def _clip_with_a_face(tmp_path: Path) -> str:
    from videodetector.democlip import Walker, pick_sprites, write_clip

    (sprite,) = pick_sprites(1)
    return str(write_clip(tmp_path / "face.mp4", [Walker(sprite, 0.0, 2.0, 100)], seconds=2.0))


def test_daemon_metrics_parse_keep_every_name_and_fill_the_histograms(tmp_path: Path):
    """A real daemon on a clip with a face, its /metrics over HTTP: every name the README
    lists, and the stage / detector / post histograms counted per frame and per post."""
    from videodetector.detector.cli import Daemon

    clip = _clip_with_a_face(tmp_path)
    cfg = parse_config(["--source", clip, "--camid", "door", "--api-url", "127.0.0.1:9",
                        "--api-token", "t", "--spool-dir", str(tmp_path / "spool"), "-r", "0",
                        "--status-port", "0"])
    daemon = Daemon(cfg)
    other = Daemon(cfg)  # a second daemon in the same process has its own registry
    assert daemon.run() == 0
    server = StatusServer("127.0.0.1", 0, daemon.registry).start()
    try:
        text = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).text
    finally:
        server.stop()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    got = samples(text)
    for name in README_NAMES:
        base = name.removesuffix("_total")
        assert base in families or name in families, name
    frames = got[("fkvideo_frames_processed_total", (("cam_id", "door"),))]
    assert frames == 50
    stage = families["fkvideo_frame_stage_seconds"]
    assert stage.type == "histogram"
    counts = {s.labels["stage"]: s.value for s in stage.samples if s.name.endswith("_count")}
    assert set(counts) == set(STAGES)
    for name in ("decode", "motion", "track", "select"):
        assert counts[name] == frames, (name, counts)
    runs = daemon.workers["door"].pipeline_stats.detector_runs
    assert 0 < runs and counts["detect"] == runs
    door = (("cam_id", "door"),)
    assert got[("fkvideo_detector_runs_total", door)] == runs
    assert got[("fkvideo_detector_face_runs_total", door)] == \
        daemon.workers["door"].pipeline_stats.face_runs
    # only frames made into BGR count: those the detector saw, plus the preview's (one a
    # second at most); converting all 50 was the bug of issue 10
    assert runs <= counts["convert"] < frames, counts
    assert got[("fkvideo_detect_seconds_count", (("cam_id", "door"),))] == runs
    assert counts["snapshot"] >= 1  # a face was chosen at least once
    # the detector's latency histogram agrees with the pipeline's own total
    detect_sum = got[("fkvideo_detect_seconds_sum", (("cam_id", "door"),))]
    assert detect_sum == pytest.approx(daemon.workers["door"].pipeline_stats.detect_seconds)
    assert ("fkvideo_post_seconds_count", (("cam_id", "door"),)) in got  # 127.0.0.1:9: no answer
    assert "door" not in render_metrics(other.registry)


def test_post_latency_histogram_counts_each_answered_post(tmp_path: Path, monkeypatch):
    """Posts to a live HTTP server: one observation per round trip."""
    import http.server
    import threading

    from videodetector.detector.cli import Daemon

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            time.sleep(0.02)
            body = b'{"faces": [{"id": "1"}]}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        clip = _clip_with_a_face(tmp_path)
        cfg = parse_config(["--source", clip, "--camid", "door", "--api-url",
                            f"http://127.0.0.1:{httpd.server_address[1]}", "--api-token", "t",
                            "--spool-dir", str(tmp_path / "spool"), "-r", "0"])
        daemon = Daemon(cfg)
        assert daemon.run() == 0
    finally:
        httpd.shutdown()
        httpd.server_close()
    got = samples(render_metrics(daemon.registry))
    ok = got[("fkvideo_posts_ok_total", (("cam_id", "door"),))]
    assert ok >= 1
    assert got[("fkvideo_post_seconds_count", (("cam_id", "door"),))] == ok
    assert got[("fkvideo_post_seconds_sum", (("cam_id", "door"),))] >= 0.02 * ok


def test_histograms_of_a_removed_camera_are_not_reported(tmp_path: Path):
    from videodetector.detector.cli import Daemon
    from videodetector.detector.metrics import camera_histograms

    cfg = parse_config(["--detector-name", "site", "--api-url", "127.0.0.1:9",
                        "--api-token", "t", "--spool-dir", str(tmp_path / "spool")])
    daemon = Daemon(cfg)
    for cam in ("kept", "gone"):
        daemon.histograms.for_camera(cam).motion.observe(0.004)
    got = samples(render_metrics(camera_histograms(daemon, {"kept"})))
    stage = (("cam_id", "kept"), ("stage", "motion"))
    assert got[("fkvideo_frame_stage_seconds_count", stage)] == 1
    assert got[("fkvideo_frame_stage_seconds_bucket", (*stage[:1], ("le", "0.005"),
                                                       stage[1]))] == 1
    assert not any(dict(labels).get("cam_id") == "gone" for _, labels in got)


def test_every_pipeline_counter_is_a_metric_with_its_value():
    """Each integer counter of PipelineStats (detector runs, region and tracked-face runs,
    skips...) reaches /metrics as a counter with the camera's value: face_runs was counted but
    not exported."""
    from types import SimpleNamespace

    from videodetector.detector.camera import WorkerCounters
    from videodetector.detector.metrics import collect_metrics
    from videodetector.detector.pipeline import PipelineStats

    stats = PipelineStats()
    counters = [f.name for f in dataclasses.fields(PipelineStats) if f.type in (int, "int")]
    for n, name in enumerate(counters):
        setattr(stats, name, 1000 + 7 * n)  # each its own value
    worker = SimpleNamespace(reader=None, pipeline_stats=stats, counters=WorkerCounters(),
                             sink=None, state="running", is_alive=lambda: True)
    daemon = SimpleNamespace(manager=None, workers={"door": worker}, posters={},
                             started_at=time.time(), histograms=SimpleNamespace(all=[]))
    exported = {family.name: family for family in collect_metrics(daemon)}
    values = {s.value for f in exported.values() if f.type == "counter" for s in f.samples
              if s.labels == {"cam_id": "door"}}
    for n, name in enumerate(counters):
        assert 1000 + 7 * n in values, f"PipelineStats.{name} is not exported"
    face_runs = exported["fkvideo_detector_face_runs"]
    assert [s.value for s in face_runs.samples] == [stats.face_runs]
