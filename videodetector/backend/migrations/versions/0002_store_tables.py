"""The stores' tables: what was created outside Alembic until now.

Before this revision each store created its tables the first time a process used it
(``CREATE TABLE IF NOT EXISTS`` in its ``setup()``), ``websession.SessionStore`` its
``web_sessions``, and ``person_store.upgrade_schema`` added person matching's columns and
tables under its own version (``settings.persons_schema_version`` 1 -> 2). This revision
makes all of it, on SQLite and PostgreSQL:

* ``camera_health`` (stores/cameras.py), ``webhooks`` + ``webhook_leases``
  (stores/webhooks.py), ``gallery_settings`` + ``camera_alerts`` (stores/watchlists.py),
  ``web_sessions`` (websession.py);
* the history indexes on ``faces`` (``events_*``), ``event_matches``, ``event_match_state``
  and (SQLite) the ``event_matches_deleted`` trigger (stores/history.py). On a large
  existing database the indexes take seconds (they were built at the app's start-up
  before, now here, once);
* person matching's ``faces.quality``, ``faces.track``, ``persons.merged_into``,
  ``faces_track``, ``person_events``, ``person_blocks`` and
  ``settings.persons_schema_version = 2`` (the settings read as that code left them; a
  program from before this revision refuses a database at 0002 anyway: unknown revision).

An existing database has some or all of these already (made by the code before this
revision): every CREATE is ``IF NOT EXISTS`` and a column is added only when the table lacks
it, so nothing made before is changed and no row is touched. PostgreSQL gets the same texts
with the types the backend always used there (identity keys, ``BIGINT``, ``DOUBLE
PRECISION``, ``BYTEA``), and, as before, no ``event_matches_deleted`` trigger.

Never edit this file once shipped: a later change of the schema is a new revision.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import logging
import re

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

log = logging.getLogger("videodetector.backend.migrations")

PERSONS_SCHEMA_VERSION = 2  # what person_store's own scheme called this state

# (table, column, type): added when the table lacks the column
COLUMNS = (
    ("faces", "quality", "REAL"),
    ("faces", "track", "TEXT"),
    ("persons", "merged_into", "INTEGER"),
)

# In the order the code before this revision ran them (SQLite texts; IF NOT EXISTS: a
# database that has one keeps it).
STATEMENTS = (
    # person_store._SCHEMA_V2 (after its ALTER TABLEs: COLUMNS)
    "CREATE INDEX IF NOT EXISTS faces_track ON faces (user_id, track, ts)",
    """CREATE TABLE IF NOT EXISTS person_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    person_id INTEGER NOT NULL,
    other_id INTEGER,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    face_ids TEXT NOT NULL DEFAULT '[]',
    detail TEXT,
    created TEXT NOT NULL,
    undone_by INTEGER
)""",
    "CREATE INDEX IF NOT EXISTS person_events_person ON person_events (user_id, person_id, id)",
    "CREATE INDEX IF NOT EXISTS person_events_other ON person_events (user_id, other_id, id)",
    """CREATE TABLE IF NOT EXISTS person_blocks (
    user_id INTEGER NOT NULL,
    person_id INTEGER NOT NULL,
    face_id INTEGER,
    track TEXT,
    other_id INTEGER,
    created TEXT NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS person_blocks_person ON person_blocks (user_id, person_id)",
    # stores/cameras.py
    """CREATE TABLE IF NOT EXISTS camera_health (
    cam_id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL,
    report TEXT,
    received REAL,
    preview BLOB,
    preview_width INTEGER,
    preview_height INTEGER,
    frame_width INTEGER,
    frame_height INTEGER,
    preview_received REAL,
    preview_requested REAL
)""",
    # stores/watchlists.py
    """CREATE TABLE IF NOT EXISTS gallery_settings (
    user_id INTEGER NOT NULL,
    gallery TEXT NOT NULL,
    watchlist INTEGER NOT NULL DEFAULT 0,
    color TEXT NOT NULL,
    threshold TEXT NOT NULL,
    PRIMARY KEY (user_id, gallery)
)""",
    """CREATE TABLE IF NOT EXISTS camera_alerts (
    user_id INTEGER NOT NULL,
    cam_id TEXT NOT NULL,
    unknown INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, cam_id)
)""",
    # stores/webhooks.py
    """CREATE TABLE IF NOT EXISTS webhooks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    url TEXT NOT NULL,
    secret TEXT,
    cam_ids TEXT NOT NULL DEFAULT '[]',
    match TEXT NOT NULL DEFAULT 'all',
    enabled INTEGER NOT NULL DEFAULT 1,
    cursor INTEGER NOT NULL,
    created TEXT NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    last_error TEXT
)""",
    "CREATE INDEX IF NOT EXISTS webhooks_user ON webhooks (user_id)",
    """CREATE TABLE IF NOT EXISTS webhook_leases (
    hook_id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    expires REAL NOT NULL
)""",
    # stores/history.py: the event indexes (partial on camera events except events_cam)
    "CREATE INDEX IF NOT EXISTS events_id ON faces (user_id, id, ts, cam_id, person_id, friend)"
    "\n    WHERE cam_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS events_cam ON faces "
    "(user_id, cam_id, id, ts, person_id, friend)",
    "CREATE INDEX IF NOT EXISTS events_person ON faces "
    "(user_id, person_id, id, ts, cam_id, friend)\n    WHERE cam_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS events_ts ON faces (user_id, ts, cam_id, person_id, friend)"
    "\n    WHERE cam_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS events_unmatched ON faces (user_id, id)"
    "\n    WHERE cam_id IS NOT NULL AND person_id IS NULL",
    "CREATE INDEX IF NOT EXISTS events_friend ON faces (user_id, id)"
    "\n    WHERE cam_id IS NOT NULL AND friend = 1",
    """CREATE TABLE IF NOT EXISTS event_matches (
    face_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    gallery TEXT NOT NULL,
    match_id INTEGER NOT NULL,
    confidence REAL NOT NULL,
    PRIMARY KEY (face_id)
)""",
    "CREATE INDEX IF NOT EXISTS event_matches_user ON event_matches (user_id, face_id)",
    """CREATE TABLE IF NOT EXISTS event_match_state (
    user_id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    cursor INTEGER NOT NULL
)""",
    # websession.py
    """CREATE TABLE IF NOT EXISTS web_sessions (
    id_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL,
    csrf TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS web_sessions_expires ON web_sessions (expires)",
)

SQLITE_TRIGGERS = (
    """CREATE TRIGGER IF NOT EXISTS event_matches_deleted AFTER DELETE ON faces BEGIN
    DELETE FROM event_matches WHERE face_id = OLD.id;
END""",
)

# The PostgreSQL types of the SQLite texts, as pgdb translated them when the stores made
# these tables (frozen here: pgdb may change, this revision may not).
PG_TYPES = (
    (re.compile(r"\bINTEGER\s+PRIMARY\s+KEY(\s+AUTOINCREMENT)?", re.I),
     "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b", re.I), "BIGINT"),
    (re.compile(r"\bREAL\b", re.I), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b", re.I), "BYTEA"),
)


def pg_text(sql: str) -> str:
    """The PostgreSQL text of one of the SQLite statements above."""
    if re.match(r"\s*(CREATE\s+TABLE|ALTER\s+TABLE)\b", sql, re.I):
        for pattern, repl in PG_TYPES:
            sql = pattern.sub(repl, sql)
    return sql


def _columns(bind: sa.engine.Connection, table: str) -> set[str]:
    if bind.dialect.name == "sqlite":
        return {r[1] for r in bind.exec_driver_sql(f'PRAGMA table_info("{table}")')}
    rows = bind.execute(sa.text("SELECT column_name FROM information_schema.columns WHERE "
                                "table_schema = current_schema() AND table_name = :t"),
                        {"t": table})
    return {r[0] for r in rows}


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    added = []
    for table, column, type_ in COLUMNS:
        if column not in _columns(bind, table):
            sql = f"ALTER TABLE {table} ADD COLUMN {column} {type_}"
            bind.exec_driver_sql(sql if sqlite else pg_text(sql))
            added.append(f"{table}.{column}")
    for sql in STATEMENTS:
        bind.exec_driver_sql(sql if sqlite else pg_text(sql))
    if sqlite:
        for sql in SQLITE_TRIGGERS:
            bind.exec_driver_sql(sql)
    bind.exec_driver_sql(
        "INSERT INTO settings (key, value) VALUES "
        f"('persons_schema_version', '{PERSONS_SCHEMA_VERSION}') "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value")
    if added and len(added) < len(COLUMNS):
        log.info("revision 0002: columns added to an existing database: %s", ", ".join(added))


def downgrade() -> None:
    raise NotImplementedError("not downgraded (it would drop the stores' tables and rows)")
