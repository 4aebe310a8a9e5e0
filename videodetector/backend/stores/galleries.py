"""Custom galleries (9.1.3) and which faces are in them. ``default`` is implied: it is never
stored and holds every face of its user."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from videodetector.backend.storage import insert
from videodetector.backend.stores import Db
from videodetector.backend.timeutil import iso, now


class GalleryStore(Protocol):
    def names(self, user: int) -> list[str]:
        """The user's custom galleries, by name."""
        ...

    def exists(self, user: int, name: str, conn: Any = None) -> bool: ...

    def add(self, conn: Any, user: int, name: str) -> None: ...

    def remove(self, conn: Any, user: int, name: str) -> None:
        """The gallery row only (its faces are deleted by the caller, in ``conn``)."""
        ...

    def face_ids(self, user: int, name: str) -> np.ndarray:
        """The ids of the faces in a custom gallery (int64)."""
        ...


class SqlGalleryStore:
    """``GalleryStore`` over ``galleries`` and ``face_galleries`` (SQLite and PostgreSQL)."""

    def __init__(self, db: Db) -> None:
        self.db = db

    def names(self, user: int) -> list[str]:
        rows = self.db.rows("SELECT name FROM galleries WHERE user_id = ? ORDER BY name", (user,))
        return [r[0] for r in rows]

    def exists(self, user: int, name: str, conn: Any = None) -> bool:
        sql, args = "SELECT 1 FROM galleries WHERE user_id = ? AND name = ?", (user, name)
        if conn is not None:
            return conn.execute(sql, args).fetchone() is not None
        return self.db.row(sql, args) is not None

    def add(self, conn: Any, user: int, name: str) -> None:
        insert(conn, "galleries", {"user_id": user, "name": name, "created": iso(now())})

    def remove(self, conn: Any, user: int, name: str) -> None:
        conn.execute("DELETE FROM galleries WHERE user_id = ? AND name = ?", (user, name))

    def face_ids(self, user: int, name: str) -> np.ndarray:
        rows = self.db.rows("SELECT face_id FROM face_galleries WHERE user_id = ? AND "
                            "gallery = ?", (user, name))
        return np.array([r[0] for r in rows], np.int64)
