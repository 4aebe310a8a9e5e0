"""Cameras per host from CPU costs: measured per frame, then played on a model of the host.

Run from the project root (about 1-3 minutes; the answer does not depend on the load):

    python bench/streams_capacity.py [--variants 4] [--cores 2] [--queues 8,16,25]

bench_streams.py answers "how many cameras without drops" by running them, which only means
something on an idle machine. This answers it from CPU time, which a loaded machine measures
about as well as an idle one: each variant of bench_streams' indoor clip (1280x720, 25 fps,
faces half of the time) goes through one ``FacePipeline`` in this thread, and every frame's
thread CPU time is recorded (the decoder's too, as decoded in a paced camera's reader: one
thread). Then N cameras are played on ``--cores`` cores: frames arrive at 25 fps per camera
into a reader queue of Q frames (full: the frame is dropped and counted), the decoders take
their share first, and the busy pipelines share what is left equally (processor sharing, in
2 ms steps). Camera i plays variant i mod V from frame 37 * (i div V) on, so cameras do not
peak together.

What the model leaves out (so the real answer is lower): the GIL (the pipelines' Python code
runs one at a time -- py-spy --gil measured it at about a quarter of a camera thread's time,
so it is not the limit on 2 cores), the poster's JPEG/HTTP work (about 1 % of the CPU here),
thread switching, and other processes. It answers two questions the run cannot separate:
how much of the drops is CPU (the N where the sum of costs reaches the cores) and how much
is bursts (frames with faces cost 10-20x a quiet frame, for seconds) that a longer queue
absorbs.
"""

from __future__ import annotations

import argparse
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import _env_omp1  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)
from bench_detector import format_table, indoor_clip, machine_line

from videodetector.core.models import YuNetDetector
from videodetector.detector.config import parse_config
from videodetector.detector.pipeline import CameraSpec, FacePipeline
from videodetector.detector.video.source import open_video

FPS = 25
STEP = 0.002  # s, the model's time step
SPREAD = 37  # frames between the starts of two cameras playing the same variant


@dataclass(frozen=True)
class ClipCosts:
    """CPU seconds per frame of one clip: ``decode`` (mean) and ``pipeline`` (each frame)."""

    decode: float
    pipeline: tuple[float, ...]
    detector_runs: int


def measure(path: Path, extra: Sequence[str]) -> ClipCosts:
    """Decode ``path`` in one thread and run every frame through a FacePipeline, timing each
    frame's thread CPU."""
    cfg = parse_config(["--source", str(path), "--api-url", "http://127.0.0.1:9",
                        "--api-token", "bench", *extra])
    pipeline = FacePipeline(cfg, CameraSpec("cam", str(path)), YuNetDetector(threads=1),
                            live=False)
    costs: list[float] = []
    t0 = time.thread_time()
    with open_video(str(path), threads=1) as video:
        frames = list(video)
    decode = (time.thread_time() - t0) / max(len(frames), 1)
    for frame in frames:
        t = time.thread_time()
        pipeline.process(frame)
        costs.append(time.thread_time() - t)
    return ClipCosts(decode, tuple(costs), pipeline.stats.detector_runs)


def play(clips: Sequence[ClipCosts], cameras: int, cores: float, queue: int,
         seconds: float) -> tuple[int, int]:
    """(frames in, frames dropped) of ``cameras`` cameras for ``seconds`` on ``cores``."""
    if cameras < 1 or queue < 1 or cores <= 0:
        raise ValueError(f"need cameras >= 1, queue >= 1, cores > 0; got {cameras}, "
                         f"{queue}, {cores}")
    period = round(1.0 / FPS / STEP)
    plays = [(clips[i % len(clips)], SPREAD * (i // len(clips))) for i in range(cameras)]
    decode = sum(c.decode for c, _ in plays) * FPS  # cores the decoders keep busy
    spare = max(cores - decode, 0.0)
    queues: list[deque[float]] = [deque() for _ in range(cameras)]
    left = [0.0] * cameras  # CPU seconds left of the frame in the pipeline
    frames_in = dropped = 0
    for tick in range(round(seconds / STEP)):
        if tick % period == 0:
            k = tick // period
            for i, (clip, start) in enumerate(plays):
                frames_in += 1
                if len(queues[i]) >= queue:
                    dropped += 1
                else:
                    queues[i].append(clip.pipeline[(start + k) % len(clip.pipeline)])
        busy = [i for i in range(cameras) if left[i] > 0 or queues[i]]
        if not busy:
            continue
        share = min(1.0, spare / len(busy)) * STEP
        for i in busy:
            budget = share
            while budget > 0:
                if left[i] <= 0:
                    if not queues[i]:
                        break
                    left[i] = queues[i].popleft()
                used = min(budget, left[i])
                left[i] -= used
                budget -= used
    return frames_in, dropped


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", type=int, default=4, help="clip variants measured (4)")
    p.add_argument("--cores", type=float, default=2.0, help="cores of the modelled host (2)")
    p.add_argument("--queues", default="8,16,25", help="reader queue sizes tried (8,16,25)")
    p.add_argument("--seconds", type=float, default=60.0, help="time played per N (60)")
    p.add_argument("--max-streams", type=int, default=20, help="largest N played (20)")
    p.add_argument("--detector-args", default="", help="extra fkvideo_detector options")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    extra = args.detector_args.split()
    queues = [int(q) for q in args.queues.split(",")]
    print(f"# streams_capacity: {machine_line()}", flush=True)
    print(f"# fkvideo options: defaults {' '.join(extra)}".rstrip(), flush=True)
    clips = []
    for v in range(args.variants):
        costs = measure(indoor_clip(14.0, variant=v), extra)
        clips.append(costs)
        mean = sum(costs.pipeline) / len(costs.pipeline)
        print(f"  variant {v}: decode {1000 * costs.decode:.2f} ms, pipeline {1000 * mean:.2f} "
              f"ms CPU per frame (max {1000 * max(costs.pipeline):.1f}), detector runs "
              f"{costs.detector_runs}/{len(costs.pipeline)}", flush=True)
    per_frame = sum(c.decode + sum(c.pipeline) / len(c.pipeline) for c in clips) / len(clips)
    print(f"  mean CPU per camera-frame {1000 * per_frame:.2f} ms: {args.cores:g} cores run "
          f"at most {args.cores / per_frame / FPS:.1f} cameras at 100 %", flush=True)
    rows: list[dict] = []
    answer = dict.fromkeys(queues, 0)  # the largest N before the first N with drops
    for n in range(1, args.max_streams + 1):
        row: dict = {"streams": n, "cpu": f"{100 * n * FPS * per_frame / args.cores:.0f}"}
        for q in queues:
            frames_in, dropped = play(clips, n, args.cores, q, args.seconds)
            row[f"q{q}"] = f"{100 * dropped / max(frames_in, 1):.2f}"
            if dropped == 0 and answer[q] == n - 1:
                answer[q] = n
        rows.append(row)
        if all(float(row[f"q{q}"]) > 5 for q in queues):
            break  # every queue drops more than 5 %: larger N only drop more
    columns = (("streams", "N", ">"), ("cpu", "CPU % needed", ">"),
               *((f"q{q}", f"drop % (queue {q})", ">") for q in queues))
    table = format_table(rows, columns)
    print()
    print(table)
    for q in queues:
        print(f"queue {q}: largest N without drops {answer[q]}")
    return {"rows": rows, "answer": answer, "per_frame": per_frame, "table": table}


if __name__ == "__main__":
    main()
