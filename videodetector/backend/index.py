"""In-memory embedding search: one matrix per user, a flat scan or HNSW candidates.

Rows are kept contiguous (a removed row is replaced by the last one), so an exact search
over N faces is ``vectors[:N] @ query`` followed by a partial sort. Callers hold the
backend's lock around mutations and searches.

Large galleries (``ann_min`` faces or more) also get an HNSW graph (``ann.AnnGraph``),
built in a background thread, snapshotted to the data folder and loaded at start. The
graph proposes candidates, the matrix re-scores them exactly, so a search returns exact
cosines and never a deleted face (deleted faces are tombstones in the graph: their ids
are no longer rows here). A search falls back to the exact scan when the graph is not
ready, when a filter (camera, person, gallery) selects fewer than ``ann_min`` faces, or
when the over-fetched candidates that pass the filter are fewer than asked for.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from videodetector.backend.ann import AnnGraph, AnnParams

log = logging.getLogger(__name__)

DIM = 128
MAX_ANN_N = 256  # larger result lists are searched exactly
MAX_ANN_FETCH = 4096  # a filter that needs more over-fetch than this searches exactly
FILTER_OVERFETCH = 2.0  # extra candidates asked for a filtered search (bench_index.py)
REBUILD_DEAD_FRACTION = 0.3  # tombstones beyond this share of the graph -> rebuild
CHECK_SAMPLE = 64  # snapshot vectors compared with the database's at load

class UserIndex:
    """Embeddings of one user's faces, with each face's camera and person for filtering."""

    def __init__(self, dim: int = DIM, ann_min: int = 0,
                 on_change: Callable[[UserIndex], None] | None = None) -> None:
        self.dim = dim
        self.ann_min = ann_min  # 0 = exact search only
        self.ann: AnnGraph | None = None
        self.unsaved = 0  # graph changes since its last snapshot
        self._on_change = on_change
        self.n = 0
        self._vectors = np.zeros((0, dim), np.float32)
        self._ids = np.zeros(0, np.int64)
        self._cams = np.zeros(0, np.int32)  # camera code, -1 = no camera
        self._persons = np.zeros(0, np.int64)  # 0 = no person
        self._row: dict[int, int] = {}
        self._cam_codes: dict[str, int] = {}
        self._cam_names: list[str] = []  # code -> cam_id

    def __len__(self) -> int:
        return self.n

    def __contains__(self, face_id: int) -> bool:
        return face_id in self._row

    @property
    def ids(self) -> np.ndarray:
        return self._ids[: self.n]

    def reserve(self, capacity: int) -> None:
        """Room for ``capacity`` faces without regrowing (the start-up load)."""
        if capacity > len(self._ids):
            self._grow(capacity)

    def _grow(self, capacity: int = 0) -> None:
        cap = max(64, 2 * len(self._ids), self.n + 1, capacity)
        for name, fill in (("_vectors", None), ("_ids", None), ("_cams", -1), ("_persons", 0)):
            old = getattr(self, name)
            new = np.zeros((cap, *old.shape[1:]), old.dtype)
            if fill is not None:
                new[:] = fill
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    def _cam_code(self, cam_id: str | None) -> int:
        if cam_id is None:
            return -1
        code = self._cam_codes.get(cam_id)
        if code is None:
            code = self._cam_codes[cam_id] = len(self._cam_names)
            self._cam_names.append(cam_id)
        return code

    def add(self, face_id: int, vector: np.ndarray, cam_id: str | None = None,
            person_id: int | None = None) -> None:
        if face_id in self._row:
            raise KeyError(f"face {face_id} is already indexed")
        vector = np.asarray(vector, np.float32).reshape(-1)
        if vector.shape != (self.dim,):
            raise ValueError(f"expected a {self.dim}-d embedding, got {vector.shape}")
        if self.n == len(self._ids):
            self._grow()
        i = self.n
        self._vectors[i] = vector
        self._ids[i] = face_id
        self._cams[i] = self._cam_code(cam_id)
        self._persons[i] = person_id or 0
        self._row[face_id] = i
        self.n += 1
        if self.ann is not None:
            self.ann.add(np.array([face_id]), vector[None])
            self.unsaved += 1
        if self._on_change is not None:
            self._on_change(self)

    def add_many(self, face_ids: np.ndarray, vectors: np.ndarray,
                 cam_ids: list[str | None], person_ids: np.ndarray) -> None:
        """Bulk ``add`` of new faces (the start-up load); no graph update."""
        face_ids = np.asarray(face_ids, np.int64)
        vectors = np.asarray(vectors, np.float32).reshape(len(face_ids), self.dim)
        ascending = bool((np.diff(face_ids) > 0).all())  # the load reads ORDER BY id
        if not ascending and len(np.unique(face_ids)) < len(face_ids):
            raise KeyError("a face id is given twice")
        if self._row and not self._row.keys().isdisjoint(face_ids.tolist()):
            raise KeyError("some faces are already indexed")
        while self.n + len(face_ids) > len(self._ids):
            self._grow()
        s = slice(self.n, self.n + len(face_ids))
        self._vectors[s] = vectors
        self._ids[s] = face_ids
        codes = {c: self._cam_code(c) for c in set(cam_ids)}
        self._cams[s] = np.fromiter(map(codes.__getitem__, cam_ids), np.int32, len(cam_ids))
        self._persons[s] = person_ids
        self._row.update(zip(face_ids.tolist(), range(s.start, s.stop), strict=True))
        self.n = s.stop

    def remove(self, face_id: int) -> None:
        i = self._row.pop(face_id, None)
        if i is None:
            return
        last = self.n - 1
        if i != last:
            for arr in (self._vectors, self._ids, self._cams, self._persons):
                arr[i] = arr[last]
            self._row[int(self._ids[i])] = i
        self.n = last
        if self.ann is not None:
            self.unsaved += 1  # a tombstone in the graph
        if self._on_change is not None:
            self._on_change(self)

    def set_person(self, face_id: int, person_id: int | None) -> None:
        i = self._row.get(face_id)
        if i is not None:
            self._persons[i] = person_id or 0

    def vector(self, face_id: int) -> np.ndarray:
        return self._vectors[self._row[face_id]].copy()

    def entry(self, face_id: int) -> tuple[np.ndarray, str | None, int | None]:
        """``(vector, cam_id, person_id)`` of an indexed face: what ``add`` was given."""
        i = self._row[face_id]
        code = int(self._cams[i])
        return (self._vectors[i].copy(), None if code < 0 else self._cam_names[code],
                int(self._persons[i]) or None)

    def mask(self, *, face_ids: np.ndarray | None = None, cam_id: str | None = None,
             any_cam: bool = True, with_person: bool = False) -> np.ndarray | None:
        """A boolean row mask for a search, or None for "all rows"."""
        mask = None
        if face_ids is not None:
            mask = np.isin(self.ids, face_ids)
        if not any_cam:
            code = self._cam_codes.get(cam_id, -2) if cam_id is not None else -1
            m = self._cams[: self.n] == code
            mask = m if mask is None else mask & m
        if with_person:
            m = self._persons[: self.n] > 0
            mask = m if mask is None else mask & m
        return mask

    def search(self, query: np.ndarray, n: int, mask: np.ndarray | None = None,
               min_cos: float | None = None) -> list[tuple[int, float]]:
        """Up to ``n`` (face_id, cosine) pairs among the rows ``mask`` allows, most
        similar first; exact cosines (HNSW candidates are re-scored)."""
        if self.n == 0 or n <= 0:
            return []
        q = np.asarray(query, np.float32).reshape(-1)
        rows = self._candidates(q, n, mask)
        if rows is None:  # exact: all rows, or those of the mask
            rows = np.arange(self.n) if mask is None else np.flatnonzero(mask)
        if len(rows) > self.n // 4:  # one product over the matrix beats copying most of it
            scores = (self._vectors[: self.n] @ q)[rows]
        else:
            scores = self._vectors[rows] @ q
        k = min(n, len(rows))
        if k == 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k] if k < len(rows) else np.arange(len(rows))
        top = top[np.argsort(-scores[top], kind="stable")]
        out = []
        for i in top:
            s = float(scores[i])
            if min_cos is not None and s < min_cos:
                break
            out.append((int(self._ids[rows[i]]), s))
        return out

    def uses_ann(self, mask: np.ndarray | None = None) -> bool:
        """Whether a search with ``mask`` would ask the graph first."""
        selected = self.n if mask is None else int(np.count_nonzero(mask))
        return self.ann is not None and self.ann_min > 0 and selected >= self.ann_min

    def _candidates(self, q: np.ndarray, n: int, mask: np.ndarray | None) -> np.ndarray | None:
        """Rows proposed by the graph that pass ``mask`` (at least ``n`` of them), or None
        when the search must be exact."""
        ann = self.ann
        if ann is None or self.ann_min <= 0 or n > MAX_ANN_N:
            return None
        selected = self.n if mask is None else int(np.count_nonzero(mask))
        if selected < self.ann_min:
            return None
        want = n + ann.params.candidates
        # over-fetch for the filter's selectivity (with a margin: the graph's neighbours
        # of the query are not a random sample of the filter) and the graph's tombstones
        spread = 1.0 if selected == self.n else FILTER_OVERFETCH * self.n / selected
        k = math.ceil(want * spread * (len(ann) / self.n))
        if k > MAX_ANN_FETCH:
            return None
        found = ann.search(q, k)
        rows = np.fromiter((self._row.get(f, -1) for f in found.tolist()), np.int64,
                           len(found))
        rows = np.unique(rows[rows >= 0])
        if mask is not None:
            rows = rows[mask[rows]]
        return rows if len(rows) >= min(n, selected) else None

    def person_of(self, face_id: int) -> int | None:
        i = self._row.get(face_id)
        if i is None:
            return None
        return int(self._persons[i]) or None

    # -- the graph ---------------------------------------------------------------

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the ids and vectors (for a graph built outside the lock)."""
        n = self.n
        return self._ids[:n].copy(), self._vectors[:n].copy()

    def missing_from(self, graph: AnnGraph) -> np.ndarray:
        """Stored face ids the graph does not hold."""
        return np.setdiff1d(self.ids, graph.face_ids)

    def matches(self, graph: AnnGraph, rng: np.random.Generator | None = None) -> bool:
        """Whether the graph's vectors of a sample of stored faces are theirs (a snapshot
        of this database, not of another one restored into the data folder)."""
        labels = np.flatnonzero(np.isin(graph.face_ids, self.ids))
        if not len(labels):
            return len(graph) == 0
        rng = rng or np.random.default_rng()
        labels = rng.choice(labels, min(CHECK_SAMPLE, len(labels)), replace=False)
        rows = [self._row[int(f)] for f in graph.face_ids[labels]]
        return bool(np.allclose(graph.stored_vectors(labels), self._vectors[rows], atol=1e-6))

    def attach(self, graph: AnnGraph) -> int:
        """Search with ``graph`` from now on, after adding the stored faces it lacks;
        returns how many were added."""
        missing = self.missing_from(graph)
        if len(missing):
            rows = np.fromiter((self._row[f] for f in missing.tolist()), np.int64, len(missing))
            graph.add(missing, self._vectors[rows])
        self.ann = graph
        self.unsaved += len(missing)
        return len(missing)

    def dead_fraction(self) -> float:
        """Share of the graph's nodes that are deleted faces."""
        if self.ann is None or not len(self.ann):
            return 0.0
        return max(0.0, 1.0 - self.n / len(self.ann))

    def memory_bytes(self) -> int:
        """Matrix, id/camera/person columns (at capacity) and the graph."""
        cols = self._vectors.nbytes + self._ids.nbytes + self._cams.nbytes + self._persons.nbytes
        return cols + (self.ann.memory_bytes() if self.ann is not None else 0)


class IndexRegistry:
    """One UserIndex per user id, their HNSW graphs and the graphs' snapshots.

    ``lock`` is the backend's lock (held by callers around mutations and searches); the
    registry takes it itself only in its background threads. ``snapshot_dir`` None keeps
    graphs in memory only.
    """

    def __init__(self, *, dim: int = DIM, ann_min: int = 0, catchup: int = 0,
                 snapshot_dir: Path | None = None, lock: threading.RLock | None = None,
                 params: AnnParams = AnnParams()) -> None:
        if ann_min < 0 or catchup < 0:
            raise ValueError(f"ann_min and catchup must be >= 0, got {ann_min}, {catchup}")
        self.dim = dim
        self.ann_min = ann_min
        self.catchup = catchup
        self.snapshot_dir = snapshot_dir
        self.params = params
        self._lock = lock or threading.RLock()
        self._by_user: dict[int, UserIndex] = {}
        self._threads: dict[int, threading.Thread] = {}  # user -> running build or save
        self._closing = threading.Event()

    def __call__(self, user_id: int) -> UserIndex:
        index = self._by_user.get(user_id)
        if index is None:
            index = self._by_user[user_id] = UserIndex(
                self.dim, self.ann_min, lambda ix, u=user_id: self._changed(u, ix))
        return index

    def users(self) -> list[int]:
        return list(self._by_user)

    def total(self) -> int:
        return sum(len(i) for i in self._by_user.values())

    # -- start-up ------------------------------------------------------------------

    def load(self, conn: sqlite3.Connection, vector_sql: str = "f.embedding",
             params: dict[str, Any] | None = None, batch: int = 50_000) -> tuple[int, int]:
        """Add every stored face's vector, a batch at a time. ``vector_sql`` is the vector
        column over ``faces f`` (the active model's: embeddings.VECTOR_SQL); NULL = the face
        has no vector of that model: not added, counted. Returns (added, missing)."""
        cur = conn.cursor()
        cur.row_factory = None
        for user, count in cur.execute("SELECT user_id, COUNT(*) FROM faces GROUP BY user_id"):
            self(user).reserve(count)
        cur.execute(f"SELECT f.id, f.user_id, IFNULL(f.person_id, 0), f.cam_id, {vector_sql} "
                    "FROM faces f ORDER BY f.id", params or {})
        n = missing = 0
        while rows := cur.fetchmany(batch):
            present = [r for r in rows if r[4] is not None]
            missing += len(rows) - len(present)
            if not present:
                continue
            ids, users, persons, cams, blobs = (list(c) for c in zip(*present, strict=True))
            sizes = np.fromiter(map(len, blobs), np.int64, len(blobs))
            good = np.flatnonzero(sizes == 4 * self.dim)
            if len(good) < len(ids):
                log.error("%d stored faces have a bad embedding size; not searchable",
                          len(ids) - len(good))
                ids, users, persons, cams, blobs = ([c[i] for i in good.tolist()]
                                                    for c in (ids, users, persons, cams, blobs))
            if not ids:
                continue
            vectors = np.frombuffer(b"".join(blobs), np.float32).reshape(len(ids), self.dim)
            self._add_batch(np.array(ids, np.int64), np.array(users, np.int64),
                            np.array(persons, np.int64), cams, vectors)
            n += len(ids)
        return n, missing

    def _add_batch(self, ids: np.ndarray, users: np.ndarray, persons: np.ndarray,
                   cams: list[str | None], vectors: np.ndarray) -> None:
        for user in np.unique(users).tolist():
            sel = np.flatnonzero(users == user)
            if len(sel) == len(ids):  # the usual case: one user
                self(user).add_many(ids, vectors, cams, persons)
            else:
                self(user).add_many(ids[sel], vectors[sel], [cams[i] for i in sel.tolist()],
                                    persons[sel])

    def open_graphs(self) -> None:
        """For each user with ``ann_min`` faces or more: load the graph snapshot, check it
        is this database's, add the faces stored since (up to ``catchup``), or else build
        a new graph in the background (searches are exact until it is ready)."""
        if not self.ann_min:
            return
        for user, index in self._by_user.items():
            if len(index) < self.ann_min:
                continue
            loaded = self._load_snapshot(user)
            if loaded is None or not index.matches(loaded):
                if loaded is not None:
                    log.warning("index snapshot of user %d is not this database's", user)
                self._start(user, self._build)
                continue
            missing = len(index.missing_from(loaded))
            if missing > self.catchup:
                log.warning("index snapshot of user %d lacks %d faces (> index_ann_catchup "
                            "%d); rebuilding in the background", user, missing, self.catchup)
                self._start(user, self._build)
                continue
            index.attach(loaded)
            log.info("index snapshot of user %d: %d nodes, %d faces caught up, %.0f %% "
                     "deleted", user, len(loaded), missing, 100 * index.dead_fraction())
            self._changed(user, index)

    def _stem(self, user: int) -> Path | None:
        return None if self.snapshot_dir is None else self.snapshot_dir / f"user-{user}"

    def _load_snapshot(self, user: int) -> AnnGraph | None:
        stem = self._stem(user)
        if stem is None:
            return None
        t0 = time.monotonic()
        loaded = AnnGraph.load(stem, self.dim, self.params)
        if loaded is not None:
            log.info("index snapshot of user %d read in %.2f s", user, time.monotonic() - t0)
        return None if loaded is None else loaded[0]

    # -- background work -------------------------------------------------------------

    def _changed(self, user: int, index: UserIndex) -> None:
        """After a change: build, rebuild or snapshot the user's graph when due."""
        if not self.ann_min or user in self._threads:
            return
        if index.ann is None:
            if len(index) >= self.ann_min:
                self._start(user, self._build)
        elif index.dead_fraction() > REBUILD_DEAD_FRACTION and len(index) >= self.ann_min:
            self._start(user, self._build)
        elif self.snapshot_dir is not None and index.unsaved >= max(1, self.catchup // 2):
            self._start(user, self._save)

    def _start(self, user: int, work: Callable[[int], None]) -> None:
        if self._closing.is_set() or user in self._threads:
            return
        thread = threading.Thread(target=self._run, args=(user, work), daemon=True,
                                  name=f"index-{work.__name__.strip('_')}-{user}")
        self._threads[user] = thread
        thread.start()

    def _run(self, user: int, work: Callable[[int], None]) -> None:
        try:
            work(user)
        except Exception:  # noqa: BLE001 - a failed build leaves exact search working
            log.exception("index %s for user %d failed", work.__name__, user)
        finally:
            with self._lock:
                self._threads.pop(user, None)

    def _build(self, user: int, chunk: int = 20_000) -> None:
        t0 = time.monotonic()
        with self._lock:
            ids, vectors = self(user).snapshot()
        graph = AnnGraph(self.dim, self.params)
        for start in range(0, len(ids), chunk):
            if self._closing.is_set():
                return
            graph.add(ids[start:start + chunk], vectors[start:start + chunk])
        del vectors
        with self._lock:
            index = self(user)
            caught_up = index.attach(graph)
            index.unsaved = 0
        log.info("index graph of user %d built: %d faces in %.1f s (+%d caught up)",
                 user, len(ids), time.monotonic() - t0, caught_up)
        self._save(user)

    def _save(self, user: int) -> None:
        stem = self._stem(user)
        index = self._by_user.get(user)
        if stem is None or index is None or index.ann is None:
            return
        t0 = time.monotonic()
        with self._lock:
            index.unsaved = 0
            graph = index.ann
        graph.save(stem, {"user": user})
        log.info("index snapshot of user %d written: %d nodes in %.1f s", user, len(graph),
                 time.monotonic() - t0)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for background builds and snapshots; True if none is left running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._threads:
            thread = next(iter(list(self._threads.values())), None)
            if thread is None:
                break
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(left)
            if thread.is_alive():
                return False
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Stop background builds; snapshot graphs changed since their last snapshot."""
        self._closing.set()
        self.wait(timeout)
        for user, index in self._by_user.items():
            if index.ann is not None and index.unsaved and user not in self._threads:
                try:
                    self._save(user)
                except (OSError, RuntimeError) as exc:
                    log.warning("could not snapshot the index of user %d: %s", user, exc)
