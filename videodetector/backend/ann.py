"""Approximate nearest-neighbour candidates for large galleries: a faiss HNSW graph.

The graph only *proposes* candidates; ``index.UserIndex`` re-scores them exactly
against its float32 matrix and drops faces that are no longer stored, so:

* a deleted face is a tombstone here (HNSW cannot remove a node) and is never returned;
* the scores callers see are exact cosines, whatever the graph's precision;
* the graph is append-only: label ``i`` is the ``i``-th face added, ``face_ids[i]`` its id.

Snapshots (``save``/``load``) are three files written next to each other and renamed
into place, the ``.json`` last (it is the commit marker): the faiss index, the label ->
face id array, and the metadata that says what they cover.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from videodetector.core.durable import fsync_path

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class AnnParams:
    """HNSW shape and effort (measured in bench/bench_index.py)."""

    m: int = 32  # graph degree (2*m links per node on the base layer)
    ef_construction: int = 128
    ef_search: int = 128
    candidates: int = 16  # graph candidates re-scored exactly for a top-1 search

    def __post_init__(self) -> None:
        for name in ("m", "ef_construction", "ef_search", "candidates"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"AnnParams.{name} must be a positive int, got {value!r}")


class AnnGraph:
    """An HNSW graph over unit vectors (inner product = cosine); thread-safe."""

    def __init__(self, dim: int, params: AnnParams = AnnParams(),
                 index: faiss.Index | None = None, face_ids: np.ndarray | None = None) -> None:
        self.dim = dim
        self.params = params
        if index is None:
            index = faiss.IndexHNSWFlat(dim, params.m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = params.ef_construction
        index.hnsw.efSearch = params.ef_search
        self._index = index
        self._ids = np.zeros(0, np.int64) if face_ids is None else face_ids.astype(np.int64)
        if len(self._ids) != index.ntotal:
            raise ValueError(f"{len(self._ids)} face ids for {index.ntotal} graph nodes")
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def face_ids(self) -> np.ndarray:
        """Face id of every node (deleted faces included), in insertion order."""
        return self._ids

    def add(self, face_ids: np.ndarray, vectors: np.ndarray) -> None:
        face_ids = np.asarray(face_ids, np.int64).reshape(-1)
        vectors = np.ascontiguousarray(vectors, np.float32).reshape(-1, self.dim)
        if len(face_ids) != len(vectors):
            raise ValueError(f"{len(face_ids)} face ids for {len(vectors)} vectors")
        if not len(face_ids):
            return
        with self._lock:
            self._index.add(vectors)
            self._ids = np.concatenate([self._ids, face_ids])

    def search(self, query: np.ndarray, k: int) -> np.ndarray:
        """Face ids of up to ``k`` nodes near ``query`` (deleted ones included)."""
        q = np.ascontiguousarray(query, np.float32).reshape(1, self.dim)
        with self._lock:
            k = min(k, len(self._ids))
            if k <= 0:
                return np.zeros(0, np.int64)
            if k > self.params.ef_search:
                params = faiss.SearchParametersHNSW()
                params.efSearch = k
                _, labels = self._index.search(q, k, params=params)
            else:
                _, labels = self._index.search(q, k)
            labels = labels[0]
            return self._ids[labels[labels >= 0]]

    def stored_vectors(self, labels: np.ndarray) -> np.ndarray:
        """The graph's copy of the vectors at ``labels`` (to check a snapshot)."""
        with self._lock:
            return np.stack([self._index.reconstruct(int(i)) for i in labels])

    def memory_bytes(self) -> int:
        """Vectors + base-layer links + upper layers, as faiss lays them out."""
        hnsw = self._index.hnsw
        return int(len(self) * self.dim * 4 + hnsw.neighbors.size() * 4
                   + hnsw.levels.size() * 4 + hnsw.offsets.size() * 8 + self._ids.nbytes)

    # -- snapshots ---------------------------------------------------------------

    def save(self, stem: Path, meta: dict) -> None:
        """Write ``stem``.faiss/.ids.npy/.json atomically (the .json last)."""
        stem.parent.mkdir(parents=True, exist_ok=True)
        paths = snapshot_paths(stem)
        tmp = {k: p.with_name(p.name + ".tmp") for k, p in paths.items()}
        with self._lock:
            faiss.write_index(self._index, str(tmp["graph"]))
            with open(tmp["ids"], "wb") as f:
                np.save(f, self._ids)
            full = {**meta, "version": FORMAT_VERSION, "dim": self.dim, "nodes": len(self),
                    "m": self.params.m}
        for key in ("graph", "ids"):
            fsync_path(tmp[key])
            os.replace(tmp[key], paths[key])
        tmp["meta"].write_text(json.dumps(full))
        fsync_path(tmp["meta"])
        os.replace(tmp["meta"], paths["meta"])

    @classmethod
    def load(cls, stem: Path, dim: int, params: AnnParams = AnnParams()
             ) -> tuple[AnnGraph, dict] | None:
        """The snapshot at ``stem`` and its metadata, or None if absent or unusable."""
        paths = snapshot_paths(stem)
        if not all(p.exists() for p in paths.values()):
            return None
        try:
            meta = json.loads(paths["meta"].read_text())
            if meta.get("version") != FORMAT_VERSION or meta.get("dim") != dim:
                log.warning("index snapshot %s has another format; rebuilding", stem)
                return None
            ids = np.load(paths["ids"])
            index = faiss.read_index(str(paths["graph"]))
            if index.ntotal != meta.get("nodes") or len(ids) != index.ntotal:
                log.warning("index snapshot %s is incomplete; rebuilding", stem)
                return None
            return cls(dim, params, index, ids), meta
        except (OSError, ValueError, RuntimeError) as exc:
            log.warning("index snapshot %s is unreadable (%s); rebuilding", stem, exc)
            return None


def snapshot_paths(stem: Path) -> dict[str, Path]:
    return {"graph": stem.with_suffix(".faiss"), "ids": stem.with_suffix(".ids.npy"),
            "meta": stem.with_suffix(".json")}

