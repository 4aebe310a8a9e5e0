"""Faces, their galleries (``face_galleries``), the Idempotency-Keys of POST /face, and the
feeds that keep the in-memory index equal to the database (``face_log`` on PostgreSQL,
``regenerated``). PostgreSQL adds the pgvector search (:class:`PgFaceStore`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from videodetector.backend import pgsearch
from videodetector.backend.changes import DEFAULT_GALLERY
from videodetector.backend.embeddings import VECTOR_SQL, Coverage, coverage, last_change
from videodetector.backend.storage import (
    PageRequest,
    PageResult,
    insert,
    page_ids,
    placeholders,
    update,
    vector_index_sql,
)
from videodetector.backend.stores import Db

CHUNK = 500  # ids per ``IN (...)``

_CAMERA_EVENTS_SQL = (
    "SELECT f.*, c.meta AS camera_meta, p.meta AS person_meta FROM faces f "
    "LEFT JOIN cameras c ON c.id = f.cam_id AND c.user_id = f.user_id "
    "LEFT JOIN persons p ON p.id = f.person_id AND p.user_id = f.user_id "
    "WHERE f.user_id = ? AND f.cam_id IS NOT NULL AND f.id > ? ORDER BY f.id LIMIT ?")


class FaceStore(Protocol):
    """Reading, paging, writing and deleting faces and their gallery links."""

    def rows(self, user: int, ids: Sequence[int]) -> list[Any]:
        """The user's face rows for ``ids``, in that order (missing ids are skipped)."""
        ...

    def galleries_of(self, ids: Sequence[int]) -> dict[int, list[str]]:
        """Each face's galleries: ``default`` first, then its custom ones by name."""
        ...

    def page(self, user: int, page: PageRequest, meta: str | None = None,
             gallery: str | None = None) -> PageResult:
        """A page of the user's face ids, newest first; only faces with exactly ``meta``,
        only faces in ``gallery`` (``default`` or None: all)."""
        ...

    def meta_page(self, user: int, page: PageRequest, gallery: str | None = None
                  ) -> tuple[PageResult, dict[int, Any]]:
        """A page of the user's meta strings (keyed by their first face id, newest first):
        the page and, per first face id, its row (``meta``, ``first_id``, ``n``)."""
        ...

    def ids(self, user: int) -> list[int]: ...

    def vectors(self, ids: Sequence[int], model: str) -> dict[int, bytes | None]:
        """Each face's vector of ``model`` (``VECTOR_SQL``), None for a face without one;
        faces that do not exist are left out."""

    def insert(self, conn: Any, values: dict[str, Any]) -> int: ...

    def update(self, conn: Any, user: int, face_id: int, values: dict[str, Any]) -> None: ...

    def place(self, conn: Any, face_id: int) -> Any:
        """``cam_id`` and ``person_id`` of a face (in ``conn``)."""
        ...

    def link(self, conn: Any, user: int, face_id: int, galleries: Sequence[str],
             keep_existing: bool = False) -> None:
        """Put the face into custom galleries (``keep_existing``: links it already has are
        left alone instead of refused)."""
        ...

    def unlink(self, conn: Any, face_id: int, galleries: Sequence[str] | None = None) -> None:
        """Take the face out of ``galleries`` (None: of all its custom galleries)."""
        ...

    def delete(self, conn: Any, ids: Sequence[int]) -> None:
        """Delete the faces and their gallery links (the caller checked the owner)."""
        ...

    def photo_in_use(self, photo: str) -> bool: ...

    def thumbnail_in_use(self, photo: str, thumbnail: str) -> bool:
        """Whether a face of the stored photo ``photo`` has the thumbnail ``thumbnail``."""
        ...

    def camera_days(self, conn: Any, user: int, person: int, cam_id: str, start: float,
                    end: float) -> int:
        """On how many distinct days ``cam_id`` saw ``person`` in [start, end] (8.3)."""
        ...

    def mark_friend(self, conn: Any, face_id: int) -> None: ...

    def coverage(self, model: str, user: int, gallery: str | None = None) -> Coverage:
        """The user's faces (of one custom gallery) and how many have a ``model`` vector."""
        ...

    def latest_camera_event(self, user: int) -> int:
        """The newest camera event (face with a ``cam_id``) id of the user, 0 if none."""
        ...

    def camera_events(self, user: int, after: int, limit: int) -> list[Any]:
        """Camera events after id ``after``, oldest first, with the camera's and the
        person's meta (``camera_meta``, ``person_meta``)."""
        ...


class SqlFaceStore:
    """``FaceStore`` over ``faces`` and ``face_galleries`` (SQLite; PostgreSQL through
    ``PgDatabase``'s translation)."""

    def __init__(self, db: Db) -> None:
        self.db = db

    def rows(self, user: int, ids: Sequence[int]) -> list[Any]:
        found = {}
        for start in range(0, len(ids), CHUNK):
            chunk = list(ids[start:start + CHUNK])
            for r in self.db.rows(f"SELECT * FROM faces WHERE user_id = ? AND id IN "
                                  f"({placeholders(len(chunk))})", (user, *chunk)):
                found[r["id"]] = r
        return [found[i] for i in ids if i in found]

    def vectors(self, ids: Sequence[int], model: str) -> dict[int, bytes | None]:
        out: dict[int, bytes | None] = {}
        for start in range(0, len(ids), CHUNK):
            names = {f"i{k}": i for k, i in enumerate(ids[start:start + CHUNK])}
            marks = ", ".join(f":{n}" for n in names)
            for r in self.db.rows(f"SELECT f.id, {VECTOR_SQL} AS vec FROM faces f "
                                  f"WHERE f.id IN ({marks})", {"m": model, **names}):
                out[int(r[0])] = None if r[1] is None else bytes(r[1])
        return out

    def galleries_of(self, ids: Sequence[int]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {i: [DEFAULT_GALLERY] for i in ids}
        for start in range(0, len(ids), CHUNK):
            chunk = list(ids[start:start + CHUNK])
            for r in self.db.rows(f"SELECT face_id, gallery FROM face_galleries WHERE face_id "
                                  f"IN ({placeholders(len(chunk))}) ORDER BY gallery", chunk):
                out[r[0]].append(r[1])
        return out

    def page(self, user: int, page: PageRequest, meta: str | None = None,
             gallery: str | None = None) -> PageResult:
        if meta is None and gallery not in (None, DEFAULT_GALLERY):
            return page_ids(self.db, "face_id", "face_galleries WHERE user_id = ? AND "
                            "gallery = ?", [user, gallery], page)
        where, args = "faces WHERE user_id = ?", [user]
        if meta is not None:
            extra, more = _gallery_filter(user, gallery)
            where, args = f"{where} AND meta = ?{extra}", [*args, meta, *more]
        return page_ids(self.db, "id", where, args, page)

    def meta_page(self, user: int, page: PageRequest, gallery: str | None = None
                  ) -> tuple[PageResult, dict[int, Any]]:
        extra, args = _gallery_filter(user, gallery)
        groups = (f"(SELECT meta, MIN(id) AS first_id, COUNT(*) AS n FROM faces WHERE "
                  f"user_id = ? AND meta != ''{extra} GROUP BY meta) AS g WHERE 1 = 1")
        result = page_ids(self.db, "first_id", groups, [user, *args], page)
        marks = ", ".join("?" * len(result.ids))
        rows = {r["first_id"]: r for r in self.db.rows(
            f"SELECT * FROM {groups} AND first_id IN ({marks})", [user, *args, *result.ids])}
        return result, rows

    def ids(self, user: int) -> list[int]:
        return [int(r[0]) for r in self.db.rows("SELECT id FROM faces WHERE user_id = ?",
                                                (user,))]

    def insert(self, conn: Any, values: dict[str, Any]) -> int:
        return insert(conn, "faces", values)

    def update(self, conn: Any, user: int, face_id: int, values: dict[str, Any]) -> None:
        update(conn, "faces", values, "id = ? AND user_id = ?", (face_id, user))

    def place(self, conn: Any, face_id: int) -> Any:
        return conn.execute("SELECT cam_id, person_id FROM faces WHERE id = ?",
                            (face_id,)).fetchone()

    def link(self, conn: Any, user: int, face_id: int, galleries: Sequence[str],
             keep_existing: bool = False) -> None:
        for g in galleries:
            if keep_existing:
                conn.execute("INSERT OR IGNORE INTO face_galleries VALUES (?, ?, ?)",
                             (face_id, user, g))
            else:
                insert(conn, "face_galleries", {"face_id": face_id, "user_id": user,
                                                "gallery": g})

    def unlink(self, conn: Any, face_id: int, galleries: Sequence[str] | None = None) -> None:
        if galleries is None:
            conn.execute("DELETE FROM face_galleries WHERE face_id = ?", (face_id,))
            return
        for g in galleries:
            conn.execute("DELETE FROM face_galleries WHERE face_id = ? AND gallery = ?",
                         (face_id, g))

    def delete(self, conn: Any, ids: Sequence[int]) -> None:
        for start in range(0, len(ids), CHUNK):
            chunk = list(ids[start:start + CHUNK])
            marks = placeholders(len(chunk))
            conn.execute(f"DELETE FROM faces WHERE id IN ({marks})", chunk)
            conn.execute(f"DELETE FROM face_galleries WHERE face_id IN ({marks})", chunk)

    def photo_in_use(self, photo: str) -> bool:
        return self.db.row("SELECT 1 FROM faces WHERE photo = ?", (photo,)) is not None

    def thumbnail_in_use(self, photo: str, thumbnail: str) -> bool:
        # faces_photo: the faces of one photo (a lazy thumbnail's photo has one face)
        return self.db.row("SELECT 1 FROM faces WHERE photo = ? AND thumbnail = ?",
                           (photo, thumbnail)) is not None

    def camera_days(self, conn: Any, user: int, person: int, cam_id: str, start: float,
                    end: float) -> int:
        return int(conn.execute(
            "SELECT COUNT(DISTINCT day) FROM faces WHERE user_id = ? AND person_id = ? "
            "AND cam_id = ? AND ts BETWEEN ? AND ?", (user, person, cam_id, start, end),
        ).fetchone()[0])

    def mark_friend(self, conn: Any, face_id: int) -> None:
        conn.execute("UPDATE faces SET friend = 1 WHERE id = ?", (face_id,))

    def coverage(self, model: str, user: int, gallery: str | None = None) -> Coverage:
        return coverage(self.db, model, user, gallery)

    def latest_camera_event(self, user: int) -> int:
        value = self.db.scalar("SELECT MAX(id) FROM faces WHERE user_id = ? AND "
                               "cam_id IS NOT NULL", (user,))
        return int(value or 0)

    def camera_events(self, user: int, after: int, limit: int) -> list[Any]:
        return self.db.rows(_CAMERA_EVENTS_SQL, (user, after, limit))


def _gallery_filter(user: int, gallery: str | None) -> tuple[str, list[Any]]:
    if gallery in (None, DEFAULT_GALLERY):
        return "", []
    return (" AND id IN (SELECT face_id FROM face_galleries WHERE user_id = ? AND gallery = ?)",
            [user, gallery])


class IndexFeed(Protocol):
    """What the in-memory index reads to follow the database."""

    def data_version(self) -> int:
        """A number that changes when another process committed what the index follows."""
        ...

    def regenerated_since(self, conn: Any, model: str, seq: int) -> list[Any]:
        """Faces whose ``model`` vector ``fkvideo_backend regenerate`` wrote after ``seq``:
        ``seq, id, user_id, cam_id, person_id, vec``."""
        ...


class SqlIndexFeed:
    def __init__(self, db: Db) -> None:
        self.db = db

    def data_version(self) -> int:
        """Changes when another process committed (SQLite's ``PRAGMA data_version``)."""
        return int(self.db.conn.execute("PRAGMA data_version").fetchone()[0])

    def regenerated_since(self, conn: Any, model: str, seq: int) -> list[Any]:
        return conn.execute(
            f"SELECT r.seq, f.id, f.user_id, f.cam_id, f.person_id, {VECTOR_SQL} AS vec "
            "FROM regenerated r JOIN faces f ON f.id = r.face_id "
            "WHERE r.seq > :s AND r.model = :m ORDER BY r.seq",
            {"m": model, "s": seq}).fetchall()


class PgIndexFeed(SqlIndexFeed):
    """PostgreSQL: every process's face changes are logged (``face_log``)."""

    def data_version(self) -> int:
        """The last ``regenerated`` seq: the only outside change the index looks for."""
        return last_change(self.db)

    def last_logged(self) -> int:
        return int(self.db.scalar("SELECT COALESCE(MAX(seq), 0) FROM face_log"))

    def logged_since(self, conn: Any, seq: int) -> list[Any]:
        """``seq, face_id, user_id`` of the face changes logged after ``seq``."""
        return conn.execute("SELECT seq, face_id, user_id FROM face_log WHERE seq > ? "
                            "ORDER BY seq", (seq,)).fetchall()

    def vectors(self, conn: Any, model: str, ids: list[int]) -> list[Any]:
        """``id, user_id, cam_id, person_id, vec`` (``model``'s vector) of these faces."""
        return conn.execute(
            f"SELECT f.id, f.user_id, f.cam_id, f.person_id, {VECTOR_SQL} AS vec FROM faces f "
            "WHERE f.id = ANY(:ids)", {"m": model, "ids": ids}).fetchall()

    def forget_logged(self, conn: Any, before: float) -> None:
        conn.execute("DELETE FROM face_log WHERE at < ?", (before,))


class PgFaceStore(SqlFaceStore):
    """PostgreSQL: ``FaceStore`` plus the nearest faces by pgvector (``ef_search``: the
    setting ``pg_ef_search``)."""

    def __init__(self, db: Db, ef_search: int = pgsearch.EF_SEARCH_DEFAULT) -> None:
        super().__init__(db)
        self.ef_search = ef_search

    def ensure_vector_index(self, model: str, dim: int) -> None:
        """The HNSW cosine indexes of ``model``'s vectors (``vector_index_sql``)."""
        with self.db.transaction() as conn:
            for sql in vector_index_sql(model, dim):
                conn.execute(sql)

    def nearest(self, user: int, model: str, dim: int, query: np.ndarray, n: int,
                gallery: str | None) -> list[tuple[int, float]]:
        """The user's ``n`` faces nearest to ``query`` by ``model``'s vector (in
        ``faces.vec`` or ``embeddings.vec``): (face_id, cosine distance), nearest first;
        never fewer than the user's (gallery's) faces hold (``pgsearch.nearest``)."""
        return pgsearch.nearest(self.db, user, model, dim, query, n, gallery, self.ef_search)


class IdempotencyStore(Protocol):
    def earlier(self, user: int, key: str) -> list[int] | None:
        """The face ids an earlier request with this key stored, or None."""
        ...

    def remember(self, conn: Any, user: int, key: str, ids: list[int], at: float) -> None: ...

    def forget_before(self, conn: Any, before: float) -> None: ...


class SqlIdempotencyStore:
    """``IdempotencyStore`` over ``idempotency`` (its (user_id, key) is unique)."""

    def __init__(self, db: Db) -> None:
        self.db = db

    def earlier(self, user: int, key: str) -> list[int] | None:
        text = self.db.scalar("SELECT face_ids FROM idempotency WHERE user_id = ? AND key = ?",
                              (user, key))
        return None if text is None else json.loads(text)

    def remember(self, conn: Any, user: int, key: str, ids: list[int], at: float) -> None:
        insert(conn, "idempotency", {"user_id": user, "key": key, "face_ids": json.dumps(ids),
                                     "created": at})

    def forget_before(self, conn: Any, before: float) -> None:
        conn.execute("DELETE FROM idempotency WHERE created < ?", (before,))


def face_store(db: Db, ef_search: int = pgsearch.EF_SEARCH_DEFAULT) -> SqlFaceStore:
    """The face store of ``db``: with the pgvector search on PostgreSQL (``ef_search``: the
    setting ``pg_ef_search``)."""
    return PgFaceStore(db, ef_search) if db.dialect == "postgresql" else SqlFaceStore(db)


def index_feed(db: Db) -> SqlIndexFeed:
    return PgIndexFeed(db) if db.dialect == "postgresql" else SqlIndexFeed(db)
