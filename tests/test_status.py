"""The daemon's /metrics endpoint: Prometheus text rendering and the HTTP server."""

from __future__ import annotations

import pytest
import requests

from videodetector.status import Metric, StatusServer, render_metrics


def test_render_metrics_prometheus_text():
    text = render_metrics([
        Metric("fkvideo_fps_in", "Frames per second", "gauge",
               {(("cam_id", "b"),): 25.0, (("cam_id", 'a"x'),): 12.5}),
        Metric("fkvideo_up_seconds", "Uptime", "gauge", {(): 3.0}),
    ])
    assert text.splitlines() == [
        "# HELP fkvideo_fps_in Frames per second",
        "# TYPE fkvideo_fps_in gauge",
        'fkvideo_fps_in{cam_id="a\\"x"} 12.5',
        'fkvideo_fps_in{cam_id="b"} 25',
        "# HELP fkvideo_up_seconds Uptime",
        "# TYPE fkvideo_up_seconds gauge",
        "fkvideo_up_seconds 3",
    ]


def test_render_rejects_unknown_kind():
    with pytest.raises(ValueError, match="histogram"):
        render_metrics([Metric("x", "x", "histogram")])


def test_status_server_serves_metrics_and_survives_a_collector_bug():
    calls = []

    def collect() -> list[Metric]:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return [Metric("fkvideo_cameras_running", "Cameras", "gauge", {(): 2.0})]

    server = StatusServer("127.0.0.1", 0, collect).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        first = requests.get(base + "/metrics", timeout=5)
        assert first.status_code == 200 and "fkvideo_cameras_running 2" in first.text
        assert first.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert requests.get(base + "/metrics", timeout=5).status_code == 500
        assert requests.get(base + "/metrics", timeout=5).status_code == 200
        assert requests.get(base + "/healthz", timeout=5).text == "ok\n"
        assert requests.get(base + "/nope", timeout=5).status_code == 404
    finally:
        server.stop()
