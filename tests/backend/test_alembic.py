"""The schema by Alembic (backend/migrations): a fresh database has exactly the schema the
hand-written code made (frozen in legacy_schema.py), a database made by that code is taken
over with its rows, two processes opening a fresh database together apply it once, an
up-to-date database is opened without Alembic, a failed upgrade leaves nothing behind."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.backend import legacy_schema
from tests.pg import PgCluster
from videodetector.backend import migrations
from videodetector.backend.cli import main
from videodetector.backend.settings import Settings
from videodetector.backend.storage import SCHEMA_VERSION, Database, open_database

ROOT = Path(__file__).resolve().parents[2]


# -- what a schema is, read back from the database ------------------------------------------

def _normal(sql: str | None) -> str:
    return re.sub(r"\s+", " ", (sql or "").replace("IF NOT EXISTS ", "")).strip()


def sqlite_schema(conn: Any) -> dict[tuple[str, str], Any]:
    """Tables (columns: name, type, not null, default, key; AUTOINCREMENT), indexes
    (columns, unique, origin, partial) and triggers (whitespace-normalized SQL) of a SQLite
    database, Alembic's own table left out."""
    out: dict[tuple[str, str], Any] = {}
    objects = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master "
                           "WHERE tbl_name <> 'alembic_version'").fetchall()
    for kind, name, table, sql in objects:
        if kind == "table":
            cols = [tuple(r)[1:] for r in conn.execute(f'PRAGMA table_xinfo("{name}")')]
            out[(kind, name)] = (cols, "AUTOINCREMENT" in (sql or "").upper())
            for index in conn.execute(f'PRAGMA index_list("{name}")'):
                _, iname, unique, origin, partial = tuple(index)
                icols = [tuple(r)[1:] for r in conn.execute(f'PRAGMA index_xinfo("{iname}")')]
                out[("index", iname)] = (name, icols, unique, origin, partial)
        elif kind == "trigger":
            out[(kind, name)] = (table, _normal(sql))
    return out


PG_QUERIES = {
    "columns": "SELECT table_name, ordinal_position, column_name, data_type, udt_name, "
               "is_nullable, column_default, is_identity, identity_generation, is_generated, "
               "generation_expression FROM information_schema.columns WHERE table_schema = "
               "current_schema() AND table_name <> 'alembic_version' ORDER BY 1, 2",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = "
               "current_schema() AND tablename <> 'alembic_version' ORDER BY 1, 2",
    # NOT NULL checks are named after table oids (they differ between any two databases)
    "constraints": "SELECT table_name, constraint_name, constraint_type FROM "
                   "information_schema.table_constraints WHERE table_schema = current_schema() "
                   "AND constraint_type <> 'CHECK' AND table_name <> 'alembic_version' "
                   "ORDER BY 1, 2",
    "triggers": "SELECT event_object_table, trigger_name, event_manipulation, action_timing, "
                "action_orientation, action_statement FROM information_schema.triggers "
                "WHERE trigger_schema = current_schema() ORDER BY 1, 2, 3",
    "functions": "SELECT proname, prosrc, provolatile, proisstrict, proparallel FROM pg_proc "
                 "WHERE proname LIKE 'fkvideo%' ORDER BY 1",
    "extensions": "SELECT extname FROM pg_extension ORDER BY 1",
    "settings": "SELECT key, value FROM settings ORDER BY 1",
}


def pg_schema(db: Any) -> dict[str, list[tuple[Any, ...]]]:
    return {name: [tuple(r) for r in db.rows(sql)] for name, sql in PG_QUERIES.items()}


def _rows(conn: Any, tables: list[str], columns: dict[str, list[str]] | None = None
          ) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of ``tables`` (only ``columns[table]`` when given: a later revision may
    have added columns)."""
    def select(t: str) -> str:
        return ", ".join(columns[t]) if columns and t in columns else "*"

    return {t: sorted(tuple(r) for r in conn.execute(f"SELECT {select(t)} FROM {t}"))
            for t in tables}


# -- fresh databases: the new path makes what the old code made ---------------------------

def test_head_is_the_newest_shipped_revision() -> None:
    script = migrations.script_directory()
    assert script.get_heads() == [migrations.HEAD]
    assert Path(script.dir) == (ROOT / "videodetector/backend/migrations")
    assert migrations.history()[0].startswith(f"{migrations.HEAD}: ")


def test_fresh_sqlite_database_has_the_schema_the_old_code_made(tmp_path: Path) -> None:
    old = legacy_schema.build_sqlite(tmp_path / "old.sqlite3")
    legacy_schema.add_store_tables(old)  # what the stores made outside Alembic (0002)
    new = Database(tmp_path / "new.sqlite3")
    try:
        want = sqlite_schema(old)
        assert len(want) > 30  # tables, indexes, the trigger
        assert sqlite_schema(new.conn) == want
        for conn in (old, new.conn):
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert _rows(new.conn, ["settings"]) == _rows(old, ["settings"])
        assert migrations.current_revision(new) == migrations.HEAD
    finally:
        old.close()
        new.close()


def test_fresh_postgresql_database_has_the_schema_the_old_code_made(
        pg_cluster: PgCluster, tmp_path: Path) -> None:
    old = legacy_schema.build_postgresql(pg_cluster.new_database())
    legacy_schema.add_store_tables(old)
    new = open_database(Settings(data_dir=tmp_path, db=pg_cluster.new_database()))
    try:
        want = pg_schema(old)
        assert len(want["columns"]) > 70 and want["triggers"] and want["functions"]
        assert pg_schema(new) == want
        assert migrations.current_revision(new) == migrations.HEAD
    finally:
        old.close()
        new.close()


# -- databases made by the old code --------------------------------------------------------

def _fill_old(conn: Any, version: int) -> None:
    """Rows in every table the old code's ``version`` had."""
    face = ("INSERT INTO faces (user_id, meta, timestamp, ts, day, x1, y1, x2, y2, photo, "
            "photo_hash, thumbnail, normalized, embedding) VALUES (?, ?, 't', ?, 'd', 0, 0, 1, "
            "1, 'p', 'h', 't', 'n', ?)")
    conn.execute("INSERT INTO users (token_hash, kind, created) VALUES ('h', 'long', 'c')")
    conn.execute("INSERT INTO galleries VALUES (1, 'wl', 'c')")
    conn.execute("INSERT INTO persons (user_id, meta, created) VALUES (1, 'p', 'c')")
    for i in range(3):
        conn.execute(face, (1, f"face {i}", 100.0 + i, bytes(range(4)) * 32))
    conn.execute("INSERT INTO face_galleries VALUES (2, 1, 'wl')")
    conn.execute("INSERT INTO cameras (id, user_id, seq, created) VALUES ('c1', 1, 1, 'c')")
    conn.execute("INSERT INTO idempotency VALUES (1, 'k', '[1]', 1.0)")
    conn.execute("INSERT INTO settings VALUES ('persons_schema_version', '2')")
    if version >= 3:
        conn.execute("INSERT INTO embeddings VALUES (1, 'sface-2021dec-int8', ?, 1.0)",
                     (bytes(4),))


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4])
def test_sqlite_database_of_the_old_code_is_taken_over_with_its_rows(
        tmp_path: Path, version: int) -> None:
    old = legacy_schema.build_sqlite(tmp_path / "backend.sqlite3", version)
    old.execute("BEGIN")
    _fill_old(old, version)
    old.execute("COMMIT")
    tables = [r[0] for r in old.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                        "AND name NOT LIKE 'sqlite_%'")]
    cols = {t: [r[1] for r in old.execute(f"PRAGMA table_info({t})")] for t in tables}
    before = _rows(old, tables)
    old.close()
    fresh = Database(tmp_path / "fresh.sqlite3")
    db = Database(tmp_path / "backend.sqlite3")
    try:
        assert migrations.current_revision(db) == migrations.HEAD
        assert sqlite_schema(db.conn) == sqlite_schema(fresh.conn)
        for table in tables:  # every row kept, column for column
            got = sorted(tuple(r) for r in db.conn.execute(
                f"SELECT {', '.join(cols[table])} FROM {table}"))
            want = before[table]
            if table == "settings":  # the old keys, schema_version now the baseline's
                want = sorted(r for r in want if r[0] != "schema_version")
                got = sorted(r for r in got if r[0] != "schema_version")
            assert got == want, table
        assert db.scalar("SELECT value FROM settings WHERE key = 'schema_version'") == "4"
        assert db.scalar("PRAGMA user_version") == SCHEMA_VERSION
        # what the old steps did to the rows: the change feed has the faces (version 2),
        # old faces are of the first model (version 3), no emotions (version 4)
        feed = [tuple(r) for r in db.rows("SELECT gallery, face_id, deleted, at FROM "
                                          "face_changes ORDER BY gallery, face_id")]
        if version < 2:
            assert feed == [("default", 1, 0, 100.0), ("default", 2, 0, 101.0),
                            ("default", 3, 0, 102.0), ("wl", 2, 0, 101.0)]
        assert {tuple(r) for r in db.rows("SELECT model, emotions FROM faces")} == \
            {("sface-2021dec", None)}
        with db.transaction() as conn:  # the trigger works: a face's embeddings go with it
            conn.execute("DELETE FROM faces WHERE id = 1")
        assert db.scalar("SELECT COUNT(*) FROM embeddings") == 0
    finally:
        db.close()
        fresh.close()


def test_postgresql_database_of_the_old_code_is_taken_over_with_its_rows(
        pg_cluster: PgCluster, tmp_path: Path) -> None:
    url = pg_cluster.new_database()
    old = legacy_schema.build_postgresql(url)
    with old.transaction() as conn:
        _fill_old(conn, 4)
    tables = sorted(t for (t,) in old.rows(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = "
        "current_schema()"))
    before = _rows(old.conn, tables)
    columns = {t: [r[0] for r in old.rows(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND table_name = ? ORDER BY ordinal_position", (t,))] for t in tables}
    old.close()
    fresh = open_database(Settings(data_dir=tmp_path, db=pg_cluster.new_database()))
    db = open_database(Settings(data_dir=tmp_path, db=url))
    try:
        assert migrations.current_revision(db) == migrations.HEAD
        assert pg_schema(db) == pg_schema(fresh) | {"settings": before["settings"]}
        assert _rows(db.conn, tables, columns) == before
        assert db.scalar("SELECT COUNT(*) FROM faces WHERE vec IS NOT NULL") == 3
    finally:
        db.close()
        fresh.close()


# -- opening: up to date, failed, newer, two processes -------------------------------------

def test_an_up_to_date_database_is_opened_without_alembic(tmp_path: Path) -> None:
    """The second open reads alembic_version and imports neither Alembic nor SQLAlchemy."""
    Database(tmp_path / "backend.sqlite3").close()
    code = ("import sys; from videodetector.backend.storage import Database; "
            f"Database({str(tmp_path / 'backend.sqlite3')!r}).close(); "
            "print(sorted(m for m in ('alembic', 'sqlalchemy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_failed_upgrade_leaves_the_database_as_it_was(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    baseline = migrations.script_directory().get_revision(migrations.HEAD).module
    monkeypatch.setattr(baseline, "SQLITE_TRIGGERS", ("CREATE TRIGGER broken",))
    with pytest.raises(Exception, match="syntax error|incomplete input"):
        Database(tmp_path / "backend.sqlite3")
    conn = sqlite3.connect(tmp_path / "backend.sqlite3")
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []  # all rolled back
    conn.close()
    monkeypatch.undo()
    db = Database(tmp_path / "backend.sqlite3")
    assert migrations.current_revision(db) == migrations.HEAD
    db.close()


def test_a_database_of_a_newer_program_is_refused(tmp_path: Path) -> None:
    db = Database(tmp_path / "backend.sqlite3")
    with db.transaction() as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    db.close()
    with pytest.raises(migrations.SchemaError, match="9999.*newer program"):
        Database(tmp_path / "backend.sqlite3")


CHILD = """
import logging, sys, time
from pathlib import Path
import alembic.runtime.environment, sqlalchemy  # imported before the start line
from videodetector.backend import migrations
from videodetector.backend.settings import Settings
from videodetector.backend.storage import open_database
migrations.script_directory()
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
data_dir, db, ready, go = sys.argv[1:5]
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.0005)
open_database(Settings(data_dir=Path(data_dir), db=db or None)).close()
"""


def _open_together(tmp_path: Path, db: str = "", n: int = 3) -> list[str]:
    """``n`` processes open one database (SQLite in ``tmp_path/data``, or the PostgreSQL
    URL ``db``) at the same moment, once all have imported everything; their stderr."""
    go, ready = tmp_path / "go", [tmp_path / f"ready{i}" for i in range(n)]
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "data"), db,
                               str(r), str(go)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
             for r in ready]
    try:
        deadline = time.monotonic() + 120
        while not all(r.exists() for r in ready):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.01)
    finally:
        go.touch()
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * n, errs
    return errs


def test_two_processes_open_a_fresh_sqlite_database_together(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE: one process applies the baseline, the others wait and find it."""
    errs = _open_together(tmp_path)
    assert sum("Running upgrade  -> 0001" in e for e in errs) == 1, errs
    db = Database(tmp_path / "data" / "backend.sqlite3")
    assert [tuple(r) for r in db.rows("SELECT * FROM alembic_version")] == [(migrations.HEAD,)]
    db.close()


def test_two_processes_open_a_fresh_postgresql_database_together(
        pg_cluster: PgCluster, tmp_path: Path) -> None:
    """The advisory write lock: one process applies the baseline, the others find it."""
    url = pg_cluster.new_database()
    errs = _open_together(tmp_path, url)
    assert sum("Running upgrade  -> 0001" in e for e in errs) == 1, errs
    db = open_database(Settings(data_dir=tmp_path, db=url))
    assert [tuple(r) for r in db.rows("SELECT * FROM alembic_version")] == [(migrations.HEAD,)]
    db.close()


# -- fkvideo_backend db ---------------------------------------------------------------------

def test_db_command_shows_and_upgrades_the_revision(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "site")
    assert main(["db", "current", "--data-dir", data]) == 0
    assert "no database" in capsys.readouterr().out
    (tmp_path / "site").mkdir()
    legacy_schema.build_sqlite(tmp_path / "site" / "backend.sqlite3", 3).close()
    assert main(["db", "current", "--data-dir", data]) == 0
    assert "made before Alembic (schema version 3)" in capsys.readouterr().out
    assert main(["db", "upgrade", "--data-dir", data]) == 0
    assert f"revision {migrations.HEAD} (up to date)" in capsys.readouterr().out
    assert main(["db", "history"]) == 0
    assert capsys.readouterr().out.startswith(f"{migrations.HEAD}: The stores' tables")
