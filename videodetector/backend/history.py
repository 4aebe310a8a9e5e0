"""Camera history queries: the filters of ``/v1/history/search``, counted and paged in SQL.

Filters (each optional, all ANDed): ``person_id``, ``cam_ids``, ``start`` / ``end`` (the
event's capture time), ``friend`` (true / false), ``matched`` (true: the event was joined to
a person; false: an unknown person) and ``watchlist`` (true: the event matches a face of a
watch list at that list's threshold; false: it matches none). Pages are keyset pages on the
event id (``max_id`` / ``min_id``), newest first, so a deep page costs what the first does.

Watch-list matches are kept in the table ``event_matches``: one row per event that matches,
its best watch-list face at or above that list's threshold (ties: the list named first), as
``watchlists.best_matches`` computes it from the in-memory index -- the reference this table
must agree with. The table follows the watch lists: a fingerprint of the token's watch lists
(gallery, threshold and face ids of each, and the embedding model) is stored with a cursor
(the last event id matched). A query that needs matches (the ``watchlist`` filter, counts,
the report) first matches the events after the cursor -- the few new ones in steady state,
``MATCH_CHUNK`` per write transaction, vectors read from SQLite so events another process
stored count too -- and starts over from the first event when the fingerprint changed (a
face added to or removed from a watch list, a threshold changed, a list switched on or off;
a few seconds for 100k events). A query with nothing to do only reads.

Indexes (created here with IF NOT EXISTS, partial on camera events except ``events_cam``, and
covering the filter columns): ``events_id`` (user, id), ``events_cam`` (user, camera, id),
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
import weakref
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from videodetector.backend import openapi, watchlists
from videodetector.backend.deps import current_user, get_backend, params_of
from videodetector.backend.embeddings import VECTOR_SQL
from videodetector.backend.errors import bad_param
from videodetector.backend.params import Params
from videodetector.backend.service import Backend
from videodetector.backend.storage import placeholders
from videodetector.backend.timeutil import parse_time
from videodetector.core.confidence import confidence_from_cosine

MATCH_CHUNK = 2000  # events matched per transaction
TS_PROBE = 5000  # a time range with more events than this is read in id order

SCHEMA = """
CREATE INDEX IF NOT EXISTS events_id ON faces (user_id, id, ts, cam_id, person_id, friend)
    WHERE cam_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_cam ON faces (user_id, cam_id, id, ts, person_id, friend);
CREATE INDEX IF NOT EXISTS events_person ON faces (user_id, person_id, id, ts, cam_id, friend)
    WHERE cam_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_ts ON faces (user_id, ts, cam_id, person_id, friend)
    WHERE cam_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_unmatched ON faces (user_id, id)
    WHERE cam_id IS NOT NULL AND person_id IS NULL;
CREATE INDEX IF NOT EXISTS events_friend ON faces (user_id, id)
    WHERE cam_id IS NOT NULL AND friend = 1;
CREATE TABLE IF NOT EXISTS event_matches (
    face_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    gallery TEXT NOT NULL,
    match_id INTEGER NOT NULL,
    confidence REAL NOT NULL,
    PRIMARY KEY (face_id)
);
CREATE INDEX IF NOT EXISTS event_matches_user ON event_matches (user_id, face_id);
CREATE TABLE IF NOT EXISTS event_match_state (
    user_id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    cursor INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS event_matches_deleted AFTER DELETE ON faces BEGIN
    DELETE FROM event_matches WHERE face_id = OLD.id;
END;
"""

_ready: weakref.WeakSet[Any] = weakref.WeakSet()
_ready_lock = threading.Lock()
_refresh_locks: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()


def ensure_schema(backend: Backend) -> None:
    """Create the history indexes and tables once per database (a few seconds on a large
    existing database, so the app calls this at start-up)."""
    with _ready_lock:
        if backend.db in _ready:
            return
        watchlists.ensure_schema(backend)
        with backend.db.lock:
            backend.db.conn.executescript(SCHEMA)
        _ready.add(backend.db)
        _refresh_locks[backend.db] = threading.Lock()


# -- filters -------------------------------------------------------------------

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


def camera_ids(p: Params) -> list[str] | None:
    """``cam_ids``: a JSON list (of strings or numbers), comma-separated text, or repeated."""
    raw = p.raw("cam_ids")
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = p.json("cam_ids") if raw.strip().startswith("[") else [
            c.strip() for c in raw.split(",") if c.strip()]
    if not isinstance(raw, list):
        raw = [raw]
    if not all(isinstance(c, str | int) and not isinstance(c, bool) for c in raw):
        raise bad_param("cam_ids", "cam_ids must be a list of camera ids", raw)
    if len(raw) > 1000:
        raise bad_param("cam_ids", "at most 1000 camera ids", len(raw))
    return [str(c) for c in raw]


def _flag(p: Params, name: str) -> bool | None:
    if p.raw(name) in (None, ""):
        return None
    return p.flag(name)


def parse_filter(p: Params, person_id: int | None = None) -> EventFilter:
    """The filters of a history request (query or body); ``person_id`` from a path wins."""
    if person_id is None and p.raw("person_id") not in (None, ""):
        person_id = p.integer("person_id")
    cams = camera_ids(p)
    times = {name: parse_time(name, p.raw(name)).timestamp()
             for name in ("start", "end") if p.raw(name) not in (None, "")}
    return EventFilter(person_id, None if cams is None else tuple(cams), times.get("start"),
                       times.get("end"), _flag(p, "friend"), _flag(p, "matched"),
                       _flag(p, "watchlist"))


def carry_of(f: EventFilter, person_in_path: bool) -> list[tuple[str, str]]:
    """The filter as query parameters for page links (a POST body's filters would be lost)."""
    out: list[tuple[str, str]] = []
    if f.person_id is not None and not person_in_path:
        out.append(("person_id", str(f.person_id)))
    if f.cam_ids is not None:
        out.append(("cam_ids", json.dumps(list(f.cam_ids))))
    for name, value in (("start", f.start), ("end", f.end)):
        if value is not None:
            out.append((name, datetime.fromtimestamp(value, UTC).isoformat()))
    for name, flag in (("friend", f.friend), ("matched", f.matched),
                       ("watchlist", f.watchlist)):
        if flag is not None:
            out.append((name, json.dumps(flag)))
    return out


@dataclass(frozen=True)
class Query:
    """``<tables> WHERE ...`` (``faces f``, with ``event_matches m`` for watch-list matches),
    its arguments and the event id column, for ``storage.page_ids`` and counts."""

    where: str
    args: tuple[Any, ...]
    id_col: str = "f.id"

    def count(self, db: Any, extra: str = "", extra_args: tuple[Any, ...] = ()) -> int:
        return int(db.scalar(f"SELECT COUNT(*) FROM {self.where}{extra}",
                             (*self.args, *extra_args)))


MATCHED_IDS = "SELECT face_id FROM event_matches WHERE user_id = ?"


def _time_terms(f: EventFilter, alias: str = "f.") -> tuple[list[str], list[Any]]:
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
    t_terms, t_args = _time_terms(f)
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


def _fewer_than_probe(backend: Backend, user: int, index: str, terms: list[str],
                      args: list[Any]) -> int:
    """Events of ``user`` passing ``terms`` through ``index``, counted up to TS_PROBE."""
    return int(backend.db.scalar(
        f"SELECT COUNT(*) FROM (SELECT 1 FROM faces f INDEXED BY {index} WHERE f.user_id = ? "
        f"AND {' AND '.join(terms)} LIMIT {TS_PROBE})", (user, *args)))


def choose_index(backend: Backend, user: int, f: EventFilter, counting: bool = False
                 ) -> str | None:
    """The index a filter is read through (None: from the watch-list matches). SQLite alone
    prefers the index that gives the id order, and then walks the whole history for a rare
    person or a short time range; here the narrowest candidate wins: a person's events; the
    cameras' or the time range's events when a probe finds fewer than TS_PROBE (when
    ``counting``, where order does not matter: always, but for ``watchlist: true``); else the
    matches for ``watchlist: true``, else the id order (with the rarer side of friend /
    matched from a partial index)."""
    if f.person_id is not None:
        return "events_person"
    probes: list[tuple[int, str]] = []
    if f.cam_ids:
        probes.append((_fewer_than_probe(
            backend, user, "events_cam", [f"f.cam_id IN ({placeholders(len(f.cam_ids))})"],
            list(f.cam_ids)), "events_cam"))
    if f.start is not None or f.end is not None:
        terms, args = _time_terms(f)
        probes.append((_fewer_than_probe(backend, user, "events_ts",
                                         ["f.cam_id IS NOT NULL", *terms], args), "events_ts"))
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


def prepare(backend: Backend, user: int, f: EventFilter) -> Query:
    """The query of ``f`` for ``user``, with the watch-list matches brought up to date when
    the filter needs them."""
    ensure_schema(backend)
    if f.needs_matches:
        refresh_matches(backend, user)
    return build_query(user, f, choose_index(backend, user, f))


# -- counts --------------------------------------------------------------------

def counts(backend: Backend, user: int, f: EventFilter) -> dict[str, int]:
    """Events passing ``f`` and, among them, the alerts: ``watchlist`` (a watch-list match)
    and ``unknown`` (no match, on a camera with "unknown face" alerts). Read in one snapshot;
    "no match" is counted as all minus the matches (no NOT IN over every event)."""
    ensure_schema(backend)
    refresh_matches(backend, user)
    cams = sorted(watchlists.unknown_alert_cameras(backend, user))
    if f.cam_ids is not None:
        cams = [c for c in cams if c in f.cam_ids]
    every, matching = replace(f, watchlist=None), replace(f, watchlist=True)
    wanted = {"matching": matching} if f.watchlist else {"all": every, "matching": matching}
    if cams and f.watchlist is not True:  # only the alerting cameras' events
        wanted["cams"] = replace(every, cam_ids=tuple(cams))
        wanted["cams matching"] = replace(matching, cam_ids=tuple(cams))
    queries = {k: build_query(user, g, choose_index(backend, user, g, counting=True))
               for k, g in wanted.items()}  # (the probes read before the snapshot)
    db = backend.db
    with db.lock:
        db.conn.execute("BEGIN")  # one snapshot for the differences below
        try:
            n = {k: int(db.conn.execute(f"SELECT COUNT(*) FROM {q.where}", q.args).fetchone()[0])
                 for k, q in queries.items()}
        finally:
            db.conn.execute("COMMIT")
    watch = 0 if f.watchlist is False else n["matching"]
    total = n["matching"] if f.watchlist else n["all"] - (n["matching"] if f.watchlist is False
                                                         else 0)
    unknown = n["cams"] - n["cams matching"] if "cams" in n else 0
    return {"events": total, "alerts": watch + unknown, "watchlist": watch,
            "unknown": unknown}


# -- watch-list matches ----------------------------------------------------------

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
                lists: list[watchlists.WatchList]) -> str:
    """What the stored matches depend on: the model and each list's gallery, threshold and
    faces."""
    parts = [model, *[[w.gallery, w.threshold, _list_faces(conn, user, w.gallery)]
                      for w in lists]]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


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


_EVENT_VECTORS = (f"SELECT f.id, {VECTOR_SQL} FROM faces f WHERE f.user_id = :u AND "
                  f"f.cam_id IS NOT NULL AND f.id > :c ORDER BY f.id LIMIT {MATCH_CHUNK}")
_LIST_VECTORS = (f"SELECT f.id, {VECTOR_SQL} FROM face_galleries g JOIN faces f ON "
                 "f.id = g.face_id WHERE g.user_id = :u AND g.gallery = :g")


def _best_matches(conn: sqlite3.Connection, model: str, user: int,
                  lists: list[watchlists.WatchList], ids: np.ndarray, vecs: np.ndarray
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
                 lists: list[watchlists.WatchList], cursor: int) -> int | None:
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
                           lists: list[watchlists.WatchList]) -> int:
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


def _up_to_date(backend: Backend, user: int, lists: list[watchlists.WatchList]) -> bool:
    """True when the stored matches are those of ``lists`` and no event came since (read
    only: a query that finds nothing to do never writes)."""
    with backend.db.lock:
        conn = backend.db.conn
        row = conn.execute("SELECT fingerprint, cursor FROM event_match_state WHERE "
                           "user_id = ?", (user,)).fetchone()
        if row is None or row[0] != fingerprint(conn, backend.model, user, lists):
            return False
        newer = conn.execute("SELECT 1 FROM faces INDEXED BY events_id WHERE user_id = ? AND "
                             "cam_id IS NOT NULL AND id > ? LIMIT 1", (user, row[1]))
        return newer.fetchone() is None


def refresh_matches(backend: Backend, user: int) -> list[watchlists.WatchList]:
    """Bring ``event_matches`` of ``user`` up to date; returns the user's watch lists."""
    ensure_schema(backend)
    lists = watchlists.watch_lists(backend, user)
    if _up_to_date(backend, user, lists):
        return lists
    with _refresh_locks[backend.db]:
        while True:
            with backend.db.transaction() as conn:
                cursor = _start_over_if_changed(conn, backend.model, user, lists)
                if _match_chunk(conn, backend.model, user, lists, cursor) is None:
                    return lists


def stored_matches(backend: Backend, user: int, ids: list[int],
                   lists: list[watchlists.WatchList]) -> dict[int, dict[str, Any]]:
    """The best match of each event (as ``watchlists.best_matches`` has it) from the table;
    ``lists``: what ``refresh_matches`` returned."""
    by_name = {w.gallery: w for w in lists}
    found: dict[int, tuple[str, int, float]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        found.update({r[0]: (r[1], r[2], r[3]) for r in backend.db.rows(
            "SELECT face_id, gallery, match_id, confidence FROM event_matches WHERE "
            f"user_id = ? AND face_id IN ({placeholders(len(chunk))})", (user, *chunk))
            if r[1] in by_name})
    metas = {r["id"]: r["meta"] for r in backend.face_rows(user, [m for _, m, _ in
                                                                  found.values()])}
    return {e: {"gallery": g, "color": by_name[g].color, "threshold": by_name[g].threshold,
                "face_id": m, "meta": metas.get(m, ""), "confidence": round(c, 4)}
            for e, (g, m, c) in found.items()}


# -- routes --------------------------------------------------------------------

router = APIRouter(tags=["persons and history"])


@router.post("/history/counts", openapi_extra=openapi.HISTORY)
async def history_counts(request: Request, user: int = Depends(current_user)
                         ) -> dict[str, int]:
    """How many camera events pass the filters of /history/search (``person_id``,
    ``cam_ids``, ``start``, ``end``, ``friend``, ``matched``, ``watchlist``) and how many of
    them are alerts: ``{"events", "alerts", "watchlist", "unknown"}`` (``alerts`` =
    ``watchlist`` matches + ``unknown`` faces on cameras with unknown-face alerts)."""
    f = parse_filter(await params_of(request))
    return await run_in_threadpool(counts, get_backend(request), user, f)


@router.get("/history/counts", include_in_schema=False)
async def history_counts_get(request: Request, user: int = Depends(current_user)
                             ) -> dict[str, int]:
    f = parse_filter(Params(dict(request.query_params)))
    return await run_in_threadpool(counts, get_backend(request), user, f)
