"""CameraWorker isolation: a crash inside the pipeline restarts it without losing the camera."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from tests.detector.post.receiver import Receiver, wait_for
from videodetector.core.detections import Detections
from videodetector.core.models import YuNetDetector
from videodetector.democlip import Walker, pick_sprites, write_clip
from videodetector.detector.camera import CameraWorker
from videodetector.detector.config import ConfigError, parse_config
from videodetector.detector.pipeline import CameraSpec, FacePipeline
from videodetector.detector.post.poster import Poster
from videodetector.detector.post.spool import Spool


class FailsOnce:
    """The real detector, except that the first pipeline's detector raises after a few calls
    (as a bug in a pipeline stage would)."""

    created = 0

    def __init__(self) -> None:
        FailsOnce.created += 1
        self.first = FailsOnce.created == 1
        self.calls = 0
        self.real = YuNetDetector()

    def detect(self, bgr: np.ndarray) -> Detections:
        self.calls += 1
        if self.first and self.calls == 20:  # mid-clip (the clip has ~40 detector runs)
            raise RuntimeError("simulated bug in a pipeline stage")
        return self.real.detect(bgr)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    (a,) = pick_sprites(1)
    path = tmp_path_factory.mktemp("clip") / "walk.mp4"
    return write_clip(path, [Walker(a, 0.0, 3.0, 100)], seconds=3.0)


def run_worker(cfg, camera: CameraSpec, factory, timeout: float = 60) -> CameraWorker:
    poster = Poster(cfg, spool=Spool(cfg.spool_dir, cfg.spool_max_bytes))
    poster.start()
    worker = CameraWorker(cfg, camera, factory, poster).start()
    try:
        deadline = time.monotonic() + timeout
        while worker.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not worker.is_alive()
    finally:
        poster.stop(timeout=5)
    return worker


def spy_on_frames(monkeypatch: pytest.MonkeyPatch, crash_at: int | None = None,
                  crashes: int = 1) -> list[int]:
    """Record the index of every frame the pipelines process; raise in the frame
    ``crash_at`` (the first ``crashes`` times), as a bug in a pipeline stage would."""
    seen: list[int] = []
    real = FacePipeline.process
    left = {"crashes": crashes}

    def process(self: FacePipeline, frame):
        seen.append(frame.index)
        if frame.index == crash_at and left["crashes"] > 0:
            left["crashes"] -= 1
            raise RuntimeError("simulated bug in a pipeline stage")
        return real(self, frame)

    monkeypatch.setattr(FacePipeline, "process", process)
    return seen


def test_a_crashing_file_pipeline_resumes_after_the_last_processed_frame(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Issue 7, item 2: a restart must not replay the file from frame 0 (same snapshots
    posted again under new keys, and for ever if the crash repeats)."""
    rx = Receiver().start()
    cfg = parse_config(["--source", str(clip), "--api-url", rx.url, "--api-token", "t",
                        "-r", "1", "--rt-perm", "1", "--rt-delay", "400",
                        "--spool-dir", str(tmp_path / "spool")])
    FailsOnce.created = 0
    seen = spy_on_frames(monkeypatch)
    try:
        worker = run_worker(cfg, CameraSpec("cam", str(clip)), FailsOnce)
        assert worker.counters.crashes == 1 and FailsOnce.created == 2
        assert "simulated bug" in (worker.error or "") and worker.state == "ended"
        crash = next(i for i in range(1, len(seen)) if seen[i] <= seen[i - 1])
        # the first run processed 0..k (crashing in k); the second k..74: nothing twice
        k = seen[crash]
        assert seen == list(range(k + 1)) + list(range(k, 75)), seen
        assert worker.pipeline_stats.frames == 76
        assert wait_for(lambda: len(rx.received) >= 3)
        keys = rx.ok_keys()
        assert len(keys) == len(set(keys)), keys
        # one run id (the file's fingerprint) for both pipeline runs; track ids go on
        assert {k.split(":")[1] for k in keys} == {worker.run_id}
        assert worker.run_id.startswith("f")
    finally:
        rx.stop()


def test_a_file_stuck_on_one_frame_gives_up_with_a_clear_error(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import videodetector.detector.camera as camera
    from videodetector.detector.cli import single_exit_code

    monkeypatch.setattr(camera, "CRASH_BACKOFF", (0.05, 0.2))
    seen = spy_on_frames(monkeypatch, crash_at=10, crashes=1000)
    cfg = parse_config(["--source", str(clip), "--api-url", "127.0.0.1:9", "--api-token", "t",
                        "--spool-dir", str(tmp_path / "spool")])
    worker = run_worker(cfg, CameraSpec("cam", str(clip)), YuNetDetector, timeout=30)
    assert seen == [*range(11), 10, 10]
    assert worker.counters.crashes == camera.MAX_CRASHES_AT_ONE_FRAME == 3
    assert worker.state == "failed" and "crashed 3 times at frame 10" in (worker.error or "")
    assert single_exit_code(worker) == 1


def test_crash_history_grows_at_one_frame_and_forgives_progress():
    from videodetector.detector.camera import CRASH_BACKOFF, CRASH_MEMORY, CrashHistory

    first, cap = CRASH_BACKOFF
    files = CrashHistory(live=False)
    assert [files.record(7, 0.0), files.record(7, 1.0)] == [first, 2 * first]
    assert files.record(7, 2.0) is None  # third crash at frame 7: give up
    assert files.record(8, 3.0) == first  # got past it: healthy again
    live = CrashHistory(live=True)
    # a crash every minute is not healthy, however many frames went through in between
    waits = [live.record(1000 * i, 60.0 * i) for i in range(8)]
    assert waits[0] == first and waits[-1] == cap and waits == sorted(waits)
    assert live.record(10**6, 7 * 60.0 + CRASH_MEMORY) == first  # quiet for long: reset


def test_a_file_keeps_its_run_id_across_runs_and_changes_it_when_rewritten(tmp_path: Path):
    from videodetector.detector.camera import source_run_id
    from videodetector.detector.video.source import parse_source

    path = tmp_path / "a.mp4"
    path.write_bytes(b"x" * 10)
    first = source_run_id(parse_source(str(path)))
    assert first == source_run_id(parse_source(f"file://{path}")) and first.startswith("f")
    path.write_bytes(b"y" * 11)
    assert source_run_id(parse_source(str(path))) != first
    live = parse_source("rtsp://cam/1")
    assert source_run_id(live) != source_run_id(live)  # one per daemon run


def test_a_file_processed_again_with_other_options_is_a_new_run(tmp_path: Path):
    """Same file, same options: the same keys (a restart stores nothing twice). Another mode,
    region or start time: new keys, so that run's snapshots are stored too."""
    from videodetector.core.geometry import parse_geometry
    from videodetector.detector.camera import output_fingerprint, source_run_id
    from videodetector.detector.video.source import parse_source

    path = tmp_path / "a.mp4"
    path.write_bytes(b"x" * 10)
    base = ["--source", str(path), "--camid", "door", "--api-url", "127.0.0.1:1",
            "--api-token", "t"]
    cam = CameraSpec("door", str(path))

    def run_id(extra: list[str], camera: CameraSpec = cam) -> str:
        return source_run_id(parse_source(str(path)),
                             output_fingerprint(parse_config(base + extra), camera))

    first = run_id([])
    assert run_id([]) == first
    assert run_id(["--log-level", "DEBUG", "--req-timeout", "9"]) == first  # no effect on posts
    assert run_id(["-r", "1"]) != first
    assert run_id(["--start-ts", "2026-05-01 09:00:00"]) != first
    assert run_id([], CameraSpec("door", str(path), roi=parse_geometry("10x10+0+0"))) != first


def test_the_camera_writes_its_annotated_output_to_the_sink(clip: Path, tmp_path: Path):
    from videodetector.detector.video.source import open_video

    rx = Receiver().start()
    out = tmp_path / "annotated.mkv"
    cfg = parse_config(["--source", str(clip), "--camid", "door", "--api-url", rx.url,
                        "--api-token", "t", "--spool-dir", str(tmp_path / "spool"),
                        "--sink-url", str(out), "--sink-res", "320x240", "--draw-track", "1"])
    poster = Poster(cfg, spool=Spool(cfg.spool_dir, cfg.spool_max_bytes))
    poster.start()
    worker = CameraWorker(cfg, CameraSpec("door", str(clip)), YuNetDetector, poster).start()
    try:
        worker.join(60)
        assert not worker.is_alive() and worker.error is None
        assert worker.sink is not None and worker.sink.cam_id == "door"
        with open_video(str(out)) as video:
            frames = [f.image.shape for f in video]
        assert len(frames) == worker.pipeline_stats.frames == worker.sink.frames_written
        assert set(frames) == {(240, 320, 3)}
    finally:
        poster.stop(timeout=5)
        rx.stop()


def test_a_single_truncated_file_exits_with_code_3_and_counts_it(tmp_path: Path):
    from tests.detector.video.test_reader import write_mp4
    from videodetector.detector.cli import Daemon
    from videodetector.detector.metrics import collect_metrics
    from videodetector.detector.status import render_metrics

    data = write_mp4(tmp_path / "full.mp4", 90).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    cfg = parse_config(["--source", str(cut), "--camid", "c", "--api-url", "127.0.0.1:9",
                        "--api-token", "t", "--spool-dir", str(tmp_path / "spool")])
    daemon = Daemon(cfg)
    assert daemon.run() == 3
    assert 'fkvideo_files_incomplete_total{cam_id="c"} 1' in render_metrics(
        collect_metrics(daemon))


def test_a_spooled_snapshot_keeps_its_key_with_the_frame_position():
    """The key names the frame; the spool (a minimal change in post/codec.py) keeps it."""
    from datetime import UTC, datetime

    from videodetector.detector.post.codec import decode_snapshot, encode_snapshot
    from videodetector.detector.snapshot import Snapshot

    snap = Snapshot("cam", 7, 0, datetime(2026, 1, 1, tzinfo=UTC), (1, 2, 3, 4), -1.0, 0.0,
                    None, b"png", run_id="fabc", position=1234)
    assert snap.idempotency_key == "cam:fabc:1234:7:0"
    assert decode_snapshot(encode_snapshot(snap)).idempotency_key == snap.idempotency_key
    old = Snapshot("cam", 7, 0, snap.timestamp, (1, 2, 3, 4), -1.0, 0.0, None, b"p", run_id="r")
    assert old.idempotency_key == "cam:r:7:0"  # snapshots spooled before keep their keys


class Count:
    """An Observer that counts its observations."""

    def __init__(self) -> None:
        self.n = 0

    def observe(self, amount: float) -> None:
        self.n += 1


def test_a_quiet_camera_converts_few_frames_to_bgr_and_still_has_a_preview(tmp_path: Path):
    """Issue 10: the worker kept every frame's BGR image for the health preview, which
    converted every frame (about 1 ms of CPU per 720p frame) although the motion gate reads
    the luma plane; now only frames the pipeline needs, plus one per PREVIEW_EVERY."""
    from videodetector.detector.timing import NULL, CameraTimers

    still = write_clip(tmp_path / "still.mp4", [], seconds=2.0)  # 50 frames, nothing moves
    rx = Receiver().start()
    cfg = parse_config(["--source", str(still), "--api-url", rx.url, "--api-token", "t",
                        "--spool-dir", str(tmp_path / "spool")])
    convert = Count()
    timers = CameraTimers(NULL, convert, *([NULL] * 7))
    poster = Poster(cfg, spool=Spool(cfg.spool_dir, cfg.spool_max_bytes))
    poster.start()
    worker = CameraWorker(cfg, CameraSpec("cam", str(still)), YuNetDetector, poster,
                          timers=timers).start()
    try:
        worker.join(60)
        assert not worker.is_alive() and worker.error is None
        assert worker.pipeline_stats.frames == 50
        # the first frame is detected in (no background yet); the rest only pass the gate
        assert worker.pipeline_stats.detector_runs <= 2
        assert convert.n <= 10, convert.n
        assert worker.last_image is not None and worker.last_image.shape == (480, 640, 3)
    finally:
        poster.stop(timeout=5)
        rx.stop()


def test_the_frame_queue_option_sizes_the_readers_queue(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """--frame-queue: a camera whose pipeline is slower than its paced source holds at most
    that many frames, and drops the rest (counted)."""
    real = FacePipeline.process

    def slow(self: FacePipeline, frame):
        time.sleep(0.05)
        return real(self, frame)

    monkeypatch.setattr(FacePipeline, "process", slow)
    rx = Receiver().start()
    source = f"file@100:{clip}"
    cfg = parse_config(["--source", source, "--api-url", rx.url, "--api-token", "t",
                        "--spool-dir", str(tmp_path / "spool"), "--frame-queue", "3"])
    poster = Poster(cfg, spool=Spool(cfg.spool_dir, cfg.spool_max_bytes))
    poster.start()
    worker = CameraWorker(cfg, CameraSpec("cam", source), YuNetDetector, poster).start()
    try:
        queued = []
        while worker.is_alive():
            if worker.reader is not None:
                queued.append(worker.reader.stats().queued)
            time.sleep(0.01)
        stats = worker.reader.stats()
        assert 0 < max(queued) <= 3 and stats.dropped > 0
        assert worker.pipeline_stats.frames + stats.dropped == stats.frames_in
    finally:
        poster.stop(timeout=5)
        rx.stop()
    with pytest.raises(ConfigError, match="--frame-queue"):
        parse_config(["--source", source, "--api-url", rx.url, "--frame-queue", "0"])



class _Pixels:
    """Pixels whose conversions cost a known time: 0.25 s at the detector's size (already
    observed by the pipeline), 1.0 s more for the full-size image."""

    def __init__(self) -> None:
        self.convert_seconds = 0.25
        self.converted = False

    def bgr(self) -> np.ndarray:
        if not self.converted:
            self.converted = True
            self.convert_seconds += 1.0
        return np.zeros((4, 4, 3), np.uint8)


class _Frame:
    def __init__(self) -> None:
        self.pixels = _Pixels()
        self.index = 0

    @property
    def image(self) -> np.ndarray:
        return self.pixels.bgr()


class _Sum:
    def __init__(self) -> None:
        self.total = 0.0

    def observe(self, amount: float) -> None:
        self.total += amount


def test_the_preview_counts_only_its_own_conversion():
    """A frame converted at the detector's size (observed by the pipeline) and then at full
    size for the preview adds only the full-size conversion to the convert timer (before,
    it added both, so the scaled part was counted twice)."""
    from types import SimpleNamespace

    convert = _Sum()
    worker = SimpleNamespace(_preview_at=-1e9, last_image=None,
                             timers=SimpleNamespace(convert=convert))
    CameraWorker._keep_preview(worker, _Frame())
    assert worker.last_image is not None
    assert convert.total == pytest.approx(1.0)


class _BurstyReader:
    """Frames that reach the pipeline in pairs, as after a stall: 1 ms apart, then 79 ms to
    the next pair (on average 25 fps). ``clock`` is the fake time.monotonic()."""

    def __init__(self, frames: int) -> None:
        self.clock = 100.0
        self.left = frames
        self.n = 0

    def get(self, timeout: float = 0.5):
        from videodetector.detector.video.reader import END

        if self.left == 0:
            return END
        self.left -= 1
        self.clock += 0.001 if self.n % 2 else 0.079
        self.n += 1
        frame = _Frame()
        frame.index = self.n
        return frame


class _NoPipeline:
    def process(self, frame) -> list:
        return []


def test_fps_processed_is_the_frame_rate_when_frames_come_in_bursts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Found in a long run: /metrics showed fkvideo_fps_processed 1733, 394, 34 for a 25 fps
    camera, because it was an EWMA of 1/dt (one frame taken 1 ms after the one before
    counted 1000 fps). It is now 1 / EWMA(dt): 25 fps for pairs 1 ms + 79 ms apart."""
    import videodetector.detector.camera as camera_mod

    cfg = parse_config(["--source", "rtsp://127.0.0.1:9/x", "--api-url", "127.0.0.1:9",
                        "--api-token", "t", "--spool-dir", str(tmp_path / "spool")])
    worker = CameraWorker(cfg, CameraSpec("cam", "rtsp://127.0.0.1:9/x"), YuNetDetector,
                          poster=None)  # type: ignore[arg-type]  # nothing is submitted
    reader = _BurstyReader(200)
    monkeypatch.setattr(camera_mod.time, "monotonic", lambda: reader.clock)
    monkeypatch.setattr(CameraWorker, "_log_first_frame", lambda self: None)
    worker._consume(reader, _NoPipeline(), None)  # type: ignore[arg-type]
    # the average of 10-20 intervals wobbles between 23.8 and 26.4 fps with the pairs
    assert 23.0 <= worker.counters.fps_processed <= 27.0, worker.counters.fps_processed


def test_a_file_read_to_its_end_ended_and_one_stopped_part_way_stopped(clip: Path,
                                                                       tmp_path: Path) -> None:
    """The state (metrics, health reports, the log's last word) tells a file that ended from
    one the daemon stopped part-way (SIGTERM, the camera removed)."""
    rx = Receiver().start()
    try:
        for stop_early in (False, True):
            cfg = parse_config(["--source", f"file@25:{clip}", "--api-url", rx.url,
                                "--api-token", "t", "--spool-dir",
                                str(tmp_path / f"spool{stop_early}")])
            poster = Poster(cfg, spool=Spool(cfg.spool_dir, cfg.spool_max_bytes))
            poster.start()
            worker = CameraWorker(cfg, CameraSpec("cam", f"file@25:{clip}"), YuNetDetector,
                                  poster).start()
            try:
                if stop_early:  # paced at 25 fps: the 3 s clip is far from its end
                    assert wait_for(lambda w=worker: w.pipeline_stats.frames >= 5, 30)
                    worker.stop()
                deadline = time.monotonic() + 60
                while worker.is_alive() and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert not worker.is_alive()
            finally:
                poster.stop(timeout=5)
            frames = worker.pipeline_stats.frames
            if stop_early:
                assert worker.state == "stopped" and frames < 70, frames
            else:
                assert worker.state == "ended" and frames >= 74, frames
    finally:
        rx.stop()
