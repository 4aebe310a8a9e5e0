"""Person rows: who may create them, and the repair of old databases.

Only the server creates persons (dynamic person creation, or an operator's explicit
``"person_id": "new"``). A client never chooses a new person's id: a ``person_id`` it sends
must name an existing person of its own token, and any other id -- free, or another
tenant's -- answers the same 404, so ids cannot be probed across tenants.

Older versions created a person with whatever id ``PUT /face/id`` sent; an id near 2**63
exhausted the AUTOINCREMENT sequence and broke person creation for every tenant.
:func:`migrate` renumbers such persons (ids above 2**53, the largest integer every JSON
client reads exactly) and resets the sequence, once, at startup.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from videodetector.backend import changes as feed
from videodetector.backend.errors import ApiError, bad_param, not_found
from videodetector.backend.index import UserIndex
from videodetector.backend.params import INT64_MAX, exact_int
from videodetector.backend.storage import Database, dialect_of, insert
from videodetector.backend.timeutil import iso, now

log = logging.getLogger(__name__)

# Person ids above this were chosen by a client (the server counts up from 1).
MAX_SERVER_PERSON_ID = 2**53
NEW_PERSON = "new"


def create_person(conn: sqlite3.Connection, user: int, meta: str = "") -> int:
    """A new person of ``user`` with a server-chosen id."""
    return insert(conn, "persons", {"user_id": user, "meta": meta, "created": iso(now())})


def person_not_found(value: Any) -> ApiError:
    """The one answer for a person id the token does not own (free or another tenant's)."""
    return ApiError(404, "NOT_FOUND", f"person {value} not found", param="person_id",
                    value=value)


def own_person(conn: sqlite3.Connection, user: int, value: Any) -> int:
    """The id of an existing person of ``user``; 404 (the same for every other id) if not."""
    pid = exact_int(value)
    if pid is None or not 0 < pid <= INT64_MAX:
        raise bad_param("person_id", 'person_id must be a positive integer, "new" or null',
                        value)
    row = conn.execute("SELECT 1 FROM persons WHERE id = ? AND user_id = ?",
                       (pid, user)).fetchone()
    if row is None:
        raise person_not_found(value)
    return pid


def target_person(conn: sqlite3.Connection, user: int, value: Any) -> int | None:
    """``person_id`` of ``PUT /face/id``: null or "" clears, "new" creates a person (the
    server picks the id), an integer must be an existing person of the same token."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().lower() == NEW_PERSON:
        return create_person(conn, user)
    return own_person(conn, user, value)


def migrate(db: Database) -> None:
    """Repair a database an older version let clients poison (see the module docstring).
    The tables and columns of person matching are made by the schema's revisions
    (``backend/migrations``, revision 0002)."""
    with db.transaction() as conn:
        rogue = conn.execute("SELECT id, user_id, meta, created FROM persons WHERE id > ? "
                             "ORDER BY id", (MAX_SERVER_PERSON_ID,)).fetchall()
        top = conn.execute("SELECT COALESCE(MAX(id), 0) FROM persons WHERE id <= ?",
                           (MAX_SERVER_PERSON_ID,)).fetchone()[0]
        # also when the rogue person itself is gone (retention): the sequence stays exhausted
        if _reset_person_sequence(conn, top):
            log.warning("person id sequence reset to %d (it was pushed up by a client)", top)
        for old in rogue:
            conn.execute("DELETE FROM persons WHERE id = ?", (old["id"],))
            new = insert(conn, "persons", {"user_id": old["user_id"], "meta": old["meta"],
                                           "created": old["created"]})
            faces = [r[0] for r in conn.execute(
                "SELECT id FROM faces WHERE person_id = ? AND user_id = ?",
                (old["id"], old["user_id"]))]
            conn.execute("UPDATE faces SET person_id = ? WHERE person_id = ? AND user_id = ?",
                         (new, old["id"], old["user_id"]))
            feed.touch_many(conn, old["user_id"], faces)  # their person_id changed
            log.warning("person %d (an id chosen by a client) renumbered to %d", old["id"], new)


def _reset_person_sequence(conn: Any, top: int) -> bool:
    """Put the person id sequence back to ``top`` if a client pushed it past
    MAX_SERVER_PERSON_ID; True if it was."""
    if dialect_of(conn) == "postgresql":
        current = conn.execute("SELECT last_value FROM pg_sequences WHERE schemaname = "
                               "current_schema() AND sequencename = 'persons_id_seq'"
                               ).fetchone()
        if current is None or current[0] is None or current[0] <= MAX_SERVER_PERSON_ID:
            return False
        called = "true" if top > 0 else "false"  # top = 0: the next id is 1
        conn.execute(f"SELECT setval(pg_get_serial_sequence('persons', 'id')::regclass, ?, "
                     f"{called})", (max(top, 1),))
        return True
    return bool(conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'persons' AND "
                             "seq > ?", (top, MAX_SERVER_PERSON_ID)).rowcount)


# -- the in-memory index follows the rows; reverted when the transaction rolls back ----------

class IndexLog:
    """Person changes made to a UserIndex inside a transaction. Each change registers its
    undo with the database (``Database.on_rollback``), so a rollback puts the index back."""

    def __init__(self, index: UserIndex, db: Database) -> None:
        self.index = index
        self.db = db

    def set_person(self, face_id: int, person: int | None) -> None:
        old = self.index.person_of(face_id)
        self.index.set_person(face_id, person)
        self.db.on_rollback(partial(self.index.set_person, face_id, old))


@contextmanager
def person_transaction(db: Database, index: UserIndex
                       ) -> Iterator[tuple[sqlite3.Connection, IndexLog]]:
    """``db.transaction()`` whose index changes are undone if it rolls back."""
    with db.transaction() as conn:
        yield conn, IndexLog(index, db)


# -- events and operator feedback -------------------------------------------------------------

def record_event(conn: sqlite3.Connection, user: int, kind: str, actor: str, person: int,
                 other: int | None = None, face_ids: Iterable[int] = (),
                 **detail: Any) -> int:
    """A person event (merge, unmerge, move, not_this_person, identity_switch)."""
    return insert(conn, "person_events", {
        "user_id": user, "person_id": person, "other_id": other, "kind": kind, "actor": actor,
        "face_ids": json.dumps(sorted(face_ids)),
        "detail": json.dumps(detail) if detail else None, "created": iso(now())})


def block(conn: sqlite3.Connection, user: int, person: int, *, face_id: int | None = None,
          track: str | None = None, other: int | None = None) -> None:
    """Operator feedback: ``face_id`` / ``track`` is not ``person``; ``person`` and ``other``
    are different people. Automatic joins and merges respect it."""
    insert(conn, "person_blocks", {"user_id": user, "person_id": person, "face_id": face_id,
                                   "track": track, "other_id": other, "created": iso(now())})


def persons_blocked_for_track(conn: sqlite3.Connection, user: int, track: str | None
                              ) -> set[int]:
    if track is None:
        return set()
    rows = conn.execute("SELECT person_id FROM person_blocks WHERE user_id = ? AND track = ?",
                        (user, track)).fetchall()
    return {r[0] for r in rows}


def pair_blocked(conn: sqlite3.Connection, user: int, a: int, b: int) -> bool:
    return conn.execute(
        "SELECT 1 FROM person_blocks WHERE user_id = ? AND ((person_id = ? AND other_id = ?) "
        "OR (person_id = ? AND other_id = ?)) LIMIT 1", (user, a, b, b, a)).fetchone() is not None


def face_blocked(conn: sqlite3.Connection, user: int, face_id: int, person: int) -> bool:
    return conn.execute("SELECT 1 FROM person_blocks WHERE user_id = ? AND person_id = ? AND "
                        "face_id = ? LIMIT 1", (user, person, face_id)).fetchone() is not None


def rejected_faces(conn: sqlite3.Connection, user: int, person: int) -> list[int]:
    """Faces an operator took away from ``person`` ("not this person", or moved)."""
    rows = conn.execute("SELECT DISTINCT face_id FROM person_blocks WHERE user_id = ? AND "
                        "person_id = ? AND face_id IS NOT NULL", (user, person)).fetchall()
    return [int(r[0]) for r in rows]


def holds_rejected_face(conn: sqlite3.Connection, user: int, a: int, b: int) -> bool:
    """Whether either person now holds a face an operator took away from the other."""
    return conn.execute(
        "SELECT 1 FROM person_blocks k JOIN faces f ON f.id = k.face_id AND f.user_id = k.user_id "
        "WHERE k.user_id = ? AND ((k.person_id = ? AND f.person_id = ?) OR "
        "(k.person_id = ? AND f.person_id = ?)) LIMIT 1",
        (user, a, b, b, a)).fetchone() is not None


def move_faces(conn: sqlite3.Connection, changes: IndexLog, user: int, face_ids: list[int],
               person: int | None) -> None:
    """Give the faces ``person`` (the row, the index, and the change feed: every person
    change -- a track join, a merge, its undo, an operator's move -- goes through here)."""
    for start in range(0, len(face_ids), 500):
        chunk = face_ids[start:start + 500]
        marks = ", ".join("?" * len(chunk))
        conn.execute(f"UPDATE faces SET person_id = ? WHERE user_id = ? AND id IN ({marks})",
                     (person, user, *chunk))
    feed.touch_many(conn, user, face_ids)
    for face_id in face_ids:
        changes.set_person(face_id, person)


def merge_persons(conn: sqlite3.Connection, changes: IndexLog, user: int, into: int,
                  away: int, actor: str, **detail: Any) -> int:
    """Move every face of ``away`` to ``into``; ``away`` is kept (``merged_into``) so the merge
    can be undone. Returns the merge event's id."""
    faces = [r[0] for r in conn.execute(
        "SELECT id FROM faces WHERE user_id = ? AND person_id = ?", (user, away))]
    if faces:
        move_faces(conn, changes, user, faces, into)
    conn.execute("UPDATE persons SET merged_into = ? WHERE id = ? AND user_id = ?",
                 (into, away, user))
    conn.execute("UPDATE persons SET meta = (SELECT meta FROM persons WHERE id = ?) "
                 "WHERE id = ? AND meta = ''", (away, into))
    log.info("person %d merged into %d (%s, %d faces)%s", away, into, actor, len(faces),
             "".join(f" {k}={v}" for k, v in detail.items()))
    return record_event(conn, user, "merge", actor, into, away, faces, **detail)


def undo_merge(conn: sqlite3.Connection, changes: IndexLog, user: int, event_id: int) -> int:
    """Undo a merge: its faces (those still in the merged person) go back; the two persons
    are never merged automatically again. Returns the "unmerge" event's id."""
    ev = conn.execute("SELECT * FROM person_events WHERE id = ? AND user_id = ?",
                      (event_id, user)).fetchone()
    if ev is None:
        raise not_found("person event", event_id)
    if ev["kind"] != "merge" or ev["undone_by"] is not None:
        raise bad_param("event_id", "only a merge that is not undone yet can be undone",
                        event_id)
    into, away = ev["person_id"], ev["other_id"]
    faces = [f for f in json.loads(ev["face_ids"]) if conn.execute(
        "SELECT 1 FROM faces WHERE id = ? AND user_id = ? AND person_id = ?",
        (f, user, into)).fetchone()]
    if conn.execute("SELECT 1 FROM persons WHERE id = ? AND user_id = ?", (away, user)
                    ).fetchone() is None:  # deleted by retention meanwhile: bring it back
        conn.execute("INSERT INTO persons (id, user_id, meta, created) VALUES (?, ?, '', ?)",
                     (away, user, iso(now())))
    if faces:
        move_faces(conn, changes, user, faces, away)
    conn.execute("UPDATE persons SET merged_into = NULL WHERE id = ? AND user_id = ?",
                 (away, user))
    block(conn, user, into, other=away)
    undo = record_event(conn, user, "unmerge", "operator", into, away, faces,
                        undoes=event_id)
    conn.execute("UPDATE person_events SET undone_by = ? WHERE id = ?", (undo, event_id))
    return undo


def operator_move(conn: sqlite3.Connection, changes: IndexLog, user: int, face_id: int,
                  person: int | None) -> None:
    """An operator moves a face to ``person`` (None: no person). The face and its track
    never rejoin the old person automatically, nor are the two persons merged. Moving a face
    (back) to a person lifts what an earlier move away from it said about the face."""
    face = conn.execute("SELECT id, person_id, track FROM faces WHERE id = ? AND user_id = ?",
                        (face_id, user)).fetchone()
    if face is None:
        raise not_found("face", face_id)
    old = face["person_id"]
    if old == person:
        return
    move_faces(conn, changes, user, [face["id"]], person)
    if person is not None:
        conn.execute("DELETE FROM person_blocks WHERE user_id = ? AND person_id = ? AND "
                     "face_id = ?", (user, person, face["id"]))
    if old is not None:
        block(conn, user, old, face_id=face["id"], track=face["track"])
        if person is not None:
            block(conn, user, old, other=person)
        kind = "not_this_person" if person is None else "move"
        record_event(conn, user, kind, "operator", old, person, [face["id"]])


def not_this_person(conn: sqlite3.Connection, changes: IndexLog, user: int, person: int,
                    face_ids: list[int]) -> None:
    """Negative feedback: these faces of ``person`` are someone else (they become
    unassigned, and neither they nor their tracks rejoin ``person`` automatically)."""
    for face_id in face_ids:
        face = conn.execute("SELECT person_id FROM faces WHERE id = ? AND user_id = ?",
                            (face_id, user)).fetchone()
        if face is None or face["person_id"] != person:
            raise bad_param("face_ids", f"face {face_id} is not a face of person {person}",
                            face_id)
        operator_move(conn, changes, user, face_id, None)


def event_json(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "kind": row["kind"], "actor": row["actor"],
            "person_id": row["person_id"], "other_person_id": row["other_id"],
            "face_ids": json.loads(row["face_ids"]),
            "detail": json.loads(row["detail"]) if row["detail"] else {},
            "timestamp": row["created"], "undone_by": row["undone_by"]}


def forget_deleted_persons(conn: sqlite3.Connection) -> None:
    """Drop events and feedback about persons that no longer exist (retention)."""
    for table in ("person_events", "person_blocks"):
        conn.execute(f"DELETE FROM {table} WHERE NOT EXISTS "
                     f"(SELECT 1 FROM persons p WHERE p.id = {table}.person_id)")


def gauges(db: Database, user: int | None = None) -> dict[str, tuple[str, float]]:
    """Metrics: automatic person decisions so far, of every tenant or of ``user`` (they
    survive restarts: counted from the person events)."""
    where, args = ("WHERE user_id = ? ", (user,)) if user is not None else ("", ())
    counts = dict(db.rows("SELECT kind || ':' || actor, COUNT(*) FROM person_events "
                          f"{where}GROUP BY kind, actor", args))
    return {
        "backend_person_identity_switches": (
            "Faces that clearly disagreed with their track's person (tracker identity "
            "switches).", float(counts.get("identity_switch:auto", 0))),
        "backend_person_auto_merges": (
            "Persons merged automatically (late evidence).", float(counts.get("merge:auto", 0))),
    }
