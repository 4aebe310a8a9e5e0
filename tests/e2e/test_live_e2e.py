"""The daemon on a live stream that drops and comes back: it reconnects by itself and keeps
processing, with the reconnect counted in /metrics and logged once per attempt."""

from __future__ import annotations

import re
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.detector.video.mjpeg_server import MjpegServer
from tests.detector.video.rtsp_camera import RtspCamera
from tests.e2e.conftest import Api, Procs, wait_until
from tests.e2e.test_daemon_e2e import post_args
from tests.ports import held_port
from videodetector.democlip import Walker, pick_sprites, write_clip
from videodetector.detector.video.source import open_video


def test_live_stream_drops_and_returns(procs: Procs, tmp_path: Path) -> None:
    # the first connection serves 40 frames then hangs up; later ones stream on
    with (MjpegServer([("serve", 40), ("serve", 100000)], fps=25) as server,
          held_port() as nowhere):
        det = procs.detector("--source", server.url, "--camid", "lobby",
                             *post_args(nowhere, "t", tmp_path / "spool"))
        wait_until(lambda: det.metric("fkvideo_reconnects_total", "lobby") >= 1, 30,
                   "a reconnect")
        before = det.metric("fkvideo_frames_processed_total", "lobby")
        wait_until(lambda: det.metric("fkvideo_frames_processed_total", "lobby") > before + 25,
                   30, "frames after the reconnect")
        assert server.connections >= 2
        det.signal(signal.SIGTERM)
        assert det.wait(20) == 0, det.tail()
    log = det.log()
    assert re.search(r"\[lobby\] \S+: stream lost \(.*\); reconnect #1", log), log
    # the reader reconnected, not the worker
    assert len(re.findall(r"\[lobby\] \S+: starting", log)) == 1, log


def test_rtsp_camera_to_the_backend(procs: Procs, tmp_path: Path) -> None:
    """An RTSP camera (H.264 over RTP in the RTSP connection) -> the daemon -> the backend:
    the face walking past becomes a history event of that camera, timed by the wall clock."""
    (sprite,) = pick_sprites(1)
    clip = write_clip(tmp_path / "walk.mp4", [Walker(sprite, 0.0, 3.0, 100)], seconds=3.5)
    with open_video(str(clip)) as video:
        frames = [f.image for f in video]
    token = procs.token(tmp_path / "backend")
    backend = procs.backend(tmp_path / "backend")
    api, port = Api(backend.url, token), backend.port
    # one pass of the clip, then the camera stays connected but silent
    with RtspCamera([("serve", len(frames)), ("stall", 0)], frames=lambda i: frames[i]) as cam:
        started = datetime.now(UTC)
        det = procs.detector("--source", cam.url, "--camid", "gate", "-r", "0",
                             *post_args(port, token, tmp_path / "spool"))
        wait_until(lambda: api.history("gate"), 60, "a history event from the RTSP camera")
        det.signal(signal.SIGTERM)
        assert det.wait(20) == 0, det.tail()
    # one face walked past; a live reader may drop frames while the models load, so the
    # track can split in two on a busy machine (one snapshot per track in -r 0)
    events = api.history("gate")
    assert 1 <= len(events) <= 2
    for event in events:
        when = datetime.fromisoformat(event["timestamp"]).replace(tzinfo=UTC)  # UTC, no offset
        assert started - timedelta(seconds=5) <= when <= datetime.now(UTC)
    assert "rtsp://127.0.0.1" in det.log() and "Traceback" not in det.log()
