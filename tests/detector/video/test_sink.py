"""annotate() and VideoSink."""

from __future__ import annotations

import contextlib
import itertools
import logging
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from videodetector.detector.video.sink import VideoSink, annotate, sink_target, track_color
from videodetector.detector.video.source import open_video

ROOT = Path(__file__).resolve().parents[3]


def blank(w: int = 320, h: int = 240) -> np.ndarray:
    return np.zeros((h, w, 3), np.uint8)


def test_annotate_draws_boxes_ids_and_tracks() -> None:
    image = blank()
    history = [(20.0, 200.0), (60.0, 180.0), (100.0, 170.0)]
    out = annotate(image, [[100, 50, 200, 150]], [7], [history], draw_track=True)
    assert out is not image and not image.any()  # input untouched
    color = np.array(track_color(7))
    assert np.array_equal(out[100, 100], color)  # left edge of the box
    assert np.array_equal(out[50, 150], color)  # top edge
    assert not out[100, 150].any()  # inside stays clear
    assert out[40:50, 100:130].any()  # the id label above the box
    assert out[185:200, 20:60].any()  # the track polyline
    no_track = annotate(image, [[100, 50, 200, 150]], [7], [history], draw_track=False)
    assert not no_track[185:200, 20:60].any()


def test_annotate_accepts_nothing_and_checks_lengths() -> None:
    assert not annotate(blank(), np.zeros((0, 4)), []).any()
    with pytest.raises(ValueError, match="2 boxes but 1 track ids"):
        annotate(blank(), [[0, 0, 5, 5], [5, 5, 9, 9]], [1])
    with pytest.raises(ValueError, match="1 boxes but 2 tracks"):
        annotate(blank(), [[0, 0, 5, 5]], [1], [[], []], draw_track=True)


def test_track_colors_differ() -> None:
    assert len({track_color(i) for i in range(1, 10)}) == 9


@pytest.mark.parametrize("ext", ["mp4", "mkv", "avi"])
def test_sink_writes_annotated_file(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"out.{ext}"
    with VideoSink(str(path), (160, 120), 25, cam_id="c1") as sink:
        for i in range(20):
            image = blank()
            image[:, i * 10 : i * 10 + 20] = 255
            assert sink.write(annotate(image, [[10, 10, 100, 100]], [i]))
    assert sink.enabled and sink.error is None and sink.frames_written == 20
    frames = list(open_video(str(path)))
    assert len(frames) == 20
    assert frames[0].image.shape == (120, 160, 3)
    assert frames[10].image[:, 50:60].mean() > 200  # the moving bar, halved
    assert [f.pts for f in frames] == pytest.approx([i / 25 for i in range(20)], abs=0.05)


def test_sink_keeps_first_frame_size_and_rounds_to_even(tmp_path: Path) -> None:
    path = tmp_path / "out.mkv"
    with VideoSink(str(path), None, 10) as sink:
        for _ in range(3):
            sink.write(blank(161, 99))
    assert sink.size == (160, 98)
    assert list(open_video(str(path)))[0].image.shape == (98, 160, 3)


def test_sink_streams_mpegts_over_udp() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(3)
        with VideoSink(f"udp://127.0.0.1:{rx.getsockname()[1]}", (160, 120), 25) as sink:
            for _ in range(10):
                sink.write(blank())
        data = rx.recv(65536)
    assert sink.enabled and sink.frames_written == 10
    assert data[0] == 0x47  # MPEG-TS sync byte


def test_stream_sink_takes_frames_faster_than_its_rate() -> None:
    # a burst after a stall, or a 50 fps camera into a 25 fps sink: frames 10 ms apart
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        with VideoSink(f"udp://127.0.0.1:{rx.getsockname()[1]}", (160, 120), 25,
                       queue_size=64) as sink:
            for i in range(30):
                sink.write(np.full((120, 160, 3), i * 8, np.uint8), pts=i * 0.010)
    assert sink.error is None and sink.frames_written == 30


def test_a_file_that_cannot_be_written_turns_the_sink_off(caplog: pytest.LogCaptureFixture) -> None:
    sink = VideoSink("/nonexistent/dir/x.mp4", (64, 48), 25, cam_id="cam9")
    deadline = time.monotonic() + 5
    while sink.enabled and time.monotonic() < deadline:
        sink.write(blank(64, 48))
        time.sleep(0.01)
    sink.close()
    assert not sink.enabled and sink.error
    assert not sink.write(blank(64, 48))
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].cam_id == "cam9"
    assert "disabled" in errors[0].getMessage()


@pytest.mark.parametrize("url", ["rtmp://127.0.0.1:1/live/x", "127.0.0.1:1"])
def test_a_stream_server_that_is_down_is_retried_and_logged_once(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    sink = VideoSink(url, (64, 48), 25, cam_id="cam9", retry=(0.05, 0.1))
    deadline = time.monotonic() + 10
    while sink.reconnects < 3 and time.monotonic() < deadline:
        sink.write(blank(64, 48))
        time.sleep(0.01)
    sink.close()
    assert sink.enabled and "Connection refused" in (sink.error or "")
    assert sink.reconnects >= 3 and sink.frames_written == 0 and sink.dropped > 0
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].cam_id == "cam9"
    assert "unavailable" in errors[0].getMessage()


def test_stream_sink_drops_instead_of_waiting() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        sink = VideoSink(f"udp://127.0.0.1:{rx.getsockname()[1]}", (640, 480), 25, queue_size=1)
        start = time.monotonic()
        for _ in range(30):
            sink.write(blank(640, 480))
        elapsed = time.monotonic() - start
        sink.close()
    assert elapsed < 0.5 and sink.dropped > 0
    assert sink.frames_written + sink.dropped == 30


def test_sink_target() -> None:
    assert sink_target("192.168.15.1:3222", "cam1") == ("rtmp://192.168.15.1:3222/live/cam1", "flv")
    assert sink_target("rtmp://h/app/s") == ("rtmp://h/app/s", "flv")
    assert sink_target("udp://239.0.0.1:1234") == ("udp://239.0.0.1:1234", "mpegts")
    assert sink_target("rtsp://h:8554/out") == ("rtsp://h:8554/out", "rtsp")
    assert sink_target("/tmp/out.mkv") == ("/tmp/out.mkv", None)
    for bad in ["", "ftp://h/x", "/tmp/noext"]:
        with pytest.raises(ValueError, match="--sink-url"):
            sink_target(bad)


@pytest.mark.parametrize(
    ("args", "match"), [(("x.mp4", (0, 10), 25), "--sink-res"), (("x.mp4", None, 0), "fps")]
)
def test_sink_rejects_bad_settings(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        VideoSink(*args)


@contextlib.contextmanager
def ingest_server(scheme: str, port: int = 0) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A media server taking one published stream, in its own process (``ingest.py`` here)."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.detector.video.ingest", scheme,
                             str(port)],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield proc.stdout.readline().strip(), proc  # type: ignore[union-attr]
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(10)


def received(proc: subprocess.Popen[str], timeout: float = 15) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else ""  # type: ignore[union-attr]


@pytest.mark.parametrize("scheme, bare", [("rtmp", False), ("rtmp", True), ("rtsp", False)])
def test_sink_publishes_to_a_media_server(scheme: str, bare: bool) -> None:
    with ingest_server(scheme) as (url, server):
        if bare:  # fkvideo_detector's "host:port" form means rtmp://host:port/live/<camera>
            url = url.removeprefix("rtmp://").removesuffix("/live/cam")
        with VideoSink(url, (160, 120), 25, cam_id="cam") as sink:
            for i in range(40):
                sink.write(np.full((120, 160, 3), i * 5, np.uint8))
                time.sleep(0.02)
        assert sink.enabled and sink.error is None and sink.frames_written == 40
        assert received(server) == "stream 40 160x120"


def test_stream_sink_reconnects_when_the_server_comes_back() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = VideoSink(f"rtmp://127.0.0.1:{port}/live/cam", (160, 120), 25, cam_id="cam",
                     retry=(0.2, 0.5))

    def stream_until(done: Callable[[], bool], limit: float = 20) -> None:
        deadline = time.monotonic() + limit
        while not done():
            assert time.monotonic() < deadline, (sink.error, sink.reconnects)
            sink.write(blank(160, 120))
            time.sleep(0.02)

    try:
        stream_until(lambda: sink.reconnects >= 1)  # no server yet: retried
        for _ in range(2):  # the server comes up; then it restarts
            with ingest_server("rtmp", port) as (_, server):
                stream_until(lambda n=sink.frames_written: sink.frames_written >= n + 25)
                server.kill()  # the media server goes away mid-stream
            stream_until(lambda n=sink.reconnects: sink.reconnects > n)
        with ingest_server("rtmp", port) as (_, server):
            written = sink.frames_written
            stream_until(lambda: sink.frames_written >= written + 25)
            sink.close()
            frames = int(received(server).split()[1])
        assert frames >= 25
    finally:
        sink.close()


class _WrongServer:
    """Accepts connections and answers anything with an HTTP error (a wrong port)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass


@pytest.mark.parametrize("scheme", ["rtmp", "rtsp"])
@pytest.mark.parametrize("server", ["silent", "wrong"])
def test_a_server_that_does_not_speak_the_protocol_never_freezes_the_process(
    scheme: str, server: str
) -> None:
    # "silent": TCP is accepted (by the kernel's backlog) and nothing ever answers; PyAV would
    # block in its connect holding the GIL, for ever. The sink's probe catches it first.
    if server == "silent":
        listener = socket.create_server(("127.0.0.1", 0))  # never accept()ed
        port, expected = listener.getsockname()[1], "within 0.5 s"
    else:
        wrong = _WrongServer()
        port, expected = wrong.port, f"not an {scheme.upper()} server"
    ticks: list[float] = []
    done = threading.Event()

    def tick() -> None:  # would stop ticking while the GIL is held
        while not done.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.02)

    threading.Thread(target=tick, daemon=True).start()
    sink = VideoSink(f"{scheme}://127.0.0.1:{port}/live/x", (64, 48), 25, cam_id="cam",
                     timeout=0.5, retry=(0.1, 0.2))
    deadline = time.monotonic() + 10
    while sink.reconnects < 2 and time.monotonic() < deadline:
        sink.write(blank(64, 48))
        time.sleep(0.02)
    done.set()
    sink.close()
    assert sink.reconnects >= 2 and expected in (sink.error or ""), sink.error
    assert max(b - a for a, b in itertools.pairwise(ticks)) < 2.0  # frozen: for ever

