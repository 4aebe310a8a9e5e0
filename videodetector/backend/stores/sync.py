"""The change log (table ``face_changes``, written by changes.py) as ``/v1/faces/sync`` reads
it: a gallery's changes after a cursor, and the cursor a time stands for."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from videodetector.backend import changes


class SyncStore(Protocol):
    def first_seq_after(self, at: float) -> int | None:
        """The first change made after ``at`` (epoch seconds), None when there is none."""

    def changes(self, user: int, gallery: str, after: int, limit: int) -> Sequence[Any]:
        """Rows (seq, face_id, deleted, at) of the gallery's changes after ``after``, in
        ``seq`` order, at most ``limit``."""

    def horizon(self) -> int:
        """The oldest cursor whose deletions are all still kept."""

    def last_seq(self) -> int:
        """The newest change anywhere (0 when none)."""

    def snapshot(self) -> AbstractContextManager[Any]:
        """Hold the database's write lock: no change is recorded while it is held."""


class SqlSyncStore:
    """``SyncStore`` over SQLite or PostgreSQL (pgdb translates the SQL)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def first_seq_after(self, at: float) -> int | None:
        first = self.db.scalar("SELECT MIN(seq) FROM face_changes WHERE at > ?", (at,))
        return None if first is None else int(first)

    def changes(self, user: int, gallery: str, after: int, limit: int) -> Sequence[Any]:
        return self.db.rows(
            "SELECT seq, face_id, deleted, at FROM face_changes WHERE user_id = ? AND "
            "gallery = ? AND seq > ? ORDER BY seq LIMIT ?", (user, gallery, after, limit))

    def horizon(self) -> int:
        return changes.horizon(self.db)

    def last_seq(self) -> int:
        return changes.last_seq(self.db)

    def snapshot(self) -> AbstractContextManager[Any]:
        return self.db.lock
