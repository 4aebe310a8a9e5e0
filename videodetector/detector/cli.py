"""``fkvideo_detector``: the video face detector daemon.

Single camera: ``fkvideo_detector --source PATH|URL --camid ID --api-url ... --api-token ...``.
Camera list: ``fkvideo_detector -c /etc/fkvideo/site.ini`` with ``detector-name`` and no
``source``: the cameras registered under that name in the backend are polled and run, in
this process or, with ``--camera-processes N|auto``, in child processes (``groups.py``).

Exit codes: 0 on a clean stop (or when a single file ended), 1 when a single
source could not be opened/decoded at all, its pipeline kept crashing at one frame, or
its spool directory cannot be used (e.g. another fkvideo_detector holds it: one ERROR line
names the directory and that pid), 2 for a bad configuration (also a --rot/--roi outside the
frame), 3 when a single file was processed but ended early (truncated or damaged; a WARNING
names it).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import cv2
from prometheus_client import CollectorRegistry

from videodetector.core.models import YUNET, ModelError, YuNetDetector, model_path
from videodetector.core.naming import path_component
from videodetector.detector.camera import CameraWorker
from videodetector.detector.config import ConfigError, DetectorConfig, format_config, parse_config
from videodetector.detector.groups import CameraGroups
from videodetector.detector.logprefix import CameraPrefixFilter
from videodetector.detector.manager import CameraManager
from videodetector.detector.metrics import DaemonCollector, GroupsCollector
from videodetector.detector.pipeline import CameraSpec
from videodetector.detector.post.health import HealthReporter
from videodetector.detector.post.poster import DROP_REASONS, Poster
from videodetector.detector.post.spool import REJECTED, Spool, SpoolError, SpoolLockedError
from videodetector.detector.status import StatusServer
from videodetector.detector.timing import DetectorHistograms

log = logging.getLogger("fkvideo_detector")

FLUSH_SECONDS = 10.0  # how long SIGTERM waits for pending posts before spooling them


def opencv_threads(camera_list: bool) -> int | None:
    """The size of OpenCV's thread pool for a daemon: 1 when it runs a camera list, None
    (OpenCV's default, one thread per core) for a single source.

    Several cameras already keep every core busy, one thread each, as their detectors do
    (one onnxruntime thread each). OpenCV's pool then only adds hand-offs and its workers'
    spin-waits: the motion gate's resize/blur/diff of a 720p frame cost 0.1-0.4 ms more CPU
    with 2 threads than with 1 on 2 cores, and no less wall time on a busy host. A single
    source keeps the pool (its frames may come faster than one core handles them)."""
    return 1 if camera_list else None


def log_handler(stream: TextIO, process: int | None = None,
                timestamps: bool = True) -> logging.Handler:
    """A handler writing records to ``stream`` with the camera's prefix (logprefix.py: its
    name and id, ``-`` when not per camera); ``process``: the index of a camera process
    (``--camera-processes``), shown before the logger's name."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(CameraPrefixFilter())
    where = "" if process is None else f"camera-process-{process} "
    fmt = f"%(levelname)s [%(camera)s] {where}%(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(("%(asctime)s " if timestamps else "") + fmt))
    return handler


def setup_logging(level: str, process: int | None = None) -> None:
    """Records to stderr (log_handler); without timestamps under systemd (journald adds its
    own; a terminal user still wants them)."""
    root = logging.getLogger()
    root.handlers[:] = [log_handler(sys.stderr, process,
                                    timestamps=not os.environ.get("INVOCATION_ID"))]
    root.setLevel(level)


class Daemon:
    """Owns the workers, their posters and the status endpoint."""

    def __init__(self, cfg: DetectorConfig) -> None:
        self.cfg = cfg
        self.stop_event = threading.Event()
        self.started_at = time.time()
        self.workers: dict[str, CameraWorker] = {}
        self.posters: dict[str, Poster] = {}
        self.manager: CameraManager | None = None
        # --camera-processes other than 1 (camera list only): cameras in child processes
        self.groups: CameraGroups | None = None
        if not cfg.source and cfg.camera_processes != 1:
            self.groups = CameraGroups(cfg, stopping=self.stop_event)
        # One camera alone gets both cores for its detector; several share them.
        self.detector_threads = 2 if cfg.source else 1
        # /metrics: this daemon's own registry (several daemons may share a process in tests)
        self.histograms = DetectorHistograms()
        self.registry = CollectorRegistry()
        self.registry.register(DaemonCollector(self) if self.groups is None
                               else GroupsCollector(self, self.groups))

    def make_detector(self) -> YuNetDetector:
        """With --rescale-height the detector sees frames at that height (the pipeline scales
        them); without it, at 640 px on the longer side, the model's native size."""
        max_side = None if self.cfg.rescale_height else YuNetDetector.INPUT
        return YuNetDetector(threads=self.detector_threads, max_side=max_side)

    def make_worker(self, camera: CameraSpec) -> CameraWorker:
        timers = self.histograms.for_camera(camera.cam_id)
        poster = self.posters.get(camera.cam_id)
        if poster is None:
            spool = str(Path(self.cfg.spool_dir) / path_component(camera.cam_id, "camera"))
            poster = Poster(self.cfg, spool=Spool(spool, self.cfg.spool_max_bytes),
                            cam_id=camera.cam_id, post_seconds=timers.post)
            poster.start()
            self.posters[camera.cam_id] = poster
        worker = CameraWorker(self.cfg, camera, self.make_detector, poster, timers)
        self.workers[camera.cam_id] = worker
        return worker

    def run(self) -> int:
        status = None
        if self.cfg.status_port:
            status = StatusServer(self.cfg.status_host, self.cfg.status_port,
                                  self.registry).start()
        cv_threads = opencv_threads(camera_list=not self.cfg.source)
        cv_before = cv2.getNumThreads()
        if cv_threads is not None:
            cv2.setNumThreads(cv_threads)
        try:
            return self._run_single() if self.cfg.source else self._run_list()
        finally:
            self._shutdown()
            if status is not None:
                status.stop()
            if cv_threads is not None:
                cv2.setNumThreads(cv_before)

    def _run_single(self) -> int:
        cam = CameraSpec(self.cfg.camid, self.cfg.source, self.cfg.roi, self.cfg.rot)
        try:
            worker = self.make_worker(cam).start()
        except SpoolError as exc:  # e.g. a second detector on the same --spool-dir
            log.error("not started: %s", exc, extra={"cam_id": cam.cam_id})
            return 1
        # joined, not polled: a file that ends is noticed at once (the stop event was waited
        # on in 0.5 s steps: up to 0.5 s more per offline run); a signal within 0.5 s
        while worker.is_alive() and not self.stop_event.is_set():
            worker.join(0.5)
        worker.stop()
        worker.join()
        return single_exit_code(worker)

    def _run_list(self) -> int:
        log.info("detector %r: polling %s%s every %gs", self.cfg.detector_name,
                 self.cfg.api_url, self.cfg.camera_url, self.cfg.reload_timeout)
        if self.groups is not None:  # each camera process reports its own cameras' health
            self.manager = CameraManager(self.cfg, self.groups.start().worker)
            self.manager.run(self.stop_event)
            return 0
        self.manager = CameraManager(self.cfg, self.make_worker)
        manager = self.manager
        health = None
        if self.cfg.health_interval:
            health = HealthReporter(self.cfg, lambda: dict(manager.workers),
                                    self.cfg.health_interval).start()
        try:
            manager.run(self.stop_event)
        finally:
            if health is not None:
                health.stop()
        return 0

    def _shutdown(self) -> None:
        if self.groups is not None:  # each child stops its cameras and flushes its posters
            self.groups.stop()
        for worker in list(self.workers.values()):
            worker.stop()
        for worker in list(self.workers.values()):
            worker.join(10)
        # All posters flush at once: a stop with the server down takes FLUSH_SECONDS, not
        # FLUSH_SECONDS per camera.
        flushers = [threading.Thread(target=poster.stop, kwargs={"timeout": FLUSH_SECONDS},
                                     name=f"flush-{cam_id}")
                    for cam_id, poster in self.posters.items()]
        for thread in flushers:
            thread.start()
        for thread in flushers:
            thread.join()
        for cam_id, poster in self.posters.items():
            stats = poster.stats()
            log.info("%d snapshot(s) delivered, %d refused, %d left in the spool", stats["ok"],
                     stats["failed"], stats["spool_len"], extra={"cam_id": cam_id})
            lost = {reason: stats[f"dropped_{reason}"] for reason in DROP_REASONS
                    if stats[f"dropped_{reason}"]}
            if lost:
                log.error("snapshot(s) lost because the spool could not be written: %s",
                          ", ".join(f"{n} ({r})" for r, n in lost.items()),
                          extra={"cam_id": cam_id})


def single_exit_code(worker: CameraWorker) -> int:
    """The exit code of a single-source run (see the module docstring); the worker has
    logged why when it is not 0."""
    if worker.config_error:
        return 2
    if worker.error and (worker.pipeline_stats.frames == 0 or worker.state == "failed"):
        return 1
    if worker.counters.files_incomplete:
        return 3
    return 0


def requeue_rejected(spool_root: Path, max_bytes: int) -> int:
    """``--requeue-rejected``: put every camera's refused snapshots back in its spool.

    Run it with the daemon stopped: a spool in use by a running camera is skipped
    (exit code 1). The next start posts them, with their original idempotency keys.
    """
    total, busy = 0, 0
    for rejected in sorted(spool_root.glob(f"*/{REJECTED}")):
        try:
            spool = Spool(rejected.parent, max_bytes)
        except SpoolLockedError as exc:
            log.error("%s: skipped; stop fkvideo_detector before --requeue-rejected", exc)
            busy += 1
            continue
        try:
            moved = spool.requeue_rejected()
        finally:
            spool.close()
        log.info("spool %s: %d refused snapshot(s) requeued", rejected.parent, moved)
        total += moved
    print(f"{total} snapshot(s) requeued under {spool_root}"
          + (f"; {busy} spool(s) in use were skipped" if busy else ""))
    return 1 if busy else 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg = parse_config(argv)
    except ConfigError as exc:
        print(f"fkvideo_detector: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.log_level)
    try:
        model_path(YUNET)
    except ModelError as exc:
        log.error("%s", exc)
        return 2
    if cfg.check_config:
        print(format_config(cfg))
        print("configuration ok")
        return 0
    if cfg.requeue_rejected:
        return requeue_rejected(Path(cfg.spool_dir), cfg.spool_max_bytes)
    daemon = Daemon(cfg)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s received: stopping (flushing posts for up to %gs)",
                 signal.Signals(signum).name, FLUSH_SECONDS)
        daemon.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Not gc.freeze() here (it saved the final collections' 0.2-0.5 s): objects it froze in
    # cycles were never freed, e.g. onnxruntime sessions whose threads then met the C++
    # static destructors; one daemon exited with SIGSEGV after SIGTERM in the live e2e test.
    return daemon.run()


if __name__ == "__main__":
    sys.exit(main())
