"""Where a YuNet call's CPU goes: the fixed cost of a small call, phase by phase.

Run from the project root (about 20 s):

    python bench/yunet_call.py phases [--sizes 160x160,320x192,640x480] [--n 300]
    python bench/yunet_call.py calls [--n 300]
    [PYTHONPATH=TREE] python bench/yunet_call.py inpipe [--clips mpf,indoor]
    python bench/yunet_call.py ab --root OTHER_TREE [--repeat 5]

``phases`` times, per input size and with one onnxruntime thread (as the daemon runs several
cameras), the steps of ``YuNetDetector.detect`` one by one on a crop of a real frame
(mpf_video_01 when ../shared/data is present, else the synthetic indoor clip): the padded
canvas, the float32 NCHW blob, ``session.run`` (the onnxruntime Python binding included),
``get_outputs()``, the per-stride decode, NMS and the lock, as the former ``detect`` did
them (and, when the tree has them, the new ``input_blob``, ``session.run`` on its contiguous
blob and the new decode); "detect" is the tree's whole call. ``calls`` times whole
``detect`` calls per size. Figures are CPU time of this thread (``time.thread_time_ns``),
the median of ``--n`` repetitions after a warm-up: onnxruntime with one intra-op thread runs
in the calling thread, so this is the call's whole CPU.

``inpipe`` plays clips through ``FacePipeline`` (defaults, ``-r 0``, decode included, as
bench/detector_scale.py does) and times every YuNet call inside it: the whole ``detect`` and
its ``session.run``, with the input's padded pixels. It prints the CPU per frame, per call,
a least-squares fit ms = a + b * kpx of ``session.run`` (a: the fixed cost the graph itself
has per call, cold caches included) and what ``detect`` spends around ``session.run``.
``PYTHONPATH=TREE`` imports ``videodetector`` from another checkout (e.g. a worktree of main):
``_env`` keeps PYTHONPATH entries first.

``ab`` runs ``inpipe`` in fresh processes, alternating this tree and ``--root``, ``--repeat``
times each, and prints the lowest figure of each (on a shared machine the slower runs are the
disturbed ones) with the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import _env_omp1  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)
import cv2
import numpy as np
from _env import ROOT

from tests.core.yunet_former import former_decode
from videodetector.core import models
from videodetector.core.models import YuNetDetector, nms

DEFAULT_DATA = ROOT / ".." / "shared" / "data"
MPF = "clips_faces/mpf_video_01.mp4"


def read_frame(path: Path, index: int = 30) -> np.ndarray | None:
    """Frame ``index`` of the clip at ``path`` (its last one if shorter), None if unreadable."""
    cap = cv2.VideoCapture(str(path))
    frame = None
    for _ in range(index + 1):
        ok, img = cap.read()
        if not ok:
            break
        frame = img
    cap.release()
    return frame


def real_frame(data: Path, index: int = 30) -> np.ndarray:
    """Frame ``index`` of mpf_video_01 (640x480, faces), else a 720p frame of noise."""
    frame = read_frame(data / MPF, index) if (data / MPF).is_file() else None
    if frame is not None:
        return frame
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (720, 1280, 3), np.uint8)


def cpu_ms(fn: Callable[[], object], n: int) -> float:
    """Median thread CPU time of ``fn`` in ms over ``n`` calls (after 5 warm-up calls)."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(n):
        t0 = time.thread_time_ns()
        fn()
        times.append(time.thread_time_ns() - t0)
    return statistics.median(times) / 1e6


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """"160x160,320x192" -> [(160, 160), (320, 192)] as (width, height)."""
    sizes = []
    for part in text.split(","):
        w, h = (int(v) for v in part.lower().split("x"))
        if w < 32 or h < 32:
            raise ValueError(f"sizes must be at least 32x32, got {part!r}")
        sizes.append((w, h))
    return sizes


def crop_of(frame: np.ndarray, w: int, h: int) -> np.ndarray:
    """A ``w`` x ``h`` crop of ``frame`` (tiled when the frame is smaller)."""
    reps = (-(-h // frame.shape[0]), -(-w // frame.shape[1]), 1)
    big = np.tile(frame, reps) if reps != (1, 1, 1) else frame
    return np.ascontiguousarray(big[:h, :w])


def phases(det: YuNetDetector, img: np.ndarray, n: int) -> dict[str, float]:
    """CPU ms of each step of the original (main's) detect, done one by one."""
    h, w = img.shape[:2]
    ch, cw = -(-h // 32) * 32, -(-w // 32) * 32
    sess = det._session  # noqa: SLF001 - a bench of the private steps

    def canvas() -> np.ndarray:
        c = np.zeros((ch, cw, 3), np.uint8)
        c[:h, :w] = img
        return c

    cv = canvas()
    blob = cv.transpose(2, 0, 1)[None].astype(np.float32)
    outs = sess.run(None, {"input": blob})
    names = [o.name for o in sess.get_outputs()]
    out = dict(zip(names, outs, strict=True))
    lock = threading.Lock()

    def locked() -> None:
        with lock:
            pass

    def decode() -> tuple:
        return former_decode(det, out, ch, cw)

    boxes, scores, _ = decode()
    new: dict[str, float] = {}
    if hasattr(models, "input_blob"):  # this tree's steps (not in main's)
        buf = models.input_blob(img, ch, cw, np.empty(0, np.float32))[1]
        contiguous = np.ascontiguousarray(blob)
        new = {"input_blob": cpu_ms(lambda: models.input_blob(img, ch, cw, buf), n),
               "run_contiguous": cpu_ms(lambda: sess.run(None, {"input": contiguous}), n),
               "decode_new": cpu_ms(lambda: det._decode(out, ch, cw), n)}  # noqa: SLF001
    xyxy = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)
    sc = np.concatenate(scores) if scores else np.zeros(0, np.float32)
    return {
        "canvas": cpu_ms(canvas, n),
        "blob": cpu_ms(lambda: cv.transpose(2, 0, 1)[None].astype(np.float32), n),
        "run": cpu_ms(lambda: sess.run(None, {"input": blob}), n),
        "get_outputs": cpu_ms(lambda: [o.name for o in sess.get_outputs()], n),
        "decode": cpu_ms(decode, n),
        "nms": cpu_ms(lambda: nms(xyxy, sc, det.nms_threshold), n),
        "lock": cpu_ms(locked, n),
        "detect": cpu_ms(lambda: det.detect(img, scale=1.0), n),
        **new,
        "faces": float(len(sc)),
    }


class TimedSession:
    """Stands in for an onnxruntime session: ``run`` records (padded pixels, thread CPU s)."""

    def __init__(self, session: object) -> None:
        self._session = session
        self.runs: list[tuple[int, float]] = []

    def run(self, names, feeds, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        blob = next(iter(feeds.values()))
        t0 = time.thread_time_ns()
        out = self._session.run(names, feeds, *args, **kwargs)
        self.runs.append((int(blob.shape[2] * blob.shape[3]), (time.thread_time_ns() - t0) / 1e9))
        return out

    def __getattr__(self, name: str) -> object:
        return getattr(self._session, name)


def inpipe(clips: list[str]) -> dict[str, dict[str, float]]:
    """Per clip: CPU ms per frame, YuNet calls, detect and session.run CPU per call, fit."""
    from detector_scale import clip_paths, pipeline, play, timed_yunet

    results = {}
    for name, path in clip_paths(clips).items():
        pipe, det = pipeline(path)
        timed = TimedSession(det._session)  # noqa: SLF001
        det._session = timed  # type: ignore[assignment]  # noqa: SLF001
        spent = timed_yunet(det)
        timed.runs.clear()
        ms, posts = play(pipe, path)
        frames = max(pipe.stats.frames, 1)
        px = np.array([r[0] for r in timed.runs], float) / 1000
        run_s = np.array([r[1] for r in timed.runs])
        per_kpx, fixed = np.polyfit(px, run_s * 1000, 1) if len(px) > 1 else (0.0, 0.0)
        res = {"frames": frames, "ms_per_frame": ms, "calls": len(spent),
               "yunet_ms_per_frame": 1000 * sum(spent) / frames,
               "detect_ms_per_call": 1000 * float(np.mean(spent)) if spent else 0.0,
               "run_ms_per_call": 1000 * float(run_s.mean()) if len(run_s) else 0.0,
               "kpx_per_call": float(px.mean()) if len(px) else 0.0,
               "fit_fixed_ms": float(fixed), "fit_ms_per_kpx": float(per_kpx),
               "posts": len(posts), "post_list": posts}
        res["around_run_ms_per_call"] = res["detect_ms_per_call"] - res["run_ms_per_call"]
        results[name] = res
        print(f"{name}: " + " ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                     for k, v in res.items() if k != "post_list"))
    return results


def ab(root: Path, clips: str, repeat: int) -> dict[str, dict[str, dict[str, float]]]:
    """{tree: {clip: {figure: lowest over the runs}}} for this tree ("new") and ``root``."""
    best: dict[str, dict[str, dict[str, float]]] = {"main": {}, "new": {}}
    pairs: dict[tuple[str, str], list[float]] = {}  # (clip, figure): new - main, per round
    load0 = os.getloadavg()[0]
    for _ in range(repeat):
        last: dict[str, dict] = {}
        for tree, path in (("main", root), ("new", ROOT)):
            env = dict(os.environ, PYTHONPATH=str(path))
            out = subprocess.run([sys.executable, __file__, "inpipe", "--clips", clips, "--json",
                                  "--root", str(path)], env=env, check=True,
                                 capture_output=True, text=True).stdout
            last[tree] = json.loads(out.strip().splitlines()[-1])
            for clip, res in last[tree].items():
                mine = best[tree].setdefault(clip, {})
                for k, v in res.items():
                    mine[k] = v if k == "post_list" else min(mine.get(k, v), v)
        for clip, res in last["new"].items():
            for k in ("ms_per_frame", "yunet_ms_per_frame"):
                pairs.setdefault((clip, k), []).append(res[k] - last["main"][clip][k])
    print(f"best of {repeat}, interleaved; load {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    for clip in best["new"]:
        for k in ("ms_per_frame", "yunet_ms_per_frame", "detect_ms_per_call",
                  "run_ms_per_call", "around_run_ms_per_call", "calls", "posts"):
            a, b = best["main"][clip][k], best["new"][clip][k]
            print(f"{clip:8s} {k:24s} main {a:8.3f} new {b:8.3f} ({b - a:+.3f})")
        for k in ("ms_per_frame", "yunet_ms_per_frame"):
            diffs = pairs[(clip, k)]
            print(f"{clip:8s} {k:24s} new - main per round: median {statistics.median(diffs):+.3f}"
                  f" (" + " ".join(f"{d:+.2f}" for d in diffs) + ")")
        same = best["main"][clip]["post_list"] == best["new"][clip]["post_list"]
        print(f"{clip:8s} posts (track, frame, quality) the same: {same}")
    return best


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("phases", "calls", "inpipe", "ab"))
    ap.add_argument("--root", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="inpipe: end with a JSON line")
    ap.add_argument("--clips", default="mpf,indoor")
    ap.add_argument("--sizes", default="160x160,320x192,640x480")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    if args.mode == "inpipe":
        import videodetector

        print(f"load {os.getloadavg()[0]:.1f}; videodetector from {videodetector.__file__}")
        res = inpipe(args.clips.split(","))
        if args.json:
            print(json.dumps(res))
        return res
    if args.mode == "ab":
        if args.root is None:
            ap.error("ab needs --root (the tree to compare with, e.g. a worktree of main)")
        return ab(args.root, args.clips, args.repeat)
    det = YuNetDetector(threads=1)
    frame = real_frame(args.data)
    print(f"load {os.getloadavg()[0]:.1f}; CPU ms per step, median of {args.n}")
    table = {}
    for w, h in parse_sizes(args.sizes):
        img = crop_of(frame, w, h)
        if args.mode == "calls":
            ms = cpu_ms(lambda img=img: det.detect(img, scale=1.0), args.n)
            print(f"{w}x{h}: detect {ms:.3f} ms")
            table[f"{w}x{h}"] = {"detect": ms}
            continue
        res = phases(det, img, args.n)
        steps = " ".join(f"{k} {v:.3f}" for k, v in res.items() if k != "faces")
        print(f"{w}x{h} ({int(res['faces'])} raw boxes): {steps}")
        table[f"{w}x{h}"] = res
    return table


if __name__ == "__main__":
    main()
