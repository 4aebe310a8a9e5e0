"""``/identify`` on PostgreSQL: the n nearest faces by pgvector, never fewer than there are.

pgvector 0.6's HNSW index scan visits ``hnsw.ef_search`` (default 40) candidates and the
query's filters (the user, a gallery) are applied *after* it: a top-``n`` search returns at
most ``ef_search`` rows, and only those of the candidates that pass the filter. So a gallery
or a user holding 4 % of the table's faces got 1 or 2 hits for ``n=10``, and any ``n`` above
40 got 40. ``nearest`` therefore asks in up to three steps, stopping at the first that
returns ``n`` rows:

1. the HNSW index with ``ef_search = max(pg_ef_search, n)`` (the common case: one query;
   the setting ``pg_ef_search``, default 100; pgvector's own default is 40);
2. when that was short, the share of candidates that passed the filter estimates its
   selectivity, and the HNSW index is asked again with ``ef_search`` = 2 n / selectivity,
   if that is at most 1000 (pgvector's maximum);
3. else, or when step 2 was short too, an exact scan of the filtered faces (a
   ``MATERIALIZED`` selection, which no index can order): its cost is the selection's size,
   and a filter that lets few candidates through selects few faces. ``n`` above 1000 goes
   there at once.

Measured with ``bench/bench_pg.py`` (galleries of 0.1/1/10 % of 100k faces, n=10): ef_search
1000 cost more than the exact scan of a 1 % gallery and still missed hits, while for 10 % a
modest ef_search was enough and the exact scan of 10k faces the slowest; hence the estimate
rather than a fixed ladder. A result shorter than ``n`` after the exact scan means the
selection holds fewer faces. ``SET LOCAL hnsw.ef_search`` lives in one read transaction
(``PgDatabase.rows_with``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pgvector import Vector

from videodetector.backend.changes import DEFAULT_GALLERY

# the setting pg_ef_search's default (pgvector's own is 40: recall@1 0.94 on known faces at
# 1M; 100 roughly doubles the search's cost; bench_pg.py --ef-search measures both)
EF_SEARCH_DEFAULT = 100
EF_SEARCH_MAX = 1000  # pgvector's largest hnsw.ef_search


def first_ef(n: int, ef_search: int = EF_SEARCH_DEFAULT) -> int | None:
    """``hnsw.ef_search`` of the first try for a top-``n`` search (at least ``ef_search``,
    the setting ``pg_ef_search``); None: exact at once."""
    if not 1 <= ef_search <= EF_SEARCH_MAX:
        raise ValueError(f"pg_ef_search must be in 1..{EF_SEARCH_MAX}, got {ef_search!r}")
    ef = max(ef_search, n)
    return ef if ef <= EF_SEARCH_MAX else None


def widened_ef(n: int, ef: int, passed: int) -> int | None:
    """``hnsw.ef_search`` of the second try after ``passed`` of ``ef`` candidates passed the
    filter: 2 n over the estimated selectivity (half a candidate when none passed); None
    when that is above ``EF_SEARCH_MAX`` (search exactly)."""
    want = math.ceil(2 * n * ef / max(passed, 0.5))
    return want if want <= EF_SEARCH_MAX else None


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
            gallery: str | None, ef_search: int = EF_SEARCH_DEFAULT) -> list[Any]:
    """(face_id, cosine distance) of the ``n`` nearest faces of ``user`` (in ``gallery``)
    with a ``model`` vector, nearest first; fewer only when there are fewer (module doc).
    ``ef_search``: the first HNSW search's ``hnsw.ef_search`` (setting ``pg_ef_search``)."""
    if n <= 0:
        return []
    sql, args = vector_search_sql(user, model, dim, query, n, gallery)
    ef = first_ef(n, ef_search)
    if ef is not None:
        rows = db.rows_with({"hnsw.ef_search": str(ef)}, sql, args)
        if len(rows) >= n:
            return rows
        ef = widened_ef(n, ef, len(rows))
    if ef is not None:
        rows = db.rows_with({"hnsw.ef_search": str(ef)}, sql, args)
        if len(rows) >= n:
            return rows
    return db.rows(*exact_search_sql(user, model, dim, query, n, gallery))
