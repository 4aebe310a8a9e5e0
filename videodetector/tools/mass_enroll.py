"""Bulk face enrollment, compatible with ``findface-mass-enroll`` (reference 8.4).

    findface-mass-enroll [--job PATH] prepare [--meta-const TEXT | --meta-companion EXT |
                                               --meta-csv FILE | --meta-filename]
                                              [--split N] IMAGES...
    findface-mass-enroll [--job PATH] print [--failed]
    findface-mass-enroll [--job PATH] run --token TOKEN [--api URL] [--gallery NAME]
                                          [--parallel N] [--failed]
                                          [--mf-selector all|biggest|reject]
                                          [--gender] [--age] [--emotions]
                                          [--stats-interval SECONDS]

Also ``fkvideo_backend mass-enroll ...``. The tool is a client of the REST API only: it can
run on any machine that reaches the backend. The job file (default ``ffmassenroll.job``) is
an SQLite database holding every image's state, so ``run`` can be stopped at any moment
(Ctrl-C, ``kill -9``, the backend going down) and run again: it continues with the images not
processed yet and never stores an image twice.

Exit status of ``run``: 0 every image enrolled, 1 some images failed (``print --failed``
lists them), 2 the run could not go on (bad token, URL or option; nothing was marked),
130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import TextIO

from videodetector.tools.enroll_job import FAILED, JobError, JobFile
from videodetector.tools.enroll_prepare import MetaOptions, prepare
from videodetector.tools.enroll_run import MF_SELECTORS, RunOptions, run_job

DEFAULT_JOB = "ffmassenroll.job"


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def build_parser(prog: str = "findface-mass-enroll") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Bulk face enrollment from image "
                                     "files into the backend (findface-mass-enroll).")
    job_help = f"Job file (default: {DEFAULT_JOB})"
    parser.add_argument("--job", default=DEFAULT_JOB, metavar="PATH", help=job_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prep = sub.add_parser("prepare", help="Prepare upload job",
                          description="Prepare one or more job files for subsequent runs. "
                          "IMAGES are glob patterns (quote them; ** matches any folders).")
    prep.add_argument("images", nargs="+", metavar="IMAGES")
    prep.add_argument("--meta-const", metavar="TEXT", help="Shared metadata string")
    prep.add_argument("--meta-companion", metavar="TEXT", help="Extension of metadata files "
                      "accompanying the images (e.g. txt)")
    prep.add_argument("--meta-csv", metavar="PATH", help="Name of the CSV file containing "
                      "metadata (rows: metastring,image)")
    prep.add_argument("--meta-filename", action="store_true",
                      help="Use file name (without extension) as metadata string")
    prep.add_argument("--split", type=positive_int, metavar="INTEGER",
                      help="Split job file into N parts JOB.1 ... JOB.N (default: don't split)")

    show = sub.add_parser("print", help="Print contents of job file as JSON")
    show.add_argument("--failed", action="store_true", help="Show only failed images")

    run = sub.add_parser("run", help="Run upload job")
    run.add_argument("--parallel", type=positive_int, default=10, metavar="INTEGER",
                     help="Number of enroll threads (default: 10)")
    run.add_argument("--api", default="http://127.0.0.1:8000/",
                     help="API url (default: http://127.0.0.1:8000/)")
    run.add_argument("--token", required=True, help="API token [required]")
    run.add_argument("--gallery", default="default", help="Enroll faces into specified "
                     "gallery, created if missing (default: default)")
    run.add_argument("--failed", action="store_true", help="Include failed images")
    run.add_argument("--mf-selector", choices=MF_SELECTORS, default=None,
                     help="mf_selector (biggest,all,reject); default: the backend's (biggest)")
    run.add_argument("--gender", action="store_true", help="Extract gender")
    run.add_argument("--age", action="store_true", help="Extract age")
    run.add_argument("--emotions", action="store_true", help="Extract emotions")
    run.add_argument("--stats-interval", type=positive_float, default=1.0, metavar="SECONDS",
                     help="Output stats after every STATS_INTERVAL seconds (default: 1)")
    run.add_argument("--timeout", type=positive_float, default=60.0, metavar="SECONDS",
                     help="seconds to wait for the backend's answer to one image "
                          "(default: 60; then it is retried)")
    run.add_argument("--max-backoff", type=positive_float, default=30.0, metavar="SECONDS",
                     help="longest wait between retries while the backend is down "
                          "(default: 30)")
    for p in (prep, show, run):  # --job is accepted after the command too
        p.add_argument("--job", default=argparse.SUPPRESS, metavar="PATH", help=job_help)
    return parser


def say(text: str) -> None:
    print(text, flush=True)


def print_job(job_path: str, failed_only: bool, out: TextIO | None = None) -> None:
    """The images as a JSON array, one object per line, written as they are read."""
    out = out or sys.stdout
    with JobFile(job_path) as job:
        out.write("[")
        sep = "\n"
        for image in job.images((FAILED,) if failed_only else None):
            out.write(sep + json.dumps(image.as_json(), ensure_ascii=False))
            sep = ",\n"
        out.write("\n]\n" if sep != "\n" else "]\n")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    opts = RunOptions(token=args.token, api=args.api, gallery=args.gallery,
                      parallel=args.parallel, include_failed=args.failed,
                      mf_selector=args.mf_selector, gender=args.gender, age=args.age,
                      emotions=args.emotions, stats_interval=args.stats_interval,
                      timeout=args.timeout, max_backoff=args.max_backoff)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # kill: stop like Ctrl-C
    try:
        return run_job(args.job, opts, say).exit_code
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None, prog: str = "findface-mass-enroll") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        if args.command == "prepare":
            meta = MetaOptions(const=args.meta_const, companion=args.meta_companion,
                               csv=args.meta_csv, filename=args.meta_filename)
            prepare(args.job, args.images, meta, args.split, say)
            return 0
        if args.command == "print":
            try:
                print_job(args.job, args.failed)
            except BrokenPipeError:  # ``print | head``
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no flush error at exit
            return 0
        return _run(args)
    except (ValueError, OSError) as exc:  # JobError is a ValueError
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["DEFAULT_JOB", "JobError", "build_parser", "main"]
