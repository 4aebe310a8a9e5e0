"""Camera events (the ``faces`` rows with a camera) as history: the event indexes, the
watch-list matches of events (tables ``event_matches``, ``event_match_state``), filtered pages
and counts. The SQL of the filters is built by the pure module ``history_query``; what the
matches are is history.py's story (its docstring).

Indexes (made by the schema's revision 0002, ``backend/migrations``; partial on camera
events except ``events_cam``, and covering the filter columns): ``events_id`` (user, id),
``events_cam`` (user, camera, id),
``events_person`` (user, person, id), ``events_ts`` (user, ts), ``events_unmatched`` and
``events_friend`` (user, id) for the rarer sides of those filters, and ``event_matches_user``
(user, event). ``choose_index`` picks the one a page is read through; a time range or a set
of cameras holding many events is read in id order (a probe counts up to ``TS_PROBE`` events
first), so no page sorts more than ``TS_PROBE`` rows and none scans the table. Counts read
the narrowest index whole (up to every event of the token).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from videodetector.backend.embeddings import VECTOR_SQL
from videodetector.backend.history_query import (
    TS_PROBE,
    EventFilter,
    Query,
    best_of_list,
    time_terms,
)
from videodetector.backend.storage import PageRequest, PageResult, page_ids, placeholders

MATCH_CHUNK = 2000  # events matched per transaction
CHUNK = 500  # ids per IN (...) list


class WatchListLike(Protocol):
    """What the matches need of a watch list (``watchlists.WatchList``)."""

    @property
    def gallery(self) -> str: ...

    @property
    def threshold(self) -> str: ...

    @property
    def min_confidence(self) -> float: ...


class HistoryStore(Protocol):
    """Events of each user: filtered pages and counts, and their watch-list matches."""

    def event_cameras(self, user: int, ids: Sequence[int]) -> dict[int, str]:
        """The camera of each of ``ids`` that is an event of ``user``."""

    def choose_index(self, user: int, f: EventFilter, counting: bool = False) -> str | None:
        """The index a filter is read through (None: from the watch-list matches)."""

    def page(self, q: Query, page: PageRequest) -> PageResult:
        """A keyset page of the event ids of ``q``."""

    def count(self, queries: Mapping[str, Query]) -> dict[str, int]:
        """The events of each query, all read in one snapshot."""

    def refresh_matches(self, user: int, model: str, lists: Sequence[WatchListLike]) -> None:
        """Bring ``event_matches`` of ``user`` up to date with ``lists`` (in gallery name
        order) and the events stored so far; only reads when nothing changed."""

    def match_rows(self, user: int, ids: Sequence[int]) -> Sequence[Any]:
        """Rows (face_id, gallery, match_id, confidence) of the stored matches of ``ids``."""


class SqlHistoryStore:
    """``HistoryStore`` over SQLite or PostgreSQL (pgdb translates the SQL, ``INDEXED BY``
    included)."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self._refresh_lock = threading.Lock()

    def event_cameras(self, user: int, ids: Sequence[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        for start in range(0, len(ids), CHUNK):
            chunk = list(ids[start:start + CHUNK])
            out.update({r[0]: r[1] for r in self.db.rows(
                f"SELECT id, cam_id FROM faces WHERE user_id = ? AND id IN "
                f"({placeholders(len(chunk))}) AND cam_id IS NOT NULL", (user, *chunk))})
        return out

    # -- reading -------------------------------------------------------------------

    def _fewer_than_probe(self, user: int, index: str, terms: list[str], args: list[Any]
                          ) -> int:
        """Events of ``user`` passing ``terms`` through ``index``, counted up to TS_PROBE."""
        return int(self.db.scalar(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM faces f INDEXED BY {index} WHERE "
            f"f.user_id = ? AND {' AND '.join(terms)} LIMIT {TS_PROBE})", (user, *args)))

    def choose_index(self, user: int, f: EventFilter, counting: bool = False) -> str | None:
        """SQLite alone prefers the index that gives the id order, and then walks the whole
        history for a rare person or a short time range; here the narrowest candidate wins:
        a person's events; the cameras' or the time range's events when a probe finds fewer
        than TS_PROBE (when ``counting``, where order does not matter: always, but for
        ``watchlist: true``); else the matches for ``watchlist: true``, else the id order
        (with the rarer side of friend / matched from a partial index)."""
        if f.person_id is not None:
            return "events_person"
        probes: list[tuple[int, str]] = []
        if f.cam_ids:
            probes.append((self._fewer_than_probe(
                user, "events_cam", [f"f.cam_id IN ({placeholders(len(f.cam_ids))})"],
                list(f.cam_ids)), "events_cam"))
        if f.start is not None or f.end is not None:
            terms, args = time_terms(f)
            probes.append((self._fewer_than_probe(user, "events_ts",
                                                  ["f.cam_id IS NOT NULL", *terms], args),
                           "events_ts"))
        n, best = min(probes, default=(TS_PROBE, None))
        if best is not None and (n < TS_PROBE or (counting and not f.watchlist)):
            return best
        if f.watchlist:
            return None
        if f.friend:
            return "events_friend"
        if f.matched is False:
            return "events_unmatched"
        return "events_id"

    def page(self, q: Query, page: PageRequest) -> PageResult:
        return page_ids(self.db, q.id_col, q.where, q.args, page)

    def count(self, queries: Mapping[str, Query]) -> dict[str, int]:
        db = self.db
        with db.lock:
            db.conn.execute("BEGIN")  # one snapshot for the differences the caller takes
            try:
                return {k: int(db.conn.execute(f"SELECT COUNT(*) FROM {q.where}",
                                               q.args).fetchone()[0])
                        for k, q in queries.items()}
            finally:
                db.conn.execute("COMMIT")

    def match_rows(self, user: int, ids: Sequence[int]) -> Sequence[Any]:
        out: list[Any] = []
        for start in range(0, len(ids), CHUNK):
            chunk = list(ids[start:start + CHUNK])
            out += self.db.rows(
                "SELECT face_id, gallery, match_id, confidence FROM event_matches WHERE "
                f"user_id = ? AND face_id IN ({placeholders(len(chunk))})", (user, *chunk))
        return out

    # -- watch-list matches ----------------------------------------------------------

    def refresh_matches(self, user: int, model: str, lists: Sequence[WatchListLike]) -> None:
        if self._up_to_date(user, model, lists):
            return
        with self._refresh_lock:
            while True:
                with self.db.transaction() as conn:
                    cursor = _start_over_if_changed(conn, model, user, lists)
                    if _match_chunk(conn, model, user, lists, cursor) is None:
                        return

    def _up_to_date(self, user: int, model: str, lists: Sequence[WatchListLike]) -> bool:
        """True when the stored matches are those of ``lists`` and no event came since (read
        only: a query that finds nothing to do never writes)."""
        with self.db.lock:
            conn = self.db.conn
            row = conn.execute("SELECT fingerprint, cursor FROM event_match_state WHERE "
                               "user_id = ?", (user,)).fetchone()
            if row is None or row[0] != fingerprint(conn, model, user, lists):
                return False
            newer = conn.execute("SELECT 1 FROM faces INDEXED BY events_id WHERE user_id = ? "
                                 "AND cam_id IS NOT NULL AND id > ? LIMIT 1", (user, row[1]))
            return newer.fetchone() is None


def _vectors(conn: sqlite3.Connection, model: str, sql: str, args: dict[str, Any]
             ) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of ``sql`` (selecting ``f.id`` and ``VECTOR_SQL``); faces without a
    vector of ``model`` are left out."""
    rows = [r for r in conn.execute(sql, {**args, "m": model}).fetchall()
            if r[1] is not None and len(r[1]) % 4 == 0 and len(r[1])]
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 1), np.float32)
    dim = len(rows[0][1]) // 4
    rows = [r for r in rows if len(r[1]) == 4 * dim]
    ids = np.array([r[0] for r in rows], np.int64)
    return ids, np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), dim)


def _list_faces(conn: sqlite3.Connection, user: int, gallery: str) -> list[int]:
    return [r[0] for r in conn.execute(
        "SELECT face_id FROM face_galleries WHERE user_id = ? AND gallery = ? ORDER BY face_id",
        (user, gallery))]


def fingerprint(conn: sqlite3.Connection, model: str, user: int,
                lists: Sequence[WatchListLike]) -> str:
    """What the stored matches depend on: the model and each list's gallery, threshold and
    faces."""
    parts = [model, *[[w.gallery, w.threshold, _list_faces(conn, user, w.gallery)]
                      for w in lists]]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


_EVENT_VECTORS = (f"SELECT f.id, {VECTOR_SQL} FROM faces f WHERE f.user_id = :u AND "
                  f"f.cam_id IS NOT NULL AND f.id > :c ORDER BY f.id LIMIT {MATCH_CHUNK}")
_LIST_VECTORS = (f"SELECT f.id, {VECTOR_SQL} FROM face_galleries g JOIN faces f ON "
                 "f.id = g.face_id WHERE g.user_id = :u AND g.gallery = :g")


def _best_matches(conn: sqlite3.Connection, model: str, user: int,
                  lists: Sequence[WatchListLike], ids: np.ndarray, vecs: np.ndarray
                  ) -> list[tuple[int, str, int, float]]:
    """(event, gallery, face, confidence) of the events with a match: the best confidence at
    or above its list's threshold (ties: the list named first), as best_matches."""
    best: dict[int, tuple[float, str, int]] = {}
    for w in lists:  # in gallery name order
        face_ids, faces = _vectors(conn, model, _LIST_VECTORS, {"u": user, "g": w.gallery})
        near, conf = best_of_list(ids, vecs, face_ids, faces)
        for i in np.flatnonzero(conf >= w.min_confidence).tolist():
            event, c = int(ids[i]), float(conf[i])
            if c > best.get(event, (-1.0,))[0]:
                best[event] = (c, w.gallery, int(near[i]))
    return [(e, g, m, c) for e, (c, g, m) in best.items()]


def _match_chunk(conn: sqlite3.Connection, model: str, user: int,
                 lists: Sequence[WatchListLike], cursor: int) -> int | None:
    """Match the next events after ``cursor``; the new cursor, or None when none is left."""
    last = conn.execute("SELECT MAX(id) FROM (SELECT id FROM faces WHERE user_id = ? AND "
                        f"cam_id IS NOT NULL AND id > ? ORDER BY id LIMIT {MATCH_CHUNK})",
                        (user, cursor)).fetchone()[0]
    if last is None:
        return None
    if lists:
        ids, vecs = _vectors(conn, model, _EVENT_VECTORS, {"u": user, "c": cursor})
        conn.executemany(
            "INSERT OR REPLACE INTO event_matches (face_id, user_id, gallery, match_id, "
            "confidence) VALUES (?, ?, ?, ?, ?)",
            [(e, user, g, m, c) for e, g, m, c in _best_matches(conn, model, user, lists, ids,
                                                                vecs)])
    conn.execute("UPDATE event_match_state SET cursor = ? WHERE user_id = ?", (last, user))
    return int(last)


def _start_over_if_changed(conn: sqlite3.Connection, model: str, user: int,
                           lists: Sequence[WatchListLike]) -> int:
    """The cursor to go on from (0 and no stored matches when the lists changed)."""
    print_ = fingerprint(conn, model, user, lists)
    row = conn.execute("SELECT fingerprint, cursor FROM event_match_state WHERE user_id = ?",
                       (user,)).fetchone()
    if row is not None and row[0] == print_:
        return int(row[1])
    conn.execute("DELETE FROM event_matches WHERE user_id = ?", (user,))
    conn.execute("INSERT OR REPLACE INTO event_match_state (user_id, fingerprint, cursor) "
                 "VALUES (?, ?, 0)", (user, print_))
    return 0
