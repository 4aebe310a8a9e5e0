"""``fkvideo_backend regenerate``: findface-regenerate (reference 10.3) over the stored faces.

Two migrations, as in the reference:

* **another embedding model** (``--regenerate facens --embedding-model M``): every face's
  stored normalized image is embedded again with model M; the vector is stored beside the
  old one (``embeddings.py``), so the serving backend keeps searching with its own model until
  it is restarted with ``--embedding-model M`` (it refuses to while faces lack an M vector,
  unless ``--allow-partial``);
* **other detector settings** (``--regenerate normalized,facens[,thumbs]``, with
  ``--detector-threshold`` / ``--min-face-size``): every stored original photo is detected
  again; the detection that matches the stored box (centre inside, or IoU > 0.3) gives the new
  box, normalized image and vectors (of the face's model, of every model it has a vector of,
  and of M), and with ``thumbs`` a new thumbnail. A face no longer found is reported (and in
  ``--report``) and kept unchanged. ``--regenerate thumbs`` alone redraws thumbnails from the
  photo and the stored box. A thumbnail is the one a detector's post of the photo and box
  stores (``thumbs.thumbnail_jpeg``: the JPEG decoded at the DCT scale its pixels allow).

Faces are taken in id order, filtered by ``--min-id``/``--max-id`` (inclusive) and
``--every-other N --every-other-offset K`` (ids with ``id % N == K``, so that N machines or runs
can share the work). Each face is updated in its own short transaction (SQLite WAL, the
database the backend serves from), which also marks it done for the job (the job = what is
regenerated, the model and the detector settings), so an interrupted run continues where it
stopped and never does a face twice; ``--restart`` forgets the job's done marks. New images
are written before the transaction, old ones deleted after it committed. Every changed vector
is logged (``regenerated``) and a backend serving at the same time applies it to its index
before its next search.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from videodetector.backend import changes, thumbs
from videodetector.backend.embeddings import coverage, store_vector
from videodetector.backend.engine import FaceEngine, FoundFace, best_match, shared_engine
from videodetector.backend.imaging import (
    as_aligned_face,
    decode_photo,
)
from videodetector.backend.model_choice import resolve_embedding_model
from videodetector.backend.settings import AUTO_MODEL, EMBEDDING_MODELS, Settings
from videodetector.backend.storage import FileStore, open_database
from videodetector.core.images import encode

log = logging.getLogger(__name__)

KINDS = ("facens", "thumbs", "normalized")
BATCH = 256  # face ids read per query
# Stored originals passed the backend's limits when they were enrolled; these only guard
# against a file that was replaced on disk since.
MAX_STORED_BYTES = 1 << 30
MAX_STORED_SIDE = 100_000


@dataclass(frozen=True)
class Options:
    """What to regenerate, for which faces, with what."""

    kinds: frozenset[str]
    model: str
    detector_threshold: float = 0.6
    min_face_size: int = 0
    min_id: int | None = None
    max_id: int | None = None
    every_other: int = 1
    every_other_offset: int = 0
    parallel: int = 1

    def __post_init__(self) -> None:
        bad = set(self.kinds) - set(KINDS)
        if not self.kinds or bad:
            raise ValueError(f"--regenerate must be a comma-separated subset of "
                             f"{','.join(KINDS)}, got {','.join(sorted(self.kinds)) or 'nothing'}")
        if "normalized" in self.kinds and "facens" not in self.kinds:
            raise ValueError("--regenerate normalized needs facens too (the vectors of the old "
                             "normalized faces would no longer match them)")
        if self.model not in EMBEDDING_MODELS:
            raise ValueError(f"--embedding-model must be one of {', '.join(EMBEDDING_MODELS)}, "
                             f"got {self.model!r}")
        if self.every_other < 1:
            raise ValueError(f"--every-other must be >= 1, got {self.every_other}")
        if not 0 <= self.every_other_offset < self.every_other:
            raise ValueError(f"--every-other-offset must be in 0..{self.every_other - 1}, "
                             f"got {self.every_other_offset}")
        if not 1 <= self.parallel <= 64:
            raise ValueError(f"--parallel must be in 1..64, got {self.parallel}")
        for name in ("min_id", "max_id"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {v}")

    @property
    def redetect(self) -> bool:
        return "normalized" in self.kinds

    @property
    def job(self) -> str:
        """The job's name: faces it has done are skipped when it runs again."""
        name = f"{','.join(k for k in KINDS if k in self.kinds)}:{self.model}"
        if self.redetect or "thumbs" in self.kinds:
            name += f":det={self.detector_threshold:g}/{self.min_face_size}"
        return name

    def where(self) -> tuple[str, list[Any]]:
        """SQL condition (on faces f) and its arguments for the id filters."""
        cond, args = ["1"], []
        if self.min_id is not None:
            cond.append("f.id >= ?")
            args.append(self.min_id)
        if self.max_id is not None:
            cond.append("f.id <= ?")
            args.append(self.max_id)
        if self.every_other > 1:
            cond.append("f.id % ? = ?")
            args += [self.every_other, self.every_other_offset]
        return " AND ".join(cond), args


@dataclass
class Progress:
    """Counts, and the progress line of mass-enroll (8.4.2)."""

    total: int
    skipped: int
    succeeded: int = 0
    failed: int = 0
    lost: list[int] = field(default_factory=list)  # faces the detector no longer finds
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def processed(self) -> int:
        return self.succeeded + self.failed + len(self.lost) + self.skipped

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        done = self.processed - self.skipped
        rate = done / elapsed
        left = self.total - self.processed
        eta = left / rate if rate > 0 else (0.0 if left == 0 else None)
        return (f"[{self.processed}/{self.total}] faces processed ({self.succeeded} succeeded, "
                f"{self.failed} failed, {len(self.lost)} not found, {self.skipped} skipped). "
                f"{rate:.2f} faces/s. [{_hms(elapsed)}/{_hms(eta)}]")


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "--:--:--"
    s = int(seconds)
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


class Regenerator:
    """Runs a job over a data directory (``backend.sqlite3`` + ``uploads``), or over a
    PostgreSQL database (``db``, a URL) and the data directory's ``uploads``."""

    def __init__(self, data_dir: Path, opts: Options, threads: int = 1,
                 db: str | None = None, served: str | None = None) -> None:
        self.opts = opts
        self.db = open_database(Settings(data_dir=Path(data_dir), db=db))
        # the models the backend serves: ``served`` (from the settings; None: unknown) and
        # the one its last start recorded for facen (a model given on its command line,
        # served --allow-partial, is recorded nowhere else); a new vector of one of them
        # is a change of the face for the sync feed, as is anything its JSON shows (_apply)
        self.served = {m for m in (served, changes.facen_model(self.db)) if m}
        self.files = FileStore(Path(data_dir) / "uploads")
        self.threads = threads
        self._engines: dict[str, FaceEngine] = {}
        self._engine_lock = threading.Lock()
        self.stop = threading.Event()

    def close(self) -> None:
        self.db.close()

    def engine(self, model: str) -> FaceEngine:
        with self._engine_lock:
            if model not in self._engines:
                self._engines[model] = shared_engine(self.threads, self.opts.detector_threshold,
                                                     model)
            return self._engines[model]

    # -- selection -------------------------------------------------------------

    def _count(self, only_todo: bool) -> int:
        cond, args = self.opts.where()
        todo = " AND NOT EXISTS (SELECT 1 FROM regenerate_done d WHERE d.job = ? AND " \
               "d.face_id = f.id)" if only_todo else ""
        return int(self.db.scalar(f"SELECT COUNT(*) FROM faces f WHERE {cond}{todo}",
                                  [*args, *([self.opts.job] if only_todo else [])]))

    def todo_ids(self) -> Iterator[int]:
        """Ids of the selected faces the job has not done, ascending, read in batches (faces
        enrolled during the run are included when their id comes up)."""
        cond, args = self.opts.where()
        last = -1
        while not self.stop.is_set():
            rows = self.db.rows(
                f"SELECT f.id FROM faces f WHERE {cond} AND f.id > ? AND NOT EXISTS (SELECT 1 "
                f"FROM regenerate_done d WHERE d.job = ? AND d.face_id = f.id) ORDER BY f.id "
                f"LIMIT {BATCH}", [*args, last, self.opts.job])
            if not rows:
                return
            for r in rows:
                yield int(r[0])
            last = int(rows[-1][0])

    def restart(self) -> int:
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM regenerate_done WHERE job = ?",
                                (self.opts.job,)).rowcount

    # -- the run -------------------------------------------------------------------

    def run(self, out: Any = None, interval: float = 5.0) -> Progress:
        """Do the job's remaining faces; a progress line every ``interval`` seconds."""
        out = out or sys.stderr
        total = self._count(False)
        prog = Progress(total=total, skipped=total - self._count(True))
        print(f"regenerate {','.join(sorted(self.opts.kinds))} with {self.opts.model} "
              f"(job {self.opts.job!r}): {total} faces selected, {prog.skipped} already done",
              file=out, flush=True)
        last_line = time.monotonic()
        with ThreadPoolExecutor(self.opts.parallel, thread_name_prefix="regen") as pool:
            pending: set[Future] = set()
            for face_id in self.todo_ids():
                pending.add(pool.submit(self._one, face_id, prog))
                if len(pending) >= 4 * self.opts.parallel:
                    _, pending = wait(pending, return_when=FIRST_COMPLETED)
                if time.monotonic() - last_line >= interval:
                    print(prog.line(), file=out, flush=True)
                    last_line = time.monotonic()
            while pending:
                _, pending = wait(pending, timeout=max(interval, 0.1))
                if pending:
                    print(prog.line(), file=out, flush=True)
        print(prog.line(), file=out, flush=True)
        if prog.lost:
            print(f"faces no longer found by the detector (kept unchanged): "
                  f"{' '.join(map(str, prog.lost))}", file=out, flush=True)
        cov = coverage(self.db, self.opts.model)
        print(f"{self.opts.model}: {cov.covered} of {cov.faces} faces have an embedding",
              file=out, flush=True)
        return prog

    def _one(self, face_id: int, prog: Progress) -> None:
        if self.stop.is_set():
            return
        try:
            outcome = self.regenerate_face(face_id)
        except Exception as exc:  # noqa: BLE001 - one bad face never stops the run
            with prog.lock:
                prog.failed += 1
                first = prog.failed <= 10
            if first:
                log.warning("face %d: %s: %s", face_id, type(exc).__name__, exc)
            return
        with prog.lock:
            if outcome == "lost":
                prog.lost.append(face_id)
            elif outcome == "done":
                prog.succeeded += 1
            else:  # deleted meanwhile: nothing to do
                prog.skipped += 1

    # -- one face ---------------------------------------------------------------

    def regenerate_face(self, face_id: int) -> str:
        """Regenerate one face; "done", "lost" (not found again, kept) or "gone" (deleted
        meanwhile)."""
        row = self.db.row("SELECT * FROM faces WHERE id = ?", (face_id,))
        if row is None:
            return "gone"
        change = self._compute(row)
        written = [rel for rel in (change.get("normalized"), change.get("thumbnail")) if rel]
        try:
            with self.db.transaction() as conn:
                if conn.execute("SELECT 1 FROM faces WHERE id = ?", (face_id,)).fetchone() is None:
                    raise _Gone
                self._apply(conn, row, change)
                conn.execute("INSERT OR IGNORE INTO regenerate_done VALUES (?, ?)",
                             (self.opts.job, face_id))
        except _Gone:
            for rel in written:
                self.files.delete(rel)
            return "gone"
        except BaseException:
            for rel in written:
                self.files.delete(rel)
            raise
        for kind in ("normalized", "thumbnail"):
            if change.get(kind):
                self.files.delete(row[kind])
        return "lost" if change.get("lost") else "done"

    def _compute(self, row: sqlite3.Row) -> dict[str, Any]:
        """The new box, images (written now, under new names) and vectors of a face."""
        kinds = self.opts.kinds
        if self.opts.redetect or "thumbs" in kinds:
            data = self._read_photo(row["photo"])
            box = (row["x1"], row["y1"], row["x2"], row["y2"])
            change: dict[str, Any] = {}
            if self.opts.redetect:  # detected and aligned on the photo decoded at full scale
                photo = decode_photo(data, "photo", MAX_STORED_BYTES, MAX_STORED_SIDE).image
                found = self._redetect(photo, box)
                if found is None:
                    return {"lost": True}
                box = found.box
                aligned = self._align(photo, found)
                change["box"] = box
                change["normalized"] = self._write(row, "norm", "png", encode(aligned, "png"))
                change["vectors"] = self._embed_all(row, aligned)
            if "thumbs" in kinds:  # what a post of this photo and box stores (thumbs.py;
                # a JPEG decoded at the DCT scale the thumbnail's pixels allow)
                jpeg = thumbs.thumbnail_jpeg(data, box)
                change["thumbnail"] = self._write(row, "thumb", "jpeg", jpeg)
            return change
        aligned = as_aligned_face(self._read_image(row["normalized"]))
        vec = self.engine(self.opts.model).embed_aligned(aligned)
        return {"vectors": {self.opts.model: vec}}

    def _redetect(self, photo: np.ndarray, box: tuple[float, ...]) -> FoundFace | None:
        found = self.engine(self.opts.model).detect(photo, self.opts.min_face_size)
        return best_match(found, tuple(float(v) for v in box), (0.0, 0.0))

    def _align(self, photo: np.ndarray, face: FoundFace) -> np.ndarray:
        from videodetector.core.models import align_face

        return align_face(photo, face.landmarks)

    def _embed_all(self, row: sqlite3.Row, aligned: np.ndarray) -> dict[str, np.ndarray]:
        """Vectors of the new normalized face for the face's model, every model it has a
        vector of, and the target model: none is left describing the old face."""
        models = {row["model"], self.opts.model}
        models.update(r[0] for r in self.db.rows(
            "SELECT model FROM embeddings WHERE face_id = ?", (row["id"],)))
        return {m: self.engine(m).embed_aligned(aligned) for m in sorted(models)
                if m in EMBEDDING_MODELS}

    def _read_photo(self, rel: str) -> bytes:
        """A stored original's bytes (decoded as enrollment decoded it: Pillow, EXIF
        orientation applied, so the stored box refers to the same pixels)."""
        path = self.files.path(rel)
        if path is None or not path.is_file():
            raise FileNotFoundError(f"stored photo {rel!r} is missing")
        return path.read_bytes()

    def _read_image(self, rel: str) -> np.ndarray:
        path = self.files.path(rel)
        img = cv2.imread(str(path)) if path is not None and path.is_file() else None
        if img is None:
            raise FileNotFoundError(f"stored image {rel!r} is missing or unreadable")
        return img

    def _write(self, row: sqlite3.Row, kind: str, ext: str, data: bytes) -> str:
        rel = self.files.new_name(int(row["user_id"]), kind, ext)
        self.files.write(rel, data)
        return rel

    def _apply(self, conn: sqlite3.Connection, row: sqlite3.Row, change: dict[str, Any]) -> None:
        values: dict[str, Any] = {}
        if "box" in change:
            x1, y1, x2, y2 = change["box"]
            values.update(x1=round(x1), y1=round(y1), x2=round(x2), y2=round(y2))
        for kind in ("normalized", "thumbnail"):
            if change.get(kind):
                values[kind] = change[kind]
        if values:
            sets = ", ".join(f"{k} = ?" for k in values)
            conn.execute(f"UPDATE faces SET {sets} WHERE id = ?", (*values.values(), row["id"]))
        vectors = change.get("vectors", {})
        for model, vec in vectors.items():
            store_vector(conn, int(row["id"]), row["model"], model, vec)
        if values or visible_models(row["model"], self.served) & set(vectors):
            changes.touch(conn, int(row["user_id"]), int(row["id"]))


def visible_models(face_model: str, served: set[str]) -> set[str]:
    """The models whose new vector changes what a client sees of a face: the one the
    backend serves (``facen`` of its JSON and of the sync feed, what ``/identify``
    compares) and, kept to be safe, its own (enrolment) model's. A vector of any other model
    is read by no answer until the backend is restarted with that model (which invalidates
    every sync cursor: ``changes.follow_facen_model``), so it is not a change of the face."""
    return {face_model} | served


class _Gone(Exception):  # noqa: N818 - control flow
    pass


# -- command line ---------------------------------------------------------------------

def build_parser(prog: str = "fkvideo_backend regenerate") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=(
        "Regenerate the stored faces' facens (embeddings), thumbnails and normalized images "
        "(findface-regenerate, reference 10.3): --regenerate facens --embedding-model M makes "
        "model M's embeddings from the normalized faces; --regenerate normalized,thumbs,facens "
        "re-detects the original photos with the current detector settings. Resumable (run "
        "the same command again), safe while the backend serves the same data directory."))
    p.add_argument("--regenerate", default="facens",
                   help="what to regenerate: facens, thumbs, normalized (comma-separated; "
                        "default facens). normalized re-detects the original photos")
    p.add_argument("--embedding-model", dest="embedding_model", default=None,
                   help=f"model of the regenerated facens: {', '.join(EMBEDDING_MODELS)} "
                        f"(default: the model the backend serves: the settings' "
                        f"embedding_model, auto resolved for this store)")
    p.add_argument("--data-dir", dest="data_dir", default=None,
                   help="the backend's data directory (default ./data/backend)")
    p.add_argument("--db", dest="db", default=None,
                   help="postgresql://USER@HOST:PORT/DB when the backend keeps its database "
                        "in PostgreSQL (default: SQLite in --data-dir)")
    p.add_argument("-c", "--config", help="findface-facenapi.ini style settings file "
                   "(data_dir, detector_threshold, min_face_size, embedding_model, ...)")
    p.add_argument("--detector-threshold", dest="detector_threshold", default=None,
                   help="face detector score threshold for re-detection (default 0.6)")
    p.add_argument("--min-face-size", dest="min_face_size", default=None,
                   help="re-detection ignores faces smaller than this (pixels)")
    p.add_argument("--model-threads", dest="model_threads", default=None,
                   help="onnxruntime threads per model (default 1)")
    p.add_argument("--log-level", dest="log_level", default=None,
                   help="debug, info, warning or error")
    p.add_argument("--min-id", type=int, help="smallest face id (inclusive)")
    p.add_argument("--max-id", type=int, help="largest face id (inclusive)")
    p.add_argument("--every-other", type=int, default=1, help="only ids with id %% N == K")
    p.add_argument("--every-other-offset", type=int, default=0, help="K of --every-other")
    p.add_argument("--parallel", type=int, default=1, help="faces worked on at once")
    p.add_argument("--restart", action="store_true",
                   help="forget which faces this job has done and do them all again")
    p.add_argument("--stats-interval", type=float, default=5.0,
                   help="seconds between progress lines")
    p.add_argument("--report", type=Path, help="write the result (counts, faces not found "
                   "again, coverage) as JSON to this file")
    return p


def serving_model(settings: Settings, model: str | None = None) -> str:
    """``model`` (default: the settings'), ``auto`` resolved as a backend starting on this
    store would (model_choice.py; nothing is recorded)."""
    model = model or settings.embedding_model
    if model != AUTO_MODEL:
        return model
    db = open_database(settings)
    try:
        return resolve_embedding_model(db, AUTO_MODEL).model
    finally:
        db.close()


def options_from_args(args: argparse.Namespace, settings: Settings, model: str) -> Options:
    """The job's options, for ``model`` (a model name: ``auto`` resolved)."""
    return Options(
        kinds=frozenset(k.strip() for k in args.regenerate.split(",") if k.strip()),
        model=model,
        detector_threshold=settings.detector_threshold, min_face_size=settings.min_face_size,
        min_id=args.min_id, max_id=args.max_id, every_other=args.every_other,
        every_other_offset=args.every_other_offset, parallel=args.parallel)


def main(argv: list[str], settings_from: Any) -> int:
    """``settings_from(namespace) -> Settings`` (cli.settings_from_args)."""
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
        # what the backend serves: the configured model, not this run's --embedding-model
        serving = settings_from(argparse.Namespace(**{**vars(args), "embedding_model": None}))
        wanted = args.embedding_model or settings.embedding_model
        # the options are checked before the store is looked at (auto: resolved below)
        opts = options_from_args(args, settings,
                                 EMBEDDING_MODELS[0] if wanted == AUTO_MODEL else wanted)
    except (ValueError, OSError) as exc:
        print(f"fkvideo_backend regenerate: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.db is None and not (settings.data_dir / "backend.sqlite3").is_file():
        print(f"fkvideo_backend regenerate: no database in {settings.data_dir}", file=sys.stderr)
        return 2
    try:
        served = serving_model(serving)  # its new vectors are changes of the faces
        if wanted == AUTO_MODEL:
            opts = dataclasses.replace(opts, model=serving_model(settings, AUTO_MODEL))
    except ValueError as exc:  # a recorded model this program does not know
        print(f"fkvideo_backend regenerate: {exc}", file=sys.stderr)
        return 2
    regen = Regenerator(settings.data_dir, opts, settings.model_threads, settings.db, served)
    previous = signal.signal(signal.SIGTERM, lambda *_: regen.stop.set())
    try:
        if args.restart:
            print(f"forgot {regen.restart()} done faces of job {opts.job!r}", file=sys.stderr)
        try:
            prog = regen.run(interval=args.stats_interval)
        except KeyboardInterrupt:
            regen.stop.set()
            print("interrupted; run the same command again to continue", file=sys.stderr)
            return 130
        if args.report:
            args.report.write_text(json.dumps(report(regen, prog), indent=2) + "\n")
    finally:
        signal.signal(signal.SIGTERM, previous)
        regen.close()
    left = prog.total - prog.processed
    return 1 if prog.failed or left else 0


def report(regen: Regenerator, prog: Progress) -> dict[str, Any]:
    return {"job": regen.opts.job, "selected": prog.total, "skipped": prog.skipped,
            "succeeded": prog.succeeded, "failed": prog.failed, "not_found": prog.lost,
            "coverage": {m: coverage(regen.db, m).as_json() for m in EMBEDDING_MODELS}}

