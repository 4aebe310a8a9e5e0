"""The HNSW path of the face index (index.py, ann.py): recall against the exact scan, deleted
faces never returned, filters honoured, snapshots that round-trip, catch up with the
database, and are rebuilt when they cannot be trusted. Real faiss, real SQLite."""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from videodetector.backend.ann import AnnGraph, snapshot_paths
from videodetector.backend.index import DIM, IndexRegistry, UserIndex
from videodetector.backend.service import Backend
from videodetector.backend.settings import Settings, SettingsError
from videodetector.backend.storage import Database
from videodetector.backend.timeutil import iso
from videodetector.core.models import SFACE_NAME

N = 3000


def clustered(n: int, seed: int, draw: int = 0, identities: int = 300) -> np.ndarray:
    """``n`` faces of ``identities`` people (unit centre + noise, like real embeddings);
    the people depend on ``seed`` only, so another ``draw`` gives held-out faces of them."""
    c = np.random.default_rng(seed).standard_normal((identities, DIM)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    rng = np.random.default_rng((seed, draw))
    v = c[rng.integers(0, identities, n)] + 0.066 * rng.standard_normal((n, DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def graph_index(vectors: np.ndarray, ann_min: int = 100, cams=None, persons=None
                ) -> tuple[IndexRegistry, UserIndex]:
    registry = IndexRegistry(ann_min=ann_min)
    index = registry(1)
    n = len(vectors)
    index.add_many(np.arange(1, n + 1), vectors, cams or [None] * n,
                   np.zeros(n, np.int64) if persons is None else persons)
    registry.open_graphs()
    assert registry.wait(30)
    assert index.ann is not None and len(index.ann) == n
    return registry, index


def exact(index: UserIndex, q: np.ndarray, n: int, mask=None) -> list[tuple[int, float]]:
    graph, index.ann = index.ann, None
    try:
        return index.search(q, n, mask)
    finally:
        index.ann = graph


def test_graph_top1_matches_exact_search_on_held_out_probes():
    vectors = clustered(N, 1)
    _, index = graph_index(vectors)
    queries = clustered(200, 1, draw=1)
    assert index.uses_ann()
    agree = [index.search(q, 1)[0][0] == exact(index, q, 1)[0][0] for q in queries]
    assert np.mean(agree) >= 0.99
    q = queries[0]
    got, want = index.search(q, 5), exact(index, q, 5)
    assert [g[0] for g in got] == [w[0] for w in want]  # exact re-scoring: same cosines
    assert np.allclose([g[1] for g in got], [w[1] for w in want])


def test_deleted_faces_are_never_returned():
    vectors = clustered(N, 2)
    registry, index = graph_index(vectors)
    gone = set(range(1, N + 1, 3))
    for face_id in gone:
        index.remove(face_id)
    assert len(index.ann) == N  # tombstones: the graph still holds them
    overlap = []
    for face_id in list(gone)[:200]:
        hits = index.search(vectors[face_id - 1], 10)
        assert len(hits) == 10 and not gone & {h[0] for h in hits}
        want = exact(index, vectors[face_id - 1], 10)
        assert hits[0][0] == want[0][0] and np.isclose(hits[0][1], want[0][1], atol=1e-6)
        overlap.append(len({h[0] for h in hits} & {w[0] for w in want}) / 10)
    assert np.mean(overlap) >= 0.95  # recall@10 of a graph one third deleted
    index.add(face_id, vectors[face_id - 1])  # an undone delete: back, found once
    hits = index.search(vectors[face_id - 1], 3)
    assert hits[0][0] == face_id and [h[0] for h in hits].count(face_id) == 1


def test_many_deletes_rebuild_the_graph_without_them():
    vectors = clustered(1000, 3)
    registry, index = graph_index(vectors)
    first = index.ann
    for face_id in range(1, 400):
        with registry._lock:  # noqa: SLF001 - callers hold the backend's lock, as here
            index.remove(face_id)
    assert registry.wait(30)
    # a new graph, built from the faces left when the rebuild started (+ caught up)
    assert index.ann is not first and len(index) == 601
    assert set(index.ids.tolist()) <= set(index.ann.face_ids.tolist())
    assert len(index.ann) < 1000 and index.dead_fraction() < 0.3


def test_camera_and_person_filters_are_honoured():
    vectors = clustered(N, 4)
    cams = [f"cam-{i % 4}" if i % 50 else "rare" for i in range(N)]
    persons = np.where(np.arange(N) % 2 == 0, np.arange(N) // 2 + 1, 0)
    _, index = graph_index(vectors, ann_min=200, cams=cams, persons=persons)
    cam_mask = index.mask(cam_id="cam-1", any_cam=False)
    person_mask = index.mask(with_person=True)
    rare_mask = index.mask(cam_id="rare", any_cam=False)  # 60 faces < ann_min: exact
    assert index.uses_ann(cam_mask) and index.uses_ann(person_mask)
    assert not index.uses_ann(rare_mask)
    agree = []
    for q in clustered(50, 4, draw=1):
        for mask in (cam_mask, person_mask, rare_mask):
            hits = index.search(q, 3, mask)
            rows = [int(np.flatnonzero(index.ids == h[0])[0]) for h in hits]
            assert len(hits) == 3 and mask[rows].all()
        agree.append(index.search(q, 1, cam_mask)[0][0] == exact(index, q, 1, cam_mask)[0][0])
    assert np.mean(agree) >= 0.95, np.mean(agree)


def test_below_the_threshold_no_graph_is_built():
    registry = IndexRegistry(ann_min=500)
    index = registry(1)
    for i, v in enumerate(clustered(499, 5)):
        index.add(i + 1, v)
    assert registry.wait(5) and index.ann is None
    index.add(500, clustered(1, 5, draw=1)[0])  # crossing it starts a background build
    assert registry.wait(30) and index.ann is not None and len(index.ann) == 500


# ---------------------------------------------------------------------------
# snapshots, through the real Backend and its SQLite
# ---------------------------------------------------------------------------

def insert_faces(data_dir: Path, vectors: np.ndarray, user: int = 1) -> list[int]:
    """Stored faces, written straight into SQLite (the bench does the same)."""
    db = Database(data_dir / "backend.sqlite3")
    stamp = datetime.now(UTC)
    try:
        with db.transaction() as conn:
            ids = []
            for v in vectors:
                cur = conn.execute(
                    "INSERT INTO faces (user_id, timestamp, ts, day, x1, y1, x2, y2, photo, "
                    "photo_hash, thumbnail, normalized, embedding) VALUES "
                    "(?, ?, ?, ?, 0, 0, 1, 1, 'p', 'h', 't', 'n', ?)",
                    (user, iso(stamp), stamp.timestamp(), stamp.date().isoformat(),
                     v.tobytes()))
                ids.append(cur.lastrowid)
        return ids
    finally:
        db.close()


def delete_faces(data_dir: Path, ids: list[int]) -> None:
    db = Database(data_dir / "backend.sqlite3")
    try:
        with db.transaction() as conn:
            conn.executemany("DELETE FROM faces WHERE id = ?", [(i,) for i in ids])
    finally:
        db.close()


def backend(data_dir: Path, **kw) -> Backend:
    kw.setdefault("index_ann_min_faces", 500)
    kw.setdefault("index_ann_catchup", 300)
    b = Backend(Settings(data_dir=data_dir, preload_models=False, **kw))
    return b


def built(data_dir: Path, vectors: np.ndarray) -> list[int]:
    """A store with ``vectors`` and a graph snapshot of them."""
    ids = insert_faces(data_dir, vectors)
    b = backend(data_dir)
    try:
        assert b.index.wait(30) and b.index(1).ann is not None
    finally:
        b.close()
    assert snapshot_paths(data_dir / "index" / SFACE_NAME / "user-1")["meta"].exists()
    return ids


def test_snapshot_round_trip(tmp_path, caplog):
    vectors = clustered(1000, 7)
    built(tmp_path, vectors)
    caplog.set_level(logging.INFO, "videodetector.backend.index")
    b = backend(tmp_path)
    try:
        index = b.index(1)
        assert index.ann is not None, "the snapshot was not attached at start"
        assert "index snapshot of user 1: 1000 nodes, 0 faces caught up" in caplog.text
        assert "built" not in caplog.text
        q = vectors[10]
        assert index.uses_ann() and index.search(q, 1)[0][0] == 11
    finally:
        b.close()


def test_a_stale_snapshot_catches_up_with_the_database(tmp_path):
    """Faces added and deleted after the snapshot (a crash before the next one): the added
    are put into the graph at start, the deleted are never returned."""
    vectors = clustered(1200, 8)
    ids = built(tmp_path, vectors[:1000])
    new_ids = insert_faces(tmp_path, vectors[1000:])
    gone = ids[:100]
    delete_faces(tmp_path, gone)
    b = backend(tmp_path)
    try:
        index = b.index(1)
        assert index.ann is not None and len(index.ann) == 1200
        running = b.index._threads.values()  # noqa: SLF001
        assert not [t for t in running if "build" in t.name]  # no rebuild was needed
        for face_id, v in zip(new_ids, vectors[1000:], strict=True):
            assert index.search(v, 1)[0][0] == face_id
        for v in vectors[:100]:
            assert not set(gone) & {h[0] for h in index.search(v, 5)}
    finally:
        b.close()


def test_a_snapshot_too_far_behind_is_rebuilt_while_search_stays_exact(tmp_path):
    vectors = clustered(1400, 9)
    built(tmp_path, vectors[:1000])
    new_ids = insert_faces(tmp_path, vectors[1000:])  # 400 > index_ann_catchup 300
    b = backend(tmp_path)
    try:
        index = b.index(1)
        with b.db.lock:  # the build waits for the lock to attach: still exact here
            assert index.ann is None
            assert index.search(vectors[1399], 1)[0][0] == new_ids[-1]
        assert b.index.wait(30) and index.ann is not None and len(index.ann) == 1400
    finally:
        b.close()


def test_a_snapshot_of_another_database_is_not_used(tmp_path, caplog):
    other = tmp_path / "other"
    built(other, clustered(1000, 10))
    mine = tmp_path / "mine"
    vectors = clustered(1000, 11)
    insert_faces(mine, vectors)
    shutil.copytree(other / "index", mine / "index")
    b = backend(mine)
    try:
        assert "not this database's" in caplog.text
        assert b.index.wait(30)
        assert b.index(1).search(vectors[5], 1)[0][0] == 6
        assert np.allclose(b.index(1).ann.stored_vectors(np.array([5])), vectors[5])
    finally:
        b.close()


def test_a_damaged_snapshot_is_rebuilt(tmp_path, caplog):
    vectors = clustered(1000, 12)
    built(tmp_path, vectors)
    graph = snapshot_paths(tmp_path / "index" / SFACE_NAME / "user-1")["graph"]
    graph.write_bytes(graph.read_bytes()[:1000])
    b = backend(tmp_path)
    try:
        assert "unreadable" in caplog.text or "incomplete" in caplog.text
        assert b.index.wait(30) and b.index(1).ann is not None
        assert b.index(1).search(vectors[7], 1)[0][0] == 8
    finally:
        b.close()


def test_bulk_load_skips_a_bad_embedding(tmp_path, caplog):
    insert_faces(tmp_path, clustered(5, 13))
    db = Database(tmp_path / "backend.sqlite3")
    with db.transaction() as conn:
        conn.execute("UPDATE faces SET embedding = x'00' WHERE id = 3")
    db.close()
    b = backend(tmp_path, index_ann_min_faces=0)
    try:
        assert sorted(b.index(1).ids.tolist()) == [1, 2, 4, 5]
        assert "bad embedding size" in caplog.text
    finally:
        b.close()


def test_graph_snapshot_load_rejects_a_mismatched_file(tmp_path):
    g = AnnGraph(DIM)
    g.add(np.arange(10), clustered(10, 14))
    g.save(tmp_path / "s", {"user": 1})
    assert AnnGraph.load(tmp_path / "s", DIM) is not None
    assert AnnGraph.load(tmp_path / "s", 64) is None  # another dimension
    np.save(tmp_path / "s.ids.npy", np.arange(9))
    assert AnnGraph.load(tmp_path / "s", DIM) is None


def test_index_settings_are_validated():
    with pytest.raises(SettingsError, match="index_ann_min_faces"):
        Settings(index_ann_min_faces=-1)
    with pytest.raises(SettingsError, match="index_ann_catchup"):
        Settings(index_ann_catchup=-5)
