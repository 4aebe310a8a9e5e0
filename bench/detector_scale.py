"""Would YuNet at a lower scale around large tracked faces pay? (issue 10, "lowres" round)

    python bench/detector_scale.py runs [--clips mpf,indoor]
    python bench/detector_scale.py precision
    python bench/detector_scale.py reduce [--clips mpf,indoor] [--floors 32,40,48] [--repeat 5]

``runs``: the offline pipeline (defaults, ``-r 0``, one onnxruntime thread) per detector run
type -- whole frame, crops of ``--detect-regions`` ("region"), crops of the tracked faces
only ("faces") -- with YuNet's input pixels (padded to 32) and CPU per run, the tracked
faces' heights in detector-input pixels, and the share of each type's pixels a rule "a crop
holding only tracked faces whose smallest is h px runs at scale r = max(0.5, min(1, F / h))"
would save for floors F.

``precision``: frames of the GRID clips and the region clip (one large face each, 150-290
detector pixels) detected at the frame's own scale (the reference) and at scales that make
the face H px tall: faces found, landmark shift / inter-ocular distance, detector score and
quality change, SFace cosine of the aligned face (face0) to the reference's, and the change
of its cosine to the person's template (mean reference embedding of the clip's other frames).

``reduce``: the rule above tried without changing the product (the pipeline's
``_run_detector`` wrapped on the instance): every crop of a region or faces-only run that
holds tracked faces wholly, while every face is tracked steadily, is re-aligned to the
32 px grid at scale x r and detected there. CPU per frame (this thread, best of
``--repeat`` interleaved runs; and YuNet's own share), crops reduced, detector runs and
posted (track, frame, quality) per floor; "off" is the unchanged pipeline.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import _env_omp1  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)
import numpy as np
from _env import ROOT

from videodetector.core.detections import clean_detections, concat_detections
from videodetector.core.models import SFaceEmbedder, YuNetDetector, align_face
from videodetector.core.quality.score import face_quality
from videodetector.detector.config import parse_config
from videodetector.detector.pipeline import CameraSpec, FacePipeline
from videodetector.detector.regions import align_region
from videodetector.detector.video.source import open_video, parse_source

DATA = ROOT.parent / "shared" / "data"
FACES = DATA / "clips_faces"
LOWEST = 0.5  # the rule never goes below this fraction of the frame's scale
GRID = 32


def pad(n: float) -> int:
    return -(-round(n) // GRID) * GRID


def clip_paths(names: Sequence[str]) -> dict[str, Path]:
    from bench_detector import indoor_clip

    known = {"mpf": lambda: FACES / "mpf_video_01.mp4",
             "indoor": lambda: indoor_clip(24.0),  # bench_streams' first camera
             "indoor1": lambda: indoor_clip(24.0, variant=1),
             "region": lambda: FACES / "mpf_ff-region-face-motion.avi",
             "grid": lambda: FACES / "grid_bbaf2n.mpg",
             "marathon": lambda: DATA / "clips_smallfaces/mpf_five-second-marathon-clip.mkv",
             "cockatoo": lambda: DATA / "clips_noface/imageio_cockatoo.mp4"}
    return {n: Path(known[n]()) for n in names}


def pipeline(path: Path) -> tuple[FacePipeline, YuNetDetector]:
    cfg = parse_config(["--source", str(path), "--camid", "c1", "--api-url", "127.0.0.1:9",
                        "--api-token", "t", "-r", "0"])
    det = YuNetDetector(threads=1)
    det.detect(np.zeros((360, 640, 3), np.uint8))  # the session's first run is slow
    return FacePipeline(cfg, CameraSpec("c1", str(path), cfg.roi, cfg.rot), det,
                        live=False), det


def timed_yunet(det: YuNetDetector) -> list[float]:
    """Wrap ``det.detect`` on the instance: the returned list gets each call's thread CPU."""
    spent: list[float] = []
    inner = det.detect

    def detect(bgr, scale=None):
        t0 = time.thread_time()
        out = inner(bgr, scale=scale)
        spent.append(time.thread_time() - t0)
        return out

    det.detect = detect  # type: ignore[method-assign]
    return spent


def play(pipe: FacePipeline, path: Path) -> tuple[float, list]:
    """CPU ms per frame (this thread) and the posts of one offline pass."""
    snaps = []
    t0 = time.thread_time()
    with open_video(parse_source(str(path)), threads=1) as stream:
        for frame in stream:
            snaps += pipe.process(frame)
    snaps += pipe.finish()
    ms = 1000 * (time.thread_time() - t0) / max(pipe.stats.frames, 1)
    return ms, [(s.track_id, s.position, round(s.score, 2)) for s in snaps]


def tracked_in(pipe: FacePipeline, image: np.ndarray, sub: tuple[int, int, int, int]
               ) -> tuple[list[np.ndarray], bool]:
    """The tracked boxes (in ``image`` pixels) overlapping ``sub``, and whether all lie in it."""
    factor = pipe._frame_size[0] / image.shape[1]  # no --rot in these runs
    boxes = np.asarray(pipe.tracker.boxes, np.float64).reshape(-1, 4) / factor
    x1, y1, x2, y2 = sub
    part = [b for b in boxes if b[0] < x2 and b[2] > x1 and b[1] < y2 and b[3] > y1]
    inside = all(b[0] >= x1 and b[1] >= y1 and b[2] <= x2 and b[3] <= y2 for b in part)
    return part, inside


def ratio(floor: float, min_height: float) -> float:
    return max(LOWEST, min(1.0, floor / min_height))


# -- runs ----------------------------------------------------------------------------------

def record_runs(path: Path) -> list[dict]:
    pipe, det = pipeline(path)
    crops: list[dict] = []
    inner = pipe._run_detector

    def run(image, subs, scale):
        s = det.input_scale(*image.shape[:2]) if scale is None else scale
        kind = "whole" if subs is None else "faces" if pipe._faces_only else "region"
        whole = [(0, 0, image.shape[1], image.shape[0])]
        t0 = time.thread_time()
        out = inner(image, subs, scale)
        cpu = time.thread_time() - t0
        for sub in subs or whole:
            part, inside = tracked_in(pipe, image, sub)
            crops.append({"kind": kind, "w": (sub[2] - sub[0]) * s, "h": (sub[3] - sub[1]) * s,
                          "heights": [(b[3] - b[1]) * s for b in part], "inside": inside,
                          "cpu": cpu / len(subs or whole), "steady": pipe.tracker.steady})
        return out

    pipe._run_detector = run
    play(pipe, path)
    return crops


def runs_table(name: str, crops: list[dict], floors: Sequence[float]) -> None:
    print(f"\n{name}\n| run type | crops | YuNet px per crop | CPU ms per crop | tracked face h "
          f"(min, median, max) | px saved at F = {', '.join(f'{f:g}' for f in floors)} |")
    print("|---|---:|---:|---:|---|---|")
    for kind in ("whole", "region", "faces"):
        cs = [c for c in crops if c["kind"] == kind]
        if not cs:
            continue
        px = [pad(c["w"]) * pad(c["h"]) for c in cs]
        hs = [h for c in cs for h in c["heights"]]
        saved = []
        for f in floors:
            s = sum(p - pad(c["w"] * r) * pad(c["h"] * r)
                    for c, p in zip(cs, px, strict=True)
                    if c["heights"] and c["inside"]
                    and (r := ratio(f, min(c["heights"]))) < 1)
            saved.append(f"{100 * s / sum(px):.0f} %")
        h3 = "-" if not hs else ", ".join(f"{v:.0f}" for v in np.percentile(hs, [0, 50, 100]))
        cpu = 1000 * np.mean([c["cpu"] for c in cs])
        print(f"| {kind} | {len(cs)} | {np.mean(px):.0f} | {cpu:.2f} | {h3} | {', '.join(saved)} |")


# -- precision -----------------------------------------------------------------------------

def sample_frames(path: Path, every: int = 6, last: int = 72) -> list[np.ndarray]:
    import av

    out = []
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % every == every // 2:
                out.append(f.to_ndarray(format="bgr24"))
            if i >= last:
                break
    return out


def face_at(det: YuNetDetector, emb: SFaceEmbedder, img: np.ndarray, scale: float
            ) -> tuple | None:
    """(landmarks, score, quality, face0 embedding, height in detector px) of the best face."""
    d = det.detect(img, scale=scale)
    if not len(d):
        return None
    j = int(np.argmax(d.score))
    q = face_quality(img, d.xyxy[j], d.landmarks[j], float(d.score[j])).score
    e = emb.embed(align_face(img, d.landmarks[j]))
    return d.landmarks[j], float(d.score[j]), q, e, float(d.xyxy[j][3] - d.xyxy[j][1]) * scale


def precision(heights: Sequence[int]) -> None:
    det, emb = YuNetDetector(threads=1), SFaceEmbedder()
    rows: dict[int, list] = {h: [] for h in heights}
    clips = sorted(FACES.glob("grid_*.mpg")) + [FACES / "mpf_ff-region-face-motion.avi"]
    for path in clips:
        imgs = sample_frames(path)
        refs = [face_at(det, emb, im, det.input_scale(*im.shape[:2])) for im in imgs]
        for k, (img, ref) in enumerate(zip(imgs, refs, strict=True)):
            if ref is None:
                continue
            others = [r[3] for j, r in enumerate(refs) if r is not None and j != k]
            template = np.mean(others, axis=0)
            template /= np.linalg.norm(template)
            lm0, sc0, q0, e0, h0 = ref
            iod = float(np.linalg.norm(lm0[1] - lm0[0]))
            for h in heights:
                got = face_at(det, emb, img, det.input_scale(*img.shape[:2]) * h / h0)
                if got is None:
                    rows[h].append(None)
                    continue
                lm, sc, q, e, _ = got
                rows[h].append((float(np.linalg.norm(lm - lm0, axis=1).mean() / iod), sc - sc0,
                                q - q0, float(e @ e0), float(e @ template - e0 @ template)))
    print("| face h (detector px) | faces | found | landmark shift / IOD (mean, p90) | "
          "det score (mean, min) | quality (mean, min) | face0 cos to reference (mean, min) | "
          "cos to template, change (mean, p10) |")
    print("|---:|---:|---:|---|---|---|---|---|")
    for h in heights:
        found = np.array([r for r in rows[h] if r is not None]).reshape(-1, 5)
        if not len(found):
            continue
        err, dsc, dq, cos, dt = found.T
        print(f"| {h} | {len(rows[h])} | {len(found)} | {err.mean():.3f}, "
              f"{np.percentile(err, 90):.3f} | {dsc.mean():+.3f}, {dsc.min():+.3f} | "
              f"{dq.mean():+.2f}, {dq.min():+.2f} | {cos.mean():.3f}, {cos.min():.3f} | "
              f"{dt.mean():+.3f}, {np.percentile(dt, 10):+.3f} |")


# -- reduce --------------------------------------------------------------------------------

def reduce_rule(pipe: FacePipeline, det: YuNetDetector, floor: float) -> dict[str, int]:
    """Wrap ``pipe._run_detector`` with the rule (see the module docstring); counts crops."""
    counts = {"reduced": 0, "crops": 0}

    def run(image, subs, scale):
        if subs is None:
            return inner(image, subs, scale)
        s = det.input_scale(*image.shape[:2]) if scale is None else scale
        found, dropped = [], 0
        for sub in subs:
            part, inside = tracked_in(pipe, image, sub)
            r = 1.0
            if part and inside and pipe.tracker.steady:
                r = ratio(floor, min(b[3] - b[1] for b in part) * s)
            x1, y1, x2, y2 = sub if r == 1.0 else align_region(
                sub, GRID / (s * r), image.shape[1], image.shape[0])
            counts["crops"] += 1
            counts["reduced"] += r < 1.0
            dets, bad = clean_detections(det.detect(image[y1:y2, x1:x2], scale=s * r),
                                         x2 - x1, y2 - y1)
            found.append(dets.shifted(x1, y1))
            dropped += bad
        pipe.stats.region_runs += 1
        return concat_detections(found), dropped

    inner: Callable = pipe._run_detector
    pipe._run_detector = run
    return counts


def reduce(clips: dict[str, Path], floors: Sequence[float], repeat: int) -> dict:
    """Per clip and floor (None: the rule off): (CPU ms/frame, crop counts, detector runs,
    posts, YuNet CPU ms/frame), each time the best of ``repeat``; also printed."""
    settings: list[float | None] = [None, *floors]
    results = {}
    for name, path in clips.items():
        best: dict = {}
        for _ in range(repeat):
            for f in settings:
                pipe, det = pipeline(path)
                spent = timed_yunet(det)
                counts = {} if f is None else reduce_rule(pipe, det, f)
                ms, posts = play(pipe, path)
                yunet = 1000 * sum(spent) / pipe.stats.frames
                old = best.get(f)
                best[f] = (min(ms, old[0]) if old else ms, counts, pipe.stats.detector_runs,
                           posts, min(yunet, old[4]) if old else yunet)
        print(f"\n{name}: best of {repeat}, load {os.getloadavg()[0]:.1f}")
        print("| floor | CPU ms/frame | YuNet CPU ms/frame | crops reduced | detector runs | "
              "posts (track, frame, quality) |\n|---|---:|---:|---:|---:|---|")
        for f in settings:
            ms, counts, runs, posts, yunet = best[f]
            red = f"{counts['reduced']}/{counts['crops']}" if counts else "-"
            print(f"| {'off' if f is None else f'{f:g}'} | {ms:.2f} | {yunet:.2f} | {red} | "
                  f"{runs} | {posts} |")
        results[name] = best
    return results


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("runs", "precision", "reduce"))
    p.add_argument("--clips", default="mpf,indoor")
    p.add_argument("--floors", default="32,40,48,64")
    p.add_argument("--heights", default="24,32,40,48,64,96,128")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    floors = [float(f) for f in args.floors.split(",")]
    print(f"# load {os.getloadavg()[0]:.1f}, {time.strftime('%H:%M UTC', time.gmtime())}")
    if args.mode == "precision":
        precision([int(h) for h in args.heights.split(",")])
        return {}
    clips = clip_paths(args.clips.split(","))
    if args.mode == "reduce":
        return reduce(clips, floors, args.repeat)
    for name, path in clips.items():
        runs_table(name, record_runs(path), floors)
    return {}


if __name__ == "__main__":
    main()
