"""Gallery statistics (``/stat/...``) read from the face tables: faces per gallery, a
gallery's stored files and persons, its creation time. Read only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from videodetector.backend.changes import DEFAULT_GALLERY


class StatsStore(Protocol):
    def face_counts(self, user: int) -> dict[str, int]:
        """Faces per gallery of ``user``, ``default`` (every face) first, then each gallery
        by name (0 when empty)."""

    def gallery_faces(self, user: int, gallery: str) -> Sequence[Any]:
        """Rows (photo, thumbnail, normalized, person_id) of the gallery's faces."""

    def gallery_created(self, user: int, gallery: str) -> str | None: ...


class SqlStatsStore:
    """``StatsStore`` over SQLite or PostgreSQL (pgdb translates the SQL)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def face_counts(self, user: int) -> dict[str, int]:
        db = self.db
        counts = {DEFAULT_GALLERY: int(db.scalar("SELECT COUNT(*) FROM faces WHERE user_id = ?",
                                                 (user,)))}
        created: dict[str, int] = {r[0]: 0 for r in db.rows(
            "SELECT name FROM galleries WHERE user_id = ? ORDER BY name", (user,))}
        for name, n in db.rows("SELECT gallery, COUNT(*) FROM face_galleries WHERE "
                               "user_id = ? GROUP BY gallery", (user,)):
            if name in created:
                created[name] = int(n)
        counts.update(created)
        return counts

    def gallery_faces(self, user: int, gallery: str) -> Sequence[Any]:
        if gallery == DEFAULT_GALLERY:
            return self.db.rows("SELECT photo, thumbnail, normalized, person_id FROM faces "
                                "WHERE user_id = ?", (user,))
        return self.db.rows("SELECT f.photo, f.thumbnail, f.normalized, f.person_id FROM "
                            "faces f JOIN face_galleries g ON g.face_id = f.id WHERE "
                            "g.user_id = ? AND g.gallery = ?", (user, gallery))

    def gallery_created(self, user: int, gallery: str) -> str | None:
        return self.db.scalar("SELECT created FROM galleries WHERE user_id = ? AND name = ?",
                              (user, gallery))
