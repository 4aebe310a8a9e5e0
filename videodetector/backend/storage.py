"""Embedded storage: SQLite (WAL, synchronous=FULL) for metadata and embeddings, files for images.

Every write runs in ``Database.transaction()``, which holds the one write lock and
commits before returning, so an acknowledged request survives a restart. Images are
written (and fsynced) before the row that refers to them is committed.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS galleries (
    user_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (user_id, name)
);
CREATE TABLE IF NOT EXISTS persons (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    meta TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS persons_user ON persons (user_id, id);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    meta TEXT NOT NULL DEFAULT '',
    person_id INTEGER,
    cam_id TEXT,
    timestamp TEXT NOT NULL,
    ts REAL NOT NULL,
    day TEXT NOT NULL,
    friend INTEGER NOT NULL DEFAULT 0,
    x1 INTEGER NOT NULL, y1 INTEGER NOT NULL, x2 INTEGER NOT NULL, y2 INTEGER NOT NULL,
    photo TEXT NOT NULL,
    photo_hash TEXT NOT NULL,
    thumbnail TEXT NOT NULL,
    normalized TEXT NOT NULL,
    gender TEXT,
    gender_confidence REAL,
    age INTEGER,
    detector_params TEXT,
    extra TEXT,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS faces_user ON faces (user_id, id);
CREATE INDEX IF NOT EXISTS faces_meta ON faces (user_id, meta, id);
CREATE INDEX IF NOT EXISTS faces_person ON faces (user_id, person_id, cam_id, ts);
CREATE INDEX IF NOT EXISTS faces_cam ON faces (user_id, cam_id, id);
CREATE INDEX IF NOT EXISTS faces_photo ON faces (photo);
CREATE TABLE IF NOT EXISTS face_galleries (
    face_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    gallery TEXT NOT NULL,
    PRIMARY KEY (face_id, gallery)
);
CREATE INDEX IF NOT EXISTS face_galleries_gallery ON face_galleries (user_id, gallery, face_id);
CREATE TABLE IF NOT EXISTS cameras (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    meta TEXT NOT NULL DEFAULT '',
    enabled INTEGER NOT NULL DEFAULT 1,
    url TEXT,
    detector TEXT,
    roi TEXT,
    rot TEXT,
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cameras_user ON cameras (user_id, detector, seq);
CREATE TABLE IF NOT EXISTS idempotency (
    user_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    face_ids TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (user_id, key)
);
"""


def utcnow_iso() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


class Database:
    """One SQLite connection shared by all threads behind ``lock`` (an RLock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.conn = sqlite3.connect(str(self.path), check_same_thread=False,
                                    isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute("PRAGMA busy_timeout=10000")
        with self.lock:
            self.conn.executescript(SCHEMA)
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO settings VALUES ('schema_version', ?)",
                         (str(SCHEMA_VERSION),))

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the write lock; BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any exception)."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self.lock:
            return self.conn.execute(sql, tuple(args)).fetchall()

    def row(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self.lock:
            return self.conn.execute(sql, tuple(args)).fetchone()

    def scalar(self, sql: str, args: Sequence[Any] = ()) -> Any:
        r = self.row(sql, args)
        return None if r is None else r[0]


def insert(conn: sqlite3.Connection, table: str, values: dict[str, Any]) -> int:
    cols = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    cur = conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", tuple(values.values()))
    return int(cur.lastrowid)


def update(conn: sqlite3.Connection, table: str, values: dict[str, Any], where: str,
           args: Sequence[Any]) -> int:
    if not values:
        return 0
    sets = ", ".join(f"{k} = ?" for k in values)
    cur = conn.execute(f"UPDATE {table} SET {sets} WHERE {where}",
                       (*values.values(), *args))
    return cur.rowcount


def placeholders(n: int) -> str:
    return ", ".join("?" * n)


# ---------------------------------------------------------------------------
# Pagination over id-ordered queries (9.1 "Pagination")
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class PageRequest:
    """Newest first. ``max_id``: ids below it (next page); ``min_id``: ids above it (prev)."""

    limit: int | None  # None = unlimited
    max_id: int | None = None
    min_id: int | None = None


@dataclass(frozen=True)
class PageResult:
    ids: list[int]
    has_older: bool  # a next page exists
    has_newer: bool  # a previous page exists


def page_ids(db: Database, id_col: str, from_where: str, args: Sequence[Any],
             page: PageRequest) -> PageResult:
    """Ids of one page of ``SELECT id_col FROM <from_where>``, newest (largest id) first."""
    cond, cargs, order = "", [], "DESC"
    if page.max_id is not None:
        cond, cargs = f" AND {id_col} < ?", [page.max_id]
    elif page.min_id is not None:
        cond, cargs, order = f" AND {id_col} > ?", [page.min_id], "ASC"
    limit = "" if page.limit is None else f" LIMIT {int(page.limit)}"
    sql = f"SELECT {id_col} FROM {from_where}{cond} ORDER BY {id_col} {order}{limit}"
    ids = [int(r[0]) for r in db.rows(sql, [*args, *cargs])]
    if order == "ASC":
        ids.reverse()
    if not ids:
        return PageResult([], False, False)

    def exists(op: str, bound: int) -> bool:
        q = f"SELECT 1 FROM {from_where} AND {id_col} {op} ? LIMIT 1"
        return db.row(q, [*args, bound]) is not None

    return PageResult(ids, exists("<", ids[-1]), exists(">", ids[0]))


# ---------------------------------------------------------------------------
# Image files under <data_dir>/uploads
# ---------------------------------------------------------------------------

class FileStore:
    """Files addressed by a relative path ``<user>/<YYYYMMDD>/<random>_<kind>.<ext>``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def new_name(self, user_id: int, kind: str, ext: str) -> str:
        day = datetime.now(UTC).strftime("%Y%m%d")
        return f"{user_id}/{day}/{secrets.token_hex(12)}_{kind}.{ext}"

    def path(self, rel: str) -> Path | None:
        """The file for ``rel`` if it stays inside the store, else None."""
        p = (self.root / rel).resolve()
        if self.root not in p.parents:
            return None
        return p

    def write(self, rel: str, data: bytes) -> None:
        path = self.path(rel)
        if path is None:
            raise ValueError(f"bad upload path {rel!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def delete(self, rel: str) -> None:
        path = self.path(rel)
        if path is not None:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError:
                log.warning("could not delete %s", path, exc_info=True)
