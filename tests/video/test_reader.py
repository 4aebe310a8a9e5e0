"""FrameReader: queueing, drop policy, end of stream, reconnect and watchdog."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.video.media import make_video, read_index
from tests.video.mjpeg_server import MjpegServer
from tests.video.rtsp_camera import RtspCamera
from videodetector.video.reader import END, FrameReader
from videodetector.video.source import Frame, parse_source


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


def test_realtime_slow_consumer_drops_newest(clip: Path) -> None:
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
    assert reader.stop()
    assert time.monotonic() - start < 1.0
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
    with camera([("serve", 10)]) as server, live_reader(server.url) as reader:
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
    assert len(lines) == 1 and "live1" in lines[0].getMessage()
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
        assert time.monotonic() - start < 1.0
