"""CameraWorker: one thread per camera running reader -> pipeline -> poster, isolated from others.

A worker never takes the daemon down: a source that cannot be opened, a
decoder error or a crash inside the pipeline is logged with the camera id and
counted. Live sources are reconnected by the reader (exponential backoff,
watchdog); a crash in the pipeline restarts the pipeline after a backoff. A
file source ends the worker when the file ends (or fails to open: then
``error`` says why).

A crash restart never replays what was done (see :class:`CrashHistory`): the snapshots the
crashed pipeline still held are posted if they can be, a file resumes at the frame after
the last one processed, track ids go on from where they were, and the run id (part of every
idempotency key) stays the same. For a file the run id is a fingerprint of the file, so the
keys depend only on what a snapshot is (camera, file, frame, track, post number): a file
processed again yields the same keys and the backend stores its snapshots once. For a live
source it is one random id per worker (a daemon run of that camera).

A camera whose rot/roi does not fit its frames is a configuration error of that camera:
logged once, the worker ends in state ``failed`` (see ``state``), the other cameras run on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from videodetector.core.backoff import Backoff
from videodetector.core.sourcespec import SourceSpec, parse_source
from videodetector.detector.config import DetectorConfig
from videodetector.detector.logprefix import full_id, name_camera
from videodetector.detector.pipeline import (
    CameraSpec,
    FaceDetector,
    FacePipeline,
    PipelineStats,
    RegionError,
)
from videodetector.detector.post.poster import Poster
from videodetector.detector.preload import import_tracker_modules
from videodetector.detector.snapshot import Snapshot
from videodetector.detector.timing import CameraTimers, ewma_interval, process_age
from videodetector.detector.video.reader import END, FrameReader
from videodetector.detector.video.sink import VideoSink, annotate
from videodetector.detector.video.source import Frame, SourceError

log = logging.getLogger(__name__)

CRASH_BACKOFF = (1.0, 30.0)  # first and longest wait before restarting a crashed pipeline, s
STREAM_GAP = 2.0  # s without frames from a live source: its tracks are closed and posted
CRASH_MEMORY = 600.0  # s: a live pipeline is healthy again after this long without a crash
MAX_CRASHES_AT_ONE_FRAME = 3  # a file gives up after this many crashes at the same frame
# s: the health preview (``last_image``) is refreshed with a frame nothing else converted to
# BGR at most this often; a frame the pipeline converted anyway is kept at no cost. (Converting
# every frame for the preview undid the lazy conversion: ~1 ms of CPU per 720p frame.)
PREVIEW_EVERY = 1.0

# Values of ``CameraWorker.state`` (the fkvideo_camera_state metric has one series each).
CAMERA_STATES = ("starting", "running", "reconnecting", "source_down", "restarting",
                 "ended", "failed", "stopped")


class CrashHistory:
    """When to restart a crashed pipeline, and when to give up (pure logic, no clock).

    ``position`` of a crash: for a file the index of the frame it crashed on (the last
    processed + 1), for a live source the number of frames processed so far.

    * File: a crash past the previous crash's position (progress was made) restarts after
      the shortest wait; crashes at the same frame wait twice as long each time, and after
      MAX_CRASHES_AT_ONE_FRAME of them the file gives up (it would never get past it).
    * Live: a source never ends, so a live camera never gives up; a crash restarts after
      the shortest wait only if the previous one was CRASH_MEMORY seconds ago or more.
      Crashes that keep coming (one a minute, say) wait longer each time, up to the cap:
      they are not healthy, however much was processed in between.
    """

    def __init__(self, live: bool) -> None:
        self.live = live
        self.backoff = Backoff(*CRASH_BACKOFF)
        self.position: int | None = None
        self.at_position = 0  # crashes in a row at ``position``
        self.last_crash: float | None = None

    def record(self, position: int, now: float) -> float | None:
        """The wait before restarting after a crash; None: give up (a file stuck on a frame)."""
        same = position == self.position
        self.at_position = self.at_position + 1 if same else 1
        if self.live:
            healthy = self.last_crash is None or now - self.last_crash >= CRASH_MEMORY
        else:
            healthy = not same
        self.position, self.last_crash = position, now
        if healthy:
            self.backoff.reset()
        if not self.live and self.at_position >= MAX_CRASHES_AT_ONE_FRAME:
            return None
        return self.backoff.next()


# Options that change what a run posts: a file processed again with any of them changed is a
# new run (new keys), so its snapshots are stored; with the same options, a re-run (a restart)
# yields the same keys and stores nothing twice.
OUTPUT_OPTIONS = ("start_ts", "rotate", "md_threshold", "scale", "rescale_height", "max_persons",
                  "min_face_size", "max_face_size", "realtime", "realtime1844", "rt_delay",
                  "rt_perm", "min_score", "min_dir_score", "post_uniq", "uc_max_time_diff",
                  "uc_max_dup", "uc_max_avg_shift", "request_url", "img_arg", "headers", "body",
                  "bbox_scale", "send_track", "only_norm")


def output_fingerprint(cfg: DetectorConfig, camera: CameraSpec) -> str:
    """What decides a run's snapshots besides the file: the camera's regions and the options
    of :data:`OUTPUT_OPTIONS`."""
    parts = [repr(camera.roi), repr(camera.rot)]
    parts += [f"{name}={getattr(cfg, name, None)!r}" for name in OUTPUT_OPTIONS]
    return "|".join(parts)


def source_run_id(spec: SourceSpec, settings: str = "") -> str:
    """The run id of a camera's snapshots (part of their idempotency keys).

    A file: ``f`` + a fingerprint of its path, size and modification time and of ``settings``
    (see :func:`output_fingerprint`), the same in every run with the same options. A live
    source: a random id, new for every worker (daemon run of the camera)."""
    if spec.live:
        return uuid.uuid4().hex[:8]
    path = os.path.realpath(spec.url)
    try:
        st = os.stat(path)
        ident = f"{path}|{st.st_size}|{st.st_mtime_ns}|{settings}"
    except OSError:
        ident = f"{path}|{settings}"
    return "f" + hashlib.sha256(ident.encode()).hexdigest()[:10]


@dataclass
class WorkerCounters:
    crashes: int = 0
    fps_processed: float = 0.0  # EWMA (frame counts are in FacePipeline.stats)
    files_incomplete: int = 0  # a file ended before its end (truncated, damaged)
    salvaged: int = 0  # snapshots a crashed pipeline still held, posted after the crash


class CameraWorker:
    """Runs one camera until ``stop()`` (live) or until its file ends."""

    def __init__(
        self,
        cfg: DetectorConfig,
        camera: CameraSpec,
        detector_factory: Callable[[], FaceDetector],
        poster: Poster,
        timers: CameraTimers | None = None,
    ) -> None:
        self.cfg = cfg
        self.timers = timers if timers is not None else CameraTimers.null()
        self.camera = camera
        self.spec = parse_source(camera.url)
        self.detector_factory = detector_factory
        self.poster = poster
        # kept across crash restarts
        self.run_id = source_run_id(self.spec, output_fingerprint(cfg, camera))
        self.counters = WorkerCounters()
        self.pipeline_stats = PipelineStats()
        self.error: str | None = None
        self.config_error = False  # the camera's rot/roi does not fit its frames
        self.reader: FrameReader | None = None
        self.sink: VideoSink | None = None  # --sink-url output of the current run
        self.pipeline: FacePipeline | None = None  # the current run's pipeline
        self.resume_at = 0  # a file: index of the next frame to process
        # a recent frame as BGR (health previews; see PREVIEW_EVERY)
        self.last_image: np.ndarray | None = None
        self._preview_at = -PREVIEW_EVERY  # time.monotonic() when last_image was last set
        self.next_track_id = 1
        self._state = "starting"
        self._first_frame_logged = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"cam-{camera.cam_id}",
                                        daemon=True)
        self.log = logging.LoggerAdapter(log, {"cam_id": camera.cam_id})
        name_camera(camera.cam_id, camera.name)  # its lines' prefix (logprefix.py)

    # -- control ---------------------------------------------------------
    def start(self) -> CameraWorker:
        self.log.info("starting (%s%s)", self.spec.display, full_id(self.camera.cam_id))
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

    @property
    def state(self) -> str:
        """One of CAMERA_STATES: what the camera is doing now (for /metrics)."""
        if self._state == "running" and self.reader is not None:
            stats = self.reader.stats()
            if stats.looks_permanent:
                return "source_down"
            if stats.consecutive_failures:
                return "reconnecting"
        return self._state

    # -- the loop --------------------------------------------------------
    def _run(self) -> None:
        history = CrashHistory(self.spec.live)
        while not self._stop.is_set():
            try:
                self._run_once()
                # a file read to its end ended; one stopped part-way (or a live source) stopped
                ended = not self.spec.live and not self._stop.is_set()
                self._state = "ended" if ended else "stopped"
                break  # the file ended, or stop() was called
            except RegionError as exc:
                self._fail(f"configuration error: {exc}", config=True)
                break
            except SourceError as exc:
                self.error = str(exc)
                self.log.error("%s", exc)
                if not self.spec.live:
                    self._state = "failed"
                    break
            except Exception as exc:  # isolation: a bug in one camera never stops the others
                self.counters.crashes += 1
                self.error = f"{type(exc).__name__}: {exc}"
                self.log.exception("pipeline crashed at frame %d", self._crash_position())
            delay = history.record(self._crash_position(), time.monotonic())
            if delay is None:
                self._fail(f"the pipeline crashed {history.at_position} times at frame "
                           f"{history.position} of {self.spec.display}; giving up on the file "
                           f"(last error: {self.error})")
                break
            self._state = "restarting"
            self.log.info("restarting in %.0fs%s", delay,
                          "" if self.spec.live else f" at frame {self.resume_at}")
            if self._stop.wait(delay):
                break
        if self._stop.is_set() and self._state not in ("failed", "ended"):
            self._state = "stopped"
        stats = self.pipeline_stats
        # the state says how it finished: ended (the file's end), stopped (told to), failed
        self.log.info("%s (%d frames processed, %d snapshots)", self._state, stats.frames,
                      stats.snapshots)

    def _fail(self, why: str, config: bool = False) -> None:
        """The camera cannot go on: logged once, state ``failed``."""
        self.error = why
        self.config_error = config
        self._state = "failed"
        self.log.error("%s; camera stopped (the other cameras go on)", why)

    def _crash_position(self) -> int:
        return self.resume_at if not self.spec.live else self.pipeline_stats.frames

    def _run_once(self) -> None:
        cfg = self.cfg
        realtime = self.spec.live or (self.spec.fps is not None and cfg.realtime_pacing)
        # A source read in real time drops the frames that come while the pipeline is busy:
        # the tracker's modules are imported before it opens, not during its first second
        # (an offline file loses nothing: they are imported after its first frame).
        tracker_modules = import_tracker_modules() if realtime else None
        # the counters go on across crash restarts (they feed the camera's metrics), and so
        # do the run id, the track ids and (for a file) the position in the source
        self.pipeline = pipeline = FacePipeline(
            cfg, self.camera, self.detector_factory(), live=self.spec.live, run_id=self.run_id,
            stats=self.pipeline_stats, first_track_id=self.next_track_id, timers=self.timers,
        )
        self.sink = sink = self._open_sink()
        if tracker_modules is not None:
            tracker_modules.join()
        self.reader = reader = FrameReader(
            self.spec, params=dict(cfg.source_params), rotate=cfg.rotate, realtime=realtime,
            disable_drops=cfg.disable_drops, watchdog_timeout=cfg.watchdog_timeout,
            cam_id=self.camera.cam_id, start_index=self.resume_at, timers=self.timers,
            decoder_threads=cfg.decoder_threads, queue_size=cfg.frame_queue,
        )
        reader.start()
        self._state = "running"
        try:
            self._consume(reader, pipeline, sink)
            self._submit(pipeline.finish())
        except RegionError:
            raise
        except Exception:
            self._salvage(pipeline)
            raise
        finally:
            self.next_track_id = pipeline.next_track_id
            reader.stop()
            self.counters.files_incomplete += reader.stats().incomplete
            if sink is not None:
                sink.close()
        if reader.error is not None and reader.frames_in == 0:
            raise reader.error

    def _submit(self, snapshots: list[Snapshot]) -> None:
        for snap in snapshots:
            self.poster.submit(snap)

    def _salvage(self, pipeline: FacePipeline) -> None:
        """Post what a crashed pipeline's selector still held (the open tracks' best faces):
        the restarted pipeline starts after them and would never post them."""
        try:
            snapshots = pipeline.finish()
        except Exception:
            self.log.debug("nothing salvaged from the crashed pipeline", exc_info=True)
            return
        self._submit(snapshots)
        self.counters.salvaged += len(snapshots)
        if snapshots:
            self.log.info("posted %d snapshot(s) the crashed pipeline held", len(snapshots))

    def _consume(self, reader: FrameReader, pipeline: FacePipeline, sink: VideoSink | None) -> None:
        last = time.monotonic()
        interval: float | None = None  # EWMA of the time between processed frames
        flushed = False
        while not self._stop.is_set():
            frame = reader.get(timeout=0.5)
            if frame is END:
                return
            if frame is None:
                if self.spec.live and not flushed and time.monotonic() - last >= STREAM_GAP:
                    # the stream went silent (camera down, reconnecting): the faces in it
                    # will not be seen again, so post them now rather than at reconnect
                    self._submit(pipeline.finish())
                    flushed = True
                continue
            flushed = False
            self.resume_at = frame.index  # where a crash in this frame resumes
            self._submit(pipeline.process(frame))
            self.resume_at = frame.index + 1
            self._keep_preview(frame)
            if not self._first_frame_logged:
                self._log_first_frame()
            if sink is not None:
                tracks = pipeline.active_tracks
                sink.write(annotate(frame.image, [t.xyxy for t in tracks], [t.id for t in tracks],
                                    [t.history for t in tracks], self.cfg.draw_track))
            now = time.monotonic()
            interval = ewma_interval(interval, now - last)
            self.counters.fps_processed = 1.0 / interval if interval > 0 else 0.0
            last = now

    def _keep_preview(self, frame: Frame) -> None:
        """``last_image`` = this frame's BGR image (a reference, no copy) when the pipeline
        converted it anyway, or when the preview is PREVIEW_EVERY seconds old."""
        now = time.monotonic()
        converted = frame.pixels.converted
        if not converted and now - self._preview_at < PREVIEW_EVERY:
            return
        self._preview_at = now
        if converted:
            self.last_image = frame.image
            return
        # made for the preview: counted in the convert stage too (only this conversion; what
        # the pipeline converted at the detector's size it has observed already)
        before = frame.pixels.convert_seconds
        self.last_image = frame.image
        self.timers.convert.observe(frame.pixels.convert_seconds - before)

    def _log_first_frame(self) -> None:
        """One INFO line when the worker's first frame went through the pipeline, with the
        process's age then: the daemon's start-up as an operator (or bench/) sees it."""
        self._first_frame_logged = True
        age = process_age()
        self.log.info("first frame processed%s (%.2f s of CPU)",
                      "" if age is None else f", {age:.2f} s after the process started",
                      time.process_time())
        import_tracker_modules()  # the tracker's scipy, now that the camera runs (preload.py)

    def _open_sink(self) -> VideoSink | None:
        """The annotated output of --sink-url, if set."""
        if not self.cfg.sink_url:
            return None
        fps = self.spec.fps or 25
        return VideoSink(self.cfg.sink_url, self.cfg.sink_res, fps, cam_id=self.camera.cam_id)
