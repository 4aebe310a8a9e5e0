"""Source parsing and decoding (videodetector.detector.video.source)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_file
from tests.detector.video.media import H, W, make_video, read_index, synthetic_frame
from videodetector.detector.video.source import (
    SourceError,
    SourceKind,
    SourceSpec,
    decoder_threads,
    default_params,
    display_rotation_to_clockwise,
    normalize_rotation,
    open_video,
    parse_source,
    redact_url,
    rotate_image,
)

# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "kind", "url", "fps"),
    [
        ("rtsp://admin:pw@10.0.0.1:554/Streaming/Channels/1", SourceKind.LIVE, None, None),
        ("http://127.0.0.1:8080/stream.mjpg", SourceKind.LIVE, None, None),
        ("https://cdn.example/live/index.m3u8", SourceKind.LIVE, None, None),
        ("rtmp://example/live/cam", SourceKind.LIVE, None, None),
        ("udp://@239.0.0.1:1234", SourceKind.LIVE, None, None),
        ("/dev/video0", SourceKind.WEBCAM, None, None),
        ("/dev/video12", SourceKind.WEBCAM, None, None),
        ("/data/clip.mp4", SourceKind.FILE, None, None),
        ("clip with spaces.avi", SourceKind.FILE, None, None),
        ("file:///data/clip.mp4", SourceKind.FILE, "/data/clip.mp4", None),
        ("file@25:/data/clip.mp4", SourceKind.FILE, "/data/clip.mp4", 25.0),
        ("file@12.5:rel/c:lip.mkv", SourceKind.FILE, "rel/c:lip.mkv", 12.5),
        ("  file@30:/x.mp4 ", SourceKind.FILE, "/x.mp4", 30.0),
    ],
)
def test_parse_source(text: str, kind: SourceKind, url: str | None, fps: float | None) -> None:
    spec = parse_source(text)
    assert spec == SourceSpec(kind, url or text.strip(), fps)
    assert spec.live == (kind is not SourceKind.FILE)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "file@:/x.mp4",
        "file@0:/x.mp4",
        "file@-5:/x.mp4",
        "file@abc:/x.mp4",
        "file@inf:/x.mp4",
        "ftp://host/x.mp4",
    ],
)
def test_parse_source_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="--source"):
        parse_source(bad)


def test_spec_is_frozen_and_redacts_password() -> None:
    spec = parse_source("rtsp://admin:qwert1234@192.168.104.199:554/ch1")
    with pytest.raises(AttributeError):
        spec.url = "x"  # type: ignore[misc]
    assert spec.display == "rtsp://admin:***@192.168.104.199:554/ch1"
    assert redact_url("/data/a:b@c.mp4") == "/data/a:b@c.mp4"
    with pytest.raises(ValueError) as info:
        parse_source("gopher://u:secret@h/x")
    assert "secret" not in str(info.value)


def test_default_params() -> None:
    rtsp = default_params(parse_source("rtsp://cam/1"), timeout=5)
    assert rtsp == {"rtsp_transport": "tcp", "timeout": "5000000"}
    assert default_params(parse_source("/dev/video0")) == {"format": "v4l2"}
    assert default_params(parse_source("/x.mp4")) == {}
    assert "overrun_nonfatal" in default_params(parse_source("udp://@:1234"))


# ----------------------------------------------------------------------------- rotation


@pytest.mark.parametrize(
    ("value", "expected"), [(0, 0), (90, 90), ("180", 180), (270, 270), (360, 0), (-90, 270)]
)
def test_normalize_rotation(value: object, expected: int) -> None:
    assert normalize_rotation(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [45, 91, "x", None, 90.5])
def test_normalize_rotation_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="multiple of 90"):
        normalize_rotation(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ccw", "cw"), [(None, 0), (0, 0), (90, 270), (-90, 90), (180, 180), (-180, 180), (-89.9, 90)]
)
def test_display_rotation_to_clockwise(ccw: float | None, cw: int) -> None:
    assert display_rotation_to_clockwise(ccw) == cw


def test_rotate_image_clockwise() -> None:
    img = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert np.array_equal(rotate_image(img, 90), np.rot90(img, -1))
    assert np.array_equal(rotate_image(img, 270), np.rot90(img, 1))
    assert np.array_equal(rotate_image(img, 180), np.rot90(img, 2))
    assert rotate_image(img, 0) is img


# ----------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(("codec", "ext"), [("mpeg4", "mp4"), ("libx264", "mkv"), ("mjpeg", "avi")])
def test_decodes_every_frame_in_order(tmp_path: Path, codec: str, ext: str) -> None:
    path = make_video(tmp_path / f"clip.{ext}", 64, codec=codec, fps=25)
    with open_video(str(path)) as stream:
        frames = list(stream)
        assert stream.decode_errors == 0
        assert stream.fps == pytest.approx(25)
    assert [f.index for f in frames] == list(range(64))
    assert [read_index(f.image) for f in frames] == list(range(64))
    assert [f.pts for f in frames] == pytest.approx([i / 25 for i in range(64)], abs=1e-3)
    first = frames[0].image
    assert first.shape == (H, W, 3) and first.dtype == np.uint8
    assert np.abs(first.astype(int) - synthetic_frame(0)).mean() < 6  # BGR, not RGB
    assert all(f.wall_time > 0 for f in frames)


def test_file_fps_paces_in_realtime_only(tmp_path: Path) -> None:
    path = make_video(tmp_path / "clip.mp4", 20)
    frames = iter(open_video(f"file@50:{path}", realtime=True))
    next(frames)  # timed from the first frame: opening the file is not pacing
    start = time.monotonic()
    assert len(list(frames)) == 19
    paced = time.monotonic() - start
    # 19 frame periods of 20 ms after the first (a loaded machine only makes it later)
    assert 0.35 <= paced <= 1.5
    start = time.monotonic()
    assert len(list(open_video(f"file@2:{path}", realtime=False))) == 20
    assert time.monotonic() - start < 3.0  # paced at 2 fps it would take 9.5 s


def test_rotate_option(tmp_path: Path) -> None:
    path = make_video(tmp_path / "clip.mp4", 5)
    upright = [f.image for f in open_video(str(path))]
    turned = [f.image for f in open_video(str(path), rotate=90)]
    assert turned[0].shape == (W, H, 3)
    for a, b in zip(upright, turned, strict=True):
        assert np.array_equal(b, np.rot90(a, -1))  # clockwise
    marker = turned[0][4:20, H - 28 : H - 12]  # the top-left marker is now top-right
    assert marker.mean(axis=(0, 1)) == pytest.approx([0, 200, 255], abs=20)
    with pytest.raises(ValueError, match="45"):
        open_video(str(path), rotate=45)


def test_rotation_metadata_is_applied(tmp_path: Path) -> None:
    # display matrix "rotate 90 degrees counter-clockwise to show"
    path = make_video(tmp_path / "rot.mp4", 5, rotation_ccw=90)
    frames = [f.image for f in open_video(str(path))]
    assert frames[0].shape == (W, H, 3)
    assert read_index(np.rot90(frames[3], -1)) == 3  # turn back clockwise: upright again
    upright = [f.image for f in open_video(str(path), rotate=90)]  # --rotate adds on top
    assert upright[0].shape == (H, W, 3)
    assert [read_index(img) for img in upright] == list(range(5))


def test_audio_stream_is_ignored(tmp_path: Path) -> None:
    path = make_video(tmp_path / "av.mpg", 30, codec="mpeg1video", audio=True)
    assert [read_index(f.image) for f in open_video(str(path))] == list(range(30))


@pytest.mark.media
def test_real_file_with_audio() -> None:
    path = shared_file("clips_faces/grid_bbaf2n.mpg")
    frames = list(open_video(str(path)))
    assert len(frames) == 75
    assert frames[0].image.shape == (288, 360, 3)


@pytest.mark.media
def test_container_frame_count_lies() -> None:
    path = shared_file("clips_smallfaces/mpf_five-second-marathon-clip.mkv")
    with open_video(f"file@1000:{path}") as stream:
        assert sum(1 for _ in stream) == 138


def test_not_a_video_raises_source_error(tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 50)
    with pytest.raises(SourceError, match=r"notes\.mp4: .*(?i:invalid data)"):
        open_video(str(fake))
    with pytest.raises(SourceError, match=r"cannot open .*missing\.mp4: .*(?i:no such file)"):
        open_video(str(tmp_path / "missing.mp4"))


def test_audio_only_file_raises_source_error(tmp_path: Path) -> None:
    import av

    path = tmp_path / "sound.wav"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        stream.layout = "mono"
        samples = np.zeros((1, 8000), np.int16)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 8000
        out.mux(stream.encode(frame))
        out.mux(stream.encode())
    with pytest.raises(SourceError, match=r"sound\.wav: no video stream"):
        open_video(str(path))


def _garble(src: Path, dst: Path, start: float, length: int, chop: bool) -> Path:
    data = src.read_bytes()
    at = int(len(data) * start)
    middle = b"" if chop else bytes(np.random.default_rng(1).integers(0, 256, length, np.uint8))
    dst.write_bytes(data[:at] + middle + data[at + length :])
    return dst


@pytest.mark.parametrize(("codec", "ext"), [("mjpeg", "avi"), ("mpeg1video", "mpg")])
def test_corrupted_file_decodes_past_the_damage(tmp_path: Path, codec: str, ext: str) -> None:
    good = make_video(tmp_path / f"good.{ext}", 64, codec=codec)
    bad = _garble(good, tmp_path / f"bad.{ext}", 0.4, 300, chop=False)
    with open_video(str(bad)) as stream:
        frames = list(stream)
    assert 40 <= len(frames) <= 64
    assert read_index(frames[0].image) == 0
    assert read_index(frames[-1].image) == 63  # decoding went on after the damage


@pytest.mark.media
def test_chopped_real_file_decodes_what_it_can(tmp_path: Path) -> None:
    src = shared_file("clips_faces/mpf_video_01.mp4")
    bad = _garble(src, tmp_path / "chopped.mp4", 1 / 3, len(src.read_bytes()) // 6, chop=True)
    with open_video(str(bad)) as stream:
        frames = list(stream)
    assert 10 <= len(frames) < 90
    assert stream.decode_errors > 0


# ----------------------------------------------------------------------------- decoder threads


@pytest.mark.parametrize(("paced", "threads", "expected"), [
    (True, 0, ("SLICE", 1)), (False, 0, ("AUTO", 0)), (True, 3, ("AUTO", 3)),
    (False, 2, ("AUTO", 2)),
])
def test_decoder_threads_policy(paced: bool, threads: int, expected: tuple[str, int]) -> None:
    assert decoder_threads(paced, threads) == expected


@pytest.mark.parametrize("bad", [-1, 17])
def test_decoder_threads_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError, match=str(bad)):
        decoder_threads(True, bad)


def test_a_paced_file_decodes_in_one_thread_and_an_offline_file_in_ffmpegs(tmp_path: Path):
    """Issue 10: every stream used FFmpeg's frame threads (cores + 1 each): ~40 % more CPU per
    frame and 3 decoder threads per camera; a source on a clock needs one."""
    path = make_video(tmp_path / "v.mp4", 8, codec="libx264")
    for source, realtime, threads, count in (
        (f"file@25:{path}", True, 0, 1), (str(path), False, 0, 0), (str(path), True, 2, 2),
    ):
        with open_video(source, realtime=realtime, threads=threads) as video:
            assert video._stream.codec_context.thread_count == count
            assert len(list(video)) == 8
