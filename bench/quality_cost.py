"""Where ``face_quality``'s CPU goes, per face, part by part, on real faces; former vs now.

Run from the project root:

    python bench/quality_cost.py [parts] [--frames 40] [--rounds 7] [--clips mpf,region,grid]
    python bench/quality_cost.py inpipe [--check] [--clips PATH,...]
    python bench/quality_cost.py ab --root OTHER_TREE [--repeat 5] [--clips PATH,...]

``parts`` (about 30 s) is described below. ``inpipe`` plays the clips (default: the nine of
bench/cadence_recall.py) through ``FacePipeline`` offline and times every ``face_quality``
call in it (thread CPU), with ``--check`` also scoring every face with the former code and
counting any QualityScore that differs in a bit (exit status 1 if one does). ``ab`` runs
``inpipe`` in fresh processes alternating this tree and ``--root`` (``PYTHONPATH``) and prints
the lowest figures of each: CPU per ``face_quality`` call and loop CPU per frame.

Faces: the real ``YuNetDetector`` (one onnxruntime thread) run on every other frame of the
first ``--frames`` frames of each shared clip (mpf_video_01: five faces of 25..60 px in
640x480; mpf_ff-region-face-motion: one face; grid_bbaf2n: one large face), boxes, landmarks
and scores as the pipeline hands them to ``face_quality``.

Each part is timed over all the faces of a clip, ``--rounds`` times, alternating the former
code (``tests/core/quality/quality_former.py``: what the tree had before issue 10's quality
round) and this tree's, and the lowest CPU time (``time.thread_time_ns``) of the rounds is
printed as microseconds per face. The parts of the former code:

* ``head_pose``, ``direction_score`` (which ran ``head_pose`` a second time);
* ``similarity x2``: the two SVD-based ``similarity_transform`` estimates the aligned crop made;
* ``aligned crop``: ``aligned_grey_face`` whole (the two estimates, ``np.linalg.det``, the
  warp, the grey conversion and its float32 copy);
* ``filters``: Laplacian, two Sobels, ``var`` and the mean squared gradient, on the crop;
* ``rest``: the whole ``face_quality`` minus head_pose, direction_score, crop and filters
  (input checks, the four ``np.interp`` tables, edge, the dataclass).

Then the whole ``face_quality`` of both, and of this tree its own parts when it has them
(``similarity x2`` and ``aligned crop`` through ``core/quality/align.py``, ``filters`` =
``laplacian_ratio`` on the uint8 crop; its ``head_pose`` runs once). Each part's share is
of its own side's whole. Figures are floors on a shared machine (the load is printed); the
ratio is what counts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import _env_omp1  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)
import cv2
import numpy as np
from _env import ROOT

from videodetector.core.models import TEMPLATE_112
from videodetector.core.quality import score as now

DEFAULT_DATA = ROOT / ".." / "shared" / "data"
CLIPS = {"mpf": "clips_faces/mpf_video_01.mp4",
         "region": "clips_faces/mpf_ff-region-face-motion.avi",
         "grid": "clips_faces/grid_bbaf2n.mpg"}

Face = tuple[np.ndarray, np.ndarray, np.ndarray, float]  # image, xyxy, landmarks, score


def collect_faces(path: Path, frames: int) -> list[Face]:
    """The real detector's faces on every other frame of the first ``frames`` of ``path``."""
    from videodetector.core.models import YuNetDetector
    from videodetector.detector.video.source import open_video, parse_source

    det = YuNetDetector(threads=1)
    faces: list[Face] = []
    with open_video(parse_source(str(path))) as stream:
        for k, frame in enumerate(stream):
            if k >= frames:
                break
            if k % 2:
                continue
            image = np.ascontiguousarray(frame.image)
            dets = det.detect(image)
            faces += [(image, dets.xyxy[i], dets.landmarks[i], float(dets.score[i]))
                      for i in range(len(dets))]
    return faces


def former_filters(grey: np.ndarray) -> float:
    """The filter half of the former ``sharpness_ratio`` (verbatim), on a given crop."""
    lap = cv2.Laplacian(grey, cv2.CV_32F)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1)
    return float(lap.var() / (np.mean(gx**2 + gy**2) + 1.0))


def cpu_us(fn: Callable[[Face], object], faces: Sequence[Face]) -> float:
    """CPU microseconds per face of ``fn`` over ``faces`` (this thread)."""
    t0 = time.thread_time_ns()
    for face in faces:
        fn(face)
    return (time.thread_time_ns() - t0) / 1e3 / len(faces)


def parts(faces: Sequence[Face]) -> dict[str, Callable[[Face], object]]:
    """name -> callable on one face; ``former:`` the former code, ``now:`` this tree."""
    from tests.core.quality import quality_former as former

    crop = former.SHARPNESS_CROP
    greys = {id(f[2]): former.former_aligned_grey_face(f[0], f[2], crop, False) for f in faces}
    tpl = TEMPLATE_112 * (crop / 112.0)
    out: dict[str, Callable[[Face], object]] = {
        "former: head_pose": lambda f: former.former_head_pose(f[2]),
        "former: direction_score": lambda f: former.former_direction_score(f[2]),
        "former: similarity x2": lambda f: (
            former.former_similarity_transform(f[2], tpl),
            former.former_similarity_transform(f[2], tpl)),
        "former: aligned crop": lambda f: former.former_aligned_grey_face(
            f[0], f[2], crop, False),
        "former: filters": lambda f: former_filters(greys[id(f[2])]),
        "former: face_quality": lambda f: former.former_face_quality(*f),
        "now: head_pose": lambda f: now.head_pose(f[2]),
        "now: face_quality": lambda f: now.face_quality(*f),
    }
    try:  # this round's parts (absent from an older tree)
        from videodetector.core.quality.align import aligned_grey_crop
    except ImportError:
        return out
    from videodetector.core.models import check_landmarks

    grey8 = {k: g.astype(np.uint8) for k, g in greys.items()}
    out["now: similarity x2"] = lambda f: (now_similarity(f[2], crop),
                                           now_similarity(f[2], crop))
    out["now: aligned crop"] = lambda f: aligned_grey_crop(
        f[0], check_landmarks(f[2]), crop, False)
    out["now: filters"] = lambda f: now.laplacian_ratio(grey8[id(f[2])])
    return out


def now_similarity(landmarks: np.ndarray, size: int) -> np.ndarray:
    from videodetector.core.models import check_landmarks
    from videodetector.core.quality.align import similarity

    return similarity(check_landmarks(landmarks), size)


def time_clip(faces: Sequence[Face], rounds: int) -> dict[str, float]:
    """Best-of-``rounds`` CPU microseconds per face, every part, interleaved."""
    fns = parts(faces)
    best = dict.fromkeys(fns, float("inf"))
    for fn in fns.values():  # warm-up
        cpu_us(fn, faces[:5])
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = min(best[name], cpu_us(fn, faces))
    best["former: rest"] = best["former: face_quality"] - sum(
        best[f"former: {p}"] for p in ("head_pose", "direction_score", "aligned crop",
                                       "filters"))
    if "now: aligned crop" in best:
        best["now: rest"] = best["now: face_quality"] - sum(
            best[f"now: {p}"] for p in ("head_pose", "aligned crop", "filters"))
    return best


def report(clip: str, faces: Sequence[Face], best: dict[str, float]) -> None:
    sizes = [float(min(f[1][2] - f[1][0], f[1][3] - f[1][1])) for f in faces]
    print(f"\n{clip}: {len(faces)} faces, box shorter side {min(sizes):.0f}..{max(sizes):.0f} "
          f"px (median {np.median(sizes):.0f})")
    total = {who: best[f"{who}: face_quality"] for who in ("former", "now")}
    for name, us in sorted(best.items(), key=lambda kv: (kv[0].split(":")[1], kv[0])):
        share = us / total[name.split(":")[0]] * 100
        print(f"  {name:28s} {us:8.1f} us/face {share:5.1f} %")
    print(f"  former / now face_quality: {total['former'] / total['now']:.2f}x")


def same_bits(a: object, b: object) -> bool:
    """Two QualityScores with every field the same double, bit for bit."""
    return all(struct.pack("<d", x) == struct.pack("<d", y)
               for x, y in zip(dataclasses.astuple(a), dataclasses.astuple(b), strict=True))


def inpipe(data: Path, clips: Sequence[str], check: bool) -> dict[str, dict]:
    """Play ``clips`` through ``FacePipeline`` offline (defaults, one onnxruntime and one
    OpenCV thread, decode included, as bench/cadence_recall.py; the first clip once more
    beforehand, untimed, as a warm-up) timing every
    ``face_quality`` call in it; with ``check``, also score every face with the former code
    and count the QualityScores that differ in any bit (or in the exception raised)."""
    import videodetector.detector.pipeline as pipeline_mod

    former_fq = None
    if check:
        from tests.core.quality.quality_former import former_face_quality as former_fq
    real = pipeline_mod.face_quality
    stats = {"calls": 0, "cpu_ns": 0, "differ": 0}

    def timed(*args: object) -> object:
        t0 = time.thread_time_ns()
        try:
            q = real(*args)
        except Exception as exc:
            stats["cpu_ns"] += time.thread_time_ns() - t0
            stats["calls"] += 1
            if former_fq is not None:
                try:
                    former_fq(*args)
                    stats["differ"] += 1
                except Exception as old:  # noqa: BLE001  (compared, not handled)
                    stats["differ"] += (type(old), str(old)) != (type(exc), str(exc))
            raise
        stats["cpu_ns"] += time.thread_time_ns() - t0
        stats["calls"] += 1
        if former_fq is not None and not same_bits(former_fq(*args), q):
            stats["differ"] += 1
        return q

    pipeline_mod.face_quality = timed
    try:
        return _play(data, clips, stats, check)
    finally:
        pipeline_mod.face_quality = real


def _play(data: Path, clips: Sequence[str], stats: dict, check: bool) -> dict[str, dict]:
    """The clips through ``FacePipeline`` (the first one twice, the first pass untimed);
    ``stats``: what the ``face_quality`` wrapper counts, reset per clip."""
    from videodetector.core.models import YuNetDetector
    from videodetector.detector.config import parse_config
    from videodetector.detector.pipeline import CameraSpec, FacePipeline
    from videodetector.detector.video.source import open_video, parse_source

    out = {}
    for k, rel in enumerate([clips[0], *clips]):
        path = data / rel
        if not path.exists():
            continue
        stats.update(calls=0, cpu_ns=0, differ=0)
        cfg = parse_config(["--source", str(path), "--camid", "c1", "--api-url",
                            "127.0.0.1:9", "--api-token", "t"])
        pipe = FacePipeline(cfg, CameraSpec("c1", str(path), cfg.roi, cfg.rot),
                            YuNetDetector(), live=False)
        c0 = time.process_time()
        with open_video(parse_source(str(path))) as stream:
            for frame in stream:
                pipe.process(frame)
        pipe.finish()
        if k == 0:  # the first clip twice: the first pass warms onnxruntime, caches, pages
            continue
        out[path.name] = {"frames": pipe.stats.frames, "loop_cpu_s": time.process_time() - c0,
                          "calls": stats["calls"], "quality_cpu_s": stats["cpu_ns"] / 1e9,
                          "differ": stats["differ"] if check else None}
    return out


def ab(root: Path, data: Path, clips: Sequence[str], repeat: int) -> None:
    """``inpipe`` in fresh processes, alternating this tree and ``root``; lowest figures."""
    trees = {"this tree": str(ROOT), f"{root}": str(root)}
    best: dict[str, dict[str, dict[str, float]]] = {t: {} for t in trees}
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    for _ in range(repeat):
        for label, tree in trees.items():
            env = {**os.environ, "PYTHONPATH": tree}
            res = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "inpipe", "--json",
                 "--data", str(data), "--clips", ",".join(clips)],
                env=env, capture_output=True, text=True, check=True)
            for clip, r in json.loads(res.stdout.strip().splitlines()[-1]).items():
                b = best[label].setdefault(clip, {"loop": math.inf, "quality": math.inf})
                b["loop"] = min(b["loop"], r["loop_cpu_s"] * 1e3 / r["frames"])
                b["quality"] = min(b["quality"], r["quality_cpu_s"] * 1e6 / max(r["calls"], 1))
                b["calls"], b["frames"] = r["calls"], r["frames"]
    print(f"load average after: {os.getloadavg()[0]:.2f}  (best of {repeat} per tree)")
    print("| clip | tree | frames | face_quality calls | us per call | loop CPU ms/frame |")
    print("|---|---|---:|---:|---:|---:|")
    for clip in best["this tree"]:
        for label in trees:
            b = best[label][clip]
            print(f"| {clip} | {label} | {b['frames']} | {b['calls']} | {b['quality']:.0f} | "
                  f"{b['loop']:.2f} |")


def parts_main(args: argparse.Namespace) -> None:
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    for key in args.clips.split(","):
        path = args.data / CLIPS[key]
        if not path.exists():
            print(f"{key}: {path} absent, skipped")
            continue
        faces = collect_faces(path, args.frames)
        if not faces:
            print(f"{key}: no faces")
            continue
        report(path.name, faces, time_clip(faces, args.rounds))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", nargs="?", default="parts", choices=["parts", "inpipe", "ab"])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--frames", type=int, default=40, help="parts: frames read per clip")
    p.add_argument("--rounds", type=int, default=7, help="parts: timing rounds")
    p.add_argument("--clips", default=None,
                   help=f"parts: keys of {list(CLIPS)}; inpipe/ab: paths under --data "
                        "(default: bench/cadence_recall.py's nine clips)")
    p.add_argument("--check", action="store_true",
                   help="inpipe: also compare every face's score with the former code")
    p.add_argument("--json", action="store_true", help="inpipe: one JSON line")
    p.add_argument("--root", type=Path, help="ab: the other tree (e.g. /work/main)")
    p.add_argument("--repeat", type=int, default=5, help="ab: runs per tree")
    args = p.parse_args(argv)
    cv2.setNumThreads(1)
    if args.mode == "parts":
        args.clips = args.clips or ",".join(CLIPS)
        parts_main(args)
        return 0
    from cadence_recall import CLIPS as ALL_CLIPS

    clips = args.clips.split(",") if args.clips else ALL_CLIPS
    if args.mode == "ab":
        if args.root is None:
            p.error("ab needs --root")
        ab(args.root, args.data, clips, args.repeat)
        return 0
    res = inpipe(args.data, clips, args.check)
    if args.json:
        print(json.dumps(res))
        return 0
    for clip, r in res.items():
        print(f"{clip}: {r['frames']} frames, {r['calls']} face_quality calls, "
              f"{r['quality_cpu_s'] * 1e6 / max(r['calls'], 1):.0f} us each, loop "
              f"{r['loop_cpu_s'] * 1e3 / r['frames']:.2f} ms CPU/frame"
              + (f", {r['differ']} differ from the former" if args.check else ""))
    return 1 if args.check and any(r["differ"] for r in res.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
