"""FrameReader: queueing, drop policy, end of stream, reconnect and watchdog."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.detector.video.media import make_video, read_index
from tests.detector.video.mjpeg_server import MjpegServer
from tests.detector.video.rtsp_camera import RtspCamera
from videodetector.detector.video.reader import END, FrameReader
from videodetector.detector.video.source import Frame, parse_source


def drain(reader: FrameReader, delay: float = 0.0, limit: float = 10.0) -> list[Frame]:
    """Consume until END, sleeping ``delay`` per frame (a slow consumer)."""
    frames: list[Frame] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        item = reader.get(timeout=0.5)
        if item is END:
            return frames
        if item is not None:
            frames.append(item)
            time.sleep(delay)
    raise AssertionError(f"no END within {limit}s ({len(frames)} frames)")


def collect(reader: FrameReader, until, limit: float) -> list[Frame]:
    frames: list[Frame] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and not until(frames):
        item = reader.get(timeout=0.2)
        assert item is not END
        if item is not None:
            frames.append(item)
    return frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("reader") / "clip.mp4", 40)


def test_offline_file_never_drops(clip: Path) -> None:
    reader = FrameReader(parse_source(str(clip)), realtime=False, queue_size=2, cam_id="cam1")
    with reader:
        frames = drain(reader, delay=0.005)
        assert reader.get(timeout=0) is END  # END stays END
    stats = reader.stats()
    assert [f.index for f in frames] == list(range(40))
    assert [read_index(f.image) for f in frames] == list(range(40))
    assert stats.frames_in == reader.frames_in == 40
    assert stats.dropped == 0 and stats.reconnects == 0
    assert stats.fps_in > 0 and stats.last_frame_time > 0
    assert reader.error is None


def test_realtime_file_slow_consumer_drops_newest(clip: Path) -> None:
    reader = FrameReader(parse_source(f"file@100:{clip}"), realtime=True, queue_size=2)
    with reader:
        frames = drain(reader, delay=0.05)
    stats = reader.stats()
    assert stats.frames_in == 40
    assert stats.dropped > 0
    assert len(frames) + stats.dropped == 40
    indices = [f.index for f in frames]
    assert indices == sorted(indices) and indices[:2] == [0, 1]  # oldest kept, newest dropped
    assert [read_index(f.image) for f in frames] == indices


def test_live_slow_consumer_drops_oldest() -> None:
    """A consumer of a live camera that falls behind gets the freshest frames: the queue drops
    its oldest frame for a new one, so the camera's last frames are delivered and a frame
    waits in the queue about queue_size camera intervals (2 x 20 ms), not queue_size
    consumer periods (2 x 100 ms, what dropping the newest gave)."""
    waits, frames = [], []
    with MjpegServer([("stall", 40)], fps=50) as server, live_reader(
            server.url, queue_size=2) as reader:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 1.5:
            item = reader.get(timeout=0.2)
            assert item is not END
            if item is not None:
                waits.append(time.time() - item.wall_time)
                frames.append(item)
                quiet_since = time.monotonic()
                time.sleep(0.1)
        stats = reader.stats()
    assert stats.dropped > 0 and len(frames) + stats.dropped == stats.frames_in == 40
    seen = [read_index(f.image) for f in frames]
    assert seen == sorted(seen) and seen[-1] == 39  # the newest frame was kept
    # dropping the newest makes a frame wait 2 consumer periods, >= 0.2 s however loaded the
    # machine (sleeps only get longer); dropping the oldest ~2 camera intervals (40 ms),
    # which a loaded machine stretches: 0.15 s keeps both apart (0.1 s was too near 40 ms)
    assert sorted(waits)[len(waits) // 2] < 0.15


def test_disable_drops_delivers_every_frame(clip: Path) -> None:
    reader = FrameReader(
        parse_source(f"file@100:{clip}"), realtime=True, disable_drops=True, queue_size=2
    )
    with reader:
        frames = drain(reader, delay=0.02)
    assert [f.index for f in frames] == list(range(40))
    assert reader.stats().dropped == 0


def test_unreadable_file_ends_with_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    with FrameReader(parse_source(str(bad)), realtime=False) as reader:
        assert drain(reader) == []
    assert reader.error is not None and "bad.mp4" in str(reader.error)


def test_stop_is_prompt_and_ends_consumer(clip: Path) -> None:
    reader = FrameReader(parse_source(f"file@5:{clip}"), realtime=True).start()
    assert isinstance(reader.get(timeout=2), Frame)
    start = time.monotonic()
    assert reader.stop()  # the thread ended within join_timeout (2 s): the file lasts 8 s
    assert time.monotonic() - start < 3.0
    items = [reader.get(timeout=1) for _ in range(3)]
    assert END in items


def test_invalid_arguments(clip: Path) -> None:
    with pytest.raises(ValueError, match="queue_size"):
        FrameReader(parse_source(str(clip)), queue_size=0)
    with pytest.raises(ValueError, match="multiple of 90"):
        FrameReader(parse_source(str(clip)), rotate=45)
    with pytest.raises(ValueError, match="watchdog_timeout"):
        FrameReader(parse_source(str(clip)), watchdog_timeout=0)


# ----------------------------------------------------------------------------- live sources


def live_reader(url: str, **kwargs) -> FrameReader:
    options = {"backoff_initial": 0.1, "backoff_max": 0.5, "watchdog_timeout": 3.0}
    return FrameReader(parse_source(url), realtime=True, cam_id="live1", **(options | kwargs))


# Two kinds of camera: multipart MJPEG over HTTP, and H.264 over RTSP (RTP interleaved in TCP).
CAMERAS = pytest.mark.parametrize("camera", [MjpegServer, RtspCamera], ids=["mjpeg", "rtsp"])


@CAMERAS
def test_live_stream_reconnects_after_disconnect(
    camera: type[MjpegServer | RtspCamera], caplog: pytest.LogCaptureFixture
) -> None:
    # a connection's 10 frames fit in the queue: RTSP probing buffers the first packets, and a
    # one-thread decoder (live sources) hands them over in a burst that an 8-frame queue
    # would cut by its oldest (the drop policy is tested below; this is about reconnecting)
    with camera([("serve", 10)]) as server, live_reader(server.url, queue_size=16) as reader:
        frames = collect(reader, lambda got: len(got) >= 25, limit=8)
        stats = reader.stats()
    assert len(frames) >= 25  # frames resumed after the server hung up
    assert stats.reconnects >= 1 and server.connections >= 2
    assert [f.index for f in frames] == sorted(f.index for f in frames)
    pts = [f.pts for f in frames]
    assert pts == sorted(pts)  # non-decreasing (an RTSP demuxer may repeat its first pts)
    assert pts[10] > pts[9]  # the second connection goes on from the first, never back
    assert [read_index(f.image) for f in frames[:10]] == list(range(10))
    lines = [r for r in caplog.records if "reconnect #1" in r.getMessage()]
    assert len(lines) == 1 and "live1" not in lines[0].getMessage()  # in the prefix, once
    assert lines[0].cam_id == "live1"


@CAMERAS
def test_watchdog_restarts_stalled_stream(camera: type[MjpegServer | RtspCamera]) -> None:
    with camera([("stall", 5), ("serve", 1000)]) as server:
        start = time.monotonic()
        with live_reader(server.url, watchdog_timeout=1.0) as reader:
            frames = collect(reader, lambda got: len(got) >= 15, limit=8)
            stats = reader.stats()
    assert len(frames) >= 15
    assert stats.stalls >= 1 and stats.reconnects >= 1
    assert time.monotonic() - start < 5


def test_stop_does_not_wait_for_a_stalled_read() -> None:
    with MjpegServer([("stall", 2)]) as server:
        reader = live_reader(server.url, watchdog_timeout=5.0, join_timeout=0.3).start()
        collect(reader, lambda got: len(got) >= 2, limit=5)
        time.sleep(0.3)  # now blocked in FFmpeg's read
        start = time.monotonic()
        reader.stop()
        # join_timeout 0.3 s; a stop waiting for the read would take the 5 s watchdog
        assert time.monotonic() - start < 3.0


# ----------------------------------------------------------------------------- failures


def write_mp4(path: Path, n: int) -> Path:
    """An mp4 with its index up front (faststart), so that a truncated copy still opens."""
    import av

    from tests.detector.video.media import synthetic_frame

    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        stream.options = {"g": "12"}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(i), format="bgr24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def truncated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("truncated")
    full = write_mp4(folder / "full.mp4", 90)
    cut = folder / "cut.mp4"
    data = full.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.45)])  # about 30 of the 90 frames
    return full, cut


def test_a_truncated_file_ends_with_one_warning_naming_it(
    truncated: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 7, item 12b: a truncated mp4 used to end quietly, like a complete one."""
    full, cut = truncated
    with FrameReader(parse_source(str(cut)), realtime=False, cam_id="c1") as reader:
        frames = drain(reader)
    stats = reader.stats()
    assert 10 < len(frames) < 60
    assert stats.incomplete == 1 and stats.frames_expected == 90
    lines = [r for r in caplog.records if "ended early" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelname == "WARNING"
    assert f"{cut}" in lines[0].getMessage()
    assert f"{len(frames)} of 90 frames decoded" in lines[0].getMessage()
    # the health report's error (the console showed "Ended" and nothing else)
    assert stats.problem == lines[0].getMessage() and lines[0].cam_id == "c1"
    caplog.clear()
    with FrameReader(parse_source(str(full)), realtime=False, cam_id="c1") as reader:
        assert len(drain(reader)) == 90
    assert reader.stats().incomplete == 0 and reader.stats().frames_expected == 90
    assert reader.stats().problem == ""
    assert not [r for r in caplog.records if "ended early" in r.getMessage()]


def test_a_resumed_file_starts_at_its_index_with_the_same_timestamps(clip: Path) -> None:
    with FrameReader(parse_source(str(clip)), realtime=False) as reader:
        whole = drain(reader)
    with FrameReader(parse_source(str(clip)), realtime=False, start_index=25) as reader:
        rest = drain(reader)
    assert [f.index for f in rest] == list(range(25, 40))
    assert [read_index(f.image) for f in rest] == list(range(25, 40))
    assert [f.pts for f in rest] == [f.pts for f in whole[25:]]
    assert reader.stats().incomplete == 0


def closed_port_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/video.mjpg"  # nobody listens there any more


@pytest.fixture
def html_page_url():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = b"<html><body>camera login</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    server.shutdown()


@pytest.mark.parametrize("kind", ["closed_port", "html_page", "missing_device"])
def test_a_live_source_that_never_works_says_once_that_it_looks_permanent(
    kind: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """Issue 7, item 12b: one warning per try, for ever, used to be all one got. Now: one
    line for the outage, one saying it looks permanent, the state on /metrics; still retrying."""
    import logging

    import videodetector.detector.video.reader as reader_module
    from videodetector.detector.camera import CameraWorker
    from videodetector.detector.cli import Daemon
    from videodetector.detector.config import parse_config
    from videodetector.detector.metrics import collect_metrics
    from videodetector.detector.pipeline import CameraSpec
    from videodetector.detector.post.health import health_of
    from videodetector.detector.status import render_metrics

    url = {"closed_port": closed_port_url, "missing_device": lambda: "/dev/video99",
           "html_page": lambda: request.getfixturevalue("html_page_url")}[kind]()
    monkeypatch.setattr(reader_module, "RECONNECT_BACKOFF", (0.01, 0.05))
    cfg = parse_config(["--source", url, "--camid", "cam", "--api-url", "127.0.0.1:9",
                        "--api-token", "t", "--spool-dir", str(tmp_path / "spool")])
    daemon = Daemon(cfg)
    with caplog.at_level(logging.INFO):
        worker: CameraWorker = daemon.make_worker(CameraSpec("cam", url)).start()
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and (
                    worker.reader is None or worker.reader.stats().consecutive_failures < 12):
                time.sleep(0.05)
            assert worker.state == "source_down"
            text = render_metrics(collect_metrics(daemon))
            # why, in the health report the console shows (it showed "Source down" only)
            error = health_of(worker, "site1", 5.0, None)["error"]
        finally:
            worker.stop()
            worker.join(5)
            daemon._shutdown()
    assert 'fkvideo_camera_state{cam_id="cam",state="source_down"} 1' in text
    assert 'fkvideo_source_looks_permanent{cam_id="cam"} 1' in text
    failures = float(text.split('fkvideo_source_consecutive_failures{cam_id="cam"} ')[1].split()[0])
    assert failures >= 12
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("looks permanent" in m for m in messages) == 1, messages
    assert sum("stream lost" in m for m in messages) == 1, messages
    assert len(messages) == 2, messages  # and nothing per try
    assert error and f"(last: {error})" in messages[1], (error, messages)
