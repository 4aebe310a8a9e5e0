"""The SQL of the history filters (pure: text and arguments, no database): which events of a
user pass an ``EventFilter``, read through which index. ``stores/history.py`` runs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from videodetector.backend.storage import placeholders
from videodetector.core.confidence import confidence_from_cosine

TS_PROBE = 5000  # a time range with more events than this is read in id order


@dataclass(frozen=True)
class EventFilter:
    person_id: int | None = None
    cam_ids: tuple[str, ...] | None = None
    start: float | None = None  # epoch seconds, inclusive
    end: float | None = None
    friend: bool | None = None
    matched: bool | None = None
    watchlist: bool | None = None

    @property
    def needs_matches(self) -> bool:
        return self.watchlist is not None


@dataclass(frozen=True)
class Query:
    """``<tables> WHERE ...`` (``faces f``, with ``event_matches m`` for watch-list matches),
    its arguments and the event id column, for ``storage.page_ids`` and counts."""

    where: str
    args: tuple[Any, ...]
    id_col: str = "f.id"


MATCHED_IDS = "SELECT face_id FROM event_matches WHERE user_id = ?"


def time_terms(f: EventFilter, alias: str = "f.") -> tuple[list[str], list[Any]]:
    terms, args = [], []
    if f.start is not None:
        terms.append(f"{alias}ts >= ?")
        args.append(f.start)
    if f.end is not None:
        terms.append(f"{alias}ts <= ?")
        args.append(f.end)
    return terms, args


def filter_terms(user: int, f: EventFilter, index: str | None = None
                 ) -> tuple[list[str], list[Any]]:
    """The terms over ``faces f`` of every filter but ``watchlist``. The partial indexes
    need the literal ``cam_id IS NOT NULL``; through ``events_cam`` it is left out, as the
    cameras' ``IN`` implies it and SQLite would read ``cam_id > NULL`` instead of each
    camera."""
    terms = ["f.user_id = ?"]
    args: list[Any] = [user]
    if f.person_id is not None:
        terms.append("f.person_id = ?")
        args.append(f.person_id)
    if not (f.cam_ids and index == "events_cam"):
        terms.append("f.cam_id IS NOT NULL")
    if f.cam_ids is not None:
        # (no camera: no event; a false term SQLite still reads through an index)
        terms.append(f"f.cam_id IN ({placeholders(len(f.cam_ids))})" if f.cam_ids
                     else "f.id < 0")
        args.extend(f.cam_ids)
    t_terms, t_args = time_terms(f)
    terms += t_terms
    args += t_args
    if f.friend is not None:
        terms.append("f.friend = 1" if f.friend else "f.friend = 0")  # literal: partial index
    if f.matched is not None:
        terms.append("f.person_id IS NOT NULL" if f.matched else "f.person_id IS NULL")
    return terms, args


def build_query(user: int, f: EventFilter, index: str | None = None) -> Query:
    """SQL of the filter, read through ``index``. ``watchlist: true`` with no index: the
    events are read from the matches (one row per matching event, in id order; each event's
    columns from the covering ``events_id``), else the matches are a list the events are
    checked against, as they are for ``watchlist: false``."""
    terms, args = filter_terms(user, f, index)
    if f.watchlist is not None and (index is not None or not f.watchlist):
        terms.append(f"f.id {'IN' if f.watchlist else 'NOT IN'} ({MATCHED_IDS})")
        args.append(user)
    where = " AND ".join(terms)
    if f.watchlist and index is None:
        # (EXISTS, not a join: a join would move the page's "m.face_id < ?" onto f.id)
        return Query("event_matches m INDEXED BY event_matches_user WHERE m.user_id = ? AND "
                     "EXISTS (SELECT 1 FROM faces f INDEXED BY events_id WHERE f.id = "
                     f"m.face_id AND {where})", (user, *args), "m.face_id")
    hint = f" INDEXED BY {index}" if index else ""
    return Query(f"faces f{hint} WHERE {where}", tuple(args))


def best_of_list(event_ids: np.ndarray, events: np.ndarray, face_ids: np.ndarray,
                 faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per event: the nearest face of a list (its id) and that confidence; an event is never
    its own match (as watchlists.best_matches)."""
    if not len(event_ids) or not len(face_ids) or events.shape[1] != faces.shape[1]:
        return np.zeros(len(event_ids), np.int64), np.full(len(event_ids), -1.0)
    cos = events @ faces.T
    cos[event_ids[:, None] == face_ids[None, :]] = -1.0
    cols = np.argmax(cos, axis=1)
    conf = np.asarray(confidence_from_cosine(cos[np.arange(len(event_ids)), cols]))
    return face_ids[cols], conf
