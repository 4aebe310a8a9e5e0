"""Persons (8.2), their events and operator feedback, and the pages of camera history.

The person rows' SQL that dynamic person creation shares with this store lives in
``person_store`` (functions over an open transaction, used by ``person_match`` too); this
store is the one owner the routers and the domain talk to: it reads persons and runs the
operator's corrections in one transaction whose index changes are undone on rollback."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from videodetector.backend import person_store, person_summary
from videodetector.backend.errors import bad_param, not_found
from videodetector.backend.index import UserIndex
from videodetector.backend.storage import PageRequest, PageResult, page_ids, update
from videodetector.backend.stores import Db
from videodetector.backend.views import Urls


class PersonStore(Protocol):
    def get(self, user: int, person_id: int) -> Any:
        """The user's person row; 404 NOT_FOUND for any other id."""
        ...

    def page(self, user: int, page: PageRequest) -> PageResult:
        """A page of the user's persons (not merged ones), newest first."""
        ...

    def face_ids(self, user: int, person_id: int) -> list[int]: ...

    def summaries(self, user: int, ids: Sequence[int], urls: Urls) -> dict[int, Any]: ...

    def camera_sightings(self, user: int, person_id: int) -> list[dict[str, Any]]: ...

    def set_meta(self, user: int, person_id: int, meta: str) -> None: ...

    def events(self, user: int, person_id: int) -> list[Any]:
        """The person's events (as ``person_id`` or ``other_id``), oldest first."""
        ...

    def merge(self, index: UserIndex, user: int, into: int, other: Any) -> None:
        """An operator merges person ``other`` (as the client sent it) into ``into``."""
        ...

    def not_this_person(self, index: UserIndex, user: int, person: int,
                        face_ids: list[int]) -> None: ...

    def undo(self, index: UserIndex, user: int, event_id: int) -> Any:
        """Undo a merge event; the ``unmerge`` event's row."""
        ...

    def history_page(self, where: str, args: Sequence[Any], id_col: str,
                     page: PageRequest) -> PageResult:
        """A page of camera events selected by a ``history.Query`` (``<tables> WHERE ..``)."""
        ...


class SqlPersonStore:
    """``PersonStore`` over ``persons``, ``person_events``, ``person_blocks`` and ``faces``
    (SQLite and PostgreSQL)."""

    def __init__(self, db: Db) -> None:
        self.db = db

    def get(self, user: int, person_id: int) -> Any:
        row = self.db.row("SELECT * FROM persons WHERE id = ? AND user_id = ?",
                          (person_id, user))
        if row is None:
            raise not_found("person", person_id)
        return row

    def page(self, user: int, page: PageRequest) -> PageResult:
        return page_ids(self.db, "id", "persons WHERE user_id = ? AND merged_into IS NULL",
                        [user], page)

    def face_ids(self, user: int, person_id: int) -> list[int]:
        rows = self.db.rows("SELECT id FROM faces WHERE user_id = ? AND person_id = ? "
                            "ORDER BY id", (user, person_id))
        return [int(r[0]) for r in rows]

    def summaries(self, user: int, ids: Sequence[int], urls: Urls) -> dict[int, Any]:
        return person_summary.summaries(self.db, user, ids, urls)

    def camera_sightings(self, user: int, person_id: int) -> list[dict[str, Any]]:
        return person_summary.camera_sightings(self.db, user, person_id)

    def set_meta(self, user: int, person_id: int, meta: str) -> None:
        with self.db.transaction() as conn:
            update(conn, "persons", {"meta": meta}, "id = ? AND user_id = ?", (person_id, user))

    def events(self, user: int, person_id: int) -> list[Any]:
        return self.db.rows("SELECT * FROM person_events WHERE user_id = ? AND "
                            "(person_id = ? OR other_id = ?) ORDER BY id",
                            (user, person_id, person_id))

    def merge(self, index: UserIndex, user: int, into: int, other: Any) -> None:
        with person_store.person_transaction(self.db, index) as (conn, changes):
            into = person_store.own_person(conn, user, into)
            away = person_store.own_person(conn, user, other)
            if away == into:
                raise bad_param("person_id", "a person cannot be merged into itself", other)
            person_store.merge_persons(conn, changes, user, into, away, "operator")

    def not_this_person(self, index: UserIndex, user: int, person: int,
                        face_ids: list[int]) -> None:
        with person_store.person_transaction(self.db, index) as (conn, changes):
            person_store.own_person(conn, user, person)
            person_store.not_this_person(conn, changes, user, person, face_ids)

    def undo(self, index: UserIndex, user: int, event_id: int) -> Any:
        with person_store.person_transaction(self.db, index) as (conn, changes):
            undo = person_store.undo_merge(conn, changes, user, event_id)
        return self.db.row("SELECT * FROM person_events WHERE id = ?", (undo,))

    def history_page(self, where: str, args: Sequence[Any], id_col: str,
                     page: PageRequest) -> PageResult:
        return page_ids(self.db, id_col, where, args, page)
