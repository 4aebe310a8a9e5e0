"""/identify on PostgreSQL returns n hits when there are n, whatever the filter.

pgvector 0.6 filters after its HNSW scan of ``hnsw.ef_search`` (40) candidates: before
``pgsearch.nearest`` a gallery of 4 % of the table's faces gave 1 or 2 hits for n=10, a user
with 4 % of the faces the same, and n=60 gave 40. The stores are filled straight into the
backend's schema (COPY of synthetic unit vectors); the search is the product's
``Backend.identify`` on a real PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.pg import PgCluster
from videodetector.backend.auth import create_token, token_hash
from videodetector.backend.pgsearch import EF_SEARCH_DEFAULT, EF_SEARCH_MAX, first_ef, widened_ef
from videodetector.backend.service import Backend, NewFace
from videodetector.backend.settings import Settings

TABLE = 5000  # faces of the big user
SMALL = 200  # faces of the small user, and of the gallery (4 % of the table)
COLUMNS = ("user_id", "timestamp", "ts", "day", "x1", "y1", "x2", "y2", "photo", "photo_hash",
           "thumbnail", "normalized", "embedding")
TYPES = ("int8", "text", "float8", "text", "int8", "int8", "int8", "int8", "text", "text",
         "text", "text", "bytea")


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 128)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _copy(url: str, user: int, vectors: np.ndarray) -> list[int]:
    import psycopg
    with psycopg.connect(url, autocommit=True) as conn:
        first = conn.execute("SELECT COALESCE(MAX(id), 0) FROM faces").fetchone()[0]
        with conn.cursor().copy(f"COPY faces ({', '.join(COLUMNS)}) FROM STDIN WITH "
                                "(FORMAT BINARY)") as copy:
            copy.set_types(list(TYPES))
            for v in vectors:
                copy.write_row((user, "t", 0.0, "d", 0, 0, 1, 1, "p", "h", "t", "n",
                                v.tobytes()))
        return [r[0] for r in conn.execute("SELECT id FROM faces WHERE id > %s ORDER BY id",
                                           (first,))]


class Store:
    def __init__(self, backend: Backend, url: str) -> None:
        self.backend, self.url = backend, url
        self.users: dict[str, int] = {}
        self.vectors: dict[int, np.ndarray] = {}  # face id -> vector
        self.owner: dict[int, int] = {}  # face id -> user

    def user(self, name: str) -> int:
        token = create_token(self.backend.db)
        self.users[name] = self.backend.db.scalar("SELECT id FROM users WHERE token_hash = ?",
                                                  (token_hash(token),))
        return self.users[name]

    def add(self, user: int, vectors: np.ndarray) -> list[int]:
        ids = _copy(self.url, user, vectors)
        self.vectors.update(zip(ids, vectors, strict=True))
        self.owner.update(dict.fromkeys(ids, user))
        return ids


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, pg_cluster: PgCluster) -> Iterator[Store]:
    import psycopg
    url = pg_cluster.new_database("ident")
    # the copied rows are sface-2021dec's (faces.model's default): that model, not auto
    backend = Backend(Settings(data_dir=tmp_path_factory.mktemp("pgident"), db=url,
                               embedding_model="sface-2021dec"))
    rng = np.random.default_rng(5)
    s = Store(backend, url)
    big, small = s.user("big"), s.user("small")
    # the faces are copied with the HNSW indexes dropped, which are then re-created
    # (inserting into a built graph costs ~10 ms a row on a busy machine)
    with psycopg.connect(url, autocommit=True) as conn:
        indexes = conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE indexdef "
                               "LIKE '%USING hnsw%'").fetchall()
        for name, _ in indexes:
            conn.execute(f"DROP INDEX {name}")
    ids = s.add(big, _unit(rng, TABLE))
    s.add(small, _unit(rng, SMALL))
    backend.create_gallery(big, "few")
    with psycopg.connect(url, autocommit=True) as conn:
        for _, definition in indexes:
            conn.execute(definition)
        conn.cursor().executemany(
            "INSERT INTO face_galleries (face_id, user_id, gallery) VALUES (%s, %s, 'few')",
            [(int(i), big) for i in rng.choice(ids, SMALL, replace=False)])
        conn.execute("ANALYZE")  # the planner knows the table is big: it picks the HNSW index
    yield s
    backend.close()


def _exact(store: Store, user: int, q: np.ndarray, n: int, gallery: str | None) -> list[int]:
    if gallery is None:
        ids = [i for i in store.vectors if store.owner[i] == user]
    else:
        ids = [r[0] for r in store.backend.db.rows(
            "SELECT face_id FROM face_galleries WHERE user_id = ? AND gallery = ?",
            (user, gallery))]
    cos = np.array([store.vectors[i] for i in ids]) @ q
    return [ids[k] for k in np.argsort(-cos)[:n]]


@pytest.mark.parametrize(("who", "n", "gallery"), [
    ("big", 10, "few"),  # a gallery of 4 % of the table
    ("small", 10, None),  # a user with 4 % of the table
    ("big", EF_SEARCH_DEFAULT + 20, None),  # n above pg_ef_search's default
    ("big", 10, None),  # the plain case
])
def test_identify_returns_n_hits_when_the_selection_has_them(store: Store, who: str, n: int,
                                                             gallery: str | None) -> None:
    user = store.users[who]
    rng = np.random.default_rng(n + len(who))
    for q in _unit(rng, 3):
        face = NewFace(box=(0, 0, 1, 1), aligned=np.zeros((1, 1, 3), np.uint8), embedding=q)
        hits = store.backend.identify(user, [face], n, None, gallery)[0]
        assert len(hits) == n, (who, n, gallery, len(hits))
        ids = {h[0] for h in hits}
        assert len(ids) == n and all(store.owner[i] == user for i in ids)
        assert [h[1] for h in hits] == sorted((h[1] for h in hits), reverse=True)
        if gallery is not None:
            assert ids <= set(_exact(store, user, q, 10 ** 6, gallery))


def test_fewer_hits_only_when_the_selection_is_smaller(store: Store) -> None:
    user = store.users["small"]
    q = _unit(np.random.default_rng(9), 1)[0]
    face = NewFace(box=(0, 0, 1, 1), aligned=np.zeros((1, 1, 3), np.uint8), embedding=q)
    hits = store.backend.identify(user, [face], SMALL + 50, None)[0]
    assert sorted(h[0] for h in hits) == sorted(_exact(store, user, q, SMALL + 50, None))


def test_ef_search_of_each_try() -> None:
    assert first_ef(1) == EF_SEARCH_DEFAULT and first_ef(500) == 500
    assert first_ef(EF_SEARCH_MAX) == EF_SEARCH_MAX and first_ef(EF_SEARCH_MAX + 1) is None
    assert widened_ef(10, 40, 4) == 200  # a 10 % filter: 2 n / 0.1
    assert widened_ef(10, 40, 0) is None  # under 1/80 of the table: exact
    assert widened_ef(10, 40, 1) == 800
    assert widened_ef(100, 100, 10) is None


def _recall_at_1(store: Store, ef_search: int, queries: np.ndarray) -> float:
    """Share of ``queries`` whose first hit by ``face_store(db, ef_search)`` is the exact
    nearest face of the big user (random queries: the hard case for a graph search)."""
    from videodetector.backend.stores.faces import face_store

    faces = face_store(store.backend.db, ef_search)
    user = store.users["big"]
    hits = [faces.nearest(user, "sface-2021dec", 128, q, 1, None)[0][0] for q in queries]
    return float(np.mean([h == _exact(store, user, q, 1, None)[0]
                          for h, q in zip(hits, queries, strict=True)]))


def test_pg_ef_search_setting_sets_the_first_searchs_ef_search(store: Store,
                                                                tmp_path) -> None:
    """``pg_ef_search`` reaches the HNSW search: the backend's store asks with it, and more
    candidates find the exact nearest face more often than few."""
    from videodetector.backend.settings import SettingsError

    assert store.backend.faces_store.ef_search == EF_SEARCH_DEFAULT  # the default
    assert Settings().pg_ef_search == EF_SEARCH_DEFAULT  # one default, said twice
    backend = Backend(Settings(data_dir=tmp_path, db=store.url, embedding_model="sface-2021dec",
                               preload_models=False, pg_ef_search=200))
    try:
        seen: list[dict] = []
        real = backend.db.rows_with
        backend.db.rows_with = lambda opts, *a: seen.append(opts) or real(opts, *a)
        q = _unit(np.random.default_rng(3), 1)[0]
        face = NewFace(box=(0, 0, 1, 1), aligned=np.zeros((1, 1, 3), np.uint8), embedding=q)
        assert len(backend.identify(store.users["big"], [face], 1, None)[0]) == 1
        assert seen == [{"hnsw.ef_search": "200"}]
    finally:
        backend.close()
    queries = _unit(np.random.default_rng(11), 30)
    low, high = _recall_at_1(store, 1, queries), _recall_at_1(store, 400, queries)
    assert low < high and high >= 0.9, (low, high)
    assert first_ef(1, 200) == 200 and first_ef(300, 200) == 300
    for bad in (0, 1001):
        with pytest.raises(SettingsError, match="pg_ef_search"):
            Settings(pg_ef_search=bad)
        with pytest.raises(ValueError, match="pg_ef_search"):
            first_ef(1, bad)
