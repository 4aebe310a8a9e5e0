"""Where ``face_quality``'s CPU goes, per face, part by part, on real faces; former vs now.

Run from the project root (about 30 s):

    python bench/quality_cost.py [--frames 40] [--rounds 7] [--clips mpf,region,grid]

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
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import _env_omp1  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)
import cv2
import numpy as np
from _env import ROOT

from tests.core.quality import quality_former as former
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
        from videodetector.core.quality.align import aligned_grey_crop, checked_points
    except ImportError:
        return out
    grey8 = {k: g.astype(np.uint8) for k, g in greys.items()}
    out["now: similarity x2"] = lambda f: (now_similarity(f[2], crop),
                                           now_similarity(f[2], crop))
    out["now: aligned crop"] = lambda f: aligned_grey_crop(
        f[0], checked_points(f[2]), crop, False)
    out["now: filters"] = lambda f: now.laplacian_ratio(grey8[id(f[2])])
    return out


def now_similarity(landmarks: np.ndarray, size: int) -> np.ndarray:
    from videodetector.core.quality.align import checked_points, similarity

    return similarity(checked_points(landmarks), size)


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


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--clips", default=",".join(CLIPS))
    args = p.parse_args(argv)
    cv2.setNumThreads(1)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
