"""Why the same work costs more CPU when it arrives on a 25 fps clock than back to back.

Run from the project root (about 3-5 minutes on 2 cores):

    python bench/bench_paced.py [--units 75] [--threads 1,2,3,6] [--work yunet,cv2,python]

A controlled experiment behind bench_streams.py's "paced" overhead. A fixed unit of work
(``yunet``: the project's ``YuNetDetector`` (onnxruntime, 1 thread) on a fixed 640x360 image;
``cv2``: grey, AREA downscale and absdiff of a 720p BGR array, a few ms of numpy/OpenCV;
``python``: a pure-Python loop of a few ms) runs in 1..6 threads, each thread its own
detector and arrays (as cameras are), in these modes:

* ``b2b``: every thread runs its units back to back.
* ``paced``: unit i of a thread starts at ``t0 + offset + i * 40 ms`` (threads spread over
  the period, as unsynchronised cameras are); the thread sleeps in between.
* ``paced+spin``: the same, with one ``SCHED_IDLE`` process per CPU spinning on a register
  loop: the vCPUs never go idle (no HLT, no host-side deschedule), yet nothing of ours is
  evicted from the caches in the gaps.
* ``paced+thrash``: the same, but the ``SCHED_IDLE`` processes stream through 64 MB in the
  gaps: the vCPUs never go idle and our data and code are evicted from the caches, as other
  processes of a shared machine do.

Per mode: ``unit CPU`` (the unit's own thread CPU time, ``time.thread_time`` around it,
mean and median), ``unit wall``, ``thread CPU/unit`` (the thread's whole CPU from
``/proc/self/task/<tid>/schedstat``, ns: unit + sleeping/waking + the pacer), ``process
CPU/unit`` (``getrusage``), and context switches per unit. If ``paced`` costs more unit CPU
than ``b2b`` and ``paced+spin`` recovers it, the VM's idle (the vCPU's halt and wake-up) is
the cause; if ``paced+thrash`` costs as much as ``paced``, evicted caches are; if the unit
costs the same but ``thread CPU/unit`` grows, our wake-ups are.

``--handoff``: the same unit behind the project's own ``FrameReader`` (a ``file@25:`` clip
paced like a camera, or read offline: unpaced, the reader blocking on the 8-frame queue)
with the camera thread's ``reader.get(timeout=0.5)`` loop: per frame the reader thread's CPU
(decode, pacer, put) and the camera thread's CPU outside the unit (get, wake-up).

``--convert``: the BGR conversions of decoded 720p frames, PyAV's ``to_ndarray`` (a new
swscale context, with automatic threads, per frame) against the stream's ``pixels.Scaler``.

``--gaps``: one thread, the unit after a gap of 0, 1, 5, 20 and 40 ms, slept or
busy-waited in the thread (interleaved, medians): the unit's CPU as a function of the time
since it last ran, with and without giving the CPU away; and with no gap but the caches
evicted by the thread itself (it writes 64 MB before each unit).

Hardware counters (``perf stat -e cache-misses``) are not available in this VM (``perf``
says "not supported": no virtual PMU), so caches are probed by the spin/thrash fillers.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import _env_omp1  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)
import cv2
import numpy as np

PERIOD = 0.04  # s: 25 fps
MODES = ("b2b", "paced", "paced+spin", "paced+thrash")
WORKS = ("yunet", "cv2", "python")

Unit = Callable[[], object]


# ---------------------------------------------------------------------------
# units of work (each thread makes its own, as each camera has its own)
# ---------------------------------------------------------------------------

def _image(h: int, w: int, seed: int) -> np.ndarray:
    """A fixed, textured BGR image (smooth gradients plus noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = (np.sin(xx / 37.0) + np.cos(yy / 23.0)) * 60 + 128
    img = base[..., None] + rng.normal(0, 12, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_unit(work: str, seed: int = 0) -> Unit:
    """A fixed unit of ``work`` (see the module docs)."""
    if work == "yunet":
        from videodetector.core.models import YuNetDetector

        det = YuNetDetector(threads=1)
        img = _image(360, 640, seed)
        return lambda: det.detect(img)
    if work == "cv2":
        frame = _image(720, 1280, seed)
        prev = cv2.cvtColor(_image(720, 1280, seed + 1), cv2.COLOR_BGR2GRAY)

        def cv2_unit() -> object:
            gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            small = cv2.resize(frame, (640, 360), interpolation=cv2.INTER_AREA)
            diff = cv2.absdiff(gray, prev)
            return int(np.count_nonzero(diff > 20)) + int(small[0, 0, 0])
        return cv2_unit
    if work == "python":
        def python_unit() -> object:
            d: dict[int, int] = {}
            total = 0
            for i in range(12000):
                k = i & 63
                d[k] = d.get(k, 0) + i
                total += k * 3 % 7
            return total
        return python_unit
    raise ValueError(f"unknown work {work!r}; choose from {', '.join(WORKS)}")


# ---------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------

def thread_ns(tid: int) -> int:
    """CPU time of thread ``tid`` of this process in ns (``schedstat``; 0 if unknown)."""
    try:
        with open(f"/proc/self/task/{tid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class Row:
    work: str
    mode: str
    threads: int
    units: int
    unit_cpu_ms: float  # mean of thread_time around the unit
    unit_cpu_median_ms: float
    unit_wall_ms: float
    thread_cpu_ms: float  # per unit: the threads' whole CPU (schedstat)
    process_cpu_ms: float  # per unit: getrusage(RUSAGE_SELF)
    ctx_per_unit: float  # voluntary + involuntary context switches per unit

    def line(self) -> str:
        return (f"| {self.work} | {self.mode} | {self.threads} | {self.units} | "
                f"{self.unit_cpu_ms:.2f} | {self.unit_cpu_median_ms:.2f} | "
                f"{self.unit_wall_ms:.2f} | {self.thread_cpu_ms:.2f} | "
                f"{self.process_cpu_ms:.2f} | {self.ctx_per_unit:.1f} |")


HEADER = ("| work | mode | threads | units | unit CPU ms | median | unit wall ms | "
          "thread CPU ms/unit | process CPU ms/unit | ctx switches/unit |\n"
          "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")


@contextmanager
def fillers(kind: str | None) -> Iterator[None]:
    """One SCHED_IDLE process per CPU: ``spin`` (a register loop) or ``thrash`` (streams
    through 64 MB); they run only when nothing else wants the CPU."""
    if kind is None:
        yield
        return
    body = {
        "spin": "while True:\n    pass",
        "thrash": ("import numpy as np\nb = np.ones(8 << 20)\n"
                   "while True:\n    b += 1.0"),
    }[kind]
    code = ("import os\nos.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n" + body)
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.5)
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def _worker(unit: Unit, paced: bool, units: int, offset: float, start: threading.Barrier,
            t0_box: list[float], out: list[tuple[list[float], list[float], int, int]]) -> None:
    cpu: list[float] = []
    wall: list[float] = []
    tid = threading.get_native_id()
    start.wait()
    t0 = t0_box[0] + offset
    ns0 = thread_ns(tid)
    for i in range(units):
        if paced:
            delay = t0 + i * PERIOD - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        c0, w0 = time.thread_time(), time.perf_counter()
        unit()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    out.append((cpu, wall, thread_ns(tid) - ns0, tid))


def run_mode(work: str, mode: str, n: int, units: int) -> Row:
    """``n`` threads each running ``units`` units of ``work`` in ``mode`` (see MODES)."""
    made = [make_unit(work, seed=k) for k in range(n)]
    for unit in made:  # warm-up: first runs allocate and load
        for _ in range(3):
            unit()
    paced = mode != "b2b"
    kind = mode.split("+")[1] if "+" in mode else None
    out: list[tuple[list[float], list[float], int, int]] = []
    with fillers(kind):
        start = threading.Barrier(n + 1)
        t0_box = [0.0]
        threads = [threading.Thread(target=_worker, args=(u, paced, units, k * PERIOD / n, start,
                                                          t0_box, out))
                   for k, u in enumerate(made)]
        for th in threads:
            th.start()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0_box[0] = time.monotonic() + 0.05
        start.wait()
        for th in threads:
            th.join()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = [c for o in out for c in o[0]]
    wall = [w for o in out for w in o[1]]
    total = n * units
    proc = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    ctx = (r1.ru_nvcsw - r0.ru_nvcsw) + (r1.ru_nivcsw - r0.ru_nivcsw)
    return Row(work, mode, n, total, 1000 * statistics.fmean(cpu),
               1000 * statistics.median(cpu), 1000 * statistics.fmean(wall),
               sum(o[2] for o in out) / 1e6 / total, 1000 * proc / total, ctx / total)


def _spin(seconds: float) -> None:
    """Busy-wait ``seconds`` in this thread (the CPU stays ours: no sleep, no wake-up)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


_EVICT = np.zeros(0)


def _evict(_seconds: float = 0.0) -> None:
    """Write through 64 MB in this thread (more than L2, a good part of a shared L3): what
    the unit left in the caches is gone, and no other process was needed for it."""
    global _EVICT
    if _EVICT.size == 0:
        _EVICT = np.zeros(8 << 20)
    _EVICT += 1.0


GAP_KINDS = {"slept": time.sleep, "busy-waited": _spin, "evicted": _evict}


def run_gaps(work: str, units: int, gaps_ms: Sequence[float]
             ) -> list[tuple[float, dict[str, float]]]:
    """One thread: (gap ms, {kind: unit CPU ms}) medians, for a gap before each unit that
    was slept, busy-waited, or (gap 0 only) spent evicting the caches in this thread;
    interleaved (10 units each in turn) so that a load that changes meanwhile touches all
    alike."""
    unit = make_unit(work)
    for _ in range(3):
        unit()
    cpu: dict[tuple[float, str], list[float]] = {}
    for _ in range(max(1, units // 10)):
        for gap in gaps_ms:
            kinds = ("slept", "busy-waited") if gap else ("slept", "evicted")
            for kind in kinds:
                for _ in range(10):
                    if gap or kind == "evicted":
                        GAP_KINDS[kind](gap / 1000)
                    c0 = time.thread_time()
                    unit()
                    cpu.setdefault((gap, kind), []).append(time.thread_time() - c0)
    return [(gap, {kind: 1000 * statistics.median(v) for (g, kind), v in cpu.items()
                   if g == gap}) for gap in gaps_ms]


# ---------------------------------------------------------------------------
# the project's hand-off: FrameReader -> queue -> camera thread
# ---------------------------------------------------------------------------

@dataclass
class HandoffRow:
    mode: str
    cameras: int
    frames: int
    unit_cpu_ms: float
    camera_outside_ms: float  # camera thread CPU per frame outside the unit
    reader_ms: float  # reader thread CPU per frame (decode, pacer, put)
    dropped: int

    def line(self) -> str:
        return (f"| {self.mode} | {self.cameras} | {self.frames} | {self.unit_cpu_ms:.2f} | "
                f"{self.camera_outside_ms:.3f} | {self.reader_ms:.2f} | {self.dropped} |")


HANDOFF_HEADER = ("| reader | cameras | frames | unit CPU ms | camera thread outside the unit "
                  "ms/frame | reader thread ms/frame | dropped |\n|---|--:|--:|--:|--:|--:|--:|")


def _camera(reader: object, unit: Unit, frames: int, start: threading.Barrier,
            out: list[tuple[float, int, int]]) -> None:
    """The camera thread's loop shape (CameraWorker._consume): get with a timeout, work."""
    from videodetector.detector.video.reader import END

    start.wait()
    tid = threading.get_native_id()
    ns0 = thread_ns(tid)
    in_unit = 0.0
    done = 0
    while done < frames:
        frame = reader.get(timeout=0.5)  # type: ignore[attr-defined]
        if frame is END:
            break
        if frame is None:
            continue
        c0 = time.thread_time()
        frame.gray[::16, ::16].sum()  # touch the decoded picture, as the motion gate does
        unit()
        in_unit += time.thread_time() - c0
        done += 1
    out.append((in_unit, thread_ns(tid) - ns0, done))


def run_handoff(work: str, n: int, frames: int, paced: bool) -> HandoffRow:
    """``n`` cameras: a FrameReader on an indoor clip each (paced at 25 fps, or offline)
    feeding a camera thread that runs ``work`` per frame."""
    from bench_detector import indoor_clip

    from videodetector.detector.video.reader import FrameReader
    from videodetector.detector.video.source import parse_source

    seconds = frames / 25 + 10  # outlasts the run
    clips = [indoor_clip(seconds, variant=k) for k in range(n)]
    units = [make_unit(work, seed=k) for k in range(n)]
    for u in units:
        u()
    readers = [FrameReader(parse_source(f"file@25:{clip}"), realtime=paced, cam_id=f"c{k}",
                           decoder_threads=1) for k, clip in enumerate(clips)]
    out: list[tuple[float, int, int]] = []
    start = threading.Barrier(n)
    cams = [threading.Thread(target=_camera, args=(r, u, frames, start, out))
            for r, u in zip(readers, units, strict=True)]
    reader_ns0 = {}
    for r in readers:
        r.start()
    for th in cams:
        th.start()
    for r in readers:
        tid = r._thread.native_id  # type: ignore[union-attr]
        reader_ns0[tid] = thread_ns(tid)
    for th in cams:
        th.join()
    # (a reader whose file ended is gone: its CPU is unknown, the figure is then a floor)
    reader_ns = sum(max(0, thread_ns(tid) - ns) for tid, ns in reader_ns0.items())
    dropped = sum(r.stats().dropped for r in readers)
    for r in readers:
        r.stop()
    done = sum(o[2] for o in out)
    in_unit = sum(o[0] for o in out)
    cam_ns = sum(o[1] for o in out)
    return HandoffRow("paced" if paced else "offline", n, done, 1000 * in_unit / done,
                      (cam_ns / 1e6 - 1000 * in_unit) / done, reader_ns / 1e6 / done, dropped)


# ---------------------------------------------------------------------------
# BGR conversions: PyAV's per-frame context vs the stream's Scaler (--convert)
# ---------------------------------------------------------------------------

def run_convert(frames: int = 200) -> list[str]:
    """Per decoded 720p frame of the indoor clip (decoded as a paced camera does, and with
    the decoder's automatic threads), the process and thread CPU of the detector-size and
    full-size BGR conversions: PyAV's ``to_ndarray`` (a new swscale context per frame) on
    even frames, the stream's ``Scaler`` on odd ones (interleaved: the same load)."""
    from bench_detector import indoor_clip

    from videodetector.detector.video.source import open_video, parse_source

    clip = indoor_clip(24, variant=0)
    lines = []
    for threads in (1, 0):
        acc: dict[tuple[str, str], list[tuple[float, float]]] = {}
        with open_video(parse_source(str(clip)), threads=threads) as stream:
            for i, frame in enumerate(stream):
                if i >= frames:
                    break
                av_frame = frame.pixels._frame  # type: ignore[attr-defined]
                scaler = frame.pixels.scaler  # type: ignore[attr-defined]
                how = "Scaler" if i % 2 else "PyAV per frame"
                for what in ("detector size", "full size"):
                    t0, p0 = time.thread_time(), time.process_time()
                    if how == "Scaler":
                        (scaler.bgr_at(av_frame, 640, 360) if what == "detector size"
                         else scaler.bgr(av_frame))
                    elif what == "detector size":
                        av_frame.to_ndarray(width=640, height=360, format="bgr24",
                                            interpolation="AREA")
                    else:
                        av_frame.to_ndarray(format="bgr24")
                    acc.setdefault((how, what), []).append(
                        (time.thread_time() - t0, time.process_time() - p0))
                del av_frame
        for (how, what), v in sorted(acc.items()):
            lines.append(f"| {threads or 'auto'} | {how} | {what} | "
                         f"{1000 * statistics.fmean(x[1] for x in v):.2f} | "
                         f"{1000 * statistics.fmean(x[0] for x in v):.2f} |")
    return lines


# ---------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--units", type=int, default=75, help="units per thread and mode (75)")
    p.add_argument("--threads", default="1,2,3,6", help="thread counts (1,2,3,6)")
    p.add_argument("--work", default=",".join(WORKS), help="units of work (yunet,cv2,python)")
    p.add_argument("--modes", default=",".join(MODES), help="modes (" + ",".join(MODES) + ")")
    p.add_argument("--handoff", action="store_true", help="also through FrameReader")
    p.add_argument("--handoff-work", default="cv2", choices=WORKS,
                   help="the unit per frame behind FrameReader (cv2: light enough for 6 "
                        "paced cameras)")
    p.add_argument("--handoff-only", action="store_true", help="only the FrameReader part")
    p.add_argument("--gaps", action="store_true", help="also unit CPU after idle gaps")
    p.add_argument("--convert", action="store_true",
                   help="also BGR conversions: PyAV per frame vs the stream's Scaler")
    args = p.parse_args(argv)
    for name in ("threads",):
        try:
            setattr(args, name, [int(x) for x in getattr(args, name).split(",")])
        except ValueError:
            p.error(f"--{name} must be comma-separated integers, got {getattr(args, name)!r}")
    args.work = args.work.split(",")
    args.modes = args.modes.split(",")
    for m in args.modes:
        if m not in MODES:
            p.error(f"--modes: unknown mode {m!r}")
    if args.units < 5:
        p.error(f"--units must be >= 5, got {args.units}")
    return args


def print_gaps(works: Sequence[str], units: int) -> None:
    print("\n| work | gap before the unit ms | unit CPU ms, slept | busy-waited | "
          "no gap, caches evicted by this thread |\n|---|--:|--:|--:|--:|")
    for work in works:
        for gap, by in run_gaps(work, units, (0, 1, 5, 20, 40)):
            cells = " | ".join(f"{by[k]:.2f}" if k in by else "" for k in GAP_KINDS)
            print(f"| {work} | {gap:g} | {cells} |", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    cv2.setNumThreads(1)  # as the daemon with a camera list
    print(f"# bench_paced: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at start",
          flush=True)
    if not args.handoff_only:
        print(HEADER, flush=True)
        for work in args.work:
            for n in args.threads:
                for mode in args.modes:
                    print(run_mode(work, mode, n, args.units).line(), flush=True)
    if args.gaps:
        print_gaps(args.work, args.units)
    if args.handoff or args.handoff_only:
        print("\n" + HANDOFF_HEADER, flush=True)
        for n in args.threads:
            for paced in (False, True):
                print(run_handoff(args.handoff_work, n, args.units, paced).line(), flush=True)
    if args.convert:
        print("\n| decoder threads | conversion | size | process CPU ms | thread CPU ms |\n"
              "|---|---|---|--:|--:|")
        for line in run_convert():
            print(line, flush=True)
    print(f"# load at the end: {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
