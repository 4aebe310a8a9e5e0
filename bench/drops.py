"""The pipeline on frames a reader under overload would deliver: some dropped, indexes kept.

    python bench/drops.py [--clips indoor,mpf,region] [--patterns none,1/2,2/3,burst] [--out F]

Decodes each clip offline and hands ``FacePipeline`` only the frames a drop pattern keeps,
with their decode ``index`` and ``pts`` as ``FrameReader`` numbers them (a dropped frame
uses its index up, so the gap between two delivered frames is the frames dropped + 1):
``none`` keeps every frame; ``k/n`` drops k of every n (``1/2``: every other frame);
``burst`` keeps runs of 4-12 frames and drops bursts of 4-8; ``jitter`` drops 0-2 frames
after each frame kept, at random (as a reader whose consumer's frames cost unequal times);
``jitter:S``/``burst:S`` take another seed S (7 by default). Prints per clip
and pattern: frames processed, detector runs (per 100 processed frames), tracks started,
snapshots posted and the thread CPU of ``process`` per processed frame (decoding excluded).
Compare two trees by running it under each (``PYTHONPATH=<tree>``) with ``--out``, then
``--compare A.json B.json``. Truth (../shared/data/README.md): mpf_video_01 shows 5 people;
the region clip one face from frame ~31; the indoor scene (bench_detector.indoor_clip, 16 s)
its walkers (6 in 16 s).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import _env_omp1  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHARED = {"mpf": "clips_faces/mpf_video_01.mp4",
          "region": "clips_faces/mpf_ff-region-face-motion.avi"}
PATTERNS = ("none", "1/2", "2/3", "burst", "jitter")


def kept(pattern: str, seed: int = 7) -> Iterator[bool]:
    """Whether each successive frame is delivered under ``pattern`` (see the module doc)."""
    if pattern == "none":
        while True:
            yield True
    name, _, given = pattern.partition(":")
    rng = random.Random(int(given) if given else seed)
    if name == "burst":
        while True:
            yield from [True] * rng.randint(4, 12)
            yield from [False] * rng.randint(4, 8)
    if name == "jitter":
        while True:
            yield True
            yield from [False] * rng.randint(0, 2)
    k, n = (int(v) for v in pattern.split("/"))
    if not 0 <= k < n:
        raise ValueError(f"pattern k/n needs 0 <= k < n, got {pattern!r}")
    while True:
        yield True
        yield from [True] * (n - k - 1) + [False] * k


def run(path: Path, pattern: str, extra: Sequence[str] = ()) -> dict:
    """One pass over ``path`` under ``pattern``: counts, posts and CPU of ``process``."""
    from videodetector.core.models import YuNetDetector
    from videodetector.detector.config import parse_config
    from videodetector.detector.pipeline import CameraSpec, FacePipeline
    from videodetector.detector.video.source import open_video, parse_source

    cfg = parse_config(["--source", str(path), "--camid", "c1", "--api-url", "127.0.0.1:9",
                        "--api-token", "t", *extra])
    pipe = FacePipeline(cfg, CameraSpec("c1", str(path), cfg.roi, cfg.rot), YuNetDetector(),
                        live=False)
    snaps, cpu, keep = [], 0.0, kept(pattern)
    with open_video(parse_source(str(path))) as stream:
        for frame in stream:
            if not next(keep):
                continue
            c0 = time.thread_time()
            snaps += pipe.process(frame)
            cpu += time.thread_time() - c0
    snaps += pipe.finish()
    st = pipe.stats
    return {"frames": st.frames, "runs": st.detector_runs, "tracks": st.tracks_started,
            "snapshots": len(snaps), "cpu_ms": round(cpu / max(st.frames, 1) * 1e3, 3),
            "posts": [[s.track_id, s.position] for s in snaps]}


def clip_paths(names: Sequence[str], data: Path) -> dict[str, Path]:
    paths = {}
    for name in names:
        if name == "indoor":
            from bench_detector import indoor_clip

            paths[name] = indoor_clip(16.0)
        elif (data / SHARED[name]).is_file():
            paths[name] = data / SHARED[name]
        else:
            print(f"skipped {name}: {data / SHARED[name]} is absent", file=sys.stderr)
    return paths


def compare(a: dict, b: dict) -> None:
    print("| clip | drops | frames | runs A -> B | tracks A -> B | posts A -> B "
          "| ms CPU/frame A -> B |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for key, ra in a.items():
        rb = b[key]
        clip, pattern = key.split(" ")
        print(f"| {clip} | {pattern} | {ra['frames']} | {ra['runs']} -> {rb['runs']} | "
              f"{ra['tracks']} -> {rb['tracks']} | {ra['snapshots']} -> {rb['snapshots']} | "
              f"{ra['cpu_ms']} -> {rb['cpu_ms']} |")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--clips", default="indoor,mpf,region")
    p.add_argument("--patterns", default=",".join(PATTERNS))
    p.add_argument("--out", type=Path, help="write the results here (JSON)")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"))
    p.add_argument("extra", nargs="*", help="detector options (after --)")
    args = p.parse_args(argv)
    if args.compare:
        compare(*(json.loads(f.read_text()) for f in args.compare))
        return 0
    names = [c for c in args.clips.split(",") if c]
    unknown = set(names) - {"indoor", *SHARED}
    if unknown:
        p.error(f"unknown clip(s): {', '.join(sorted(unknown))}")
    results = {}
    for name, path in clip_paths(names, args.data).items():
        for pattern in args.patterns.split(","):
            r = results[f"{name} {pattern}"] = run(path, pattern, args.extra)
            print(f"{name} {pattern}: {r['frames']} frames, {r['runs']} runs, {r['tracks']} "
                  f"tracks, {r['snapshots']} posts, {r['cpu_ms']} ms CPU/frame", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
