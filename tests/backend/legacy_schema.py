"""The schema code of storage.py before Alembic (schema version 4), frozen: it makes the
databases that existing sites have (tests/backend/test_alembic.py). Copied verbatim from
storage.py at commit 5357b61; never edit it (it stands for databases already made).

``build_sqlite(path, version)`` / ``build_postgresql(url, version)`` make a database as the
old code left it at ``version`` (1..4): the old code run up to that step, minus what the
later steps added (SCHEMA itself always had the latest CREATE TABLE texts).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA_VERSION = 4
FIRST_MODEL = "sface-2021dec"

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
    embedding BLOB NOT NULL,
    model TEXT NOT NULL DEFAULT 'sface-2021dec',
    emotions TEXT
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
-- Embeddings made by another model than faces.model (regenerate.py); faces.embedding is
-- the vector of faces.model. A face's vector for model M: faces.embedding if faces.model = M,
-- else embeddings.vector of (face_id, M).
CREATE TABLE IF NOT EXISTS embeddings (
    face_id INTEGER NOT NULL,
    model TEXT NOT NULL,
    vector BLOB NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (face_id, model)
);
CREATE INDEX IF NOT EXISTS embeddings_model ON embeddings (model, face_id);
-- Every vector or face image regenerate.py replaced, in order: a serving backend applies them
-- to its index (Backend.refresh_regenerated).
CREATE TABLE IF NOT EXISTS regenerated (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    face_id INTEGER NOT NULL,
    model TEXT NOT NULL
);
-- Faces a regenerate job has done (resume: a job skips them).
CREATE TABLE IF NOT EXISTS regenerate_done (
    job TEXT NOT NULL,
    face_id INTEGER NOT NULL,
    PRIMARY KEY (job, face_id)
);
CREATE TRIGGER IF NOT EXISTS faces_deleted AFTER DELETE ON faces BEGIN
    DELETE FROM embeddings WHERE face_id = OLD.id;
    DELETE FROM regenerate_done WHERE face_id = OLD.id;
END;
CREATE TABLE IF NOT EXISTS idempotency (
    user_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    face_ids TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (user_id, key)
);
"""


def _base_schema(conn: sqlite3.Connection) -> None:
    """Version 1: ``SCHEMA`` (created with IF NOT EXISTS before the steps run)."""


def _sync_schema(conn: sqlite3.Connection) -> None:
    """Version 2: the change feed of ``/v1/faces/sync`` (sync.py). One row per (face,
    gallery): its last change, ``deleted`` = 1 once the face left the gallery (a tombstone,
    kept ``sync_tombstone_days``). Existing faces are entered as present."""
    conn.execute("""CREATE TABLE IF NOT EXISTS face_changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id INTEGER NOT NULL,
        gallery TEXT NOT NULL,
        face_id INTEGER NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0,
        at REAL NOT NULL,
        UNIQUE (user_id, gallery, face_id)
    )""")
    conn.execute("CREATE INDEX IF NOT EXISTS face_changes_feed "
                 "ON face_changes (user_id, gallery, seq)")
    conn.execute("CREATE INDEX IF NOT EXISTS face_changes_tombstones "
                 "ON face_changes (deleted, at)")
    conn.execute("INSERT OR IGNORE INTO face_changes (user_id, gallery, face_id, at) "
                 "SELECT user_id, 'default', id, ts FROM faces ORDER BY id")
    conn.execute("INSERT OR IGNORE INTO face_changes (user_id, gallery, face_id, at) "
                 "SELECT g.user_id, g.gallery, g.face_id, f.ts FROM face_galleries g "
                 "JOIN faces f ON f.id = g.face_id ORDER BY g.face_id")


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


def _model_schema(conn: sqlite3.Connection) -> None:
    """Version 3: ``faces.model``, the embedding model of ``faces.embedding`` (every earlier
    row was made by FIRST_MODEL); the embeddings, regenerated and regenerate_done tables of
    regenerate.py come from ``SCHEMA`` itself."""
    if "model" not in columns(conn, "faces"):
        conn.execute(f"ALTER TABLE faces ADD COLUMN model TEXT NOT NULL DEFAULT '{FIRST_MODEL}'")


def _emotions_schema(conn: sqlite3.Connection) -> None:
    """Version 4: ``faces.emotions``, the JSON list of the face's two most likely emotions
    (8.1.2), NULL when they were not asked."""
    if "emotions" not in columns(conn, "faces"):
        conn.execute("ALTER TABLE faces ADD COLUMN emotions TEXT")


# Versioned schema steps, applied in order above ``PRAGMA user_version`` (a database made
# before versioning has user_version 0 and the version 1 tables). To change the schema,
# append ``(next version, step)`` here; never edit a step that has shipped.
MIGRATIONS: list[tuple[int, Callable[[sqlite3.Connection], None]]] = [
    (1, _base_schema),
    (2, _sync_schema),
    (3, _model_schema),
    (4, _emotions_schema),
]


# What SQLite's trigger in SCHEMA does, for PostgreSQL (run as they are, not translated),
# and the pgvector columns: ``vec``, the float32 ``embedding`` / ``vector`` blob as a pgvector
# ``vector`` (a stored generated column, so every write of the blob keeps it right; its
# dimension is the model's, hence one expression index per model: ``vector_index_sql``).
PG_EXTRA = (
    "CREATE EXTENSION IF NOT EXISTS vector",
    # little-endian float32 bytes -> vector, exactly (sign, exponent, mantissa; denormals 0)
    """CREATE OR REPLACE FUNCTION fkvideo_f32_vector(b bytea) RETURNS vector
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT array_agg(CASE WHEN e = 0 THEN 0::float8 ELSE
        (1 - 2 * s) * (1 + m / 8388608.0::float8) * power(2::float8, e - 127) END
        ORDER BY i)::vector
    FROM (SELECT i, get_byte(b, 4 * i + 3) >> 7 AS s,
                 ((get_byte(b, 4 * i + 3) & 127) << 1) | (get_byte(b, 4 * i + 2) >> 7) AS e,
                 ((get_byte(b, 4 * i + 2) & 127) << 16) | (get_byte(b, 4 * i + 1) << 8)
                 | get_byte(b, 4 * i) AS m
          FROM generate_series(0, length(b) / 4 - 1) AS i) AS parts
    $$""",
    """ALTER TABLE faces ADD COLUMN IF NOT EXISTS vec vector
    GENERATED ALWAYS AS (fkvideo_f32_vector(embedding)) STORED""",
    """ALTER TABLE embeddings ADD COLUMN IF NOT EXISTS vec vector
    GENERATED ALWAYS AS (fkvideo_f32_vector(vector)) STORED""",
    # Every change of a face that its in-memory index entry depends on, by any process: each
    # backend applies the others' at the start of its next write transaction
    # (Backend.catch_up), so person matching sees the faces another process stored.
    """CREATE TABLE IF NOT EXISTS face_log (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        face_id BIGINT NOT NULL,
        user_id BIGINT NOT NULL,
        at DOUBLE PRECISION NOT NULL DEFAULT extract(epoch FROM clock_timestamp()))""",
    """CREATE OR REPLACE FUNCTION fkvideo_face_log() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN
        IF TG_OP = 'DELETE' THEN
            INSERT INTO face_log (face_id, user_id) VALUES (OLD.id, OLD.user_id);
        ELSE
            INSERT INTO face_log (face_id, user_id) VALUES (NEW.id, NEW.user_id);
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE OR REPLACE TRIGGER faces_logged
    AFTER INSERT OR DELETE OR UPDATE OF person_id, cam_id, embedding, model ON faces
    FOR EACH ROW EXECUTE FUNCTION fkvideo_face_log()""",

    """CREATE OR REPLACE FUNCTION fkvideo_faces_deleted() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN
        DELETE FROM embeddings WHERE face_id = OLD.id;
        DELETE FROM regenerate_done WHERE face_id = OLD.id;
        RETURN OLD;
    END $$""",
    """CREATE OR REPLACE TRIGGER faces_deleted AFTER DELETE ON faces
    FOR EACH ROW EXECUTE FUNCTION fkvideo_faces_deleted()""",
)


def _set_setting(conn: Any, key: str, value: str) -> None:
    conn.execute("INSERT INTO settings (key, value) VALUES (?, ?) "
                 "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))


def _pg_schema(db: Any) -> None:
    """Create or upgrade the PostgreSQL schema: ``SCHEMA`` (types translated), the trigger
    of ``PG_EXTRA`` and the steps of ``MIGRATIONS`` above ``settings.schema_version``, in
    one transaction under the write lock of every process (two processes starting
    together: the second waits, then finds the schema done)."""
    with db.transaction() as conn:
        db.executescript(SCHEMA)
        for sql in PG_EXTRA:
            db.execute_raw(sql)
        row = conn.execute("SELECT value FROM settings WHERE key = 'schema_version'").fetchone()
        current = int(row[0]) if row else 0
        for version, step in MIGRATIONS:
            if version > current:
                step(conn)
                _set_setting(conn, "schema_version", str(version))
                log.info("database schema upgraded to version %d", version)


# -- what the old Database.migrate() did, on a plain sqlite3 connection ----------------------

def _migrate_sqlite(conn: sqlite3.Connection, upto: int) -> None:
    conn.executescript(SCHEMA)
    for version, step in MIGRATIONS:
        if version > upto or conn.execute("PRAGMA user_version").fetchone()[0] >= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        step(conn)
        conn.execute(f"PRAGMA user_version = {int(version)}")
        _set_setting(conn, "schema_version", str(version))
        conn.execute("COMMIT")


# what the later versions added to a database SCHEMA made (undone for an older version)
_ADDED_BY = {
    2: ["DROP TABLE IF EXISTS face_changes"],
    # regenerate.py's tables came with version 3 (see _model_schema)
    3: ["DROP TRIGGER faces_deleted", "DROP TABLE embeddings", "DROP TABLE regenerated",
        "DROP TABLE regenerate_done", "ALTER TABLE faces DROP COLUMN model"],
    4: ["ALTER TABLE faces DROP COLUMN emotions"]}


def build_sqlite(path: Path, version: int = SCHEMA_VERSION) -> sqlite3.Connection:
    """A SQLite database as the old code made it, at schema ``version`` (open, autocommit;
    0: made before versioning, as version 1 but with user_version never set)."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    _migrate_sqlite(conn, version)
    for later in range(SCHEMA_VERSION, max(version, 1), -1):
        for sql in _ADDED_BY[later]:
            conn.execute(sql)
    return conn


def build_postgresql(url: str) -> Any:
    """A PostgreSQL database as the old code made it (version 4: the only one it shipped
    with), as an open ``PgDatabase``."""
    from videodetector.backend.pgdb import PgDatabase

    return PgDatabase(url, schema=_pg_schema)


# -- the DDL made outside Alembic until revision 0002, frozen -------------------------------
# Verbatim from the stores (stores/cameras.py, watchlists.py, webhooks.py, history.py),
# websession.py and person_store.py at commit 9d8974f, run the way that code ran them:
# ``add_store_tables`` makes a database as a site running that code has it (revision 0001
# or before Alembic, plus what its stores had made so far).

CAMERA_HEALTH = """
CREATE TABLE IF NOT EXISTS camera_health (
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
);
"""

WATCHLISTS = """
CREATE TABLE IF NOT EXISTS gallery_settings (
    user_id INTEGER NOT NULL,
    gallery TEXT NOT NULL,
    watchlist INTEGER NOT NULL DEFAULT 0,
    color TEXT NOT NULL,
    threshold TEXT NOT NULL,
    PRIMARY KEY (user_id, gallery)
);
CREATE TABLE IF NOT EXISTS camera_alerts (
    user_id INTEGER NOT NULL,
    cam_id TEXT NOT NULL,
    unknown INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, cam_id)
);
"""

WEBHOOKS = """
CREATE TABLE IF NOT EXISTS webhooks (
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
);
CREATE INDEX IF NOT EXISTS webhooks_user ON webhooks (user_id);
CREATE TABLE IF NOT EXISTS webhook_leases (
    hook_id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    expires REAL NOT NULL
);
"""

HISTORY = """
CREATE INDEX IF NOT EXISTS events_id ON faces (user_id, id, ts, cam_id, person_id, friend)
    WHERE cam_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_cam ON faces (user_id, cam_id, id, ts, person_id, friend);
CREATE INDEX IF NOT EXISTS events_person ON faces (user_id, person_id, id, ts, cam_id, friend)
    WHERE cam_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_ts ON faces (user_id, ts, cam_id, person_id, friend)
    WHERE cam_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_unmatched ON faces (user_id, id)
    WHERE cam_id IS NOT NULL AND person_id IS NULL;
CREATE INDEX IF NOT EXISTS events_friend ON faces (user_id, id)
    WHERE cam_id IS NOT NULL AND friend = 1;
CREATE TABLE IF NOT EXISTS event_matches (
    face_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    gallery TEXT NOT NULL,
    match_id INTEGER NOT NULL,
    confidence REAL NOT NULL,
    PRIMARY KEY (face_id)
);
CREATE INDEX IF NOT EXISTS event_matches_user ON event_matches (user_id, face_id);
CREATE TABLE IF NOT EXISTS event_match_state (
    user_id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    cursor INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS event_matches_deleted AFTER DELETE ON faces BEGIN
    DELETE FROM event_matches WHERE face_id = OLD.id;
END;
"""

WEB_SESSIONS = """
CREATE TABLE IF NOT EXISTS web_sessions (
    id_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL,
    csrf TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS web_sessions_expires ON web_sessions (expires);
"""

PERSONS_V2 = """
ALTER TABLE faces ADD COLUMN quality REAL;
ALTER TABLE faces ADD COLUMN track TEXT;
ALTER TABLE persons ADD COLUMN merged_into INTEGER;
CREATE INDEX IF NOT EXISTS faces_track ON faces (user_id, track, ts);
CREATE TABLE IF NOT EXISTS person_events (
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
);
CREATE INDEX IF NOT EXISTS person_events_person ON person_events (user_id, person_id, id);
CREATE INDEX IF NOT EXISTS person_events_other ON person_events (user_id, other_id, id);
CREATE TABLE IF NOT EXISTS person_blocks (
    user_id INTEGER NOT NULL,
    person_id INTEGER NOT NULL,
    face_id INTEGER,
    track TEXT,
    other_id INTEGER,
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS person_blocks_person ON person_blocks (user_id, person_id);
"""
STORE_SCRIPTS = {"cameras": CAMERA_HEALTH, "watchlists": WATCHLISTS, "webhooks": WEBHOOKS,
                 "history": HISTORY, "websession": WEB_SESSIONS}
STORE_PARTS = ("persons", *STORE_SCRIPTS)


def _persons_v2(conn: Any) -> None:
    """person_store.upgrade_schema: its statements one by one, and its version."""
    row = conn.execute("SELECT value FROM settings WHERE key = 'persons_schema_version'"
                       ).fetchone()
    if row and int(row[0]) >= 2:
        return
    for statement in filter(None, (s.strip() for s in PERSONS_V2.split(";"))):
        conn.execute(statement)
    conn.execute("INSERT OR REPLACE INTO settings VALUES ('persons_schema_version', ?)",
                 ("2",))


def add_store_tables(db: Any, parts: tuple[str, ...] = STORE_PARTS) -> None:
    """What the code before revision 0002 made outside Alembic, for ``parts`` (in the
    order the backend made them: persons at start, the stores on first use). ``db``: a
    plain sqlite3 connection (autocommit) or a ``PgDatabase``."""
    pg = getattr(db, "dialect", "sqlite") == "postgresql"
    if "persons" in parts:
        if pg:
            with db.transaction() as conn:
                _persons_v2(conn)
        else:
            db.execute("BEGIN IMMEDIATE")
            _persons_v2(db)
            db.execute("COMMIT")
    for part in parts:
        if part in STORE_SCRIPTS:
            db.executescript(STORE_SCRIPTS[part])  # pgdb: types translated, no triggers
