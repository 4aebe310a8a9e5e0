"""Which model made each stored embedding, and a face's vector for a given model.

A face row keeps the vector of the model that enrolled it (``faces.embedding``, made by
``faces.model``); vectors of other models, made by ``fkvideo_backend regenerate``
(``regenerate.py``), are in ``embeddings(face_id, model, vector)``. The serving backend loads
only the vectors of its ``embedding_model`` into its index, so one search never compares
vectors of two models. Every vector regenerate.py writes is also logged in ``regenerated``
so that a backend serving at the same time applies it (``Backend.refresh_regenerated``).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

import numpy as np

from videodetector.backend.storage import Database

# A face's vector for model :m (a bound parameter used twice): NULL when there is none.
VECTOR_SQL = ("CASE WHEN f.model = :m THEN f.embedding ELSE "
              "(SELECT e.vector FROM embeddings e WHERE e.face_id = f.id AND e.model = :m) END")


@dataclass(frozen=True)
class Coverage:
    """How many faces have an embedding of ``model``."""

    model: str
    faces: int
    covered: int

    @property
    def complete(self) -> bool:
        return self.covered == self.faces

    @property
    def missing(self) -> int:
        return self.faces - self.covered

    def as_json(self) -> dict[str, object]:
        return {"model": self.model, "faces": self.faces, "covered": self.covered,
                "missing": self.missing, "complete": self.complete,
                "fraction": 1.0 if not self.faces else round(self.covered / self.faces, 6)}


def coverage(db: Database, model: str, user: int | None = None,
             gallery: str | None = None) -> Coverage:
    """Faces (of ``user``, or all; of one custom ``gallery`` of the user) and how many of
    them have a ``model`` vector."""
    where, args = ("WHERE f.user_id = ?", [user]) if user is not None else ("", [])
    if gallery is not None and user is not None:
        where += (" AND f.id IN (SELECT g.face_id FROM face_galleries g WHERE g.user_id = ? "
                  "AND g.gallery = ?)")
        args += [user, gallery]
    row = db.row(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN f.model = ? OR EXISTS (SELECT 1 FROM embeddings "
        f"e WHERE e.face_id = f.id AND e.model = ?) THEN 1 ELSE 0 END), 0) FROM faces f {where}",
        [model, model, *args])
    return Coverage(model, int(row[0]), int(row[1]))


def vector_of(blob: bytes | None, dim: int = 128) -> np.ndarray | None:
    """A stored vector, or None when the blob is absent or not ``dim`` float32 values."""
    if blob is None or len(blob) != 4 * dim:
        return None
    return np.frombuffer(blob, np.float32)


def store_vector(conn: sqlite3.Connection, face_id: int, face_model: str, model: str,
                 vector: np.ndarray) -> None:
    """Inside a transaction: set the face's ``model`` vector and log it for serving backends.
    ``face_model`` is the face's ``faces.model`` (whose vector lives in the face row)."""
    blob = np.asarray(vector, np.float32).reshape(-1).tobytes()
    if model == face_model:
        conn.execute("UPDATE faces SET embedding = ? WHERE id = ?", (blob, face_id))
    else:
        conn.execute("INSERT OR REPLACE INTO embeddings (face_id, model, vector, created) "
                     "VALUES (?, ?, ?, ?)", (face_id, model, blob, time.time()))
    log_change(conn, face_id, model)


def log_change(conn: sqlite3.Connection, face_id: int, model: str) -> None:
    conn.execute("INSERT INTO regenerated (face_id, model) VALUES (?, ?)", (face_id, model))


def last_change(db: Database) -> int:
    return int(db.scalar("SELECT COALESCE(MAX(seq), 0) FROM regenerated"))
