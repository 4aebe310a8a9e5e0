"""Persons (8.2) and camera history (8.2.3, 9.1.2 /history/search).

A history event is a face posted with a ``cam_id``: its id is the face id. How faces are
given persons is in ``person_match``; the operator's corrections (merge two persons, move a
face, "not this person", undo a merge) are here and in ``PUT /face/id``, and every change
of a person -- automatic or not -- is a person event (``GET /person/id/{id}/events``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from videodetector.backend import history, openapi, person_store, person_summary, views
from videodetector.backend.deps import current_user, get_backend, params_of, urls_of
from videodetector.backend.errors import bad_param, not_found
from videodetector.backend.params import INT64_MAX, DbId, Params, exact_int
from videodetector.backend.service import Backend
from videodetector.backend.storage import PageRequest, page_ids, update
from videodetector.backend.views import Urls

router = APIRouter(tags=["persons and history"])


def _person_row(backend: Backend, user: int, person_id: int) -> Any:
    row = backend.db.row("SELECT * FROM persons WHERE id = ? AND user_id = ?", (person_id, user))
    if row is None:
        raise not_found("person", person_id)
    return row


@router.get("/persons", response_model=person_summary.PersonPage)
async def list_persons(request: Request, user: int = Depends(current_user)) -> dict[str, Any]:
    """The token's persons, newest first, each with what a grid shows of it: ``best_face``
    (id and image URLs), ``sightings`` (camera events), ``first_seen`` / ``last_seen``,
    ``cam_ids``, ``friend`` -- computed for the whole page in one query. ``limit``,
    ``max_id`` / ``min_id`` pagination; merged persons are not listed."""
    backend = get_backend(request)
    p = Params(dict(request.query_params))
    limit = p.integer("limit", backend.settings.page_limit, lo=0, hi=100000)
    page = PageRequest(limit or None, p.integer("max_id"), p.integer("min_id"))
    urls = urls_of(request)

    def work() -> dict[str, Any]:
        result = page_ids(backend.db, "id", "persons WHERE user_id = ? AND merged_into IS NULL",
                          [user], page)
        found = person_summary.summaries(backend.db, user, result.ids, urls)
        results = [found[i] for i in result.ids if i in found]
        return {**views.page_links(request, result), "results": results}

    return await run_in_threadpool(work)


def person_json(backend: Backend, user: int, person_id: int, urls: Urls) -> dict[str, Any]:
    row = _person_row(backend, user, person_id)
    faces = backend.db.rows("SELECT id FROM faces WHERE user_id = ? AND person_id = ? "
                            "ORDER BY id", (user, person_id))
    summary = person_summary.summaries(backend.db, user, [person_id], urls)[person_id]
    best = summary["best_face"]
    return {
        **summary,
        "faces": [f["id"] for f in faces],
        "representative_face": best["id"] if best else None,
        "cameras": person_summary.camera_sightings(backend.db, user, person_id),
        "merged_into": row["merged_into"],
    }


@router.get("/person/id/{person_id}")
async def get_person(person_id: DbId, request: Request,
                     user: int = Depends(current_user)) -> dict[str, Any]:
    """The person: ``id``, ``meta``, ``faces`` (face ids), ``representative_face`` (its
    best-quality face), ``cam_ids``, ``friend`` (as of the latest face), ``merged_into`` (the
    person it was merged into, else null); and as in ``GET /persons``: ``best_face``,
    ``sightings``, ``first_seen``, ``last_seen``; ``cameras``: per camera its ``sightings``,
    ``first_seen`` and ``last_seen`` (most sightings first)."""
    return await run_in_threadpool(person_json, get_backend(request), user, person_id,
                                   urls_of(request))


@router.put("/person/id/{person_id}")
async def put_person(person_id: DbId, request: Request,
                     user: int = Depends(current_user)) -> dict[str, Any]:
    """Change a person's ``meta``."""
    backend = get_backend(request)
    urls = urls_of(request)
    p = await params_of(request)
    meta = p.text("meta")

    def work() -> dict[str, Any]:
        _person_row(backend, user, person_id)
        if meta is not None:
            with backend.db.transaction() as conn:
                update(conn, "persons", {"meta": meta}, "id = ? AND user_id = ?",
                       (person_id, user))
        return person_json(backend, user, person_id, urls)

    return await run_in_threadpool(work)


# -- operator corrections and person events --------------------------------------

@router.get("/person/id/{person_id}/events")
async def person_events(person_id: DbId, request: Request,
                        user: int = Depends(current_user)) -> dict[str, Any]:
    """Changes of the person, oldest first: ``merge`` (``other_person_id``'s faces moved
    here), ``unmerge``, ``move`` / ``not_this_person`` (an operator took ``face_ids`` away),
    ``identity_switch`` (a face of this person's track was someone else). ``actor`` is
    ``auto`` or ``operator``; ``undone_by`` names the event that undid a merge."""
    backend = get_backend(request)

    def work() -> dict[str, Any]:
        _person_row(backend, user, person_id)
        rows = backend.db.rows("SELECT * FROM person_events WHERE user_id = ? AND "
                               "(person_id = ? OR other_id = ?) ORDER BY id",
                               (user, person_id, person_id))
        return {"results": [person_store.event_json(r) for r in rows]}

    return await run_in_threadpool(work)


@router.post("/person/id/{person_id}/merge", openapi_extra=openapi.PERSON_MERGE)
async def merge_person(person_id: DbId, request: Request,
                       user: int = Depends(current_user)) -> dict[str, Any]:
    """Merge person ``person_id`` (body) into this person: its faces move here, it keeps its
    id with ``merged_into`` set. Undo with ``POST /person/event/{id}/undo``."""
    backend = get_backend(request)
    urls = urls_of(request)
    p = await params_of(request)
    other_raw = p.raw("person_id")

    def work() -> dict[str, Any]:
        _person_row(backend, user, person_id)  # 404 for an id that is not this token's
        index = backend.index(user)
        with person_store.person_transaction(backend.db, index) as (conn, changes):
            into = person_store.own_person(conn, user, person_id)
            away = person_store.own_person(conn, user, other_raw)
            if away == into:
                raise bad_param("person_id", "a person cannot be merged into itself", other_raw)
            person_store.merge_persons(conn, changes, user, into, away, "operator")
        return person_json(backend, user, person_id, urls)

    return await run_in_threadpool(work)


@router.post("/person/id/{person_id}/not_this_person",
             openapi_extra=openapi.NOT_THIS_PERSON)
async def not_this_person(person_id: DbId, request: Request,
                          user: int = Depends(current_user)) -> dict[str, Any]:
    """Negative feedback: ``face_ids`` (faces of this person) are someone else. They become
    unassigned (give them a person with ``PUT /face/id``), and neither they nor their tracks
    join this person automatically again."""
    backend = get_backend(request)
    urls = urls_of(request)
    face_ids = face_id_list(await params_of(request))

    def work() -> dict[str, Any]:
        _person_row(backend, user, person_id)  # 404 for an id that is not this token's
        with person_store.person_transaction(backend.db, backend.index(user)) as (conn, ch):
            person_store.own_person(conn, user, person_id)
            person_store.not_this_person(conn, ch, user, person_id, face_ids)
        return person_json(backend, user, person_id, urls)

    return await run_in_threadpool(work)


@router.post("/person/event/{event_id}/undo")
async def undo_event(event_id: DbId, request: Request,
                     user: int = Depends(current_user)) -> dict[str, Any]:
    """Undo a ``merge`` (automatic or not): the merged faces go back to their person, and the
    two persons are never merged automatically again. Answers the ``unmerge`` event."""
    backend = get_backend(request)

    def work() -> dict[str, Any]:
        with person_store.person_transaction(backend.db, backend.index(user)) as (conn, ch):
            undo = person_store.undo_merge(conn, ch, user, event_id)
        row = backend.db.row("SELECT * FROM person_events WHERE id = ?", (undo,))
        return person_store.event_json(row)

    return await run_in_threadpool(work)


def face_id_list(p: Params) -> list[int]:
    """``face_ids``: a JSON list of face ids (or one id), 1..1000 of them."""
    raw = p.raw("face_ids")
    if isinstance(raw, str) and raw.strip().startswith("["):
        raw = p.json("face_ids")
    items = raw if isinstance(raw, list) else [raw]
    # a JSON number with no fraction (7.0) is an integer too (JSON Schema's reading)
    ids = [int(i) if isinstance(i, float) and i.is_integer() and abs(i) < 2**63
           else exact_int(i) for i in items]
    if not 1 <= len(ids) <= 1000 or any(i is None or not 0 < i <= INT64_MAX for i in ids):
        raise bad_param("face_ids", "face_ids must be a list of 1..1000 face ids", raw)
    return [int(i) for i in ids if i is not None]


# -- history -------------------------------------------------------------------

def history_page(request: Request, p: Params) -> PageRequest:
    """``limit`` and the cursor. A cursor in the URL (a followed ``next_page``) wins over
    one in the body, so re-posting the first request's body still moves on."""
    cursor = p
    if "max_id" in request.query_params or "min_id" in request.query_params:
        cursor = Params(dict(request.query_params))
    limit = p.integer("limit", 0, lo=0, hi=1000000)
    return PageRequest(limit or None, cursor.integer("max_id"), cursor.integer("min_id"))


async def _history(request: Request, user: int, person_id: int | None) -> dict[str, Any]:
    backend = get_backend(request)
    p = await params_of(request)
    filt = history.parse_filter(p, person_id)
    page = history_page(request, p)
    carry = history.carry_of(filt, person_in_path=person_id is not None)
    if p.raw("limit") not in (None, ""):
        carry.append(("limit", str(p.integer("limit"))))

    def work() -> dict[str, Any]:
        if person_id is not None:
            _person_row(backend, user, person_id)
        query = history.prepare(backend, user, filt)
        result = page_ids(backend.db, query.id_col, query.where, query.args, page)
        urls = urls_of(request)
        rows = backend.face_rows(user, result.ids)
        return {**views.page_links(request, result, carry),
                "results": [views.event_json(r, urls) for r in rows]}

    return await run_in_threadpool(work)


@router.post("/history/search", openapi_extra=openapi.HISTORY)
async def history_search(request: Request, user: int = Depends(current_user)) -> dict[str, Any]:
    """Camera events filtered by ``person_id``, ``cam_ids``, ``start``, ``end``, ``friend``,
    ``matched`` (joined to a person or not), ``watchlist`` (a watch-list match or not);
    ``limit`` per page (0 = all), newest first (keyset pages on the id), ``next_page`` while
    more exist."""
    return await _history(request, user, None)


@router.get("/history/search", include_in_schema=False)
async def history_search_get(request: Request,
                             user: int = Depends(current_user)) -> dict[str, Any]:
    return await _history(request, user, None)


@router.get("/person/history/id/{person_id}")
async def person_history(person_id: DbId, request: Request,
                         user: int = Depends(current_user)) -> dict[str, Any]:
    """The person's camera events (filters as /history/search, in the query or a JSON body)."""
    return await _history(request, user, person_id)


@router.post("/person/history/id/{person_id}", include_in_schema=False)
async def person_history_post(person_id: DbId, request: Request,
                              user: int = Depends(current_user)) -> dict[str, Any]:
    return await _history(request, user, person_id)
