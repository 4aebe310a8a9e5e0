"""``GET /v1/faces/sync``: a gallery's changes since a cursor, for an edge device that mirrors
a watch list (``faces/sync`` of face_recognition_backend).

The feed reads the change log (changes.py). A page holds, in ``seq`` order:

* ``faces``: faces added to the gallery or changed since the cursor, as ``GET /face/id``
  renders them plus ``facen`` (base64 little-endian float32, the embedding /identify
  compares: the served model's; null for a face without one, served ``--allow-partial``),
  ``updated_at`` (ISO 8601 UTC) and ``seq``;
* ``deleted``: ``{id, updated_at, seq}`` of faces deleted or taken out of the gallery.

Each face appears at most once in a page, in the list of its last change. A client applies
both lists and stores ``cursor``; while ``has_more`` is true it asks again at once. Cursors
survive restarts (they are SQLite AUTOINCREMENT numbers). A cursor older than the deletions
kept (``sync_tombstone_ttl``), or newer than anything this server ever wrote (another
server, a restored backup), gets 410 RESYNC_REQUIRED: clear the mirror and start again
without a cursor. So does every cursor given before the backend started serving another
embedding model (``changes.follow_facen_model``): every ``facen`` changed.
``last_updated_at`` (epoch seconds or ISO 8601, the rival's parameter) starts after the
last change made at or before that time, as far as the server clock says.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request

from videodetector.backend import changes, openapi, views
from videodetector.backend.deps import BackendDep, UrlsDep, UserDep
from videodetector.backend.errors import ApiError
from videodetector.backend.faces import facens
from videodetector.backend.params import Params
from videodetector.backend.service import Backend
from videodetector.backend.timeutil import iso, parse_time
from videodetector.backend.views import Urls

router = APIRouter(tags=["faces"])

MAX_SYNC_LIMIT = 1000  # faces and deletions per page


def resync_required(reason: str, cursor: int) -> ApiError:
    return ApiError(410, "RESYNC_REQUIRED", f"{reason}; clear the mirror and start again "
                    "without a cursor", param="cursor", value=cursor)


def start_cursor(backend: Backend, p: Params) -> int:
    """The cursor to read after: ``cursor``, or the one ``last_updated_at`` stands for."""
    cursor = p.integer("cursor", None, lo=0)
    if cursor is not None or "last_updated_at" not in p:
        return cursor or 0
    raw = p.raw("last_updated_at")
    number = p.number("last_updated_at") if _is_number(raw) else None
    ts = number if number is not None else parse_time("last_updated_at", raw).timestamp()
    store = backend.sync_store
    first = store.first_seq_after(ts)
    return store.last_seq() if first is None else first - 1


def _is_number(value: Any) -> bool:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return True
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def check_cursor(backend: Backend, cursor: int) -> None:
    if cursor == 0:
        return  # an empty mirror misses no deletion
    store = backend.sync_store
    if cursor < store.horizon():
        raise resync_required(f"cursor {cursor} is older than the deletions kept "
                              f"({backend.settings.sync_tombstone_ttl:g} s) or than the "
                              f"served embedding model ({backend.model})", cursor)
    if cursor > store.last_seq():
        raise resync_required(f"cursor {cursor} was not given by this server", cursor)


def read_page(urls: Urls, backend: Backend, user: int, gallery: str, cursor: int,
              limit: int) -> dict[str, Any]:
    """One page after ``cursor``, read under the database lock (no write in between)."""
    store = backend.sync_store
    with store.snapshot():
        check_cursor(backend, cursor)
        rows = list(store.changes(user, gallery, cursor, limit + 1))
        has_more = len(rows) > limit
        rows = rows[:limit]
        present = [r["face_id"] for r in rows if not r["deleted"]]
        faces = {r["id"]: r for r in backend.face_rows(user, present)}
        galleries = backend.galleries_of(list(faces))
        vectors = facens(backend, list(faces))
        # the last page moves the cursor to the newest change anywhere, so that a quiet
        # gallery's cursor never falls behind the tombstone horizon
        end = rows[-1]["seq"] if has_more else max(cursor, store.last_seq())
    out_faces, deleted = [], []
    for r in rows:
        stamp = {"updated_at": iso_of(r["at"]), "seq": r["seq"]}
        if r["deleted"]:
            deleted.append({"id": r["face_id"], **stamp})
        elif r["face_id"] in faces:
            row = faces[r["face_id"]]
            out_faces.append({**views.face_json(row, galleries[row["id"]], urls), **stamp,
                              "facen": vectors.get(row["id"])})
    return {"gallery": gallery, "cursor": end, "has_more": has_more, "faces": out_faces,
            "deleted": deleted}


def iso_of(epoch: float) -> str:
    return iso(datetime.fromtimestamp(epoch, UTC))


@router.get("/faces/sync", responses=openapi.RESYNC, openapi_extra=openapi.SYNC)
def faces_sync(request: Request, user: UserDep, backend: BackendDep,
               urls: UrlsDep) -> dict[str, Any]:
    """A gallery's faces added, changed and removed since ``cursor`` (or
    ``last_updated_at``): ``gallery`` (default ``default``), ``cursor``, ``limit``
    (1..1000, default 100). Answers ``{gallery, cursor, has_more, faces, deleted}``."""
    p = Params(dict(request.query_params))
    gallery = p.text("gallery") or changes.DEFAULT_GALLERY
    limit = p.integer("limit", 100, lo=1, hi=MAX_SYNC_LIMIT) or 100
    backend.require_gallery(user, gallery)
    backend.prune_tombstones_hourly()
    cursor = start_cursor(backend, p)
    return read_page(urls, backend, user, gallery, cursor, limit)
