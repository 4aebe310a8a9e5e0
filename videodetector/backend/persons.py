"""Persons (8.2) and camera history (8.2.3, 9.1.2 /history/search).

A history event is a face posted with a ``cam_id``: its id is the face id. How faces are
given persons is in ``person_match``; the operator's corrections (merge two persons, move a
face, "not this person", undo a merge) are here and in ``PUT /face/id``, and every change
of a person -- automatic or not -- is a person event (``GET /person/id/{id}/events``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from videodetector.backend import history, openapi, person_store, person_summary, views
from videodetector.backend.deps import BackendDep, ParamsDep, UrlsDep, UserDep, urls_of
from videodetector.backend.errors import bad_param
from videodetector.backend.params import INT64_MAX, DbId, Params, exact_int
from videodetector.backend.service import Backend
from videodetector.backend.storage import PageRequest
from videodetector.backend.views import Urls

router = APIRouter(tags=["persons and history"])


@router.get("/persons", response_model=person_summary.PersonPage)
def list_persons(request: Request, user: UserDep, backend: BackendDep, urls: UrlsDep
                 ) -> dict[str, Any]:
    """The token's persons, newest first, each with what a grid shows of it: ``best_face``
    (id and image URLs), ``sightings`` (camera events), ``first_seen`` / ``last_seen``,
    ``cam_ids``, ``friend`` -- computed for the whole page in one query. ``limit``,
    ``max_id`` / ``min_id`` pagination; merged persons are not listed."""
    p = Params(dict(request.query_params))
    limit = p.integer("limit", backend.settings.page_limit, lo=0, hi=100000)
    page = PageRequest(limit or None, p.integer("max_id"), p.integer("min_id"))
    store = backend.persons_store
    result = store.page(user, page)
    found = store.summaries(user, result.ids, urls)
    results = [found[i] for i in result.ids if i in found]
    return {**views.page_links(request, result), "results": results}


def person_json(backend: Backend, user: int, person_id: int, urls: Urls) -> dict[str, Any]:
    store = backend.persons_store
    row = store.get(user, person_id)
    faces = store.face_ids(user, person_id)
    summary = store.summaries(user, [person_id], urls)[person_id]
    best = summary["best_face"]
    return {
        **summary,
        "faces": faces,
        "representative_face": best["id"] if best else None,
        "cameras": store.camera_sightings(user, person_id),
        "merged_into": row["merged_into"],
    }


@router.get("/person/id/{person_id}")
def get_person(person_id: DbId, user: UserDep, backend: BackendDep, urls: UrlsDep
               ) -> dict[str, Any]:
    """The person: ``id``, ``meta``, ``faces`` (face ids), ``representative_face`` (its
    best-quality face), ``cam_ids``, ``friend`` (as of the latest face), ``merged_into`` (the
    person it was merged into, else null); and as in ``GET /persons``: ``best_face``,
    ``sightings``, ``first_seen``, ``last_seen``; ``cameras``: per camera its ``sightings``,
    ``first_seen`` and ``last_seen`` (most sightings first)."""
    return person_json(backend, user, person_id, urls)


@router.put("/person/id/{person_id}")
def put_person(person_id: DbId, user: UserDep, p: ParamsDep, backend: BackendDep,
               urls: UrlsDep) -> dict[str, Any]:
    """Change a person's ``meta``."""
    meta = p.text("meta")
    backend.persons_store.get(user, person_id)
    if meta is not None:
        backend.persons_store.set_meta(user, person_id, meta)
    return person_json(backend, user, person_id, urls)


# -- operator corrections and person events --------------------------------------

@router.get("/person/id/{person_id}/events")
def person_events(person_id: DbId, user: UserDep, backend: BackendDep) -> dict[str, Any]:
    """Changes of the person, oldest first: ``merge`` (``other_person_id``'s faces moved
    here), ``unmerge``, ``move`` / ``not_this_person`` (an operator took ``face_ids`` away),
    ``identity_switch`` (a face of this person's track was someone else). ``actor`` is
    ``auto`` or ``operator``; ``undone_by`` names the event that undid a merge."""
    backend.persons_store.get(user, person_id)
    rows = backend.persons_store.events(user, person_id)
    return {"results": [person_store.event_json(r) for r in rows]}


@router.post("/person/id/{person_id}/merge", openapi_extra=openapi.PERSON_MERGE)
def merge_person(person_id: DbId, user: UserDep, p: ParamsDep, backend: BackendDep,
                 urls: UrlsDep) -> dict[str, Any]:
    """Merge person ``person_id`` (body) into this person: its faces move here, it keeps its
    id with ``merged_into`` set. Undo with ``POST /person/event/{id}/undo``."""
    other_raw = p.raw("person_id")
    backend.persons_store.get(user, person_id)  # 404 for an id that is not this token's
    backend.persons_store.merge(backend.index(user), user, person_id, other_raw)
    return person_json(backend, user, person_id, urls)


async def face_ids_of(p: ParamsDep) -> list[int]:
    return face_id_list(p)


@router.post("/person/id/{person_id}/not_this_person",
             openapi_extra=openapi.NOT_THIS_PERSON)
def not_this_person(person_id: DbId, user: UserDep,
                    face_ids: Annotated[list[int], Depends(face_ids_of)],
                    backend: BackendDep, urls: UrlsDep) -> dict[str, Any]:
    """Negative feedback: ``face_ids`` (faces of this person) are someone else. They become
    unassigned (give them a person with ``PUT /face/id``), and neither they nor their tracks
    join this person automatically again."""
    backend.persons_store.get(user, person_id)  # 404 for an id that is not this token's
    backend.persons_store.not_this_person(backend.index(user), user, person_id, face_ids)
    return person_json(backend, user, person_id, urls)


@router.post("/person/event/{event_id}/undo")
def undo_event(event_id: DbId, user: UserDep, backend: BackendDep) -> dict[str, Any]:
    """Undo a ``merge`` (automatic or not): the merged faces go back to their person, and the
    two persons are never merged automatically again. Answers the ``unmerge`` event."""
    row = backend.persons_store.undo(backend.index(user), user, event_id)
    return person_store.event_json(row)


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


@dataclass(frozen=True)
class HistoryRequest:
    filt: history.EventFilter
    page: PageRequest
    carry: list[tuple[str, str]]


def _history_request(request: Request, p: Params, person_id: int | None) -> HistoryRequest:
    filt = history.parse_filter(p, person_id)
    page = history_page(request, p)
    carry = history.carry_of(filt, person_in_path=person_id is not None)
    if p.raw("limit") not in (None, ""):
        carry.append(("limit", str(p.integer("limit"))))
    return HistoryRequest(filt, page, carry)


async def history_request(request: Request, p: ParamsDep) -> HistoryRequest:
    return _history_request(request, p, None)


async def person_history_request(request: Request, p: ParamsDep, person_id: DbId
                                 ) -> HistoryRequest:
    return _history_request(request, p, person_id)


HistoryDep = Annotated[HistoryRequest, Depends(history_request)]
PersonHistoryDep = Annotated[HistoryRequest, Depends(person_history_request)]


def _history(request: Request, backend: Backend, user: int, req: HistoryRequest,
             person_id: int | None) -> dict[str, Any]:
    if person_id is not None:
        backend.persons_store.get(user, person_id)
    query = history.prepare(backend, user, req.filt)
    result = backend.persons_store.history_page(query.where, query.args, query.id_col,
                                                req.page)
    urls = urls_of(request)
    rows = backend.face_rows(user, result.ids)
    return {**views.page_links(request, result, req.carry),
            "results": [views.event_json(r, urls) for r in rows]}


@router.post("/history/search", openapi_extra=openapi.HISTORY)
def history_search(request: Request, user: UserDep, req: HistoryDep, backend: BackendDep
                   ) -> dict[str, Any]:
    """Camera events filtered by ``person_id``, ``cam_ids``, ``start``, ``end``, ``friend``,
    ``matched`` (joined to a person or not), ``watchlist`` (a watch-list match or not);
    ``limit`` per page (0 = all), newest first (keyset pages on the id), ``next_page`` while
    more exist."""
    return _history(request, backend, user, req, None)


@router.get("/history/search", include_in_schema=False)
def history_search_get(request: Request, user: UserDep, req: HistoryDep, backend: BackendDep
                       ) -> dict[str, Any]:
    return _history(request, backend, user, req, None)


@router.get("/person/history/id/{person_id}")
def person_history(person_id: DbId, request: Request, user: UserDep, req: PersonHistoryDep,
                   backend: BackendDep) -> dict[str, Any]:
    """The person's camera events (filters as /history/search, in the query or a JSON body)."""
    return _history(request, backend, user, req, person_id)


@router.post("/person/history/id/{person_id}", include_in_schema=False)
def person_history_post(person_id: DbId, request: Request, user: UserDep,
                        req: PersonHistoryDep, backend: BackendDep) -> dict[str, Any]:
    return _history(request, backend, user, req, person_id)
