"""Person rows: who may create them, their schema additions, and the repair of old databases.

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

import logging
import sqlite3
from typing import Any

from videodetector.backend.errors import ApiError, bad_param
from videodetector.backend.params import INT64_MAX, exact_int
from videodetector.backend.storage import Database, insert
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
    """Repair a database an older version let clients poison (see the module docstring)."""
    with db.transaction() as conn:
        rogue = conn.execute("SELECT id, user_id, meta, created FROM persons WHERE id > ? "
                             "ORDER BY id", (MAX_SERVER_PERSON_ID,)).fetchall()
        if not rogue:
            return
        top = conn.execute("SELECT COALESCE(MAX(id), 0) FROM persons WHERE id <= ?",
                           (MAX_SERVER_PERSON_ID,)).fetchone()[0]
        conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'persons'", (top,))
        for old in rogue:
            conn.execute("DELETE FROM persons WHERE id = ?", (old["id"],))
            new = insert(conn, "persons", {"user_id": old["user_id"], "meta": old["meta"],
                                           "created": old["created"]})
            conn.execute("UPDATE faces SET person_id = ? WHERE person_id = ? AND user_id = ?",
                         (new, old["id"], old["user_id"]))
            log.warning("person %d (an id chosen by a client) renumbered to %d", old["id"], new)
