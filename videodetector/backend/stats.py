"""Gallery statistics (8.6, "Shard Galleries Statistics"), scoped to the token.

The reference reads them from each Tarantool shard at ``/stat/list/:start/:limit`` and
``/stat/info/:name``. Here there is one shard (the backend itself) and the statistics are the
caller's own galleries, so the routes need the API token and exist at ``/stat/...`` (the
reference's path) and ``/v1/stat/...``. Adapted fields:

* ``name`` is the gallery name (the reference prefixes it with the tenant id: here the token
  is the tenant); ``id`` is the gallery's 1-based position in the list (``default`` first,
  then by name), which is what ``:start`` counts;
* every face is searched linearly (one exact matrix product, no prebuilt index), so
  ``cnt_linear`` is the face count and ``cnt_indexed``/``cnt_preindex`` (and their
  ``_deleted`` forms in ``info``) are 0, ``index_file`` is ``"none"``, ``index_loaded`` false;
* additions: ``faces`` (= ``cnt_linear``), ``facen_bytes`` (embedding memory), ``created``;
  ``info`` also gives ``persons`` and ``images_bytes`` (stored photo, thumbnail and normalized
  files of the gallery's faces; a photo shared by several faces counts once).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from fastapi import APIRouter, Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from videodetector.backend.deps import current_user, get_backend
from videodetector.backend.errors import ApiError
from videodetector.backend.index import DIM
from videodetector.backend.metrics import (
    GalleryFaces,
    RequestMetrics,
)
from videodetector.backend.params import GalleryName
from videodetector.backend.service import DEFAULT_GALLERY, Backend, check_gallery_name
from videodetector.backend.storage import Database, FileStore

router = APIRouter(tags=["statistics"])

MAX_LIST = 1000  # galleries per /stat/list page
FACEN_BYTES = DIM * 4  # float32


def face_counts(db: Database, user: int) -> dict[str, int]:
    """Faces per gallery of ``user``; every gallery is listed (``default`` = all faces)."""
    counts = {DEFAULT_GALLERY: int(db.scalar("SELECT COUNT(*) FROM faces WHERE user_id = ?",
                                             (user,)))}
    created: dict[str, int] = {r[0]: 0 for r in db.rows(
        "SELECT name FROM galleries WHERE user_id = ? ORDER BY name", (user,))}
    for name, n in db.rows("SELECT gallery, COUNT(*) FROM face_galleries WHERE user_id = ? "
                           "GROUP BY gallery", (user,)):
        if name in created:
            created[name] = int(n)
    counts.update(created)
    return counts


def gallery_entry(position: int, name: str, faces: int) -> dict[str, Any]:
    """A gallery of ``/stat/list`` (8.6.1)."""
    return {"id": position, "name": name, "cnt_linear": faces, "cnt_indexed": 0,
            "cnt_preindex": 0, "faces": faces, "facen_bytes": faces * FACEN_BYTES}


def list_galleries(db: Database, user: int, start: int, limit: int) -> dict[str, Any]:
    counts = face_counts(db, user)
    entries = [gallery_entry(i, name, n) for i, (name, n) in enumerate(counts.items(), 1)]
    return {"galleries": entries[start - 1:start - 1 + limit], "total": len(entries)}


def _gallery_rows(db: Database, user: int, name: str) -> list[sqlite3.Row]:
    if name == DEFAULT_GALLERY:
        return db.rows("SELECT photo, thumbnail, normalized, person_id FROM faces "
                       "WHERE user_id = ?", (user,))
    return db.rows("SELECT f.photo, f.thumbnail, f.normalized, f.person_id FROM faces f "
                   "JOIN face_galleries g ON g.face_id = f.id WHERE g.user_id = ? AND "
                   "g.gallery = ?", (user, name))


def file_bytes(files: FileStore, names: set[str]) -> int:
    total = 0
    for rel in names:
        path = files.path(rel)
        try:
            total += path.stat().st_size if path is not None else 0
        except OSError:  # deleted meanwhile
            continue
    return total


def gallery_info(backend: Backend, user: int, name: str) -> dict[str, Any]:
    """``/stat/info/:name`` (8.6.2) for one of ``user``'s galleries; 404 if there is none."""
    check_gallery_name(name)
    counts = face_counts(backend.db, user)
    if name not in counts:
        raise ApiError(404, "NOT_FOUND", f"gallery {name!r} not found", param="name",
                       value=name)
    position = list(counts).index(name) + 1
    rows = _gallery_rows(backend.db, user, name)
    images = {r["photo"] for r in rows} | {r["thumbnail"] for r in rows} | {
        r["normalized"] for r in rows}
    created = backend.db.scalar("SELECT created FROM galleries WHERE user_id = ? AND name = ?",
                                (user, name))
    return {**gallery_entry(position, name, counts[name]), "cnt_indexed_deleted": 0,
            "cnt_preindex_deleted": 0, "index_file": "none", "index_loaded": False,
            "created": created,
            "persons": len({r["person_id"] for r in rows if r["person_id"] is not None}),
            "images_bytes": file_bytes(backend.files, {i for i in images if i})}


Start = Path(ge=1, le=2**31, description="1-based position of the first gallery")
Limit = Path(ge=1, le=MAX_LIST, description=f"galleries to list (at most {MAX_LIST})")


@router.get("/stat/list/{start}/{limit}")
async def stat_list(request: Request, start: int = Start, limit: int = Limit,
                    user: int = Depends(current_user)) -> dict[str, Any]:
    """8.6.1: ``{"galleries": [{id, name, cnt_linear, ...}], "total": N}``, the token's
    galleries from position ``start`` (1 = ``default``)."""
    return await run_in_threadpool(list_galleries, get_backend(request).db, user, start, limit)


@router.get("/stat/info/{name}")
async def stat_info(name: GalleryName, request: Request,
                    user: int = Depends(current_user)) -> dict[str, Any]:
    """8.6.2: one gallery's face count, persons and storage (``images_bytes``)."""
    return await run_in_threadpool(gallery_info, get_backend(request), user, name)


def add_metrics(metrics: RequestMetrics, backend: Backend) -> None:
    """Faces per gallery on ``/metrics`` (``backend_gallery_faces{user, gallery}``)."""
    metrics.collectors.append(GalleryFaces(backend.db))
