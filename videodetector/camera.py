"""CameraWorker: one thread per camera running reader -> pipeline -> poster, isolated from others.

A worker never takes the daemon down: a source that cannot be opened, a
decoder error or a crash inside the pipeline is logged with the camera id and
counted. Live sources are reconnected by the reader (exponential backoff,
watchdog); a crash in the pipeline restarts the pipeline after a backoff. A
file source ends the worker when the file ends (or fails to open: then
``error`` says why).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from videodetector.backoff import Backoff
from videodetector.config import DetectorConfig
from videodetector.pipeline import CameraSpec, FaceDetector, FacePipeline, PipelineStats
from videodetector.post.poster import Poster
from videodetector.video.reader import END, FrameReader
from videodetector.video.sink import VideoSink, annotate
from videodetector.video.source import SourceError, parse_source

log = logging.getLogger(__name__)

CRASH_BACKOFF = (1.0, 30.0)  # first and longest wait before restarting a crashed pipeline, s
STREAM_GAP = 2.0  # s without frames from a live source: its tracks are closed and posted
HEALTHY_RUN = 60.0  # a pipeline that ran this long before crashing restarts after the first wait


def restart_delay(backoff: Backoff, ran_for: float) -> float:
    """How long to wait before restarting a pipeline that crashed after ``ran_for`` seconds.

    Crashes in a row wait longer and longer; a crash after a healthy run starts
    again from the shortest wait (a camera that hits a rare bug once a day must not
    end up waiting the longest each time).
    """
    if ran_for >= HEALTHY_RUN:
        backoff.reset()
    return backoff.next()


@dataclass
class WorkerCounters:
    crashes: int = 0
    fps_processed: float = 0.0  # EWMA (frame counts are in FacePipeline.stats)


class CameraWorker:
    """Runs one camera until ``stop()`` (live) or until its file ends."""

    def __init__(
        self,
        cfg: DetectorConfig,
        camera: CameraSpec,
        detector_factory: Callable[[], FaceDetector],
        poster: Poster,
    ) -> None:
        self.cfg = cfg
        self.camera = camera
        self.spec = parse_source(camera.url)
        self.detector_factory = detector_factory
        self.poster = poster
        self.run_id = ""  # set per pipeline run, see _run_once
        self.counters = WorkerCounters()
        self.pipeline_stats = PipelineStats()
        self.error: str | None = None
        self.reader: FrameReader | None = None
        self.sink: VideoSink | None = None  # --sink-url output of the current run
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"cam-{camera.cam_id}",
                                        daemon=True)
        self.log = logging.LoggerAdapter(log, {"cam_id": camera.cam_id})

    # -- control ---------------------------------------------------------
    def start(self) -> CameraWorker:
        self.log.info("camera %s: starting (%s)", self.camera.cam_id, self.spec.display)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.reader is not None:
            self.reader.stop()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    # -- the loop --------------------------------------------------------
    def _run(self) -> None:
        backoff = Backoff(*CRASH_BACKOFF)
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._run_once()
                break  # the file ended, or stop() was called
            except SourceError as exc:
                self.error = str(exc)
                self.log.error("camera %s: %s", self.camera.cam_id, exc)
                if not self.spec.live:
                    break
            except Exception as exc:  # isolation: a bug in one camera never stops the others
                self.counters.crashes += 1
                self.error = f"{type(exc).__name__}: {exc}"
                self.log.exception("camera %s: pipeline crashed", self.camera.cam_id)
            delay = restart_delay(backoff, time.monotonic() - started)
            self.log.info("camera %s: restarting in %.0fs", self.camera.cam_id, delay)
            if self._stop.wait(delay):
                break
        stats = self.pipeline_stats
        self.log.info("camera %s: stopped (%d frames processed, %d snapshots)",
                      self.camera.cam_id, stats.frames, stats.snapshots)

    def _run_once(self) -> None:
        cfg = self.cfg
        # A new run id per pipeline: after a crash restart, track ids and sequence numbers
        # start again at 1 and 0, and their idempotency keys must not collide with the
        # snapshots of the previous pipeline (the backend would drop them as retries).
        self.run_id = uuid.uuid4().hex[:8]
        # the counters go on across crash restarts (they feed the camera's metrics)
        pipeline = FacePipeline(cfg, self.camera, self.detector_factory(), live=self.spec.live,
                                run_id=self.run_id, stats=self.pipeline_stats)
        self.sink = sink = self._open_sink()
        realtime = self.spec.live or (self.spec.fps is not None and cfg.realtime_pacing)
        self.reader = reader = FrameReader(
            self.spec, params=dict(cfg.source_params), rotate=cfg.rotate, realtime=realtime,
            disable_drops=cfg.disable_drops, watchdog_timeout=cfg.watchdog_timeout,
            cam_id=self.camera.cam_id,
        )
        reader.start()
        try:
            self._consume(reader, pipeline, sink)
            for snap in pipeline.finish():
                self.poster.submit(snap)
        finally:
            reader.stop()
            if sink is not None:
                sink.close()
        if reader.error is not None and reader.frames_in == 0:
            raise reader.error

    def _consume(self, reader: FrameReader, pipeline: FacePipeline, sink: VideoSink | None) -> None:
        last = time.monotonic()
        flushed = False
        while not self._stop.is_set():
            frame = reader.get(timeout=0.5)
            if frame is END:
                return
            if frame is None:
                if self.spec.live and not flushed and time.monotonic() - last >= STREAM_GAP:
                    # the stream went silent (camera down, reconnecting): the faces in it
                    # will not be seen again, so post them now rather than at reconnect
                    for snap in pipeline.finish():
                        self.poster.submit(snap)
                    flushed = True
                continue
            flushed = False
            for snap in pipeline.process(frame):
                self.poster.submit(snap)
            if sink is not None:
                tracks = pipeline.active_tracks
                sink.write(annotate(frame.image, [t.xyxy for t in tracks], [t.id for t in tracks],
                                    [t.history for t in tracks], self.cfg.draw_track))
            now = time.monotonic()
            inst = 1.0 / max(now - last, 1e-6)
            self.counters.fps_processed = 0.9 * self.counters.fps_processed + 0.1 * inst
            last = now

    def _open_sink(self) -> VideoSink | None:
        """The annotated output of --sink-url, if set."""
        if not self.cfg.sink_url:
            return None
        fps = self.spec.fps or 25
        return VideoSink(self.cfg.sink_url, self.cfg.sink_res, fps, cam_id=self.camera.cam_id)
