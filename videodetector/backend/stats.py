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

from typing import Any

from fastapi import APIRouter, Path

from videodetector.backend.deps import BackendDep, StatsDep, UserDep
from videodetector.backend.errors import ApiError
from videodetector.backend.index import DIM
from videodetector.backend.metrics import (
    GalleryFaces,
    RequestMetrics,
)
from videodetector.backend.params import GalleryName
from videodetector.backend.service import Backend, check_gallery_name
from videodetector.backend.storage import FileStore
from videodetector.backend.stores.stats import StatsStore

router = APIRouter(tags=["statistics"])

MAX_LIST = 1000  # galleries per /stat/list page
FACEN_BYTES = DIM * 4  # float32


def gallery_entry(position: int, name: str, faces: int) -> dict[str, Any]:
    """A gallery of ``/stat/list`` (8.6.1)."""
    return {"id": position, "name": name, "cnt_linear": faces, "cnt_indexed": 0,
            "cnt_preindex": 0, "faces": faces, "facen_bytes": faces * FACEN_BYTES}


def list_galleries(stats: StatsStore, user: int, start: int, limit: int) -> dict[str, Any]:
    counts = stats.face_counts(user)
    entries = [gallery_entry(i, name, n) for i, (name, n) in enumerate(counts.items(), 1)]
    return {"galleries": entries[start - 1:start - 1 + limit], "total": len(entries)}


def file_bytes(files: FileStore, names: set[str]) -> int:
    total = 0
    for rel in names:
        path = files.path(rel)
        try:
            total += path.stat().st_size if path is not None else 0
        except OSError:  # deleted meanwhile
            continue
    return total


def gallery_info(stats: StatsStore, files: FileStore, user: int, name: str) -> dict[str, Any]:
    """``/stat/info/:name`` (8.6.2) for one of ``user``'s galleries; 404 if there is none."""
    check_gallery_name(name)
    counts = stats.face_counts(user)
    if name not in counts:
        raise ApiError(404, "NOT_FOUND", f"gallery {name!r} not found", param="name",
                       value=name)
    position = list(counts).index(name) + 1
    rows = stats.gallery_faces(user, name)
    images = {r["photo"] for r in rows} | {r["thumbnail"] for r in rows} | {
        r["normalized"] for r in rows}
    created = stats.gallery_created(user, name)
    return {**gallery_entry(position, name, counts[name]), "cnt_indexed_deleted": 0,
            "cnt_preindex_deleted": 0, "index_file": "none", "index_loaded": False,
            "created": created,
            "persons": len({r["person_id"] for r in rows if r["person_id"] is not None}),
            "images_bytes": file_bytes(files, {i for i in images if i})}


Start = Path(ge=1, le=2**31, description="1-based position of the first gallery")
Limit = Path(ge=1, le=MAX_LIST, description=f"galleries to list (at most {MAX_LIST})")


@router.get("/stat/list/{start}/{limit}")
def stat_list(user: UserDep, stats: StatsDep, start: int = Start,
              limit: int = Limit) -> dict[str, Any]:
    """8.6.1: ``{"galleries": [{id, name, cnt_linear, ...}], "total": N}``, the token's
    galleries from position ``start`` (1 = ``default``)."""
    return list_galleries(stats, user, start, limit)


@router.get("/stat/info/{name}")
def stat_info(name: GalleryName, user: UserDep, backend: BackendDep,
              stats: StatsDep) -> dict[str, Any]:
    """8.6.2: one gallery's face count, persons and storage (``images_bytes``)."""
    return gallery_info(stats, backend.files, user, name)


def add_metrics(metrics: RequestMetrics, backend: Backend) -> None:
    """Faces per gallery on ``/metrics`` (``backend_gallery_faces{user, gallery}``)."""
    metrics.collectors.append(GalleryFaces(backend.db))
