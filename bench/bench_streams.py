"""How many 720p 25 fps cameras one machine runs in realtime without dropping frames.

Run from the project root (about 2-4 minutes):

    python bench/bench_streams.py [--seconds 20] [--max-streams 6]

This is the daemon's realtime path, not a model of it: for N = 1, 2, 3, ... it runs N
``CameraWorker`` threads at once (``videodetector/detector/camera.py``, one per camera, as
``fkvideo_detector`` does in camera-list mode), each reading a ``file@25:<clip>`` source
through ``FrameReader`` (paced at 25 fps like a live camera; when the worker falls behind
and the reader's 8-frame queue is full, the newest frame is dropped and counted) into a
``FacePipeline`` with one onnxruntime thread (the daemon's setting for several cameras),
posting snapshots through the real ``Poster`` to a local dummy HTTP receiver that answers
200 to everything. Options are the daemon's defaults (``-r 0``, motion gate on,
md-threshold 0.002); add fkvideo options with ``--detector-args``.

Input: "a typical indoor clip, motion gating on": the synthetic 1280x720 25 fps indoor
clip of bench_detector.py (a static room; every 8 s three faces walk across it for 4 s, so
faces are present half of the time, up to 3 at once). Each camera gets its own clip
(other face photos, schedule shifted by 2.9 s per camera) so the cameras do not peak in
lockstep.

Per N: frames in (decoded by the readers), processed (went through the pipeline), dropped
(discarded by the readers), drop %, CPU % (process CPU time / wall time / cores, so 100 %
is the whole machine), CPU ms per processed camera-frame, and "daemon ms/frame": the same for
the daemon's threads only (camera, reader, poster, native pools from /proc/self/task; not the
bench's receiver and main thread). The answer is the largest N whose drop rate is below
0.5 %; the run stops at the first N above it. As the daemon with a camera list, OpenCV runs
with one thread, and the tracker's modules are imported once before the first N (the
daemon's start-up, not a per-frame cost). ``--inline`` also processes each N's clips one
after another in the main thread (decode + pipeline, no reader thread, no pacing, no other
camera: bench_detector's way) and prints the daemon's ms/frame minus that baseline: what
running N cameras at once costs per camera-frame.

``--profile`` also prints, per N, the CPU per camera-frame by thread group (camera threads:
the pipeline; reader threads: decoding; native pools: FFmpeg/onnxruntime threads; poster)
from /proc/self/task, "unpolled" (the process's CPU that no polled thread accounts for:
threads that came and went between two polls, such as the swscale pool PyAV started per
conversion before pixels.Scaler), and per pipeline stage in the camera threads' own CPU time. On a
loaded machine use ``--offline``: every camera reads its whole clip unpaced (decoded in one
thread, as a paced camera is), so the same frames are processed whatever the load and the
CPU per camera-frame compares between runs; drops mean nothing there. See also
``streams_capacity.py`` (cameras per host from those CPU costs).

``--camera-processes P`` runs each N's cameras as ``fkvideo_detector --camera-processes P``
does: through the daemon's camera processes (``detector/groups.py``: P spawned children,
each camera in the one with the fewest), one camera list config (no per-camera options).
The clock starts once every camera has processed a frame (the children's start-up is not
counted); frames, drops and detector runs are read from the children's /metrics, CPU % and
ms/frame are the children's CPU (/proc/<pid>/stat, all their threads). "RSS MB" is the
resident memory of the daemon's processes at the end of the run (without P: this process,
with the bench's receiver; with P: the children's sum) and "RSS MB/camera" that over N.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import _env_omp1  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)
import cv2
import numpy as np
from _proc import process_cpu, rss_mb
from bench_detector import format_table, indoor_clip, machine_line
from prometheus_client.parser import text_string_to_metric_families

from videodetector.core.models import YuNetDetector
from videodetector.detector.camera import CameraWorker
from videodetector.detector.cli import opencv_threads
from videodetector.detector.config import parse_config
from videodetector.detector.groups import CameraGroups
from videodetector.detector.pipeline import CameraSpec, FacePipeline, PipelineStats
from videodetector.detector.post.poster import Poster
from videodetector.detector.post.spool import Spool
from videodetector.detector.preload import import_tracker_modules
from videodetector.detector.timing import STAGES, DetectorHistograms
from videodetector.detector.video.source import open_video, parse_source

DROP_LIMIT = 0.5  # percent
FPS = 25


# ---------------------------------------------------------------------------
# a receiver that accepts every post
# ---------------------------------------------------------------------------

class _Accept(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.posts += 1  # type: ignore[attr-defined]
        body = b'{"results": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class Receiver:
    """A local HTTP server answering 200 to every POST, in a background thread."""

    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Accept)
        self.httpd.daemon_threads = True
        self.httpd.posts = 0  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def posts(self) -> int:
        return self.httpd.posts  # type: ignore[attr-defined]

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------------------
# CPU accounting (--profile)
# ---------------------------------------------------------------------------

def thread_cpu() -> dict[int, float]:
    """CPU seconds (user + sys) of every thread of this process, by native thread id
    (Linux /proc; empty elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out: dict[int, float] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended meanwhile
        fields = stat[stat.rindex(b")") + 2:].split()
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def watch_threads(busy: Callable[[], bool], every: float = 0.2
                  ) -> tuple[dict[int, float], dict[int, str]]:
    """Poll :func:`thread_cpu` while ``busy()``: the last CPU seen of every thread (threads
    that ended keep theirs, less at most ``every`` s) and the Python threads' names."""
    seen: dict[int, float] = {}
    names: dict[int, str] = {}
    while True:
        names.update({th.native_id: th.name for th in threading.enumerate() if th.native_id})
        seen.update(thread_cpu())
        if not busy():
            return seen, names
        time.sleep(every)


def daemon_cpu(groups: dict[str, float]) -> float:
    """CPU seconds of the daemon's own threads (all groups but :data:`BENCH_GROUPS`)."""
    return sum(cpu for group, cpu in groups.items() if group not in BENCH_GROUPS)


# Thread groups that are the bench's own work, not the daemon's: the receiver's request
# threads and the main thread (which polls /proc/self/task).
BENCH_GROUPS = ("other Python",)


def thread_group(name: str) -> str:
    """The accounting group of a Python thread name: reader (decode, pacing, queue), camera
    (the pipeline: motion, detection, tracking, best frame, snapshots), poster, other (the
    bench's receiver and main thread)."""
    for prefix, group in (("reader-", "reader"), ("cam-", "camera"), ("poster", "poster")):
        if name.startswith(prefix):
            return group
    return "other Python"


def cpu_by_group(before: dict[int, float], after: dict[int, float],
                 names: dict[int, str]) -> dict[str, float]:
    """CPU seconds per group between two :func:`thread_cpu` snapshots; threads without a
    Python name are native pools (FFmpeg decoder threads, onnxruntime)."""
    groups: dict[str, float] = {}
    for tid, cpu in after.items():
        group = thread_group(names[tid]) if tid in names else "native pools"
        groups[group] = groups.get(group, 0.0) + cpu - before.get(tid, 0.0)
    return groups


class ThreadClock:
    """The ``time`` module, except that ``perf_counter`` is the calling thread's CPU time:
    set as the pipeline's and the pixels' ``time`` (``--profile``), their stage timers
    measure CPU, not wall time stretched by waits for a loaded CPU or for the GIL."""

    perf_counter = staticmethod(time.thread_time)

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


def time_stages_in_cpu() -> None:
    """Make the per-frame stage timers measure thread CPU time (see :class:`ThreadClock`).
    The decode stage stays wall time: FFmpeg's own threads do most of that work."""
    from videodetector.detector import pipeline
    from videodetector.detector.video import pixels

    pipeline.time = pixels.time = ThreadClock()  # type: ignore[assignment]


def stage_seconds(histograms: DetectorHistograms) -> dict[str, float]:
    """Seconds observed per pipeline stage (summed over cameras) plus the detector call."""
    out: dict[str, float] = {}
    for metric in histograms.stage.collect():
        for sample in metric.samples:
            if sample.name.endswith("_sum"):
                stage = sample.labels["stage"]
                out[stage] = out.get(stage, 0.0) + sample.value
    for metric in histograms.detector.collect():
        out["detector call"] = sum(s.value for s in metric.samples if s.name.endswith("_sum"))
    return out


def print_profile(n: int, processed: int, frames_in: int, groups: dict[str, float],
                  stages: dict[str, float], process_cpu: float | None = None) -> None:
    """ms of CPU per camera-frame by thread group and by stage (see time_stages_in_cpu).
    ``process_cpu``: the process's CPU seconds over the run; what no polled thread accounts
    for is shown as "unpolled" (threads that started and ended between two polls, e.g. a
    pool started per call)."""
    per = 1000.0 / max(processed, 1)
    total = sum(groups.values())
    if process_cpu is not None:
        groups = {**groups, "unpolled": max(0.0, process_cpu - total)}
        total = max(total, process_cpu)
    print(f"  N={n} CPU per processed camera-frame: {total * per:.2f} ms "
          f"({1000 * total / max(frames_in, 1):.2f} ms per decoded frame)", flush=True)
    for group, cpu in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"    {group:<14} {cpu * per:6.2f} ms CPU/frame", flush=True)
    print("    stages (camera thread CPU ms per processed frame; decode: wall ms):", flush=True)
    for stage in (*STAGES, "detector call"):
        print(f"      {stage:<14} {stages.get(stage, 0.0) * per:6.2f}", flush=True)


def print_runs(stats: Sequence[PipelineStats], processed: int) -> None:
    """Detector runs per 100 camera-frames, by kind: on the whole frame, on crops
    (--detect-regions; of them on the tracked faces only), and the quiet re-checks left out
    because every tracked face had walked out of the frame."""
    total = {key: sum(getattr(s, key, 0) for s in stats)  # (0: a tree without the counter)
             for key in ("detector_runs", "region_runs", "face_runs", "gone_rechecks")}
    per = 100.0 / max(processed, 1)
    whole = total["detector_runs"] - total["region_runs"]
    print(f"    detector runs per 100 camera-frames: {total['detector_runs'] * per:.1f} "
          f"(whole frame {whole * per:.1f}, crops {total['region_runs'] * per:.1f}, of them "
          f"faces only {total['face_runs'] * per:.1f}); re-checks left out (faces gone) "
          f"{total['gone_rechecks'] * per:.1f}", flush=True)


# ---------------------------------------------------------------------------
# one N
# ---------------------------------------------------------------------------

@dataclass
class StreamsRow:
    streams: int
    seconds: float
    frames_in: int
    processed: int
    dropped: int
    drop_pct: float
    cpu_pct: float
    fps_per_stream: float
    detector_runs: int
    posted: int
    load: float
    cpu_ms_per_frame: float  # process CPU (user + sys) per processed camera-frame
    # the daemon's threads only (cameras, readers, poster, native pools): without the bench's
    # receiver and main thread
    daemon_ms_per_frame: float
    rss_mb: float = 0.0  # resident memory of the daemon's processes at the end of the run
    rss_mb_per_camera: float = 0.0
    processes: int = 1  # --camera-processes (1: the cameras in this process)


def run_streams(n: int, clips: Sequence[Path], receiver: Receiver, seconds: float,
                extra: Sequence[str], spool_root: Path, profile: bool = False,
                offline: bool = False) -> StreamsRow:
    """Run ``n`` cameras for ``seconds``; count frames decoded, processed and dropped.
    ``profile``: also print CPU per camera-frame by thread group and time by stage.
    ``offline``: read the clips unpaced to their end instead (no drops, every frame
    processed whatever the load: the CPU per camera-frame of the same frames every run)."""
    load = os.getloadavg()[0]
    if offline:  # unpaced, but decoded as a paced source is (one thread) unless told
        threads = [] if "--decoder-threads" in extra else ["--decoder-threads", "1"]
        extra = [*extra, "--realtime-pacing", "0", *threads]
    histograms = DetectorHistograms()
    workers: list[CameraWorker] = []
    posters: list[Poster] = []
    for i in range(n):
        cam_id = f"cam{i + 1}"
        source = f"file@{FPS}:{clips[i % len(clips)]}"
        cfg = parse_config(["--source", source, "--camid", cam_id, "--api-url", receiver.url,
                            "--api-token", "bench", "--spool-dir", str(spool_root / cam_id),
                            "--log-level", "WARNING", *extra])
        detector = YuNetDetector(threads=1)
        detector.detect(np.zeros((360, 640, 3), np.uint8))  # warm-up before the clock starts
        poster = Poster(cfg, spool=Spool(cfg.spool_dir, cfg.spool_max_bytes))
        poster.start()
        posters.append(poster)
        camera = CameraSpec(cam_id, source, cfg.roi, cfg.rot)
        workers.append(CameraWorker(cfg, camera, lambda d=detector: d, poster,
                                    timers=histograms.for_camera(cam_id)))
    posts0 = receiver.posts
    t = os.times()
    threads0 = thread_cpu()
    cpu0, t0 = t.user + t.system, time.monotonic()
    for w in workers:
        w.start()
    if offline:
        threads1, names = watch_threads(lambda: any(w.is_alive() for w in workers))
    else:  # polled all along: a thread that ends during the run keeps its CPU
        until = time.monotonic() + seconds
        threads1, names = watch_threads(lambda: time.monotonic() < until)
    for w in workers:
        w.stop()
    for w in workers:
        w.join(10)
    wall = time.monotonic() - t0
    t = os.times()
    cpu = t.user + t.system - cpu0
    for p in posters:
        p.stop(timeout=5)
    frames_in = dropped = processed = runs = 0
    for w in workers:
        if w.error:
            print(f"  {w.camera.cam_id}: error: {w.error}", flush=True)
        stats = w.reader.stats() if w.reader is not None else None
        frames_in += stats.frames_in if stats else 0
        dropped += stats.dropped if stats else 0
        processed += w.pipeline_stats.frames
        runs += w.pipeline_stats.detector_runs
    groups = cpu_by_group(threads0, threads1, names)
    if profile:
        print_profile(n, processed, frames_in, groups, stage_seconds(histograms), cpu)
        print_runs([w.pipeline_stats for w in workers], processed)
    cores = host_cores()
    rss = rss_mb()
    return StreamsRow(
        streams=n, seconds=round(wall, 1), frames_in=frames_in, processed=processed,
        dropped=dropped, drop_pct=round(100 * dropped / max(frames_in, 1), 2),
        cpu_pct=round(100 * cpu / wall / (cores or 1), 1),
        fps_per_stream=round(processed / wall / n, 1), detector_runs=runs,
        posted=receiver.posts - posts0, load=round(load, 2),
        cpu_ms_per_frame=round(1000 * cpu / max(processed, 1), 2),
        daemon_ms_per_frame=round(1000 * daemon_cpu(groups) / max(processed, 1), 2),
        rss_mb=round(rss, 1), rss_mb_per_camera=round(rss / n, 1),
    )


def host_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


# the per-camera counters summed over the cameras (from the children's /metrics)
GROUP_COUNTERS = {"frames_in": "fkvideo_frames_in_total", "dropped": "fkvideo_frames_dropped_total",
                  "processed": "fkvideo_frames_processed_total",
                  "runs": "fkvideo_detector_runs_total"}


def group_counters(groups: CameraGroups) -> tuple[dict[str, float], set[str]]:
    """(GROUP_COUNTERS summed over the cameras, cameras with a processed frame)."""
    totals = dict.fromkeys(GROUP_COUNTERS, 0.0)
    names = {metric: key for key, metric in GROUP_COUNTERS.items()}
    started: set[str] = set()
    for text in groups.expositions(timeout=10):
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in names:
                    totals[names[sample.name]] += sample.value
                if sample.name == "fkvideo_frames_processed_total" and sample.value > 0:
                    started.add(sample.labels["cam_id"])
    return totals, started


def run_streams_in_processes(n: int, clips: Sequence[Path], receiver: Receiver, seconds: float,
                             extra: Sequence[str], spool_root: Path, processes: int
                             ) -> StreamsRow:
    """``n`` cameras through the daemon's camera processes (``--camera-processes``): the
    same figures as :func:`run_streams`, counted from when every camera has processed a
    frame, with the children's CPU."""
    load = os.getloadavg()[0]
    cfg = parse_config(["--detector-name", "bench", "--api-url", receiver.url,
                        "--api-token", "bench", "--spool-dir", str(spool_root / f"n{n}"),
                        "--log-level", "WARNING", "--health-interval", "0",
                        "--camera-processes", str(processes), *extra])
    groups = CameraGroups(cfg).start()
    try:
        runs = [groups.worker(CameraSpec(f"cam{i + 1}", f"file@{FPS}:{clips[i % len(clips)]}"))
                .start() for i in range(n)]
        deadline = time.monotonic() + 120
        while len(group_counters(groups)[1]) < n and time.monotonic() < deadline:
            time.sleep(0.5)
        before, _ = group_counters(groups)
        pids = groups.pids()
        cpu0, posts0, t0 = sum(map(process_cpu, pids)), receiver.posts, time.monotonic()
        time.sleep(seconds)
        after, _ = group_counters(groups)
        cpu, wall = sum(map(process_cpu, pids)) - cpu0, time.monotonic() - t0
        rss = sum(rss_mb(pid) for pid in pids)
        posted = receiver.posts - posts0
        for run in runs:
            run.stop()
    finally:
        groups.stop()
    got = {key: int(after[key] - before[key]) for key in GROUP_COUNTERS}
    processed = max(got["processed"], 1)
    return StreamsRow(
        streams=n, seconds=round(wall, 1), frames_in=got["frames_in"],
        processed=got["processed"], dropped=got["dropped"],
        drop_pct=round(100 * got["dropped"] / max(got["frames_in"], 1), 2),
        cpu_pct=round(100 * cpu / wall / host_cores(), 1),
        fps_per_stream=round(got["processed"] / wall / n, 1), detector_runs=got["runs"],
        posted=posted, load=round(load, 2), cpu_ms_per_frame=round(1000 * cpu / processed, 2),
        daemon_ms_per_frame=round(1000 * cpu / processed, 2), rss_mb=round(rss, 1),
        rss_mb_per_camera=round(rss / n, 1), processes=processes,
    )


class GilProbe:
    """A thread that sleeps ``PROBE_SLEEP`` s over and over and records how much later than
    asked it runs Python again: the wait for the GIL (and for a core) that every thread has
    after a call that released it (an OpenCV, onnxruntime, PyAV or numpy call). With many
    threads in pure Python between such calls, each waits up to the switch interval."""

    PROBE_SLEEP = 0.001
    # the same sleeper in another process for ``seconds``: how late a thread wakes without
    # the GIL (the wait for a core alone), at the same time
    OTHER_PROCESS = (
        "import sys, time\n"
        "end, lags = time.monotonic() + float(sys.argv[1]), []\n"
        "while time.monotonic() < end:\n"
        "    t0 = time.perf_counter(); time.sleep(0.001)\n"
        "    lags.append(time.perf_counter() - t0 - 0.001)\n"
        "print(' '.join(map(str, lags)))\n"  # at the end: a full pipe would stop it
    )

    def __init__(self, seconds: float) -> None:
        self.lags: list[float] = []
        self.seconds = seconds
        self.other_lags: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gil-probe", daemon=True)
        self._other: subprocess.Popen[str] | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            time.sleep(self.PROBE_SLEEP)
            self.lags.append(time.perf_counter() - t0 - self.PROBE_SLEEP)

    def __enter__(self) -> GilProbe:
        self._other = subprocess.Popen(
            [sys.executable, "-c", self.OTHER_PROCESS, str(self.seconds)],
            stdout=subprocess.PIPE, text=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._other is not None:
            out, _ = self._other.communicate(timeout=self.seconds + 30)
            self.other_lags = [float(v) for v in out.split()]

    @staticmethod
    def _lateness(lags: list[float]) -> str:
        if not lags:
            return "no samples"
        ms = np.percentile(np.array(lags) * 1000, [50, 90, 99])
        return (f"{len(lags)} wake-ups, late by p50 {ms[0]:.2f} / p90 {ms[1]:.2f} / "
                f"p99 {ms[2]:.2f} ms")

    def summary(self) -> str:
        return (f"{self._lateness(self.lags)}; in another process at the same time: "
                f"{self._lateness(self.other_lags)}")


def inline_ms_per_frame(clips: Sequence[Path], extra: Sequence[str]) -> tuple[float, int]:
    """(CPU ms per frame, frames) of ``clips`` decoded and processed one after another in
    this thread (bench_detector's way: no reader thread, no pacing, no other camera; one
    decoder thread, as a paced camera decodes; snapshots are made, not posted). The N-camera
    rows' ``daemon ms/frame`` minus this is what running N cameras at once costs. Only this
    thread's CPU is counted: with ``--opencv-threads`` > 1 the pool's share is left out."""
    frames = 0
    cpu = 0.0
    for i, clip in enumerate(clips):
        cfg = parse_config(["--source", str(clip), "--camid", f"inline{i}", "--api-url",
                            "127.0.0.1:9", "--api-token", "bench", "-r", "0", *extra])
        detector = YuNetDetector(threads=1)
        detector.detect(np.zeros((360, 640, 3), np.uint8))
        pipe = FacePipeline(cfg, CameraSpec(f"inline{i}", str(clip), cfg.roi, cfg.rot),
                            detector, live=False)
        t0 = time.thread_time()
        with open_video(parse_source(str(clip)), threads=1) as stream:
            for frame in stream:
                pipe.process(frame)
                frames += 1
        pipe.finish()
        cpu += time.thread_time() - t0
    return 1000 * cpu / max(frames, 1), frames


COLUMNS = (
    ("streams", "N", ">"), ("seconds", "seconds", ">"), ("frames_in", "frames in", ">"),
    ("processed", "processed", ">"), ("dropped", "dropped", ">"), ("drop_pct", "drop %", ">"),
    ("cpu_pct", "CPU %", ">"), ("fps_per_stream", "fps/stream", ">"),
    ("detector_runs", "detector runs", ">"), ("posted", "posts", ">"),
    ("cpu_ms_per_frame", "CPU ms/frame", ">"), ("daemon_ms_per_frame", "daemon ms/frame", ">"),
    ("rss_mb", "RSS MB", ">"), ("rss_mb_per_camera", "RSS MB/camera", ">"),
    ("processes", "processes", ">"), ("load", "load before", ">"),
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="run time per N (20)")
    p.add_argument("--max-streams", type=int, default=6, help="largest N tried (6)")
    p.add_argument("--min-streams", type=int, default=1, help="first N tried (1)")
    p.add_argument("--detector-args", default="",
                   help="extra fkvideo_detector options, e.g. '-r 1 --rescale-height 480'")
    p.add_argument("--keep-going", action="store_true",
                   help="try every N up to --max-streams even after drops")
    p.add_argument("--profile", action="store_true",
                   help="print CPU per camera-frame by thread group and time by stage")
    p.add_argument("--offline", action="store_true",
                   help="CPU per camera-frame: each camera reads its whole clip unpaced, so "
                        "the same frames are processed whatever the load (implies --profile)")
    p.add_argument("--opencv-threads", type=int, default=0,
                   help="OpenCV's threads (0: as the daemon with a camera list, i.e. 1); to "
                        "compare, e.g. 2 = OpenCV's default on 2 cores")
    p.add_argument("--inline", action="store_true",
                   help="also process each N's clips one after another in one thread (no "
                        "reader, no pacing): the baseline of the multi-camera overhead")
    p.add_argument("--switch-interval", type=float, default=0.0,
                   help="sys.setswitchinterval in ms (0: Python's 5 ms); a shorter one tells "
                        "a GIL hand-off latency (convoy) from a saturated GIL")
    p.add_argument("--camera-processes", type=int, default=0,
                   help="run the cameras in P child processes as fkvideo_detector "
                        "--camera-processes P does (0: all in this process, as the daemon's "
                        "default)")
    p.add_argument("--gil-probe", action="store_true",
                   help="also run a thread that sleeps 1 ms over and over and print how late "
                        "it wakes (its wait for the GIL and a core), per N")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    if args.switch_interval < 0:
        raise ValueError(f"--switch-interval must be >= 0, got {args.switch_interval!r}")
    if not 0 <= args.camera_processes <= 64:
        raise ValueError(f"--camera-processes must be 0..64, got {args.camera_processes!r}")
    if args.camera_processes and (args.profile or args.offline or args.inline
                                  or args.gil_probe):
        raise ValueError("--camera-processes: not with --profile, --offline, --inline or "
                         "--gil-probe (they measure threads of this process)")


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark; print and return {"machine", "rows", "answer", "table"}."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    extra = args.detector_args.split()
    check_args(args)
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval / 1000)
    if args.profile or args.offline:
        time_stages_in_cpu()
    # As the daemon with a camera list: OpenCV with one thread, and the tracker's modules
    # imported once at start (a paced camera waits for them before it opens its source).
    # Imported inside the first N's clock, they added ~1 ms per camera-frame to that row.
    cv_threads = args.opencv_threads or opencv_threads(camera_list=True)
    if cv_threads is not None:
        cv2.setNumThreads(cv_threads)
    import_tracker_modules().join()
    print(f"# bench_streams: {machine_line()}; switch interval "
          f"{sys.getswitchinterval() * 1000:g} ms", flush=True)
    print(f"# input: synthetic 1280x720 {FPS} fps indoor clips (faces half of the time), "
          f"motion gating on; fkvideo options: defaults {' '.join(extra)}".rstrip(), flush=True)
    # the file must outlast the run (with --camera-processes, also the children's start-up)
    clip_seconds = args.seconds + (30 if args.camera_processes else 4)
    clips = [indoor_clip(clip_seconds, variant=v) for v in range(args.max_streams)]
    rows: list[StreamsRow] = []
    answer = 0
    with Receiver() as receiver, tempfile.TemporaryDirectory(prefix="bench-spool-") as spool:
        for n in range(args.min_streams, args.max_streams + 1):
            with GilProbe(args.seconds) if args.gil_probe else contextlib.nullcontext() as probe:
                if args.camera_processes:
                    row = run_streams_in_processes(n, clips, receiver, args.seconds, extra,
                                                   Path(spool), args.camera_processes)
                else:
                    row = run_streams(n, clips, receiver, args.seconds, extra, Path(spool),
                                      args.profile or args.offline, args.offline)
            if probe is not None:
                print(f"  N={n} GIL probe (1 ms sleeps): {probe.summary()}", flush=True)
            rows.append(row)
            if args.inline:
                ms, frames = inline_ms_per_frame(clips[:n], extra)
                print(f"  N={n} inline (one thread, clip after clip, {frames} frames): "
                      f"{ms:.2f} ms CPU/frame; daemon ms/frame minus inline: "
                      f"{row.daemon_ms_per_frame - ms:+.2f}", flush=True)
            print(f"  N={n}: {row.frames_in} in, {row.processed} processed, {row.dropped} "
                  f"dropped ({row.drop_pct} %), CPU {row.cpu_pct} %", flush=True)
            if args.offline:
                continue
            if row.drop_pct < DROP_LIMIT:
                answer = max(answer, n)
            elif not args.keep_going:
                break
            time.sleep(1.0)
    table = format_table([asdict(r) for r in rows], COLUMNS)
    print()
    print(table)
    print(f"\nlargest N with drops < {DROP_LIMIT} %: {answer} camera(s) of 1280x720 @ {FPS} fps")
    print(f"# load average at the end: {os.getloadavg()[0]:.2f}", flush=True)
    return {"machine": machine_line(), "rows": [asdict(r) for r in rows], "answer": answer,
            "table": table}


if __name__ == "__main__":
    main()
