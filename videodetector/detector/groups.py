"""Camera groups in child processes: ``--camera-processes N`` (N > 1, or ``auto``).

One Python process runs at most ~1.5 cores of camera work: every camera thread hands the GIL
over at each of its ~15-20 native calls per frame, and with ~25 threads the hand-offs, not
the cores, set the limit. With N > 1 the daemon's process keeps the camera list
(``CameraManager``) and the status endpoint, and every camera runs in one of N child
processes ("spawn": the parent has threads, fork would copy their locks).

Parent side (:class:`CameraGroups`, :class:`CameraRun`): a camera goes to the child with
the fewest running cameras (lowest index on ties) and stays in that child for the
daemon's life (its "home"): the child keeps its ``Poster``, which delivers the camera's
spool even after the camera stopped, as the one-process daemon does, so no other process
ever opens that spool while its home lives. ``CameraRun`` is what the manager sees of a
camera (``manager.Worker``): start/stop/join/is_alive, as commands over the child's pipe.
A supervisor thread reads the children's messages and notices a child that died (kill -9, a
crash): one ERROR line naming its pid and cameras, a restart after a backoff
(``core.backoff``: 1 s, doubling up to 30 s; back to 1 s after a child lived 60 s), and
its running cameras started there again (their spool directories were unlocked by the
kernel when it died). The other children are not touched.

Child side (:func:`child_main`, :class:`ChildLoop`): a ``cli.Daemon`` without a camera
list: the same ``make_worker`` (``CameraWorker`` + ``Poster`` with ``<spool-dir>/<camera>``),
the same health reports for its own cameras (``HealthReporter``), the same shutdown
(every poster flushed for ``FLUSH_SECONDS``). It ignores SIGINT/SIGTERM (the parent decides)
and stops when told to or when its pipe closes (the parent is gone, even by kill -9). A camera
it cannot start (``make_worker`` raises, e.g. its spool directory is held by another daemon)
is answered ``CameraEnded(refused=True)``: the manager starts it again on its next poll, as
in one process, and the child logs the ERROR once per spec (the next tries at DEBUG; again
after the camera was stopped or with another spec). A camera that ended (its file, a
``failed`` configuration) is not started again.

``auto``: one process per :data:`CAMERAS_PER_PROCESS` cameras the daemon runs, at most one
per core (``os.cpu_count()``); processes are added as cameras come, never taken away.
"""

from __future__ import annotations

import itertools
import logging
import math
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from videodetector.core.backoff import Backoff
from videodetector.core.sourcespec import parse_source
from videodetector.detector.config import AUTO_PROCESSES, MAX_CAMERA_PROCESSES, DetectorConfig
from videodetector.detector.pipeline import CameraSpec

log = logging.getLogger(__name__)

CAMERAS_PER_PROCESS = 8  # camera-processes=auto: one process per this many cameras
RESTART_BACKOFF = (1.0, 30.0)  # s: first and longest wait before a dead child is restarted
HEALTHY_AFTER = 60.0  # s: a child that lived this long restarts after the shortest wait
SIGNAL_GRACE = 2.0  # s: a child killed by SIGTERM/SIGINT waits this long for the daemon's stop
POLL = 0.2  # s: how often the supervisor and the children look at their pipes
METRICS_TIMEOUT = 2.0  # s a scrape waits for the children's figures
STOP_TIMEOUT = 40.0  # s the parent waits for a child to stop (workers 10 s + flush 10 s + start)
# Families the parent writes itself: its own age and the cameras it runs over all children.
PARENT_FAMILIES = ("fkvideo_up_seconds", "fkvideo_cameras_running")


# -- messages (parent -> child) -----------------------------------------------------------

@dataclass(frozen=True)
class StartCamera:
    camera: CameraSpec
    run: int  # the parent's number of this run of the camera


@dataclass(frozen=True)
class StopCamera:
    cam_id: str
    run: int


@dataclass(frozen=True)
class MetricsRequest:
    seq: int


@dataclass(frozen=True)
class Shutdown:
    pass


# -- messages (child -> parent) -----------------------------------------------------------

@dataclass(frozen=True)
class CameraEnded:
    """The run's worker is no longer running: stopped on request, its file ended, it failed,
    or it could not be started (``refused``, with the ``error``)."""

    cam_id: str
    run: int
    error: str | None = None
    refused: bool = False  # make_worker/start raised: the manager starts it again next poll


@dataclass(frozen=True)
class MetricsReply:
    seq: int
    text: str  # the child's /metrics (Prometheus text)


# -- pure rules ---------------------------------------------------------------------------

def pick_process(cameras: Sequence[int]) -> int:
    """The index of the process with the fewest cameras (the lowest index on ties)."""
    if not cameras:
        raise ValueError("no camera process to pick from")
    return min(range(len(cameras)), key=lambda i: (cameras[i], i))


def auto_processes(cameras: int, cores: int) -> int:
    """``camera-processes=auto``: one per CAMERAS_PER_PROCESS cameras, 1..cores."""
    return max(1, min(max(cores, 1), math.ceil(cameras / CAMERAS_PER_PROCESS)))


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "no exit code"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def merge_expositions(texts: Iterable[str], skip: Iterable[str] = PARENT_FAMILIES
                      ) -> list[Metric]:
    """The families of several /metrics texts as one set: samples of a family name from every
    text together; the same series (name and labels) in several texts is summed (per-camera
    series never are: a camera runs in one child); families named in ``skip`` are left out."""
    skipped = set(skip)
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], Any]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name in skipped:
                continue
            merged = families.setdefault(
                family.name, Metric(family.name, family.documentation, family.type))
            series = values.setdefault(family.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key in series:
                    series[key] = series[key]._replace(value=series[key].value + sample.value)
                else:
                    series[key] = sample
            merged.samples = list(series.values())
    return list(families.values())


# -- the parent side ----------------------------------------------------------------------

class CameraRun:
    """One run of a camera in its child, as the manager sees it (``manager.Worker``)."""

    _numbers = itertools.count(1)

    def __init__(self, groups: CameraGroups, camera: CameraSpec) -> None:
        self.camera = camera
        self.run = next(self._numbers)
        self.error: str | None = None
        self.refused = False  # its child could not start it: the next poll starts it again
        self.stopping = False  # stop() was called: never started again
        self._groups = groups
        self._ended = threading.Event()

    def start(self) -> CameraRun:
        self._groups.start_camera(self)
        return self

    def stop(self) -> None:
        self._groups.stop_camera(self)

    def join(self, timeout: float | None = None) -> None:
        self._ended.wait(timeout)

    def is_alive(self) -> bool:
        return not self._ended.is_set()

    def ended(self, error: str | None = None, refused: bool = False) -> None:
        self.error, self.refused = error, refused
        self._ended.set()


class ChildSlot:
    """The parent's handle on camera process ``index``: the process, its pipe, its runs."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: Any = None  # multiprocessing Process while it runs
        self.conn: Connection | None = None
        self.runs: dict[str, CameraRun] = {}  # cam_id -> the run to keep going here
        self.restarts = 0
        self.backoff = Backoff(*RESTART_BACKOFF)
        self.started_at = 0.0
        self.restart_at: float | None = None
        self.exposition = ""  # the child's last /metrics
        self.metrics_seq = 0
        self._send_lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def send(self, message: object) -> bool:
        """Send ``message``; False if the child is gone (its death is handled elsewhere)."""
        with self._send_lock:
            if self.conn is None:
                return False
            try:
                self.conn.send(message)
                return True
            except (OSError, ValueError):
                return False

    def cameras(self) -> list[str]:
        return sorted(self.runs)


class CameraGroups:
    """The camera processes of a daemon (see the module docs)."""

    def __init__(self, cfg: DetectorConfig, processes: int | None = None,
                 context: str = "spawn", stopping: threading.Event | None = None) -> None:
        """``stopping``: set when the daemon stops (a signal): a child that ends then (e.g.
        the signal reached it while it was starting) is not restarted."""
        self.cfg = cfg
        self.stopping = stopping if stopping is not None else threading.Event()
        self.processes = cfg.camera_processes if processes is None else processes
        if self.processes != AUTO_PROCESSES and not 1 <= self.processes <= MAX_CAMERA_PROCESSES:
            raise ValueError(f"camera processes must be 'auto' or 1..{MAX_CAMERA_PROCESSES}, "
                             f"got {self.processes}")
        self.slots: list[ChildSlot] = []
        self.home: dict[str, int] = {}  # cam_id -> the slot that runs it (and its poster)
        self._ctx = multiprocessing.get_context(context)
        self._lock = threading.RLock()
        self._metrics = threading.Condition()
        self._metrics_seq = 0
        self._stop = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, name="camera-processes",
                                            daemon=True)

    # -- life cycle ---------------------------------------------------------------
    def start(self) -> CameraGroups:
        with self._lock:
            for _ in range(self.processes if self.processes != AUTO_PROCESSES else 1):
                self._add_slot()
        self._supervisor.start()
        return self

    def stop(self) -> None:
        """Stop every child (each stops its cameras and flushes its posters) and wait."""
        self._stop.set()
        if self._supervisor.is_alive():
            self._supervisor.join()
        with self._lock:
            slots = list(self.slots)
        for slot in slots:
            slot.send(Shutdown())
        deadline = time.monotonic() + STOP_TIMEOUT
        for slot in slots:
            if slot.process is not None:
                slot.process.join(max(0.0, deadline - time.monotonic()))
                if slot.process.is_alive():
                    log.error("camera process %d (pid %d) did not stop in %gs; killed",
                              slot.index, slot.pid, STOP_TIMEOUT)
                    slot.process.kill()
                    slot.process.join(5)
            self._close(slot)
            for run in slot.runs.values():
                run.ended()

    def _add_slot(self) -> ChildSlot:
        slot = ChildSlot(len(self.slots))
        self.slots.append(slot)
        self._spawn(slot)
        return slot

    def _spawn(self, slot: ChildSlot) -> None:
        parent_end, child_end = self._ctx.Pipe()
        process = self._ctx.Process(target=child_main, args=(slot.index, self.cfg, child_end),
                                    name=f"camera-process-{slot.index}")
        process.start()
        child_end.close()  # only the child holds it: its death closes the pipe
        slot.process, slot.conn = process, parent_end
        slot.started_at, slot.restart_at = time.monotonic(), None
        log.info("camera process %d started (pid %d)", slot.index, process.pid)
        for run in slot.runs.values():
            slot.send(StartCamera(run.camera, run.run))

    @staticmethod
    def _close(slot: ChildSlot) -> None:
        with slot._send_lock:
            if slot.conn is not None:
                slot.conn.close()
            slot.conn = None

    # -- cameras (called by the manager through CameraRun) ------------------------
    def worker(self, camera: CameraSpec) -> CameraRun:
        """The manager's ``make_worker``: a bad url is refused here, as in one process."""
        parse_source(camera.url)
        return CameraRun(self, camera)

    def start_camera(self, run: CameraRun) -> None:
        with self._lock:
            slot = self.slots[self._home_of(run.camera.cam_id)]
            slot.runs[run.camera.cam_id] = run
            slot.send(StartCamera(run.camera, run.run))

    def stop_camera(self, run: CameraRun) -> None:
        """Also for a run that ended by itself: its child forgets the worker (and its
        figures), as the manager forgets a removed camera."""
        cam_id = run.camera.cam_id
        with self._lock:
            run.stopping = True
            slot = self.slots[self.home[cam_id]]
            sent = slot.send(StopCamera(cam_id, run.run))
            if slot.runs.get(cam_id) is run and not sent:
                del slot.runs[cam_id]  # the child is gone: nothing runs
                run.ended()

    def _home_of(self, cam_id: str) -> int:
        if cam_id in self.home:
            return self.home[cam_id]
        if self.processes == AUTO_PROCESSES:
            running = sum(len(s.runs) for s in self.slots) + 1
            while len(self.slots) < auto_processes(running, os.cpu_count() or 1):
                self._add_slot()
        self.home[cam_id] = pick_process([len(s.runs) for s in self.slots])
        return self.home[cam_id]

    # -- supervision --------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                live = [s for s in self.slots if s.conn is not None]
            waitables = [s.conn for s in live] + [s.process.sentinel for s in live]
            if waitables:
                wait(waitables, timeout=POLL)
            else:
                self._stop.wait(POLL)
            for slot in live:
                try:
                    self._drain(slot)
                except Exception:  # a bug here must not end the supervision of the others
                    log.exception("camera process %d: reading its messages failed", slot.index)
            self._restart_due()

    def _drain(self, slot: ChildSlot) -> None:
        """Handle the messages ``slot``'s child sent; notice its death."""
        try:
            while slot.conn is not None and slot.conn.poll():
                self._handle(slot, slot.conn.recv())
        except (EOFError, OSError):
            pass
        if slot.process is not None and not slot.process.is_alive():
            self._on_death(slot)

    def _handle(self, slot: ChildSlot, message: object) -> None:
        if isinstance(message, CameraEnded):
            with self._lock:
                run = slot.runs.get(message.cam_id)
                if run is not None and run.run == message.run:
                    del slot.runs[message.cam_id]
                    run.ended(message.error, message.refused)
        elif isinstance(message, MetricsReply):
            with self._metrics:
                slot.exposition, slot.metrics_seq = message.text, message.seq
                self._metrics.notify_all()
        else:
            log.warning("camera process %d: unexpected message %r", slot.index, message)

    def _on_death(self, slot: ChildSlot) -> None:
        if slot.process.exitcode in (-signal.SIGTERM, -signal.SIGINT):
            # A started child ignores them: it was starting when a signal to the whole group
            # came (systemd's stop, Ctrl-C), which the daemon's handler is about to see too.
            self.stopping.wait(SIGNAL_GRACE)
        if self.stopping.is_set():
            self._ended_while_stopping(slot)
            return
        with self._lock:
            self._close(slot)
            lived = time.monotonic() - slot.started_at
            if lived >= HEALTHY_AFTER:
                slot.backoff.reset()
            delay = slot.backoff.next()
            log.error("camera process %d (pid %d) died (%s) after %.0fs; its cameras %s "
                      "restart in it in %.0fs", slot.index, slot.pid,
                      describe_exit(slot.process.exitcode), lived,
                      ", ".join(slot.cameras()) or "(none)", delay)
            slot.process.join(0)
            slot.process = None
            for cam_id, run in list(slot.runs.items()):
                if run.stopping:  # its stop was sent, not answered: it is stopped now
                    del slot.runs[cam_id]
                    run.ended()
            slot.restarts += 1
            slot.restart_at = time.monotonic() + delay
            slot.exposition = ""
        with self._metrics:
            self._metrics.notify_all()

    def _ended_while_stopping(self, slot: ChildSlot) -> None:
        with self._lock:
            self._close(slot)
            log.info("camera process %d (pid %d) ended (%s) while the daemon stops", slot.index,
                     slot.pid, describe_exit(slot.process.exitcode))
            for run in slot.runs.values():
                run.ended()
            slot.runs.clear()
        with self._metrics:
            self._metrics.notify_all()

    def _restart_due(self) -> None:
        """Start again the dead children whose wait is over; one that cannot be started
        (e.g. no memory for a process) is tried again after a longer wait."""
        now = time.monotonic()
        with self._lock:
            for slot in self.slots:
                if slot.process is None and slot.restart_at is not None and \
                        now >= slot.restart_at and not self.stopping.is_set():
                    try:
                        self._spawn(slot)
                    except Exception as exc:
                        delay = slot.backoff.next()
                        slot.restart_at = now + delay
                        log.error("camera process %d could not be started again: %s; next "
                                  "try in %.0fs", slot.index, exc, delay)

    # -- metrics -----------------------------------------------------------------
    def expositions(self, timeout: float = METRICS_TIMEOUT) -> list[str]:
        """Every live child's /metrics, asked now (a child slower than ``timeout``: its
        previous answer)."""
        with self._metrics:
            self._metrics_seq += 1
            seq = self._metrics_seq
        with self._lock:
            asked = [s for s in self.slots if s.send(MetricsRequest(seq))]
        deadline = time.monotonic() + timeout
        with self._metrics:
            while any(s.metrics_seq < seq and s.conn is not None for s in asked):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._metrics.wait(left)
            return [s.exposition for s in asked if s.exposition]

    def process_metrics(self) -> list[Metric]:
        """Per-child series: up, pid, cameras, restarts, and which child runs which camera."""
        up = GaugeMetricFamily("fkvideo_camera_process_up",
                               "1 while the camera process runs", labels=["process"])
        pid = GaugeMetricFamily("fkvideo_camera_process_pid",
                                "The camera process's pid (0 while it is restarted)",
                                labels=["process"])
        cameras = GaugeMetricFamily("fkvideo_camera_process_cameras",
                                    "Cameras assigned to the camera process", labels=["process"])
        restarts = CounterMetricFamily("fkvideo_camera_process_restarts",
                                       "Times the camera process died and was restarted",
                                       labels=["process"])
        where = GaugeMetricFamily("fkvideo_camera_process_of",
                                  "1 for the camera process a camera runs in",
                                  labels=["cam_id", "process"])
        with self._lock:
            for slot in self.slots:
                label = [str(slot.index)]
                up.add_metric(label, float(slot.alive()))
                pid.add_metric(label, float(slot.pid or 0))
                cameras.add_metric(label, float(len(slot.runs)))
                restarts.add_metric(label, float(slot.restarts))
                for cam_id in slot.cameras():
                    where.add_metric([cam_id, str(slot.index)], 1.0)
        return [up, pid, cameras, restarts, where]

    def pids(self) -> list[int]:
        with self._lock:
            return [s.pid for s in self.slots if s.pid is not None]


# -- the child side -----------------------------------------------------------------------

def child_main(index: int, cfg: DetectorConfig, conn: Connection) -> None:
    """Camera process ``index``: runs the cameras its parent sends until told to stop or
    until the pipe closes."""
    import cv2

    from videodetector.detector.cli import Daemon, setup_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group;
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the parent stops its children itself
    setup_logging(cfg.log_level, process=index)
    cv2.setNumThreads(1)  # as the one-process daemon with a camera list
    # a daemon of one process, without a camera list: the parent sends the cameras
    ChildLoop(index, Daemon(replace(cfg, camera_processes=1)), conn).run()


class ChildLoop:
    """A child's main thread: commands in, ended cameras and metrics out."""

    def __init__(self, index: int, daemon: Any, conn: Connection) -> None:
        self.index = index
        self.daemon = daemon  # cli.Daemon: make_worker, workers, posters, registry, _shutdown
        self.conn = conn
        self.runs: dict[str, int] = {}  # cam_id -> run number of its worker
        self.reported: set[str] = set()  # cameras whose end was reported
        self.stopping: dict[str, tuple[int, Any]] = {}  # cam_id -> (run, worker told to stop)
        self.refused: dict[str, CameraSpec] = {}  # cam_id -> the spec last refused (logged)

    def run(self) -> None:
        from videodetector.detector.post.health import HealthReporter

        cfg = self.daemon.cfg
        health = None
        if cfg.health_interval:
            health = HealthReporter(cfg, lambda: dict(self.daemon.workers),
                                    cfg.health_interval).start()
        try:
            for message in self._messages():
                if isinstance(message, Shutdown):
                    log.info("camera process %d: stopping", self.index)
                    break
                self._handle(message)
        finally:
            if health is not None:
                health.stop()
            for _run, worker in self.stopping.values():  # what they post goes first
                worker.join(10)
            self.daemon._shutdown()
            self.conn.close()

    def _messages(self) -> Iterator[object]:
        """The parent's messages; ends when its pipe closes (the parent is gone)."""
        while True:
            try:
                if self.conn.poll(POLL):
                    yield self.conn.recv()
            except (EOFError, OSError):
                log.warning("camera process %d: the daemon is gone; stopping", self.index)
                return
            self._report_ended()

    def _send(self, message: object) -> None:
        try:
            self.conn.send(message)
        except (OSError, ValueError):
            pass  # the parent is gone: _messages notices

    def _handle(self, message: object) -> None:
        if isinstance(message, StartCamera):
            self._start(message)
        elif isinstance(message, StopCamera):
            self._stop(message)
        elif isinstance(message, MetricsRequest):
            from videodetector.detector.status import render_metrics

            self._send(MetricsReply(message.seq, render_metrics(self.daemon.registry)))
        else:
            log.warning("camera process %d: unexpected message %r", self.index, message)

    def _start(self, message: StartCamera) -> None:
        cam_id = message.camera.cam_id
        self._forget(cam_id)
        self.runs[cam_id] = message.run
        self.reported.discard(cam_id)
        try:
            self.daemon.make_worker(message.camera).start()
        except Exception as exc:  # e.g. its spool is locked: the other cameras go on
            self._log_refused(message.camera, exc)
            self.daemon.workers.pop(cam_id, None)
            self.reported.add(cam_id)
            self._send(CameraEnded(cam_id, message.run, str(exc), refused=True))
            return
        self.refused.pop(cam_id, None)

    def _log_refused(self, camera: CameraSpec, exc: Exception) -> None:
        """ERROR once per spec, as ``CameraManager._start`` in one process: the parent's
        manager sends it again on every poll until it starts (later tries: DEBUG)."""
        cam_id = camera.cam_id
        level = logging.ERROR if self.refused.get(cam_id) != camera else logging.DEBUG
        self.refused[cam_id] = camera
        log.log(level, "not started: %s", exc, extra={"cam_id": cam_id})

    def _stop(self, message: StopCamera) -> None:
        """Tell a camera's worker to stop (its end is reported by ``_report_ended``, so
        several cameras stop at once); its poster goes on delivering its spool, as in one
        process. A stop of an older run (the camera was started again since) is ignored."""
        if self.runs.get(message.cam_id) != message.run:
            return
        self.refused.pop(message.cam_id, None)  # removed or changed: a new refusal is logged
        worker = self.daemon.workers.pop(message.cam_id, None)
        if worker is None:
            self._send(CameraEnded(message.cam_id, message.run))
            return
        worker.stop()
        self.stopping[message.cam_id] = (message.run, worker)

    def _forget(self, cam_id: str) -> None:
        """Before ``cam_id`` starts again here: its previous worker, if any, has ended."""
        previous = [self.daemon.workers.pop(cam_id, None),
                    self.stopping.pop(cam_id, (0, None))[1]]
        for worker in previous:
            if worker is not None:
                worker.stop()
                worker.join(10)

    def _report_ended(self) -> None:
        for cam_id, (run, worker) in list(self.stopping.items()):
            if not worker.is_alive():
                del self.stopping[cam_id]
                self._send(CameraEnded(cam_id, run, worker.error))
        for cam_id, worker in list(self.daemon.workers.items()):
            if cam_id not in self.reported and not worker.is_alive():
                self.reported.add(cam_id)
                self._send(CameraEnded(cam_id, self.runs.get(cam_id, 0), worker.error))
