"""Would YuNet through OpenVINO (f32, or bf16 on AMX/AVX512-BF16) cost the detector less CPU
than onnxruntime? (issue 10, YuNet-runtime round)

Run from the project root (each mode ~0.5-2 min on a quiet 2-core host):

    python bench/yunet_runtime.py sizes [--threads 1,2] [--n 30]
    python bench/yunet_runtime.py replay [--clips mpf,region,cockatoo,indoor] [--repeat 5]
    python bench/yunet_runtime.py idle
    python bench/yunet_runtime.py rss [--instances 8]
    python bench/yunet_runtime.py diff [--clips mpf,region,grid]
    python bench/yunet_runtime.py recall --runtime ov_bf16 --out bf16.json

Runtimes: ``ort`` (onnxruntime f32 on the symbolic-size graph, as ``YuNetDetector`` runs it),
``ov_f32`` / ``ov_bf16`` (OpenVINO's CPU plugin, one compiled model with a dynamic
height x width, one infer request; ``INFERENCE_PRECISION_HINT`` f32 / bf16,
``NUM_STREAMS`` 1, ``INFERENCE_NUM_THREADS`` = threads, no CPU pinning) and
``ov_bf16_static`` (a model compiled per input shape, cached: what a shape cache would give).
All figures are CPU time of the whole process (``time.process_time``: the runtimes' own
threads included), best (lowest) and median of interleaved repetitions; on a shared machine
the higher ones are the disturbed ones, so compare the lows.

``sizes``: CPU per graph call per input shape (the whole-frame shapes of 1280x720 and
640x480 sources at max_side 640, and crop shapes of region / faces-only runs), per thread
count; and the first call of a new shape on the dynamic OpenVINO model ("new shape") and the
compile time of a static one.

``replay``: the offline pipeline (defaults, ``-r 0``, decode included) on each clip with
onnxruntime; every YuNet graph input is recorded, then replayed through each runtime,
interleaved: YuNet graph CPU per frame per runtime, against the pipeline's CPU per frame
(so the share of the pipeline a runtime would save).

``idle``: CPU the process burns while it sleeps 2 s after a burst of calls (spinning
threads), and the thread count, per runtime, 8 instances in one process (camera-list mode
with 16 cameras in 2 processes).

``rss``: resident memory per detector instance (``--instances`` made one after the other,
each having run a 640x384 and a 640x480 input).

``diff``: per clip frame (every 3rd), the decoded detections (shared decode and NMS of
``YuNetDetector``) with each OpenVINO runtime against onnxruntime: faces matched (IoU >= 0.5),
max box shift in px, landmark shift / face height, max score difference, faces found by one
only.

``recall``: bench/cadence_recall.py (every shared clip, the offline pipeline, its loop's
process CPU) with every ``YuNetDetector`` running its graph through ``--runtime``; compare
two outputs with ``python bench/cadence_recall.py --compare A.json B.json``.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import _env_omp1  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)
import cv2
import numpy as np
from _env import ROOT  # noqa: F401
from yunet_call import read_frame

from videodetector.core.geometry import iou_matrix
from videodetector.core.models import YUNET, YuNetDetector, model_path

DATA = ROOT / ".." / "shared" / "data"
RUNTIMES = ("ort", "ov_f32", "ov_bf16")
# (height, width) of YuNet's padded input: whole 1280x720 and 640x480 frames at max_side 640,
# then crop shapes of the region / faces-only runs (multiples of 32)
SHAPES = ((384, 640), (480, 640), (96, 96), (160, 160), (224, 320), (320, 320), (256, 448))


def ov_compiled(threads: int, precision: str, shape: tuple[int, int] | None = None):
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(model_path(YUNET)))
    hw = [-1, -1] if shape is None else list(shape)
    model.reshape({model.inputs[0]: ov.PartialShape([1, 3, *hw])})
    return core.compile_model(model, "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "NUM_STREAMS": 1,
        "INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": False})


class OvSession:
    """An onnxruntime-session look-alike (``run(names, feeds)``) over an OpenVINO model."""

    def __init__(self, threads: int, precision: str, static: bool = False) -> None:
        import openvino as ov

        self._tensor = ov.Tensor
        self.threads, self.precision, self.static = threads, precision, static
        self._by_shape: dict[tuple[int, int], tuple] = {}
        if not static:
            self._one = self._entry(None)

    def _entry(self, shape: tuple[int, int] | None) -> tuple:
        compiled = ov_compiled(self.threads, self.precision, shape)
        index = {n: i for i, o in enumerate(compiled.outputs) for n in o.get_names()}
        return compiled, compiled.create_infer_request(), index

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        blob = next(iter(feeds.values()))
        if self.static:
            key = (blob.shape[2], blob.shape[3])
            if key not in self._by_shape:
                self._by_shape[key] = self._entry(key)
            _, req, index = self._by_shape[key]
        else:
            _, req, index = self._one
        req.set_input_tensor(self._tensor(blob, shared_memory=True))
        req.infer()
        return [req.get_output_tensor(index[n]).data for n in names]


def session(runtime: str, threads: int):
    """(run(blob) -> outputs, names) for a runtime name."""
    if runtime == "ort":
        det = YuNetDetector(threads=threads)
        sess, names = det._session, det._names  # noqa: SLF001 - the graph call alone
    else:
        names = YuNetDetector(threads=1)._names  # noqa: SLF001
        precision = "bf16" if "bf16" in runtime else "f32"
        sess = OvSession(threads, precision, static=runtime.endswith("_static"))
    return (lambda blob: sess.run(names, {"input": blob})), names


def frame_of(path: Path, index: int = 30) -> np.ndarray:
    frame = read_frame(path, index)
    if frame is None:
        raise SystemExit(f"cannot read {path}")
    return frame


def blob_of(frame: np.ndarray, h: int, w: int) -> np.ndarray:
    img = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None].astype(np.float32))


def interleaved(fns: dict[str, Callable[[], object]], n: int) -> dict[str, list[float]]:
    """Process CPU ms of each fn, ``n`` rounds, the fns one after the other in each."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(n):
        for k, fn in fns.items():
            t0 = time.process_time_ns()
            fn()
            out[k].append((time.process_time_ns() - t0) / 1e6)
    return out


def fmt(times: list[float]) -> str:
    return f"{min(times):6.2f} / {statistics.median(times):6.2f}"


STATIC = ("ov_f32_static", "ov_bf16_static")


def sizes(threads_list: list[int], n: int,
          shapes: tuple[tuple[int, int], ...] = SHAPES) -> dict:
    frame = frame_of(DATA / "clips_faces/mpf_video_01.mp4")
    table: dict = {}
    for threads in threads_list:
        runs = {r: session(r, threads)[0] for r in (*RUNTIMES, *STATIC)}
        print(f"\n{threads} thread(s): CPU ms per graph call, best / median of {n} interleaved; "
              f"load {os.getloadavg()[0]:.1f}")
        print(f"| input hxw | {' | '.join(runs)} | bf16 vs ort (best) | first call: "
              f"dynamic f32 / bf16, compile+call static f32 / bf16 |")
        for h, w in shapes:
            blob = blob_of(frame, h, w)
            first = {}
            for r in ("ov_f32", "ov_bf16", *STATIC):
                t0 = time.process_time_ns()
                runs[r](blob)
                first[r] = (time.process_time_ns() - t0) / 1e6
            res = interleaved({r: (lambda f=f, b=blob: f(b)) for r, f in runs.items()}, n)
            table[f"{threads}t {h}x{w}"] = {**{r: min(v) for r, v in res.items()},
                                            **{f"first {r}": v for r, v in first.items()}}
            gain = 1 - min(res["ov_bf16"]) / min(res["ort"])
            print(f"| {h}x{w} | " + " | ".join(fmt(v) for v in res.values())
                  + f" | {gain:+.0%} | " + " / ".join(f"{v:.0f}" for v in first.values())
                  + " |")
    return table


class Recorder:
    """Stands in for the detector's onnxruntime session: records a copy of each input."""

    def __init__(self, sess: object) -> None:
        self._sess = sess
        self.blobs: list[np.ndarray] = []

    def run(self, names, feeds, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        self.blobs.append(next(iter(feeds.values())).copy())
        return self._sess.run(names, feeds, *args, **kwargs)

    def __getattr__(self, name: str) -> object:
        return getattr(self._sess, name)


def recorded(clip: str) -> tuple[list[np.ndarray], int, float]:
    """(graph inputs, frames, pipeline CPU ms per frame of this thread) of one offline pass."""
    from detector_scale import clip_paths, pipeline, play

    path = clip_paths([clip])[clip]
    ms = float("inf")
    for _ in range(2):  # the first pass pays the lazy imports: the lower of two, no recorder
        pipe, det = pipeline(path)
        ms = min(ms, play(pipe, path)[0])
    pipe, det = pipeline(path)
    rec = Recorder(det._session)  # noqa: SLF001
    det._session = rec  # type: ignore[assignment]  # noqa: SLF001
    play(pipe, path)
    return rec.blobs, max(pipe.stats.frames, 1), ms


def replay(clips: list[str], repeat: int, threads: int) -> dict:
    runs = {r: session(r, threads)[0] for r in (*RUNTIMES, "ov_bf16_static")}
    table = {}
    for clip in clips:
        blobs, frames, pipe_ms = recorded(clip)
        px = sum(b.shape[2] * b.shape[3] for b in blobs) / max(len(blobs), 1) / 1000
        shapes = len({b.shape for b in blobs})
        for r in runs.values():  # every shape once: the first call of a shape is not counted
            for b in blobs:
                r(b)
        totals: dict[str, list[float]] = {r: [] for r in runs}
        for _ in range(repeat):
            for name, fn in runs.items():
                t0 = time.process_time_ns()
                for b in blobs:
                    fn(b)
                totals[name].append((time.process_time_ns() - t0) / 1e6 / frames)
        best = {r: min(v) for r, v in totals.items()}
        table[clip] = {"frames": frames, "calls": len(blobs), "pipeline_ms": pipe_ms, **best}
        print(f"\n{clip}: {frames} frames, {len(blobs)} YuNet calls ({px:.0f} kpx each on "
              f"average, {shapes} shapes), pipeline {pipe_ms:.2f} ms CPU per frame "
              f"(onnxruntime, this pass); "
              f"load {os.getloadavg()[0]:.1f}")
        for name, v in totals.items():
            saved = best["ort"] - best[name]
            print(f"  {name:8s} graph ms per frame best / median {fmt(v)}; vs ort "
                  f"{saved:+.2f} ms per frame = {saved / pipe_ms:+.1%} of the pipeline")
    return table


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def idle(instances: int = 8) -> dict:
    frame = frame_of(DATA / "clips_faces/mpf_video_01.mp4")
    blobs = [blob_of(frame, 384, 640), blob_of(frame, 160, 160)]
    table = {}
    for runtime in RUNTIMES:
        before = thread_count()
        runs = [session(runtime, 1)[0] for _ in range(instances)]
        for _ in range(5):
            for r in runs:
                for b in blobs:
                    r(b)
        t0 = time.process_time()
        time.sleep(2.0)
        spent = (time.process_time() - t0) * 1000
        table[runtime] = {"threads": thread_count() - before, "idle_ms": spent}
        print(f"{runtime:8s} {instances} instances, 1 thread each: +{thread_count() - before} "
              f"threads; CPU while sleeping 2 s after the calls: {spent:.1f} ms")
        del runs
        gc.collect()
    return table


def rss_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def rss(instances: int) -> dict:
    frame = frame_of(DATA / "clips_faces/mpf_video_01.mp4")
    blobs = [blob_of(frame, 384, 640), blob_of(frame, 480, 640)]
    table = {}
    for runtime in RUNTIMES:
        gc.collect()
        start = rss_kb()
        keep = []
        steps = []
        for _ in range(instances):
            run = session(runtime, 1)[0]
            for b in blobs:
                run(b)
            keep.append(run)
            steps.append(rss_kb())
        first = (steps[0] - start) / 1024
        each = (steps[-1] - steps[0]) / 1024 / max(instances - 1, 1)
        table[runtime] = {"first_mb": first, "each_mb": each}
        print(f"{runtime:8s} RSS: first instance +{first:.0f} MB (runtime loaded), each further "
              f"+{each:.1f} MB")
        del keep
        gc.collect()
    return table


def height(xyxy: np.ndarray) -> float:
    return max(float(xyxy[3] - xyxy[1]), 1.0)


def compare(a, b) -> tuple[int, int, float, float, float]:
    """(matched, unmatched, max box shift px, max landmark shift / face height,
    max |score diff|)."""
    if not len(a) or not len(b):
        return 0, len(a) + len(b), 0.0, 0.0, 0.0
    iou = iou_matrix(a.xyxy, b.xyxy)
    pairs = [(i, int(iou[i].argmax())) for i in range(len(a)) if iou[i].max() >= 0.5]
    box = max((np.abs(a.xyxy[i] - b.xyxy[j]).max() for i, j in pairs), default=0.0)
    lm = max((np.abs(a.landmarks[i] - b.landmarks[j]).max() / height(a.xyxy[i])
              for i, j in pairs), default=0.0)
    sc = max((abs(a.score[i] - b.score[j]) for i, j in pairs), default=0.0)
    return len(pairs), len(a) + len(b) - 2 * len(pairs), float(box), float(lm), float(sc)


def diff(clips: list[str], every: int = 3) -> dict:
    from detector_scale import clip_paths

    ref = YuNetDetector(threads=1)
    others = {}
    for runtime in ("ov_f32", "ov_bf16"):
        det = YuNetDetector(threads=1)
        det._session = OvSession(1, "bf16" if "bf16" in runtime else "f32")  # noqa: SLF001
        others[runtime] = det
    table = {}
    for clip, path in clip_paths(clips).items():
        cap = cv2.VideoCapture(str(path))
        stats = {r: [0, 0, 0.0, 0.0, 0.0] for r in others}
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            index += 1
            if index % every:
                continue
            base = ref.detect(frame)
            for r, det in others.items():
                m, u, bx, lm, sc = compare(base, det.detect(frame))
                s = stats[r]
                s[0] += m
                s[1] += u
                s[2], s[3], s[4] = max(s[2], bx), max(s[3], lm), max(s[4], sc)
        cap.release()
        table[clip] = {r: dict(zip(("matched", "unmatched", "box_px", "landmark_rel", "score"),
                                   v, strict=True)) for r, v in stats.items()}
        for r, (m, u, bx, lm, sc) in stats.items():
            print(f"{clip:9s} {r:8s} matched {m} unmatched {u} max box shift {bx:.2f} px, "
                  f"landmark {lm:.1%} of the face height, score {sc:.4f}")
    return table


def recall(runtime: str, out: Path) -> int:
    """cadence_recall over the shared clips with YuNet's graph through ``runtime``."""
    import cadence_recall

    from videodetector.core import models

    if runtime != "ort":
        inner = models.YuNetDetector.__init__

        def init(self, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
            inner(self, *args, **kwargs)
            self._session = OvSession(1, "bf16" if "bf16" in runtime else "f32")

        models.YuNetDetector.__init__ = init  # type: ignore[method-assign]
    try:
        return cadence_recall.main(["--out", str(out)])
    finally:
        if runtime != "ort":
            models.YuNetDetector.__init__ = inner  # type: ignore[method-assign]


def parse_shapes(text: str) -> tuple[tuple[int, int], ...]:
    """"384x640,96x96" -> ((384, 640), (96, 96)) as (height, width), multiples of 32."""
    shapes = []
    for part in text.split(","):
        h, w = (int(v) for v in part.lower().split("x"))
        if h < 32 or w < 32 or h % 32 or w % 32:
            raise ValueError(f"shapes must be multiples of 32 and at least 32, got {part!r}")
        shapes.append((h, w))
    return tuple(shapes)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("sizes", "replay", "idle", "rss", "diff", "recall"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--shapes", type=parse_shapes, default=SHAPES, help="sizes: HxW,...")
    ap.add_argument("--clips", default="mpf,region,cockatoo,indoor")
    ap.add_argument("--every", type=int, default=3, help="diff: every n-th frame")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--instances", type=int, default=8)
    ap.add_argument("--runtime", choices=("ort", "ov_f32", "ov_bf16"), default="ort")
    ap.add_argument("--out", type=Path, help="recall: the JSON output")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    threads = [int(t) for t in args.threads.split(",")]
    if args.mode == "sizes":
        return sizes(threads, args.n, args.shapes)
    if args.mode == "replay":
        out = {}
        for t in threads:
            print(f"\n== {t} thread(s) per runtime")
            out[t] = replay(args.clips.split(","), args.repeat, t)
        return out
    if args.mode == "idle":
        return idle(args.instances)
    if args.mode == "rss":
        return rss(args.instances)
    if args.mode == "recall":
        if args.out is None:
            ap.error("recall needs --out FILE.json")
        return {"rc": recall(args.runtime, args.out)}
    return diff(args.clips.split(","), args.every)


if __name__ == "__main__":
    main()
