"""PostgreSQL behind the interface of ``storage.Database`` (``--db postgresql://...``).

The backend's SQL is written once, with ``?`` (or ``:name``) placeholders, and runs on both
databases. psycopg 3 (with its pool, ``psycopg_pool``) runs it here; ``to_pg`` translates
what differs, once per statement text (cached):

* placeholders: ``?`` -> ``%s``, ``:name`` -> ``%(name)s`` (a literal ``%`` -> ``%%``);
  statements run through a client-side binding cursor, so an untyped ``?`` is a literal
  as in SQLite (``? IS NULL``, ``text = ?`` with an int);
* ``WHERE 1`` -> ``WHERE TRUE``; ``IN ()`` -> ``= ANY('{}')``, ``NOT IN ()`` -> ``<> ALL('{}')``;
* ``INSERT OR IGNORE`` -> ``ON CONFLICT DO NOTHING``; ``INSERT OR REPLACE`` -> ``ON CONFLICT
  (primary key) DO UPDATE`` of the other columns; ``IFNULL`` -> ``COALESCE``; the scalar
  ``MAX(a, b)``/``MIN(a, b)`` -> ``GREATEST``/``LEAST``;
* DDL: ``INTEGER PRIMARY KEY [AUTOINCREMENT]`` -> identity, ``INTEGER`` -> ``BIGINT``,
  ``REAL`` -> ``DOUBLE PRECISION``, ``BLOB`` -> ``BYTEA``; SQLite triggers are left out
  (their PostgreSQL twins are in the baseline revision, ``migrations/versions``);
* ``cursor.lastrowid``: an INSERT into a table with an identity column gets ``RETURNING``.

A transaction takes one pooled connection for its thread and the advisory lock
``WRITE_LOCK`` (``pg_advisory_xact_lock``): writers of every backend process are serialized
like SQLite's one writer, so a read-then-write (next camera seq, dynamic persons, friend
counts, idempotency keys) cannot interleave with another process's. Reads outside a
transaction take any pooled connection and see what was committed.

Faults: connection failures, timeouts (connect, statement, pool) and serialization failures
are raised as ``DatabaseUnavailable``, a ``sqlite3.OperationalError``, so the handlers that
answer 503 for SQLite answer it here too; the pool checks a connection before lending it and
replaces a broken one, so the backend reconnects by itself once the server is back.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.numeric import Int8Dumper
from psycopg_pool import ConnectionPool, PoolTimeout

from videodetector.backend import storage

log = logging.getLogger(__name__)

MAX_CACHED_STATEMENTS = 4096  # translated statement texts kept per database
WRITE_LOCK = 0x666B7669  # pg_advisory_xact_lock key of the write transactions ("fkvi")


class DatabaseUnavailable(sqlite3.OperationalError):  # noqa: N818 - an OperationalError
    """PostgreSQL is unreachable, too slow, or the transaction had to be retried (503)."""


class CommitFailed(DatabaseUnavailable, storage.CommitFailed):
    """COMMIT failed; the transaction was rolled back (a ``storage.CommitFailed``)."""


class PgIntegrityError(sqlite3.IntegrityError):
    """A constraint failed (as ``sqlite3.IntegrityError`` does)."""


@dataclass(frozen=True)
class PgOptions:
    """Connection settings of ``PgDatabase`` (seconds)."""

    pool_size: int = 10
    connect_timeout: float = 3.0
    statement_timeout: float = 15.0
    pool_timeout: float = 5.0

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "statement_timeout", "pool_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {self.pool_size!r}")


# ---------------------------------------------------------------------------
# SQL translation
# ---------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z_]\w*")


def _placeholders(sql: str) -> str:
    """``?`` -> ``%s``, ``:name`` -> ``%(name)s``, ``%`` -> ``%%``, outside quotes."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":
            j = sql.find(c, i + 1)
            while j != -1 and j + 1 < n and sql[j + 1] == c:  # '' inside a literal
                j = sql.find(c, j + 2)
            j = n - 1 if j == -1 else j
            out.append(sql[i:j + 1].replace("%", "%%"))
            i = j + 1
            continue
        if c == "?":
            out.append("%s")
        elif c == "%":
            out.append("%%")
        elif c == ":" and i + 1 < n and sql[i + 1] == ":":
            out.append("::")
            i += 1
        elif c == ":" and (m := _NAME.match(sql, i + 1)):
            out.append(f"%({m.group()})s")
            i = m.end()
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _split_args(text: str, start: int) -> tuple[list[str], int]:
    """The top-level comma-separated arguments of the call whose ``(`` is at ``start``, and
    the index after its ``)``."""
    depth, args, begin, i = 0, [], start + 1, start
    while i < len(text):
        c = text[i]
        if c == "'":
            i = text.find("'", i + 1)
            if i == -1:
                break
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                args.append(text[begin:i])
                return args, i + 1
        elif c == "," and depth == 1:
            args.append(text[begin:i])
            begin = i + 1
        i += 1
    return [text[start + 1:]], len(text)


_WHERE_1 = re.compile(r"\bWHERE\s+1\b(?!\s*(?:[-+*/%=<>!|.]|IS\b|IN\b|NOT\b|BETWEEN\b|LIKE\b))",
                      re.I)
_NOT_IN_EMPTY = re.compile(r"\bNOT\s+IN\s*\(\s*\)", re.I)
_IN_EMPTY = re.compile(r"\bIN\s*\(\s*\)", re.I)
# SQLite's index hints (PostgreSQL's planner chooses by itself) and its JSON aggregate
_INDEXED_BY = re.compile(r"\s+(?:INDEXED\s+BY\s+\w+|NOT\s+INDEXED)\b", re.I)
_JSON_GROUP_ARRAY = re.compile(r"\bjson_group_array\s*\(", re.I)
_SCALAR = re.compile(r"\b(MAX|MIN)\s*\(", re.I)


def _scalar_minmax(sql: str) -> str:
    """``MAX(a, b)`` (SQLite's scalar max) -> ``GREATEST(a, b)``; aggregates stay."""
    pos = 0
    while m := _SCALAR.search(sql, pos):
        args, end = _split_args(sql, m.end() - 1)
        if len(args) > 1:
            name = "GREATEST" if m.group(1).upper() == "MAX" else "LEAST"
            inner = ", ".join(_scalar_minmax(a.strip()) for a in args)
            sql = f"{sql[:m.start()]}{name}({inner}){sql[end:]}"
        pos = m.start() + 1
    return sql


_DDL_TYPES = [
    (re.compile(r"\bINTEGER\s+PRIMARY\s+KEY(\s+AUTOINCREMENT)?", re.I),
     "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b", re.I), "BIGINT"),
    (re.compile(r"\bREAL\b", re.I), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b", re.I), "BYTEA"),
]
_DDL = re.compile(r"^\s*(CREATE\s+TABLE|ALTER\s+TABLE)\b", re.I)
_INSERT_OR = re.compile(r"^\s*INSERT\s+OR\s+(IGNORE|REPLACE)\s+INTO\s+(\w+)", re.I)
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+(\w+)", re.I)
_COLUMNS = re.compile(r"^\s*INSERT\s+INTO\s+\w+\s*\(([^)]*)\)", re.I)


@dataclass(frozen=True)
class Table:
    key: tuple[str, ...]  # primary key columns
    columns: tuple[str, ...]
    identity: str | None  # the identity column (lastrowid), if any


Catalog = dict[str, Table]


def _upsert(sql: str, table: Table | None, how: str, name: str) -> str:
    head = _INSERT_OR.match(sql)
    assert head is not None
    sql = f"INSERT INTO {name}{sql[head.end():]}"
    if how.upper() == "IGNORE":
        return f"{sql} ON CONFLICT DO NOTHING"
    if table is None or not table.key:
        raise ValueError(f"INSERT OR REPLACE into {name!r}: no primary key known")
    cols = _COLUMNS.match(sql)
    names = [c.strip() for c in cols.group(1).split(",")] if cols else list(table.columns)
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in names if c not in table.key)
    action = f"DO UPDATE SET {sets}" if sets else "DO NOTHING"
    return f"{sql} ON CONFLICT ({', '.join(table.key)}) {action}"


def to_pg(sql: str, tables: Catalog | None = None) -> tuple[str, str | None]:
    """PostgreSQL text of a statement written for SQLite, and the column RETURNING adds
    for ``lastrowid`` (None when it adds none). ``tables``: the database's tables."""
    tables = tables or {}
    sql = sql.strip().rstrip(";")
    if _DDL.match(sql):
        for pattern, repl in _DDL_TYPES:
            sql = pattern.sub(repl, sql)
        return _placeholders(sql), None
    sql = re.sub(r"\bIFNULL\s*\(", "COALESCE(", sql, flags=re.I)
    sql = _INDEXED_BY.sub("", sql)
    sql = _JSON_GROUP_ARRAY.sub("json_agg(", sql)  # a json value, NULL when no row: see json_list
    # an empty IN list (SQLite: false; NOT IN: true) is a syntax error in PostgreSQL; the
    # untyped '{}' takes the type of the left side
    sql = _WHERE_1.sub("WHERE TRUE", sql)  # SQLite's "WHERE 1 [AND ...]"
    sql = _NOT_IN_EMPTY.sub("<> ALL('{}')", sql)
    sql = _IN_EMPTY.sub("= ANY('{}')", sql)
    sql = _scalar_minmax(sql)
    if m := _INSERT_OR.match(sql):
        sql = _upsert(sql, tables.get(m.group(2).lower()), m.group(1), m.group(2))
    returning = None
    if (m := _INSERT.match(sql)) and not re.search(r"\bRETURNING\b", sql, re.I):
        table = tables.get(m.group(1).lower())
        if table is not None and table.identity:
            returning = table.identity
            sql = f"{sql} RETURNING {returning}"
    return _placeholders(sql), returning


_TRIGGER = re.compile(r"CREATE\s+TRIGGER\b.*?\bEND\s*;", re.I | re.S)


def split_script(script: str) -> list[str]:
    """The statements of a SQLite script (comments and triggers left out)."""
    script = _TRIGGER.sub("", script)
    script = "\n".join(line for line in script.splitlines()
                       if not line.lstrip().startswith("--"))
    return [s.strip() for s in script.split(";") if s.strip()]


# ---------------------------------------------------------------------------
# Rows and cursors shaped like sqlite3's
# ---------------------------------------------------------------------------

class Row:
    """A result row read by position or column name, like ``sqlite3.Row``."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: dict[str, int], values: tuple[Any, ...]) -> None:
        self._index = index
        self._values = values

    def __getitem__(self, key: int | str | slice) -> Any:
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> list[str]:
        return list(self._index)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Row):
            return self._values == other._values and self._index == other._index
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values)

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._index, self._values, strict=False))!r})"


class Cursor:
    """The result of one statement, fetched whole (the connection went back to the pool)."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        self.row_factory: Any = Row
        self._rows: list[Any] = []
        self._pos = 0
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.description: Any = None
        self.arraysize = 1

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Cursor:
        self._db.run(self, sql, params)
        return self

    def executemany(self, sql: str, seq: Iterator[Sequence[Any]]) -> Cursor:
        total = 0
        for params in seq:
            self._db.run(self, sql, params)
            total += max(self.rowcount, 0)
        self.rowcount = total
        return self

    def _load(self, names: list[str] | None, rows: list[tuple[Any, ...]]) -> None:
        if names is not None and self.row_factory is Row:
            index = {n: i for i, n in enumerate(names)}
            self._rows = [Row(index, r) for r in rows]
        else:
            self._rows = rows
        self._pos = 0

    def fetchone(self) -> Any:
        if self._pos >= len(self._rows):
            return None
        self._pos += 1
        return self._rows[self._pos - 1]

    def fetchmany(self, size: int | None = None) -> list[Any]:
        size = self.arraysize if size is None else size
        out = self._rows[self._pos:self._pos + size]
        self._pos += len(out)
        return out

    def fetchall(self) -> list[Any]:
        out = self._rows[self._pos:]
        self._pos = len(self._rows)
        return out

    def __iter__(self) -> Iterator[Any]:
        while (row := self.fetchone()) is not None:
            yield row

    def close(self) -> None:
        self._rows = []


class Connection:
    """What ``Database.conn`` / ``transaction()`` give: ``execute`` & co. on the calling
    thread's transaction connection, else on any pooled connection (autocommit)."""

    dialect = "postgresql"

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    def cursor(self) -> Cursor:
        return Cursor(self._db)

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Cursor:
        return Cursor(self._db).execute(sql, params)

    def executemany(self, sql: str, seq: Any) -> Cursor:
        return Cursor(self._db).executemany(sql, seq)

    def executescript(self, script: str) -> None:
        self._db.executescript(script)

    @property
    def in_transaction(self) -> bool:
        return self._db.in_transaction

    def close(self) -> None:
        self._db.close()


class _BoolAsInt(Int8Dumper):
    """Python bools into the INTEGER 0/1 columns shared with SQLite."""

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


def _configure(conn: psycopg.Connection) -> None:
    conn.adapters.register_dumper(bool, _BoolAsInt)


def _unavailable(exc: BaseException) -> DatabaseUnavailable:
    return DatabaseUnavailable(f"database unavailable: {str(exc).strip() or type(exc).__name__}")


@contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except (psycopg.OperationalError, PoolTimeout, psycopg.errors.ConnectionTimeout) as exc:
        raise _unavailable(exc) from exc
    except psycopg.IntegrityError as exc:
        raise PgIntegrityError(str(exc)) from exc
    except psycopg.InterfaceError as exc:  # a connection closed under us
        raise _unavailable(exc) from exc


class PgDatabase:
    """The PostgreSQL twin of ``storage.Database`` (same methods, ``dialect`` says which)."""

    dialect = "postgresql"

    def __init__(self, url: str, options: PgOptions | None = None,
                 schema: Callable[[PgDatabase], None] | None = None) -> None:
        self.url = url
        self.options = options = options or PgOptions()
        self.lock = threading.RLock()
        self._undo: list[Callable[[], None]] | None = None
        self._local = threading.local()
        self._catalog: Catalog = {}
        # called with the connection at the start of each write transaction, under the
        # write lock of every process (Backend.catch_up)
        self.on_begin: Callable[[Connection], None] | None = None
        self._translated: dict[str, tuple[str, str | None]] = {}  # to_pg of each text
        self.conn = Connection(self)
        kwargs = {"autocommit": True, "cursor_factory": psycopg.ClientCursor,
                  "connect_timeout": max(1, round(options.connect_timeout)),
                  "options": f"-c statement_timeout={int(options.statement_timeout * 1000)}"}
        self.pool = ConnectionPool(url, min_size=1, max_size=options.pool_size, kwargs=kwargs,
                                   configure=_configure, check=ConnectionPool.check_connection,
                                   timeout=options.pool_timeout, open=False,
                                   reconnect_timeout=0, name="fkvideo")
        self.pool.open(wait=False)
        self.refresh_catalog()
        if schema is not None:
            schema(self)
            self.refresh_catalog()

    # -- connections ---------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        current = getattr(self._local, "conn", None)
        if current is not None:
            yield current
            return
        with _mapped_errors(), self.pool.connection() as conn:
            yield conn

    @property
    def in_transaction(self) -> bool:
        return getattr(self._local, "conn", None) is not None

    def run(self, cursor: Cursor, sql: str, params: Sequence[Any] | dict[str, Any]) -> None:
        done = self._translated.get(sql)
        if done is None:
            if len(self._translated) >= MAX_CACHED_STATEMENTS:  # texts built per call (IN lists)
                self._translated.clear()
            done = self._translated[sql] = to_pg(sql, self._catalog)
        text, returning = done
        args = dict(params) if isinstance(params, dict) else tuple(params)
        with self._connection() as conn, _mapped_errors():
            cur = conn.execute(text, args or None)
            names = [d.name for d in cur.description] if cur.description else None
            rows = cur.fetchall() if names is not None else []
            cursor.description = cur.description
            cursor.rowcount = cur.rowcount
        cursor.lastrowid = None
        if returning is not None:
            cursor.lastrowid = int(rows[-1][0]) if rows else None
            rows, names, cursor.description = [], None, None
        cursor._load(names, rows)

    def executescript(self, script: str) -> None:
        """Run a SQLite schema script (DDL translated); in a transaction of its own unless
        one is open on this thread."""
        if self.in_transaction:
            for statement in split_script(script):
                self.conn.execute(statement)
        else:
            with self.transaction() as conn:
                for statement in split_script(script):
                    conn.execute(statement)
        self.refresh_catalog()

    def execute_raw(self, sql: str) -> None:
        """A PostgreSQL statement as it is (no translation; ``$$`` bodies, ...)."""
        with self._connection() as conn, _mapped_errors():
            conn.execute(sql)

    def refresh_catalog(self) -> None:
        """Learn each table's primary key, columns and identity column (for INSERT OR
        REPLACE and lastrowid)."""
        cols = self.rows("SELECT table_name, column_name, is_identity FROM "
                         "information_schema.columns WHERE table_schema = current_schema() "
                         "ORDER BY table_name, ordinal_position")
        keys = self.rows("SELECT k.table_name, k.column_name FROM "
                         "information_schema.table_constraints c JOIN "
                         "information_schema.key_column_usage k ON k.constraint_name = "
                         "c.constraint_name AND k.table_schema = c.table_schema WHERE "
                         "c.constraint_type = 'PRIMARY KEY' AND c.table_schema = "
                         "current_schema() ORDER BY k.table_name, k.ordinal_position")
        catalog: dict[str, tuple[list[str], list[str], str | None]] = {}
        for table, column, identity in cols:
            entry = catalog.setdefault(table, ([], [], None))
            entry[1].append(column)
            if identity == "YES":
                catalog[table] = (entry[0], entry[1], column)
        for table, column in keys:
            if table in catalog:
                catalog[table][0].append(column)
        self._catalog = {t: Table(tuple(k), tuple(c), i) for t, (k, c, i) in catalog.items()}
        self._translated = {}

    def close(self) -> None:
        self.pool.close()

    # -- the interface of storage.Database -------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """BEGIN, the write lock of every process, ... COMMIT; on any exception (a failed
        COMMIT too) roll back and run the undo actions registered with ``on_rollback``."""
        with self.lock:
            if self._undo is not None:
                raise RuntimeError("transactions do not nest")
            with _mapped_errors(), self.pool.connection() as conn:
                self._local.conn = conn
                undo: list[Callable[[], None]] = []
                try:
                    with _mapped_errors():
                        conn.execute("BEGIN")
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                    self._undo = undo
                    if self.on_begin is not None:
                        self.on_begin(self.conn)
                    yield self.conn
                    self._commit(conn)
                except BaseException:
                    self._rollback(conn)
                    self._undo = None
                    storage._run_undo(undo)
                    raise
                finally:
                    self._local.conn = None
                self._undo = None

    @staticmethod
    def _commit(conn: psycopg.Connection) -> None:
        """COMMIT; any failure (a deferred constraint, the server gone) is a 503, as a
        failed COMMIT is on SQLite (``storage.CommitFailed``)."""
        try:
            conn.execute("COMMIT")
        except (psycopg.Error, PoolTimeout) as exc:
            raise CommitFailed(f"commit failed: {exc}") from exc

    @staticmethod
    def _rollback(conn: psycopg.Connection) -> None:
        try:
            if not conn.closed:
                conn.execute("ROLLBACK")
        except psycopg.Error:  # the pool discards a broken connection
            log.warning("rollback failed", exc_info=True)

    def on_rollback(self, action: Callable[[], None]) -> None:
        if self._undo is None:
            raise RuntimeError("on_rollback outside a transaction")
        self._undo.append(action)

    def rows(self, sql: str, args: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        return self.conn.execute(sql, args).fetchall()

    def row(self, sql: str, args: Sequence[Any] | dict[str, Any] = ()) -> Any:
        return self.conn.execute(sql, args).fetchone()

    def rows_with(self, settings: dict[str, str], sql: str,
                  args: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        """``rows`` with run-time settings (``SET LOCAL``, e.g. ``hnsw.ef_search``) for this
        statement only: both in one read transaction on one connection (no write lock), or
        in this thread's open transaction."""
        if self.in_transaction:
            return self._rows_set(settings, sql, args)
        with _mapped_errors(), self.pool.connection() as conn:
            self._local.conn = conn
            try:
                with _mapped_errors(), conn.transaction():
                    return self._rows_set(settings, sql, args)
            finally:
                self._local.conn = None

    def _rows_set(self, settings: dict[str, str], sql: str,
                  args: Sequence[Any] | dict[str, Any]) -> list[Any]:
        for name, value in settings.items():
            self.conn.execute("SELECT set_config(?, ?, true)", (name, str(value)))
        return self.rows(sql, args)

    def scalar(self, sql: str, args: Sequence[Any] | dict[str, Any] = ()) -> Any:
        r = self.row(sql, args)
        return None if r is None else r[0]
