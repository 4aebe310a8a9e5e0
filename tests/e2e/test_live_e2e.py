"""The daemon on a live stream that drops and comes back: it reconnects by itself and keeps
processing, with the reconnect counted in /metrics and logged once per attempt."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.e2e.conftest import Procs, free_port, wait_until
from tests.e2e.test_daemon_e2e import post_args
from tests.video.mjpeg_server import MjpegServer


def test_live_stream_drops_and_returns(procs: Procs, tmp_path: Path) -> None:
    # the first connection serves 40 frames then hangs up; later ones stream on
    with MjpegServer([("serve", 40), ("serve", 100000)], fps=25) as server:
        det = procs.detector("--source", server.url, "--camid", "lobby",
                             *post_args(free_port(), "t", tmp_path / "spool"))
        wait_until(lambda: det.metric("fkvideo_reconnects_total", "lobby") >= 1, 30,
                   "a reconnect")
        before = det.metric("fkvideo_frames_processed_total", "lobby")
        wait_until(lambda: det.metric("fkvideo_frames_processed_total", "lobby") > before + 25,
                   30, "frames after the reconnect")
        assert server.connections >= 2
        det.signal(signal.SIGTERM)
        assert det.wait(20) == 0, det.tail()
    log = det.log()
    assert "reconnect #1" in log and "[lobby]" in log
    assert log.count("camera lobby: starting") == 1  # the reader reconnected, not the worker
