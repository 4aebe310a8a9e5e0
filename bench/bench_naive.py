"""Side by side on the same clips: decode only, a naive OpenCV loop, and fkvideo_detector.

Run from the project root (about 2 minutes on an idle 2-core machine):

    python bench/bench_naive.py [--data ../shared/data] [--clips synthetic,cockatoo,mpf]

Per clip, in one run:

* **decode BGR** -- PyAV decoding to BGR arrays exactly as the daemon reads a file
  (``open_video``): the floor any detector on this machine stands on. **decode raw** -- the
  same decoder without the YUV->BGR conversion.
* **naive** -- what one would write first with OpenCV alone: ``cv2.VideoCapture`` decoding,
  ``cv2.FaceDetectorYN`` (YuNet) on every frame at full size, ``cv2.FaceRecognizerSF``
  (align + SFace) on every face, ``cv2.setNumThreads(2)``. Run in its own process
  (``bench/naive_loop.py``, which imports only OpenCV and the model paths): ``naive s`` is
  the loop alone, ``naive proc s`` the whole process (interpreter, imports, model loading
  included). Same model files as ours
  (``videodetector.core.models.model_path``: the pinned packages).
* **ours** -- ``FacePipeline`` in this process with 2 threads as the daemon runs one camera
  (decode + ``process()`` per frame + ``finish()``; start-up and posting excluded), and
  **ours proc s** -- ``fkvideo_detector -r 0`` as a whole process on the file, posting to a
  local receiver that answers 200 (start-up, posting and the exit included). ``start-up s``
  is the daemon's own log line: process start to its first frame processed, with the CPU
  seconds spent by then (``start-up CPU s``); a last line gives their median. The measured
  processes keep compiled bytecode (under the bench cache, as an installed program has it),
  also when the caller sets PYTHONDONTWRITEBYTECODE.

Ratios: ``naive/ours f`` = naive ms per frame / ours ms per frame; ``naive/ours proc`` =
naive whole process / ours whole process (> 1: ours is faster); ``ours/decode`` = ours /
decode BGR time (1.0 = the detector costs nothing over decoding). ``naive proc CPU s`` and
``ours proc CPU s``: the CPU seconds (user + sys) of those same two processes, and
``naive/ours proc CPU`` their ratio: less sensitive than wall time to other jobs on the host.

Each figure is the fastest of ``--repeat`` runs (1). Timings taken while other jobs run are
floors, not the machine's capacity: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import _env_omp1  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)
import av
from _env import ROOT
from bench_detector import (
    CACHE,
    DEFAULT_DATA,
    clip_plan,
    decode_only,
    format_table,
    machine_line,
    run_pipeline,
)
from bench_streams import Receiver

THREADS = 2  # the daemon gives one camera both cores (cli.Daemon.detector_threads)
PYCACHE = CACHE / "pycache"
FIRST_FRAME = re.compile(r"first frame processed, ([\d.]+) s after the process started "
                         r"\(([\d.]+) s of CPU\)")


# ---------------------------------------------------------------------------
# decode only
# ---------------------------------------------------------------------------

def decode_raw(clip: Path, max_frames: int = 0) -> tuple[int, float]:
    """(frames, seconds): PyAV decoding alone (same threading), frames left in YUV."""
    t0 = time.perf_counter()
    n = 0
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in container.decode(stream):
            n += 1
            if max_frames and n >= max_frames:
                break
    return n, time.perf_counter() - t0


# ---------------------------------------------------------------------------
# the naive OpenCV loop (bench/naive_loop.py, in its own process)
# ---------------------------------------------------------------------------

def children_cpu() -> float:
    """CPU seconds (user + sys) of this process's waited-for children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_naive_process(clip: Path, max_frames: int) -> dict:
    """The naive loop in a fresh interpreter; adds ``process_s`` (launch to exit) and
    ``process_cpu_s`` (its CPU seconds, user + sys)."""
    cmd = [sys.executable, str(Path(__file__).resolve().with_name("naive_loop.py")), str(clip),
           "--threads", str(THREADS), "--max-frames", str(max_frames)]
    cpu0, t0 = children_cpu(), time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=1800,
                          env=child_env())
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if done.returncode != 0:
        raise RuntimeError(f"naive loop failed on {clip}: {done.stderr.strip()[-500:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    out["process_cpu_s"] = cpu
    return out


# ---------------------------------------------------------------------------
# fkvideo_detector as a whole process
# ---------------------------------------------------------------------------

def child_env() -> dict[str, str]:
    """The environment of the measured processes: this tree first on the path, and compiled
    bytecode kept (under the bench cache) as an installed program has it, even where the
    caller sets PYTHONDONTWRITEBYTECODE (compiling the project's ~45 modules at every start
    would be counted as start-up)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


def warm_bytecode() -> None:
    """Compile what the daemon and the naive loop import into PYCACHE, once (filterpy too:
    the daemon imports it, with scipy, only at its first face; uncompiled, the first measured
    run compiled scipy.stats)."""
    code = "import videodetector.detector.cli, cv2, av, onnxruntime, filterpy.kalman"
    subprocess.run([sys.executable, "-c", code], env=child_env(), check=True,
                   capture_output=True, timeout=600)


def run_daemon(clip: Path, receiver: Receiver, spool: Path) -> dict:
    """``fkvideo_detector -r 0`` on ``clip``: wall time launch to exit, and its start-up
    (process start to first frame processed) from its own log line."""
    cmd = [sys.executable, "-m", "videodetector.detector.cli", "--source", str(clip),
           "--camid", "bench", "--api-url", receiver.url, "--api-token", "bench", "-r", "0",
           "--spool-dir", str(spool), "--log-level", "INFO"]
    env = child_env()
    posts0 = receiver.posts
    cpu0, t0 = children_cpu(), time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env,
                          timeout=1800)
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if done.returncode != 0:
        raise RuntimeError(f"fkvideo_detector exited {done.returncode} on {clip}: "
                           f"{done.stderr.strip()[-800:]}")
    found = FIRST_FRAME.search(done.stderr)
    return {"process_s": wall, "process_cpu_s": cpu, "posts": receiver.posts - posts0,
            "startup_s": float(found.group(1)) if found else float("nan"),
            "startup_cpu_s": float(found.group(2)) if found else float("nan")}


# ---------------------------------------------------------------------------
# one clip, the table
# ---------------------------------------------------------------------------

def ms(seconds: float, frames: int) -> float:
    return round(1000 * seconds / max(frames, 1), 2)


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b > 0 else float("nan")


def bench_clip(label: str, clip: Path, args: argparse.Namespace, receiver: Receiver,
               spool: Path) -> dict:
    def best(fn, key):
        return min((fn() for _ in range(args.repeat)), key=key)

    n_bgr, s_bgr = best(lambda: decode_only(clip, 2, args.max_frames), key=lambda r: r[1])
    n_raw, s_raw = best(lambda: decode_raw(clip, args.max_frames), key=lambda r: r[1])
    naive = best(lambda: run_naive_process(clip, args.max_frames),
                 key=lambda r: r["process_s"])
    ours = best(lambda: run_pipeline(clip, label, THREADS, (), args.max_frames),
                key=lambda r: r.seconds)
    daemon = best(lambda: run_daemon(clip, receiver, spool / f"s{time.monotonic_ns()}"),
                  key=lambda r: r["process_s"])
    row = {
        "clip": label, "frames": ours.frames,
        "decode_bgr_s": round(s_bgr, 2), "decode_bgr_ms": ms(s_bgr, n_bgr),
        "decode_raw_ms": ms(s_raw, n_raw),
        "naive_s": round(naive["seconds"], 2), "naive_ms": ms(naive["seconds"], naive["frames"]),
        "naive_faces": naive["faces"], "naive_proc_s": round(naive["process_s"], 2),
        "ours_s": ours.seconds, "ours_ms": ms(ours.seconds, ours.frames),
        "ours_proc_s": round(daemon["process_s"], 2), "posts": daemon["posts"],
        "naive_proc_cpu_s": round(naive["process_cpu_s"], 2),
        "ours_proc_cpu_s": round(daemon["process_cpu_s"], 2),
        "startup_s": daemon["startup_s"], "startup_cpu_s": daemon["startup_cpu_s"],
    }
    row["naive_over_ours_f"] = ratio(row["naive_ms"], row["ours_ms"])
    row["naive_over_ours_proc"] = ratio(naive["process_s"], daemon["process_s"])
    row["naive_over_ours_proc_cpu"] = ratio(naive["process_cpu_s"], daemon["process_cpu_s"])
    row["ours_over_decode"] = ratio(ours.seconds * n_bgr, s_bgr * max(ours.frames, 1))
    row["load"] = round(os.getloadavg()[0], 2)
    return row


COLUMNS = (
    ("clip", "clip", "<"), ("frames", "frames", ">"),
    ("decode_bgr_s", "decode BGR s", ">"), ("decode_bgr_ms", "ms/f", ">"),
    ("decode_raw_ms", "raw ms/f", ">"),
    ("naive_s", "naive s", ">"), ("naive_ms", "ms/f", ">"), ("naive_proc_s", "naive proc s", ">"),
    ("ours_s", "ours s", ">"), ("ours_ms", "ms/f", ">"), ("ours_proc_s", "ours proc s", ">"),
    ("startup_s", "start-up s", ">"), ("startup_cpu_s", "start-up CPU s", ">"),
    ("naive_over_ours_f", "naive/ours f", ">"), ("naive_over_ours_proc", "naive/ours proc", ">"),
    ("ours_over_decode", "ours/decode", ">"),
    ("naive_proc_cpu_s", "naive proc CPU s", ">"), ("ours_proc_cpu_s", "ours proc CPU s", ">"),
    ("naive_over_ours_proc_cpu", "naive/ours proc CPU", ">"),
    ("posts", "posts", ">"), ("load", "load", ">"),
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="test media folder")
    p.add_argument("--clips", default="synthetic,cockatoo,mpf",
                   help="comma list of synthetic, cockatoo, mpf")
    p.add_argument("--seconds", type=float, default=16.0, help="synthetic clip length (16)")
    p.add_argument("--max-frames", type=int, default=0,
                   help="stop the in-process runs after N frames (the daemon runs whole clips)")
    p.add_argument("--repeat", type=int, default=1, help="runs per figure, fastest kept (1)")
    args = p.parse_args(argv)
    args.clips = [c.strip() for c in args.clips.split(",") if c.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the comparison; print and return {"machine", "rows", "table"}."""
    args = parse_args(argv)
    print(f"# bench_naive: {machine_line()}; best of {args.repeat} run(s)", flush=True)
    rows = []
    warm_bytecode()
    with Receiver() as receiver, tempfile.TemporaryDirectory(prefix="bench-naive-") as tmp:
        for label, clip in clip_plan(args.clips, args.data, args.seconds):
            row = bench_clip(label, clip, args, receiver, Path(tmp))
            rows.append(row)
            print(f"  {label}: ours {row['ours_ms']} ms/f, naive {row['naive_ms']} ms/f, "
                  f"decode {row['decode_bgr_ms']} ms/f; start-up {row['startup_s']} s "
                  f"({row['startup_cpu_s']} s CPU)", flush=True)
    table = format_table(rows, COLUMNS)
    print()
    print(table)
    startups = sorted(r["startup_s"] for r in rows)
    cpus = sorted(r["startup_cpu_s"] for r in rows)
    if startups:
        print(f"\nstart-up (fkvideo_detector: process start to first frame processed), "
              f"{len(rows)} run(s): median {startups[len(rows) // 2]:.2f} s wall "
              f"(min {startups[0]:.2f}), {cpus[len(rows) // 2]:.2f} s of CPU", flush=True)
    print(f"\n# load average at the end: {os.getloadavg()[0]:.2f}", flush=True)
    return {"machine": machine_line(), "rows": rows, "table": table}


if __name__ == "__main__":
    main()
