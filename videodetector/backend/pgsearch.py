"""``/identify`` on PostgreSQL: the n nearest faces by pgvector, never fewer than there are.

pgvector 0.6's HNSW index scan visits ``hnsw.ef_search`` (default 40) candidates and the
query's filters (the user, a gallery) are applied *after* it: a top-``n`` search returns at
most ``ef_search`` rows, and only those of the candidates that pass the filter. So a gallery
or a user holding 4 % of the table's faces got 1 or 2 hits for ``n=10``, and any ``n`` above
40 got 40. ``nearest`` therefore asks in up to three steps, stopping at the first that
returns ``n`` rows:

1. the HNSW index with ``ef_search = max(40, n)`` (the common case: one query, as fast as
   before);
2. ``ef_search = EF_SEARCH_MAX`` (1000, pgvector's maximum) when step 1 was short: a filter
   selecting down to ~1/100 of the table still yields ``n`` candidates;
3. an exact scan of the filtered faces (a ``MATERIALIZED`` selection, which no index can
   order) when step 2 was short too (the selection is then small), or at once for ``n``
   above 1000; the scan costs what the selection's size costs.

A result shorter than ``n`` after step 3 means the selection holds fewer faces. The
``SET LOCAL`` of ``ef_search`` lives in one read transaction (``PgDatabase.rows_with``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pgvector import Vector

from videodetector.backend.changes import DEFAULT_GALLERY

EF_SEARCH_DEFAULT = 40  # pgvector's default hnsw.ef_search
EF_SEARCH_MAX = 1000  # pgvector's largest hnsw.ef_search


def ef_search_steps(n: int) -> list[int]:
    """The ``hnsw.ef_search`` values tried, in order, for a top-``n`` search (the exact
    scan comes after them)."""
    first = max(EF_SEARCH_DEFAULT, n)
    if first > EF_SEARCH_MAX:  # the index cannot return that many: exact at once
        return []
    return [first] if first == EF_SEARCH_MAX else [first, EF_SEARCH_MAX]


def _where(user: int, gallery: str | None) -> tuple[str, list[Any]]:
    where, args = "f.user_id = ?", [user]
    if gallery not in (None, DEFAULT_GALLERY):
        where += " AND f.id IN (SELECT face_id FROM face_galleries WHERE user_id = ? AND " \
                 "gallery = ?)"
        args += [user, gallery]
    return where, args


def _vector_text(query: np.ndarray) -> str:
    return Vector(np.asarray(query, np.float32).reshape(-1)).to_text()


def vector_search_sql(user: int, model: str, dim: int, query: np.ndarray, n: int,
                      gallery: str | None) -> tuple[str, list[Any]]:
    """The pgvector query (face_id, cosine distance), nearest first, that the model's HNSW
    indexes (``storage.vector_index_sql``: same ORDER BY expression) can serve."""
    q = _vector_text(query)
    dist = f"(v.vec::vector({int(dim)})) <=> ?::vector({int(dim)})"
    where, args = _where(user, gallery)
    limit = max(int(n), 0)
    sql = (f"SELECT id, d FROM ("
           f"(SELECT f.id, {dist.replace('v.', 'f.')} AS d FROM faces f WHERE {where} "
           f"AND f.model = ? ORDER BY d LIMIT {limit}) UNION ALL "
           f"(SELECT f.id, {dist.replace('v.', 'e.')} AS d FROM embeddings e JOIN faces f ON "
           f"f.id = e.face_id WHERE {where} AND e.model = ? AND f.model <> ? ORDER BY d "
           f"LIMIT {limit})) AS hits ORDER BY d, id LIMIT {limit}")
    return sql, [q, *args, model, q, *args, model, model]


def exact_search_sql(user: int, model: str, dim: int, query: np.ndarray, n: int,
                     gallery: str | None) -> tuple[str, list[Any]]:
    """The same answer as ``vector_search_sql`` by an exact scan of the selected faces: the
    selection is ``MATERIALIZED``, so the planner cannot order it by an HNSW index."""
    where, args = _where(user, gallery)
    limit = max(int(n), 0)
    sql = (f"WITH sel AS MATERIALIZED ("
           f"SELECT f.id, f.vec FROM faces f WHERE {where} AND f.model = ? UNION ALL "
           f"SELECT f.id, e.vec FROM embeddings e JOIN faces f ON f.id = e.face_id "
           f"WHERE {where} AND e.model = ? AND f.model <> ?) "
           f"SELECT id, (vec::vector({int(dim)})) <=> ?::vector({int(dim)}) AS d FROM sel "
           f"ORDER BY d, id LIMIT {limit}")
    return sql, [*args, model, *args, model, model, _vector_text(query)]


def nearest(db: Any, user: int, model: str, dim: int, query: np.ndarray, n: int,
            gallery: str | None) -> list[Any]:
    """(face_id, cosine distance) of the ``n`` nearest faces of ``user`` (in ``gallery``)
    with a ``model`` vector, nearest first; fewer only when there are fewer (module doc)."""
    if n <= 0:
        return []
    sql, args = vector_search_sql(user, model, dim, query, n, gallery)
    rows: list[Any] = []
    for ef in ef_search_steps(n):
        rows = db.rows_with({"hnsw.ef_search": str(ef)}, sql, args)
        if len(rows) >= n:
            return rows
    return db.rows(*exact_search_sql(user, model, dim, query, n, gallery))
