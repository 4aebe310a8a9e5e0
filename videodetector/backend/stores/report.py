"""What the history report needs beyond the history store: the names (``meta``) of the
cameras and persons its events show. Read only. (The persons' names could move to the person
store once there is one; the cameras' could be the camera store's.)"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from videodetector.backend.storage import placeholders

CHUNK = 500  # ids per IN (...) list


class ReportStore(Protocol):
    def camera_names(self, user: int, ids: Iterable[str | None]) -> dict[str, str]:
        """``meta`` of each of the user's cameras among ``ids`` (None ignored)."""

    def person_names(self, user: int, ids: Iterable[int | None]) -> dict[int, str]:
        """``meta`` of each of the user's persons among ``ids`` (None ignored)."""


class SqlReportStore:
    """``ReportStore`` over SQLite or PostgreSQL (pgdb translates the SQL)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def camera_names(self, user: int, ids: Iterable[str | None]) -> dict[str, str]:
        return self._names("SELECT id, meta FROM cameras", user, ids)

    def person_names(self, user: int, ids: Iterable[int | None]) -> dict[int, str]:
        return self._names("SELECT id, meta FROM persons", user, ids)

    def _names(self, select: str, user: int, ids: Iterable[Any]) -> dict[Any, str]:
        wanted = list(dict.fromkeys(i for i in ids if i is not None))
        out: dict[Any, str] = {}
        for start in range(0, len(wanted), CHUNK):
            chunk = wanted[start:start + CHUNK]
            out.update({r[0]: r[1] for r in self.db.rows(
                f"{select} WHERE user_id = ? AND id IN ({placeholders(len(chunk))})",
                (user, *chunk))})
        return out
