"""Revision 0002 (the stores' tables): it takes over a database where the code before it had
already made some or all of those tables itself (lazily, in the stores' ``setup()``,
websession.py and person_store.py; frozen in legacy_schema.py), keeping every row, and ends
with the schema of a fresh database, on SQLite and PostgreSQL. (A fresh database equal to
what that code made: test_alembic.py's ``test_fresh_*_database_has_the_schema_*``.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.backend import legacy_schema
from tests.backend.test_alembic import pg_schema, sqlite_schema
from videodetector.backend import migrations
from videodetector.backend.pgdb import PgDatabase, PgOptions
from videodetector.backend.settings import Settings
from videodetector.backend.storage import Database, insert, open_database

SOME = ("persons", "webhooks", "websession")  # a site whose other stores never ran

# Rows of each table (those the database has get theirs); faces 2 and 3 are camera events.
ROWS: dict[str, list[str]] = {
    "users": ["INSERT INTO users (token_hash, kind, created) VALUES ('h', 'long', 'c')"],
    "galleries": ["INSERT INTO galleries VALUES (1, 'wl', 'c')"],
    "persons": ["INSERT INTO persons (user_id, meta, created) VALUES (1, 'p', 'c')"],
    "cameras": ["INSERT INTO cameras (id, user_id, seq, created) VALUES ('c1', 1, 1, 'c')"],
    "camera_health": ["INSERT INTO camera_health (cam_id, user_id, report, received, preview, "
                      "preview_width) VALUES ('c1', 1, '{}', 5.0, ?, 64)"],
    "gallery_settings": ["INSERT INTO gallery_settings VALUES (1, 'wl', 1, 'red', 'strict')"],
    "camera_alerts": ["INSERT INTO camera_alerts VALUES (1, 'c1', 1)"],
    "webhooks": ["INSERT INTO webhooks (user_id, url, cursor, created, failures, next_try) "
                 "VALUES (1, 'http://x/', 2, 'c', 3, 7.5)"],
    "webhook_leases": ["INSERT INTO webhook_leases VALUES (1, 'proc-a', 9.0)"],
    "event_matches": ["INSERT INTO event_matches VALUES (2, 1, 'wl', 1, 0.9)"],
    "event_match_state": ["INSERT INTO event_match_state VALUES (1, 'fp', 3)"],
    "web_sessions": ["INSERT INTO web_sessions VALUES ('sid', 1, 'csrf', 1.0, 2.0)"],
    "person_events": ["INSERT INTO person_events (user_id, person_id, kind, actor, created) "
                      "VALUES (1, 1, 'merge', 'op', 'c')"],
    "person_blocks": ["INSERT INTO person_blocks (user_id, person_id, face_id, created) "
                      "VALUES (1, 1, 1, 'c')"],
}
FACE = ("INSERT INTO faces (user_id, meta, cam_id, timestamp, ts, day, x1, y1, x2, y2, photo, "
        "photo_hash, thumbnail, normalized, embedding) VALUES (1, ?, ?, 't', ?, 'd', 0, 0, 1, 1, "
        "'p', 'h', 't', 'n', ?)")


def _at_0001(path: Path, url: str | None) -> Any:
    """A database at revision 0001, made by Alembic (as this program before 0002 did), open
    as the code before 0002 used it: a sqlite3 connection or a ``PgDatabase``."""
    target = (SimpleNamespace(dialect="postgresql", url=url, options=PgOptions()) if url
              else SimpleNamespace(dialect="sqlite", path=path))
    engine = migrations._engine(target)
    try:
        with engine.connect() as conn, conn.begin():
            migrations.run_upgrade(conn, "0001")
    finally:
        engine.dispose()
    return PgDatabase(url) if url else sqlite3.connect(str(path), isolation_level=None)


def _old_database(path: Path, url: str | None, start: str, parts: tuple[str, ...]) -> Any:
    if start == "before-alembic":
        old = legacy_schema.build_postgresql(url) if url else legacy_schema.build_sqlite(path)
    else:
        old = _at_0001(path, url)
    legacy_schema.add_store_tables(old, parts)
    return old


def _tables(old: Any, pg: bool) -> dict[str, list[str]]:
    """Each table of the old database and its columns."""
    if pg:
        rows = old.rows("SELECT table_name, column_name FROM information_schema.columns WHERE "
                        "table_schema = current_schema() AND table_name <> 'alembic_version' "
                        "ORDER BY table_name, ordinal_position")
        out: dict[str, list[str]] = {}
        for table, column in rows:
            out.setdefault(table, []).append(column)
        return out
    names = [r[0] for r in old.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                       "AND name NOT LIKE 'sqlite_%' AND name <> "
                                       "'alembic_version'")]
    return {t: [r[1] for r in old.execute(f"PRAGMA table_info({t})")] for t in names}


def _fill(conn: Any, tables: dict[str, list[str]]) -> None:
    for n, cam in enumerate((None, "c1", "c1")):
        conn.execute(FACE, (f"face {n}", cam, 100.0 + n, bytes(range(4)) * 32))
    for table, statements in ROWS.items():
        if table in tables:
            for sql in statements:
                conn.execute(sql, (b"\xff\xd8jpeg",) if "?" in sql else ())
    if "quality" in tables["faces"]:
        conn.execute("UPDATE faces SET quality = 0.5, track = 't1' WHERE id = 2")
        conn.execute("UPDATE persons SET merged_into = NULL")


def _rows(conn: Any, tables: dict[str, list[str]]) -> dict[str, list[tuple[Any, ...]]]:
    return {t: sorted((tuple(r) for r in conn.execute(f"SELECT {', '.join(cols)} FROM {t}")),
                      key=repr)
            for t, cols in tables.items()}


def _schema(db: Any) -> Any:
    return pg_schema(db) if db.dialect == "postgresql" else sqlite_schema(db.conn)


@pytest.mark.parametrize(("start", "parts"), [
    ("before-alembic", legacy_schema.STORE_PARTS),
    ("0001", legacy_schema.STORE_PARTS),
    ("0001", SOME),
    ("0001", ("cameras", "history")),  # persons version 1: faces/persons lack the columns
])
def test_a_database_with_the_stores_tables_is_taken_over_with_its_rows(
        db_url: str | None, tmp_path: Path, request: pytest.FixtureRequest, start: str,
        parts: tuple[str, ...]) -> None:
    pg = db_url is not None
    path = tmp_path / "data" / "backend.sqlite3"
    path.parent.mkdir()
    old = _old_database(path, db_url, start, parts)
    tables = _tables(old, pg)
    if pg:
        with old.transaction() as conn:
            _fill(conn, tables)
        before = _rows(old.conn, tables)
    else:
        old.execute("BEGIN IMMEDIATE")
        _fill(old, tables)
        old.execute("COMMIT")
        before = _rows(old, tables)
    assert set(legacy_schema.STORE_PARTS) - set(parts) or "web_sessions" in tables
    old.close()

    fresh_url = request.getfixturevalue("pg_cluster").new_database() if pg else None
    fresh = open_database(Settings(data_dir=tmp_path / "fresh", db=fresh_url))
    db = open_database(Settings(data_dir=tmp_path / "data", db=db_url))
    try:
        assert migrations.current_revision(db) == migrations.HEAD
        assert _schema(db) == _schema(fresh)  # settings' rows too (PostgreSQL)
        after = _rows(db.conn, tables)
        for rows in (after, before):  # written by 0002 when the persons part had not run
            rows["settings"] = [r for r in rows["settings"] if r[0] != "persons_schema_version"]
        assert after == before  # every row kept, column for column
        assert db.scalar("SELECT value FROM settings WHERE key = 'persons_schema_version'"
                         ) == "2"
        with db.transaction() as conn:  # the identity of a kept table goes on after its rows
            hook = insert(conn, "webhooks", {"user_id": 1, "url": "http://y/", "cursor": 0,
                                             "created": "c"})
            event = insert(conn, "person_events", {"user_id": 1, "person_id": 1,
                                                   "kind": "move", "actor": "op",
                                                   "created": "c"})
        assert (hook, event) == (1 + len(before.get("webhooks", [])),
                                 1 + len(before.get("person_events", [])))
        if not pg:  # SQLite's trigger: a deleted event's match goes with it
            with db.transaction() as conn:
                conn.execute("INSERT OR REPLACE INTO event_matches VALUES (3, 1, 'wl', 1, 0.8)")
                conn.execute("DELETE FROM faces WHERE id = 3")
            assert db.scalar("SELECT COUNT(*) FROM event_matches WHERE face_id = 3") == 0
    finally:
        db.close()
        fresh.close()


def test_a_fresh_database_gets_the_stores_tables_from_the_revision(tmp_path: Path) -> None:
    """Nothing creates a table lazily any more: right after opening, before any store is
    used, every table the stores read exists (the schema equals the old code's after all
    its stores had run)."""
    db = Database(tmp_path / "backend.sqlite3")
    try:
        names = {r[0] for r in db.rows("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"camera_health", "webhooks", "webhook_leases", "gallery_settings",
                "camera_alerts", "event_matches", "event_match_state", "web_sessions",
                "person_events", "person_blocks"} <= names
        cols = {r[1] for r in db.rows("PRAGMA table_info(faces)")}
        assert {"quality", "track"} <= cols
    finally:
        db.close()
