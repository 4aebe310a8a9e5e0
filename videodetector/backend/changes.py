"""The change log behind ``/v1/faces/sync`` (sync.py): what changed in which gallery, in order.

``face_changes`` (schema version 2, storage.py) holds one row per (user, gallery, face): the
face's last change in that gallery, numbered by ``seq``, a counter that only grows
(SQLite AUTOINCREMENT: never reused, not even after a restart or a deleted row). A change
replaces the row (``INSERT OR REPLACE``), so the log is as long as the galleries are big plus
the tombstones, not as long as the history of edits.

* a face stored, edited (meta, attributes, galleries, person, image) or put in a gallery,
  its person changed by person matching (a track's earlier faces joining its person, a
  merge, an undone merge: ``person_store.move_faces``), or its box, images or visible vector
  replaced by ``regenerate`` (``regenerate.visible_models``): a row ``deleted = 0`` for every
  gallery it is in (``default`` included);
* a face deleted, or taken out of a gallery: a row ``deleted = 1`` (a tombstone) for every
  gallery it left.

Every write happens inside the transaction that makes the change, so the log and the faces
never disagree. ``tests/backend/test_change_writers.py`` finds every function that writes
``faces``, ``face_galleries`` or ``embeddings`` and fails unless it, or every caller up its
chain, records here. Tombstones older than ``sync_tombstone_ttl`` are pruned; the largest pruned
``seq`` is remembered as the *horizon*: a client whose cursor is below it may have missed
a deletion and must resynchronize from scratch. A backend that starts serving another
embedding model moves the horizon past every cursor given so far (``follow_facen_model``):
every face's ``facen`` (the served model's vector) changed, with no row here.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable

from videodetector.backend.storage import Database, dialect_of, placeholders

log = logging.getLogger(__name__)

DEFAULT_GALLERY = "default"
HORIZON_KEY = "sync_horizon"  # settings row: the largest seq of a pruned tombstone
FACEN_MODEL_KEY = "sync_facen_model"  # settings row: the model of the feed's facens


def galleries_now(conn: sqlite3.Connection, face_id: int) -> set[str]:
    """The galleries a face is in now (``default`` included); empty if it does not exist."""
    if conn.execute("SELECT 1 FROM faces WHERE id = ?", (face_id,)).fetchone() is None:
        return set()
    rows = conn.execute("SELECT gallery FROM face_galleries WHERE face_id = ?", (face_id,))
    return {DEFAULT_GALLERY} | {r[0] for r in rows}


def record(conn: sqlite3.Connection, user: int, face_id: int, before: Iterable[str],
           after: Iterable[str], at: float | None = None) -> None:
    """In the transaction of a change: the face is (still) in ``after`` and left
    ``before - after``."""
    at = time.time() if at is None else at
    now_in = set(after)
    sql = _RECORD_SQL[dialect_of(conn)]
    for gallery in sorted(now_in):
        conn.execute(sql, (user, gallery, face_id, 0, at))
    for gallery in sorted(set(before) - now_in):
        conn.execute(sql, (user, gallery, face_id, 1, at))


def touch(conn: sqlite3.Connection, user: int, face_id: int) -> None:
    """In the transaction of a change that leaves the face's galleries as they are (a new
    embedding, meta, attributes...): the face changed in each of its galleries."""
    touch_many(conn, user, [face_id])


def touch_many(conn: sqlite3.Connection, user: int, ids: Iterable[int]) -> None:
    """:func:`touch` for many faces (a person's faces moved by a merge, a track's faces
    joining its person): their galleries read in chunks. Ids of faces that do not exist
    are skipped."""
    at = time.time()
    for face_id, galleries in _galleries_by_face(conn, list(ids), existing=True).items():
        record(conn, user, face_id, galleries, galleries, at)


def record_deleted(conn: sqlite3.Connection, user: int, ids: list[int]) -> None:
    """In the transaction that deletes ``ids`` (before their gallery rows go): a tombstone
    in every gallery each face was in."""
    at = time.time()
    for face_id, galleries in _galleries_by_face(conn, ids, existing=False).items():
        record(conn, user, face_id, galleries, (), at)


def _galleries_by_face(conn: sqlite3.Connection, ids: list[int], existing: bool
                       ) -> dict[int, set[str]]:
    """Each face's galleries (``default`` included), in ``ids`` order, read 500 ids at a
    time; ``existing``: only the faces that have a row in ``faces``."""
    out: dict[int, set[str]] = {}
    for start in range(0, len(ids), 500):
        chunk = list(dict.fromkeys(ids[start:start + 500]))
        marks = placeholders(len(chunk))
        if existing:
            found = {r[0] for r in conn.execute(f"SELECT id FROM faces WHERE id IN ({marks})",
                                                chunk)}
            chunk = [i for i in chunk if i in found]
            if not chunk:
                continue
            marks = placeholders(len(chunk))
        part: dict[int, set[str]] = {i: {DEFAULT_GALLERY} for i in chunk}
        for face_id, gallery in conn.execute(
                f"SELECT face_id, gallery FROM face_galleries WHERE face_id IN ({marks})",
                chunk):
            part[face_id].add(gallery)
        out.update(part)
    return out


# A (face, gallery) change gets a new seq (the feed is ordered by it): SQLite's REPLACE
# deletes and inserts the row (AUTOINCREMENT); PostgreSQL takes the identity's next value.
_RECORD_SQL = {
    "sqlite": "INSERT OR REPLACE INTO face_changes (user_id, gallery, face_id, deleted, at) "
              "VALUES (?, ?, ?, ?, ?)",
    "postgresql": "INSERT INTO face_changes (user_id, gallery, face_id, deleted, at) "
                  "VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, gallery, face_id) DO UPDATE "
                  "SET seq = nextval(pg_get_serial_sequence('face_changes', 'seq')), "
                  "deleted = excluded.deleted, at = excluded.at",
}


def horizon(db: Database) -> int:
    value = db.scalar("SELECT value FROM settings WHERE key = ?", (HORIZON_KEY,))
    return int(value) if value is not None else 0


def last_seq(db: Database) -> int:
    """The largest seq ever given out (0 before the first change)."""
    if db.dialect == "postgresql":
        value = db.scalar("SELECT last_value FROM pg_sequences WHERE schemaname = "
                          "current_schema() AND sequencename = 'face_changes_seq_seq'")
    else:
        value = db.scalar("SELECT seq FROM sqlite_sequence WHERE name = 'face_changes'")
    return int(value) if value is not None else 0


def prune_tombstones(db: Database, ttl: float, now: float | None = None) -> int:
    """Delete tombstones older than ``ttl`` seconds and move the horizon past them;
    returns how many were deleted."""
    cutoff = (time.time() if now is None else now) - ttl
    with db.transaction() as conn:
        newest = conn.execute("SELECT MAX(seq) FROM face_changes WHERE deleted = 1 AND at < ?",
                              (cutoff,)).fetchone()[0]
        if newest is None:
            return 0
        n = conn.execute("DELETE FROM face_changes WHERE deleted = 1 AND at < ?",
                         (cutoff,)).rowcount
        value = _raise_horizon(conn, int(newest))
    log.info("sync: pruned %d tombstone(s) older than %g s; cursors below %d must resync",
             n, ttl, value)
    return n


def _raise_horizon(conn: sqlite3.Connection, seq: int) -> int:
    """In a transaction: the horizon moved up to ``seq`` (never down); returns it."""
    old = conn.execute("SELECT value FROM settings WHERE key = ?", (HORIZON_KEY,)).fetchone()
    value = max(seq, int(old[0]) if old else 0)
    conn.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (HORIZON_KEY, str(value)))
    return value


def facen_model(db: Database) -> str | None:
    """The model whose vectors the feed's ``facen`` showed last (recorded at each start by
    :func:`follow_facen_model`), None before the first start that recorded it."""
    value = db.scalar("SELECT value FROM settings WHERE key = ?", (FACEN_MODEL_KEY,))
    return None if value is None else str(value)


def follow_facen_model(db: Database, model: str) -> bool:
    """At start, once the served ``model`` is known: when the feed's ``facen`` (the served
    model's vectors) were another model's before, every face changed without a row here, so
    every cursor given so far must resynchronize: the change counter is moved one past the
    newest change and the horizon to it (no row per face). The model is recorded
    (``settings`` row ``sync_facen_model``). Before it was first recorded, ``facen`` showed
    each face's enrolment model (``faces.model``): a store with a face of another model
    resynchronizes. Returns True when cursors were invalidated."""
    before = facen_model(db)
    if before == model:
        return False
    try:
        return _follow(db, model, before)
    except sqlite3.OperationalError as exc:  # a full disk: the next start tries again
        log.warning("sync: could not record that facen is now the %s embedding: %s",
                    model, exc)
        return False


def _follow(db: Database, model: str, before: str | None) -> bool:
    with db.transaction() as conn:
        if before is None:
            changed = conn.execute("SELECT 1 FROM faces WHERE model <> ? LIMIT 1",
                                   (model,)).fetchone() is not None
        else:
            changed = True
        last = _skip_seq(conn) if changed else 0
        if last:
            _raise_horizon(conn, last)
        conn.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (FACEN_MODEL_KEY, model))
    if last:
        log.info("sync: facen is now the %s embedding (was %s): every face changed; cursors "
                 "below %d must resync", model, before or "each face's enrolment model", last)
    return bool(last)


def _skip_seq(conn: sqlite3.Connection) -> int:
    """In a transaction: take one seq without a change (a cursor equal to the newest change
    so far is then older than the horizon); 0 (nothing taken) before the first change, when
    no client holds a cursor yet."""
    if dialect_of(conn) == "postgresql":
        if conn.execute("SELECT last_value FROM pg_sequences WHERE schemaname = "
                        "current_schema() AND sequencename = 'face_changes_seq_seq'"
                        ).fetchone()[0] is None:
            return 0
        return int(conn.execute("SELECT nextval(pg_get_serial_sequence('face_changes', "
                                "'seq'))").fetchone()[0])
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'face_changes'").fetchone()
    if row is None or not row[0]:
        return 0
    conn.execute("UPDATE sqlite_sequence SET seq = seq + 1 WHERE name = 'face_changes'")
    return int(row[0]) + 1
