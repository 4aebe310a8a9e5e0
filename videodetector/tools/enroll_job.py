"""The mass-enroll job file: one SQLite database listing the images and each one's state.

Every state change is its own committed transaction (WAL, synchronous=NORMAL), so a run killed
at any moment (Ctrl-C, ``kill -9``, power cut of the client only) finds every finished image
recorded. An image is ``pending`` until the backend answered for it, then ``done`` (with the
ids of the faces it stored) or ``failed`` (with the backend's reason). Each job has a random
id; ``idempotency_key(image)`` is derived from it, so an image whose answer was lost is posted
again with the same key and the backend returns the faces it stored the first time.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PENDING, DONE, FAILED = "pending", "done", "failed"
FORMAT = "videodetector-mass-enroll/1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS job (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    meta TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    reason TEXT,
    face_ids TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated REAL
);
"""


class JobError(ValueError):
    """The job file is missing, not a job file, or of another format."""


@dataclass(frozen=True)
class Image:
    id: int
    path: str
    meta: str
    state: str = PENDING
    reason: str | None = None
    face_ids: tuple[int, ...] = ()
    attempts: int = 0

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"image": self.path, "meta": self.meta, "state": self.state}
        if self.state == DONE:
            out["face_ids"] = list(self.face_ids)
        if self.reason:
            out["reason"] = self.reason
        out["attempts"] = self.attempts
        return out


def _image(row: sqlite3.Row) -> Image:
    ids = tuple(json.loads(row["face_ids"])) if row["face_ids"] else ()
    return Image(row["id"], row["path"], row["meta"], row["state"], row["reason"], ids,
                 row["attempts"])


class JobFile:
    """Open (``create=False``: must exist) or create a job file."""

    def __init__(self, path: str | Path, create: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise JobError(f"job file {str(self.path)!r} does not exist (run prepare first)")
        try:
            self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                        check_same_thread=False)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(SCHEMA)
            self.job_id = self._job_id(create)
        except sqlite3.DatabaseError as exc:
            raise JobError(f"{str(self.path)!r} is not a mass-enroll job file: {exc}") from None

    def _job_id(self, create: bool) -> str:
        rows = dict(self.conn.execute("SELECT key, value FROM job").fetchall())
        if not rows:
            if not create:
                raise JobError(f"{str(self.path)!r} is not a mass-enroll job file")
            rows = {"format": FORMAT, "id": uuid.uuid4().hex, "created": str(time.time())}
            with self._tx():
                self.conn.executemany("INSERT INTO job VALUES (?, ?)", rows.items())
        if rows.get("format") != FORMAT:
            raise JobError(f"{str(self.path)!r} has format {rows.get('format')!r}, "
                           f"expected {FORMAT!r}")
        return rows["id"]

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def _tx(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def __enter__(self) -> JobFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def idempotency_key(self, image: Image) -> str:
        """The same for every attempt at one image of this job, different across jobs."""
        return f"mass-enroll:{self.job_id}:{image.id}"

    # -- writing ----------------------------------------------------------------

    def add(self, items: Iterable[tuple[str, str]]) -> int:
        """Add (path, meta) pairs; paths already in the job are kept as they are.
        Returns how many were new."""
        with self._tx():
            before = self.count()
            self.conn.executemany("INSERT OR IGNORE INTO images (path, meta) VALUES (?, ?)",
                                  items)
            return self.count() - before

    def mark_done(self, image: Image, face_ids: list[int]) -> None:
        self._set(image, DONE, None, json.dumps(face_ids))

    def mark_failed(self, image: Image, reason: str) -> None:
        self._set(image, FAILED, reason, None)

    def _set(self, image: Image, state: str, reason: str | None, face_ids: str | None) -> None:
        with self._tx():
            self.conn.execute("UPDATE images SET state = ?, reason = ?, face_ids = ?, "
                              "attempts = attempts + 1, updated = ? WHERE id = ?",
                              (state, reason, face_ids, time.time(), image.id))

    # -- reading ----------------------------------------------------------------

    def count(self, state: str | None = None) -> int:
        if state is None:
            return self.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        return self.conn.execute("SELECT COUNT(*) FROM images WHERE state = ?",
                                 (state,)).fetchone()[0]

    def images(self, states: Iterable[str] | None = None, page: int = 1000
               ) -> Iterator[Image]:
        """Images in job order, optionally only those in ``states``. Read a page at a time,
        so the job file may be updated while this is iterated."""
        where, args = "", []
        if states is not None:
            args = list(states)
            where = f" AND state IN ({', '.join('?' * len(args))})"
        last = 0
        while True:
            rows = self.conn.execute(f"SELECT * FROM images WHERE id > ?{where} ORDER BY id "
                                     f"LIMIT ?", [last, *args, page]).fetchall()
            if not rows:
                return
            for row in rows:
                yield _image(row)
            last = rows[-1]["id"]
