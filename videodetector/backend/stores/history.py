"""Camera events (the ``faces`` rows with a camera) as history: the event indexes, the
watch-list matches of events (tables ``event_matches``, ``event_match_state``), the filtered
reads and counts. The SQL of the filters is built by the pure module ``history_query``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from videodetector.backend.storage import placeholders
from videodetector.backend.stores.base import PerDatabase

CHUNK = 500  # ids per IN (...) list


class HistoryStore(Protocol):
    """Events of each user."""

    def event_cameras(self, user: int, ids: Sequence[int]) -> dict[int, str]:
        """The camera of each of ``ids`` that is an event of ``user``."""


class SqlHistoryStore(PerDatabase):
    """``HistoryStore`` over SQLite or PostgreSQL (pgdb translates the SQL)."""

    def event_cameras(self, user: int, ids: Sequence[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        for start in range(0, len(ids), CHUNK):
            chunk = list(ids[start:start + CHUNK])
            out.update({r[0]: r[1] for r in self.db.rows(
                f"SELECT id, cam_id FROM faces WHERE user_id = ? AND id IN "
                f"({placeholders(len(chunk))}) AND cam_id IS NOT NULL", (user, *chunk))})
        return out


def history_store(db: Any) -> HistoryStore:
    """The history store of ``db`` (one per database)."""
    return SqlHistoryStore.of(db)
