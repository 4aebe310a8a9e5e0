"""Schema creation and upgrades of the backend's database with Alembic, on SQLite and
PostgreSQL, run by the program itself when it opens the database (no ``alembic`` command,
no ``env.py``: the revisions under ``versions/`` run through Alembic's
``EnvironmentContext`` on a SQLAlchemy connection of their own).

``ensure_schema(db)`` is called by ``storage.Database`` and ``open_database``:

* at head (the common case): one query (``SELECT version_num FROM alembic_version``) and
  nothing of Alembic or SQLAlchemy is imported;
* otherwise the revisions above the database's run in ONE transaction that first takes a
  lock every process takes: SQLite ``BEGIN IMMEDIATE`` on the database file (the write lock
  of every connection, in any process), PostgreSQL the advisory write lock of
  ``pgdb.WRITE_LOCK`` (``pg_advisory_xact_lock``, the lock of every write transaction).
  Alembic reads the database's revision after the lock, so of two processes starting
  together one upgrades and the other finds the schema done. A failure rolls back all.

A database made before Alembic (no ``alembic_version``; SQLite ``PRAGMA user_version``
0..4, PostgreSQL ``settings.schema_version``) gets the baseline revision ``0001``, which
adds what it lacks and keeps its rows.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

HEAD = "0002"  # the newest revision under versions/ (tests check they agree)
SCRIPT_LOCATION = Path(__file__).resolve().parent
UPGRADE_WAIT = 300.0  # seconds a process waits for another's upgrade (then fails)

# Alembic's ``op`` and ``context`` are process-global proxies: one upgrade at a time per
# process (across processes, the database's own lock).
_RUNNING = threading.Lock()


class SchemaError(RuntimeError):
    """The database's schema cannot be brought to this program's head (e.g. it was made
    by a newer program)."""


@dataclass(frozen=True)
class SchemaChange:
    """The revision of the database before and after ``ensure_schema`` (None: none)."""

    before: str | None
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def current_revision(db: Any) -> str | None:
    """The Alembic revision of an open ``Database``/``PgDatabase`` (one query); None when
    it has none (empty, or made before Alembic). Several heads are joined by spaces."""
    try:
        rows = db.rows("SELECT version_num FROM alembic_version")
    except Exception as exc:
        if _no_such_table(exc):
            return None
        raise
    return " ".join(sorted(str(r[0]) for r in rows)) or None


def _no_such_table(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc):
        return True
    return type(exc).__name__ == "UndefinedTable"  # psycopg.errors.UndefinedTable


def ensure_schema(db: Any) -> SchemaChange:
    """Bring the database of ``db`` to ``HEAD`` (see the module's docstring)."""
    before = current_revision(db)
    if before == HEAD:
        return SchemaChange(before, HEAD)
    with _RUNNING:
        change = _upgrade(db)
    if change.changed:
        log.info("database schema upgraded from revision %s to %s",
                 change.before or "(none)", change.after)
    return change


def _upgrade(db: Any) -> SchemaChange:
    import sqlalchemy as sa

    # Alembic lists its autogenerate plugins at INFO on first use: noise for a server log
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

    engine = _engine(db)
    try:
        with engine.connect() as conn, conn.begin():
            if db.dialect == "postgresql":
                from videodetector.backend.pgdb import WRITE_LOCK

                conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(UPGRADE_WAIT)}s'")
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": WRITE_LOCK})
            return run_upgrade(conn)
    finally:
        engine.dispose()


def run_upgrade(conn: Connection, target: str = "heads") -> SchemaChange:
    """Run the revisions from the database's to ``target`` on ``conn`` (a SQLAlchemy
    connection in a transaction the caller commits)."""
    from alembic.runtime.environment import EnvironmentContext
    from alembic.util import CommandError

    script = script_directory()
    seen: list[tuple[str, ...]] = []

    def steps(rev: tuple[str, ...], context: Any) -> Any:
        seen.append(tuple(rev))
        return script._upgrade_revs(target, rev)  # what alembic.command.upgrade runs

    try:
        with EnvironmentContext(alembic_config(), script, fn=steps, destination_rev=target) as env:
            env.configure(connection=conn, transactional_ddl=True)
            env.run_migrations()
            after = env.get_context().get_current_heads()
    except CommandError as exc:  # e.g. a revision this program does not know
        raise SchemaError(f"cannot upgrade the database schema to revision {HEAD}: {exc} "
                          "(was it made by a newer program?)") from exc
    before = " ".join(sorted(seen[0])) if seen and seen[0] else None
    return SchemaChange(before, " ".join(sorted(after)))


def describe(settings: Any) -> str:
    """What ``fkvideo_backend db current`` prints: the revision of the database of
    ``settings`` (read only, nothing is created or upgraded)."""
    if settings.db is None:
        path = Path(settings.data_dir) / "backend.sqlite3"
        if not path.is_file():
            return f"no database at {path}"
        conn: Any = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        where = str(path)
    else:
        import psycopg

        conn, where = psycopg.connect(settings.db, autocommit=True), "PostgreSQL"
    try:
        revision, legacy = _read_versions(conn)
    finally:
        conn.close()
    if revision is not None:
        state = "up to date" if revision == HEAD else f"this program's head is {HEAD}"
        return f"{where}: revision {revision} ({state})"
    if legacy is not None:
        return (f"{where}: made before Alembic (schema version {legacy}); the next start "
                f"or 'fkvideo_backend db upgrade' takes it over (revision {HEAD})")
    return f"{where}: empty; the next start creates revision {HEAD}"


def _read_versions(conn: Any) -> tuple[str | None, str | None]:
    """(the Alembic revision, the pre-Alembic settings.schema_version) of a DB-API
    connection; None for what it lacks."""
    found: list[str | None] = []
    for sql in ("SELECT version_num FROM alembic_version",
                "SELECT value FROM settings WHERE key = 'schema_version'"):
        try:
            rows = conn.execute(sql).fetchall()
        except Exception as exc:
            if not _no_such_table(exc):
                raise
            rows = []
        found.append(" ".join(sorted(str(r[0]) for r in rows)) or None)
    return found[0], found[1]


def history() -> list[str]:
    """The shipped revisions, newest first: ``<revision>: <first line of its doc>``."""
    return [f"{sc.revision}: {sc.doc}" for sc in script_directory().walk_revisions()]


@cache
def alembic_config() -> Any:
    """Alembic's configuration of the shipped revisions, e.g. to write a new one::

        alembic.command.revision(alembic_config(), "add x", rev_id="0002")
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    return config


@cache
def script_directory() -> ScriptDirectory:
    """The revisions shipped in the package (loaded once per process)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def _engine(db: Any) -> Engine:
    """A SQLAlchemy engine with one connection of its own to ``db``'s database."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    if db.dialect == "postgresql":
        import psycopg

        url, timeout = db.url, max(1, round(db.options.connect_timeout))
        return sa.create_engine("postgresql+psycopg://", poolclass=NullPool,
                                creator=lambda: psycopg.connect(url, connect_timeout=timeout))
    path = str(db.path)
    engine = sa.create_engine(
        "sqlite://", poolclass=NullPool,
        creator=lambda: sqlite3.connect(path, timeout=UPGRADE_WAIT, isolation_level=None))

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # the write lock of the file now (a deferred BEGIN would let two processes read
        # "no schema" and both create it); SQLite's own BEGIN, as the driver is in
        # autocommit mode (SQLAlchemy's recipe for transactional DDL on pysqlite)
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
