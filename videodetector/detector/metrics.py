"""Per-camera figures for the status endpoint, gathered from workers, readers and posters
at scrape time (``DaemonCollector``), plus the daemon's latency histograms (``timing``).

Everything is a prometheus_client metric family; ``status.render_metrics`` renders them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from videodetector.detector.camera import CAMERA_STATES
from videodetector.detector.groups import CameraGroups, merge_expositions
from videodetector.detector.pipeline import SKIP_REASONS
from videodetector.detector.post.poster import DROP_REASONS

if TYPE_CHECKING:
    from videodetector.detector.cli import Daemon

_KINDS = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily}

# (metric name, help, kind, how to read it from (worker, reader stats, poster stats))
_CAMERA_METRICS = (
    ("fkvideo_fps_in", "Frames per second decoded (EWMA)", "gauge",
     lambda w, r, p: r.fps_in if r else 0.0),
    ("fkvideo_fps_processed", "Frames per second through the face pipeline (EWMA)", "gauge",
     lambda w, r, p: w.counters.fps_processed),
    ("fkvideo_frames_in_total", "Frames decoded", "counter",
     lambda w, r, p: r.frames_in if r else 0),
    ("fkvideo_frames_processed_total", "Frames through the face pipeline", "counter",
     lambda w, r, p: w.pipeline_stats.frames),
    ("fkvideo_frames_dropped_total", "Frames dropped because the camera fell behind", "counter",
     lambda w, r, p: r.dropped if r else 0),
    ("fkvideo_motion_ratio", "Share of processed frames with motion (detector ran)", "gauge",
     lambda w, r, p: w.pipeline_stats.motion_frames / max(1, w.pipeline_stats.frames)),
    ("fkvideo_faces_detected_total", "Faces found by the detector", "counter",
     lambda w, r, p: w.pipeline_stats.faces_detected),
    ("fkvideo_tracks_total", "Face tracks started", "counter",
     lambda w, r, p: w.pipeline_stats.tracks_started),
    ("fkvideo_snapshots_total", "Snapshots chosen for posting", "counter",
     lambda w, r, p: w.pipeline_stats.snapshots),
    *(
        (name, help_, "counter", lambda w, r, p, field=field: getattr(w.pipeline_stats, field))
        for field, name, help_ in (
            ("motion_frames", "fkvideo_motion_frames_total",
             "Processed frames with motion (fkvideo_motion_ratio's numerator)"),
            ("detector_runs", "fkvideo_detector_runs_total",
             "Face detector runs (whole frame, regions or tracked faces)"),
            ("region_runs", "fkvideo_detector_region_runs_total",
             "Detector runs on crops of the frame (--detect-regions)"),
            ("face_runs", "fkvideo_detector_face_runs_total",
             "Detector runs on the tracked faces' crops only, between whole-frame searches"),
            ("gone_rechecks", "fkvideo_gone_rechecks_total",
             "Quiet re-checks left out: every tracked face's box was outside the frame"),
            ("tracked_skips", "fkvideo_tracked_skips_total",
             "Moving frames left to the tracker without a detector run (--detect-period)"),
            ("search_skips", "fkvideo_search_skips_total",
             "Moving frames not searched again for new faces (--search-period)"),
            ("suppressed_uniq", "fkvideo_snapshots_suppressed_total",
             "Snapshots not posted: too like recent posts nearby (--post-uniq)"),
        )
    ),
    ("fkvideo_posts_ok_total", "Snapshots delivered", "counter", lambda w, r, p: p.get("ok", 0)),
    ("fkvideo_posts_failed_total", "Snapshots refused by the backend (4xx)", "counter",
     lambda w, r, p: p.get("failed", 0)),
    ("fkvideo_posts_spooled_total",
     "Snapshots written to the on-disk spool (write-ahead: every accepted one)", "counter",
     lambda w, r, p: p.get("spooled", 0)),
    ("fkvideo_spool_items", "Snapshots waiting in the spool", "gauge",
     lambda w, r, p: p.get("spool_len", 0)),
    ("fkvideo_spool_dropped_total", "Snapshots dropped by the spool size bound", "counter",
     lambda w, r, p: p.get("spool_dropped", 0)),
    ("fkvideo_post_queue_items",
     "Snapshots held in memory because the spool cannot be written (bounded by --post-queue)",
     "gauge", lambda w, r, p: p.get("queue_len", 0)),
    ("fkvideo_spool_write_errors_total", "Failed writes to the spool (e.g. disk full)",
     "counter", lambda w, r, p: p.get("spool_write_errors", 0)),
    ("fkvideo_spool_writable", "1 if the last write to the spool worked, 0 if it failed",
     "gauge", lambda w, r, p: p.get("spool_ok", 1)),
    ("fkvideo_reconnects_total", "Stream reconnects", "counter",
     lambda w, r, p: r.reconnects if r else 0),
    ("fkvideo_pipeline_crashes_total", "Pipeline crashes (the camera was restarted)", "counter",
     lambda w, r, p: w.counters.crashes),
    ("fkvideo_sink_frames_total", "Frames written to --sink-url (this run)", "counter",
     lambda w, r, p: w.sink.frames_written if w.sink else 0),
    ("fkvideo_sink_dropped_total", "Frames --sink-url dropped (slow or unreachable server)",
     "counter", lambda w, r, p: w.sink.dropped if w.sink else 0),
    ("fkvideo_sink_reconnects_total", "Attempts to reopen the --sink-url stream", "counter",
     lambda w, r, p: w.sink.reconnects if w.sink else 0),
    ("fkvideo_last_frame_timestamp_seconds", "Unix time of the last decoded frame", "gauge",
     lambda w, r, p: r.last_frame_time if r else 0.0),
    ("fkvideo_source_consecutive_failures",
     "Failed attempts to read a live source since it last delivered a frame", "gauge",
     lambda w, r, p: r.consecutive_failures if r else 0),
    ("fkvideo_source_looks_permanent",
     "1 while a live source has failed so often in a row that it looks permanently unusable",
     "gauge", lambda w, r, p: r.looks_permanent if r else 0),
    ("fkvideo_files_incomplete_total", "Files that ended early (truncated or damaged)",
     "counter", lambda w, r, p: w.counters.files_incomplete),
    ("fkvideo_snapshots_salvaged_total", "Snapshots a crashed pipeline held, posted after it",
     "counter", lambda w, r, p: w.counters.salvaged),
)


def _family(name: str, help_: str, kind: str, labels: list[str],
            values: dict[tuple[str, ...], float]) -> Metric:
    """A gauge or counter family with one sample per label-value tuple (in sorted order)."""
    if kind not in _KINDS:
        raise ValueError(f"metric {name}: kind must be gauge or counter, got {kind!r}")
    family = _KINDS[kind](name, help_, labels=labels)
    for label_values, value in sorted(values.items()):
        family.add_metric(list(label_values), float(value))
    return family


def _labelled_metrics(rows: list) -> list[Metric]:
    """The per-camera metrics with a second label: skipped faces by reason, camera state."""
    skipped: dict = {}
    states: dict = {}
    for cam_id, w, _, _ in rows:
        for reason in SKIP_REASONS:
            skipped[(cam_id, reason)] = w.pipeline_stats.faces_skipped.get(reason, 0)
        current = w.state
        for state in CAMERA_STATES:
            states[(cam_id, state)] = state == current
    return [
        _family("fkvideo_faces_skipped_total",
                "Faces skipped because they could not be scored or snapshotted, by reason",
                "counter", ["cam_id", "reason"], skipped),
        _family("fkvideo_camera_state", "1 for the state the camera is in (failed: it stopped "
                "for good, e.g. a rot/roi outside the frame)", "gauge", ["cam_id", "state"],
                states),
    ]


def collect_metrics(daemon: Daemon) -> list[Metric]:
    """Every metric family of ``daemon``'s /metrics, read now."""
    rows = []
    # In camera-list mode only the cameras the manager still runs are reported: a removed
    # camera's figures must not linger with stale values (its histograms neither).
    workers = daemon.manager.workers if daemon.manager is not None else daemon.workers
    for cam_id, worker in list(workers.items()):
        reader = worker.reader.stats() if worker.reader is not None else None
        poster = daemon.posters[cam_id].stats() if cam_id in daemon.posters else {}
        rows.append((cam_id, worker, reader, poster))
    metrics = [
        _family(name, help_, kind, ["cam_id"], {(c,): get(w, r, p) for c, w, r, p in rows})
        for name, help_, kind, get in _CAMERA_METRICS
    ]
    metrics.append(posts_dropped_metric({c: p for c, _w, _r, p in rows}))
    metrics += _labelled_metrics(rows)
    metrics += daemon_gauges(daemon, workers)
    metrics += camera_histograms(daemon, {c for c, *_ in rows})
    return metrics


def daemon_gauges(daemon: Daemon, workers: dict) -> list[Metric]:
    """The daemon-wide series: cameras with a live worker (of ``workers``), seconds since
    start. Written by the daemon's process itself also when its cameras run in children
    (``groups.PARENT_FAMILIES``)."""
    return [GaugeMetricFamily("fkvideo_cameras_running", "Cameras with a live worker",
                              value=sum(w.is_alive() for w in list(workers.values()))),
            GaugeMetricFamily("fkvideo_up_seconds", "Seconds since start",
                              value=time.time() - daemon.started_at)]


def camera_histograms(daemon: Daemon, cameras: set[str]) -> list[Metric]:
    """The daemon's histograms (stage times, detector and post latency), only for
    ``cameras``."""
    out = []
    for histogram in daemon.histograms.all:
        for family in histogram.collect():
            family.samples = [s for s in family.samples if s.labels.get("cam_id") in cameras]
            out.append(family)
    return out


class DaemonCollector(Collector):
    """Registered in the daemon's own ``CollectorRegistry``; reads the figures per scrape."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[Metric]:
        yield from collect_metrics(self.daemon)


class GroupsCollector(Collector):
    """The /metrics of a daemon whose cameras run in child processes (--camera-processes):
    the children's families merged (each camera's series once, from the child that runs
    it), the daemon's own process-wide series, and one series per child (up, pid, cameras,
    restarts; ``fkvideo_camera_process_of{cam_id, process}``)."""

    def __init__(self, daemon: Daemon, groups: CameraGroups) -> None:
        self.daemon = daemon
        self.groups = groups

    def collect(self) -> Iterator[Metric]:
        yield from merge_expositions(self.groups.expositions())
        workers = self.daemon.manager.workers if self.daemon.manager is not None else {}
        yield from daemon_gauges(self.daemon, workers)
        yield from self.groups.process_metrics()


def posts_dropped_metric(poster_stats: dict[str, dict[str, int]]) -> Metric:
    """``fkvideo_posts_dropped_total{cam_id, reason}`` from each camera's ``Poster.stats()``."""
    return _family(
        "fkvideo_posts_dropped_total",
        "Snapshots lost before they reached the spool, by reason (spool_unwritable: the spool "
        "refused them and the memory queue was full; at_stop: still in memory at stop)",
        "counter", ["cam_id", "reason"],
        {(cam_id, reason): stats.get(f"dropped_{reason}", 0)
         for cam_id, stats in poster_stats.items() for reason in DROP_REASONS},
    )
