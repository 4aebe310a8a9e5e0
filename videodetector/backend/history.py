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

The event indexes, the match tables and the reads are ``stores/history.py``'s; the SQL of the
filters is built by ``history_query.py``; this module parses the filters of a request and
answers the counts.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from videodetector.backend import openapi, watchlists
from videodetector.backend.deps import BackendDep, ParamsDep, UserDep
from videodetector.backend.errors import bad_param
from videodetector.backend.history_query import (  # noqa: F401 - the history API
    MATCHED_IDS,
    TS_PROBE,
    EventFilter,
    Query,
    build_query,
    filter_terms,
)
from videodetector.backend.params import Params
from videodetector.backend.service import Backend
from videodetector.backend.stores.history import MATCH_CHUNK  # noqa: F401
from videodetector.backend.timeutil import parse_time

# -- filters -------------------------------------------------------------------

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


def prepare(backend: Backend, user: int, f: EventFilter) -> Query:
    """The query of ``f`` for ``user``, with the watch-list matches brought up to date when
    the filter needs them."""
    if f.needs_matches:
        refresh_matches(backend, user)
    return build_query(user, f, backend.history_store.choose_index(user, f))


# -- counts --------------------------------------------------------------------

def counts(backend: Backend, user: int, f: EventFilter) -> dict[str, int]:
    """Events passing ``f`` and, among them, the alerts: ``watchlist`` (a watch-list match)
    and ``unknown`` (no match, on a camera with "unknown face" alerts). Read in one snapshot;
    "no match" is counted as all minus the matches (no NOT IN over every event)."""
    store = backend.history_store
    refresh_matches(backend, user)
    cams = sorted(watchlists.unknown_alert_cameras(backend, user))
    if f.cam_ids is not None:
        cams = [c for c in cams if c in f.cam_ids]
    every, matching = replace(f, watchlist=None), replace(f, watchlist=True)
    wanted = {"matching": matching} if f.watchlist else {"all": every, "matching": matching}
    if cams and f.watchlist is not True:  # only the alerting cameras' events
        wanted["cams"] = replace(every, cam_ids=tuple(cams))
        wanted["cams matching"] = replace(matching, cam_ids=tuple(cams))
    queries = {k: build_query(user, g, store.choose_index(user, g, counting=True))
               for k, g in wanted.items()}  # (the probes read before the snapshot)
    n = store.count(queries)
    watch = 0 if f.watchlist is False else n["matching"]
    total = n["matching"] if f.watchlist else n["all"] - (n["matching"] if f.watchlist is False
                                                         else 0)
    unknown = n["cams"] - n["cams matching"] if "cams" in n else 0
    return {"events": total, "alerts": watch + unknown, "watchlist": watch,
            "unknown": unknown}


# -- watch-list matches ----------------------------------------------------------

def refresh_matches(backend: Backend, user: int) -> list[watchlists.WatchList]:
    """Bring ``event_matches`` of ``user`` up to date; returns the user's watch lists."""
    store = backend.history_store
    lists = watchlists.watch_lists(backend, user)
    store.refresh_matches(user, backend.model, lists)
    return lists


def stored_matches(backend: Backend, user: int, ids: list[int],
                   lists: list[watchlists.WatchList]) -> dict[int, dict[str, Any]]:
    """The best match of each event (as ``watchlists.best_matches`` has it) from the table;
    ``lists``: what ``refresh_matches`` returned."""
    by_name = {w.gallery: w for w in lists}
    found = {r[0]: (r[1], r[2], r[3]) for r in backend.history_store.match_rows(user, ids)
             if r[1] in by_name}
    metas = {r["id"]: r["meta"] for r in backend.face_rows(user, [m for _, m, _ in
                                                                  found.values()])}
    return {e: {"gallery": g, "color": by_name[g].color, "threshold": by_name[g].threshold,
                "face_id": m, "meta": metas.get(m, ""), "confidence": round(c, 4)}
            for e, (g, m, c) in found.items()}


# -- routes --------------------------------------------------------------------

router = APIRouter(tags=["persons and history"])


async def body_filter(p: ParamsDep) -> EventFilter:
    return parse_filter(p)


def query_filter(request: Request) -> EventFilter:
    return parse_filter(Params(dict(request.query_params)))


BodyFilterDep = Annotated[EventFilter, Depends(body_filter)]
QueryFilterDep = Annotated[EventFilter, Depends(query_filter)]


@router.post("/history/counts", openapi_extra=openapi.HISTORY)
def history_counts(user: UserDep, f: BodyFilterDep, backend: BackendDep) -> dict[str, int]:
    """How many camera events pass the filters of /history/search (``person_id``,
    ``cam_ids``, ``start``, ``end``, ``friend``, ``matched``, ``watchlist``) and how many of
    them are alerts: ``{"events", "alerts", "watchlist", "unknown"}`` (``alerts`` =
    ``watchlist`` matches + ``unknown`` faces on cameras with unknown-face alerts)."""
    return counts(backend, user, f)


@router.get("/history/counts", include_in_schema=False)
def history_counts_get(user: UserDep, f: QueryFilterDep, backend: BackendDep
                       ) -> dict[str, int]:
    return counts(backend, user, f)
