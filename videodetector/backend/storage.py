"""Embedded storage: SQLite (WAL, fsynced at every commit) for metadata and embeddings, files
for images.

Every write runs in ``Database.transaction()``, which holds the one write lock and
commits before returning, so an acknowledged request survives a restart. Images are
written (and fsynced) before the row that refers to them is committed.

State kept outside SQLite (the in-memory face index) follows the database, never leads
it: a change made inside a transaction registers its undo with ``Database.on_rollback``,
and the undo runs when any statement *or the COMMIT itself* fails (a full disk shows up
at COMMIT in WAL mode). A failed COMMIT is rolled back and raised as ``CommitFailed``, a
``sqlite3.OperationalError`` (the API answers 503 and the client retries).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from videodetector.backend import migrations
from videodetector.core.durable import DirectorySync, GroupFsync, write_atomic

log = logging.getLogger(__name__)

# The schema (tables, indexes, triggers) is made and upgraded by the Alembic revisions of
# ``migrations/`` when a database is opened (``migrations.ensure_schema``).
# The last version of the hand-written scheme before Alembic, which the baseline revision
# stands for: PRAGMA user_version (SQLite) and settings.schema_version stay at it.
SCHEMA_VERSION = 4
# The embedding model of rows stored before version 3 (faces.model's default).
FIRST_MODEL = "sface-2021dec"


def dialect_of(conn: Any) -> str:
    """``sqlite`` or ``postgresql``: which database a connection (or Database) talks to."""
    return getattr(conn, "dialect", "sqlite")


def columns(conn: Any, table: str) -> set[str]:
    """The column names of ``table`` (either database)."""
    if dialect_of(conn) == "postgresql":
        return {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = ?", (table,))}
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


class CommitFailed(sqlite3.OperationalError):  # noqa: N818 - it is an OperationalError
    """COMMIT failed (disk full, I/O error, ...); the transaction was rolled back."""


class SyncFailed(sqlite3.OperationalError):  # noqa: N818 - it is an OperationalError
    """A transaction committed but its WAL could not be fsynced (I/O error, full disk):
    not acknowledged; it may or may not survive a power loss."""


def utcnow_iso() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def _enter_wal(conn: sqlite3.Connection, timeout: float = 10.0) -> None:
    """``PRAGMA journal_mode=WAL``, retried: on a fresh file another process may hold the lock
    while it does the same, and SQLite answers "database is locked" at once there instead of
    calling the busy handler (seen with three processes opening one new database)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class Database:
    """One SQLite connection shared by all threads behind ``lock`` (an RLock)."""

    dialect = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self._undo: list[Callable[[], None]] | None = None  # set inside transaction()
        self.conn = sqlite3.connect(str(self.path), check_same_thread=False,
                                    isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA busy_timeout=10000")
        _enter_wal(self.conn)
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self._wal = GroupFsync(self.path.with_name(self.path.name + "-wal"))
        migrations.ensure_schema(self)

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the write lock; BEGIN IMMEDIATE ... COMMIT. On any exception, including a
        failed COMMIT, roll back and run the undo actions registered with ``on_rollback``.

        Group commit: the COMMIT writes the WAL without fsync (synchronous=NORMAL for this
        transaction only) and the write lock is released; then the WAL file is fsynced
        (``GroupFsync``: transactions committed by other threads meanwhile share that
        fsync) before this returns, so a returned transaction is as durable as with
        synchronous=FULL while concurrent writers no longer fsync one after the other
        under the lock. Should that fsync fail, ``SyncFailed`` is raised: the transaction
        is committed but was not acknowledged (a retry with an Idempotency-Key replays)."""
        with self.lock:
            if self._undo is not None:
                raise RuntimeError("transactions do not nest")
            self._end_open_transaction()
            self.conn.execute("PRAGMA synchronous=NORMAL")
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                self._undo = undo = []
                try:
                    yield self.conn
                    self._commit()
                except BaseException:
                    self._end_open_transaction()
                    self._undo = None
                    _run_undo(undo)
                    raise
                self._undo = None
            finally:
                self._synchronous_full()
        self._sync_wal()

    def _synchronous_full(self) -> None:
        """Back to synchronous=FULL for writes outside ``transaction()``; an error here is
        logged, never raised over the transaction's own outcome."""
        try:
            self.conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error:
            log.warning("could not set synchronous=FULL again", exc_info=True)

    def _sync_wal(self) -> None:
        try:
            self._wal.sync()
        except FileNotFoundError:  # no WAL yet: nothing was written that needs an fsync
            pass
        except OSError as exc:
            raise SyncFailed(f"the committed transaction could not be made durable "
                             f"(fsync of {self._wal.path.name}): {exc}") from exc

    def on_rollback(self, action: Callable[[], None]) -> None:
        """Run ``action`` if the current transaction does not commit (undo actions run in
        reverse order of registration)."""
        if self._undo is None:
            raise RuntimeError("on_rollback outside a transaction")
        self._undo.append(action)

    def _commit(self) -> None:
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise CommitFailed(f"commit failed: {exc}") from exc

    def _end_open_transaction(self) -> None:
        """ROLLBACK if a transaction is open. SQLite ends some failed transactions itself
        (SQLITE_FULL in a statement) and leaves others open (a failed COMMIT)."""
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:  # retried before the next read or write
                log.warning("rollback failed", exc_info=True)

    def rows(self, sql: str, args: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        """``args``: positional (``?``) or named (``:name``, a dict, as pgdb takes them)."""
        with self.lock:
            if self._undo is None:  # never read what a failed transaction left behind
                self._end_open_transaction()
            return self.conn.execute(sql, args if isinstance(args, dict) else tuple(args)
                                     ).fetchall()

    def row(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self.lock:
            if self._undo is None:
                self._end_open_transaction()
            return self.conn.execute(sql, tuple(args)).fetchone()

    def scalar(self, sql: str, args: Sequence[Any] = ()) -> Any:
        r = self.row(sql, args)
        return None if r is None else r[0]


def vector_index_sql(model: str, dim: int) -> list[str]:
    """The HNSW cosine indexes (PostgreSQL) of one embedding model's vectors: over the
    faces whose ``faces.model`` it is and over its ``embeddings`` rows."""
    if not re.fullmatch(r"[a-z0-9-]{1,40}", model) or not 1 <= dim <= 2000:
        raise ValueError(f"bad embedding model or dimension: {model!r}, {dim!r}")
    tag = model.replace("-", "_")
    return [f"CREATE INDEX IF NOT EXISTS faces_vec_{tag} ON faces USING hnsw "
            f"((vec::vector({dim})) vector_cosine_ops) WHERE model = '{model}'",
            f"CREATE INDEX IF NOT EXISTS embeddings_vec_{tag} ON embeddings USING hnsw "
            f"((vec::vector({dim})) vector_cosine_ops) WHERE model = '{model}'"]


def is_postgres_url(target: Any) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def open_database(settings: Any) -> Any:
    """The database of ``settings``: PostgreSQL when ``settings.db`` is a URL, else the
    SQLite file ``<data_dir>/backend.sqlite3``."""
    if settings.db is None:
        return Database(Path(settings.data_dir) / "backend.sqlite3")
    from videodetector.backend.pgdb import PgDatabase, PgOptions

    options = PgOptions(pool_size=settings.db_pool_size,
                        connect_timeout=settings.db_connect_timeout,
                        statement_timeout=settings.db_statement_timeout)
    return PgDatabase(settings.db, options, schema=migrations.ensure_schema)


def _run_undo(actions: list[Callable[[], None]]) -> None:
    for action in reversed(actions):
        try:
            action()
        except Exception:  # one failed undo must not skip the others
            log.exception("undo after a rolled back transaction failed")


def json_list(value: Any) -> list[Any]:
    """A ``json_group_array`` column: JSON text on SQLite; on PostgreSQL (``json_agg``) the
    decoded list, or NULL when no row was aggregated."""
    if value is None:
        return []
    return json.loads(value) if isinstance(value, str | bytes) else list(value)


def insert(conn: sqlite3.Connection, table: str, values: dict[str, Any]) -> int:
    cols = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    cur = conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", tuple(values.values()))
    return int(cur.lastrowid or 0)  # 0: a table without an id column (PostgreSQL)


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
        # ordered away from the bound: an index read in id order starts next to it (unordered,
        # SQLite may start at the other end and walk the whole history to find a neighbour)
        away = "DESC" if op == "<" else "ASC"
        q = f"SELECT 1 FROM {from_where} AND {id_col} {op} ? ORDER BY {id_col} {away} LIMIT 1"
        return db.row(q, [*args, bound]) is not None

    return PageResult(ids, exists("<", ids[-1]), exists(">", ids[0]))


# ---------------------------------------------------------------------------
# Image files under <data_dir>/uploads
# ---------------------------------------------------------------------------

TMP_SUFFIX = ".tmp"


def _unlink_quietly(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False
    except OSError:
        log.warning("could not delete %s", path, exc_info=True)
        return False


class FileStore:
    """Files addressed by a relative path ``<user>/<YYYYMMDD>/<random>_<kind>.<ext>``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._dirs = DirectorySync()

    def new_name(self, user_id: int, kind: str, ext: str) -> str:
        day = datetime.now(UTC).strftime("%Y%m%d")
        return f"{user_id}/{day}/{secrets.token_hex(12)}_{kind}.{ext}"

    def path(self, rel: str) -> Path | None:
        """The file for ``rel`` if it stays inside the store, else None."""
        p = (self.root / rel).resolve()
        if self.root not in p.parents:
            return None
        return p

    def _new_path(self, rel: str) -> Path | None:
        """:meth:`path` for a file about to be written (a :meth:`new_name`), checked by its
        text alone: relative, no ``.``/``..``/empty part, no NUL. ``path`` resolves every
        component (a few ``lstat`` calls per file, ~60 us of CPU) to follow symlinks,
        which only matters for names that were not made here."""
        parts = rel.split("/")
        if rel.startswith("/") or "\x00" in rel or "\\" in rel or any(
                p in ("", ".", "..") for p in parts):
            return None
        return self.root.joinpath(*parts)

    def write(self, rel: str, data: bytes) -> None:
        """Write ``rel`` whole or not at all: a ``.tmp`` file, fsynced, renamed into place,
        the directory fsynced (so the rename survives a power loss). On failure (ENOSPC,
        EIO, ...) the ``.tmp`` file is removed and the error raised."""
        self.write_all([(rel, data)])

    def write_all(self, files: Sequence[tuple[str, bytes]], tmp_tag: str = "") -> None:
        """:meth:`write` for several files: each written whole, then each directory they
        went into fsynced once (shared with concurrent writers to the same directory).
        ``tmp_tag`` names the temporary files apart from another writer's of the same
        names (thumbnails made on read)."""
        folders: list[Path] = []
        for rel, data in files:
            path = self._new_path(rel)
            if path is None:
                raise ValueError(f"bad upload path {rel!r}")
            if path.parent not in folders:
                self._make_dir(path.parent)
                folders.append(path.parent)
            tag = f".{tmp_tag}" if tmp_tag else ""
            write_atomic(path, data, path.with_name(f"{path.name}{tag}{TMP_SUFFIX}"))
        for folder in folders:
            self._dirs.sync(folder)

    def _make_dir(self, folder: Path) -> None:
        """``folder`` and its missing parents, each new one made durable in its parent."""
        if folder.is_dir():
            return
        if folder.parent != self.root:
            self._make_dir(folder.parent)
        folder.mkdir(exist_ok=True)
        self._dirs.sync(folder.parent)

    def remove_temporaries(self) -> int:
        """Delete ``*.tmp`` files left by a crash mid-write (at start, before serving)."""
        n = 0
        for tmp in self.root.rglob("*" + TMP_SUFFIX):
            if tmp.is_file() and _unlink_quietly(tmp):
                n += 1
        if n:
            log.info("removed %d unfinished upload(s) (*%s) from %s", n, TMP_SUFFIX, self.root)
        return n

    def delete(self, rel: str) -> None:
        path = self.path(rel)
        if path is not None:
            _unlink_quietly(path)
