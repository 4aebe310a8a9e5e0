"""In-memory embedding search: one matrix per user, searched with one matrix product.

Rows are kept contiguous (a removed row is replaced by the last one), so a search
over N faces is ``vectors[:N] @ query`` followed by a partial sort. Callers hold
the backend's lock around mutations and searches.
"""

from __future__ import annotations

import numpy as np

DIM = 128


class UserIndex:
    """Embeddings of one user's faces, with each face's camera and person for filtering."""

    def __init__(self, dim: int = DIM) -> None:
        self.dim = dim
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

    def _grow(self) -> None:
        cap = max(64, 2 * len(self._ids))
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
        """Up to ``n`` (face_id, cosine) pairs, most similar first."""
        if self.n == 0 or n <= 0:
            return []
        scores = self._vectors[: self.n] @ np.asarray(query, np.float32).reshape(-1)
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
        k = min(n, self.n)
        top = np.argpartition(-scores, k - 1)[:k] if k < self.n else np.arange(self.n)
        top = top[np.argsort(-scores[top], kind="stable")]
        out = []
        for i in top:
            s = float(scores[i])
            if s == -np.inf or (min_cos is not None and s < min_cos):
                break
            out.append((int(self._ids[i]), s))
        return out

    def person_of(self, face_id: int) -> int | None:
        i = self._row.get(face_id)
        if i is None:
            return None
        return int(self._persons[i]) or None


class IndexRegistry:
    """One UserIndex per user id."""

    def __init__(self) -> None:
        self._by_user: dict[int, UserIndex] = {}

    def __call__(self, user_id: int) -> UserIndex:
        index = self._by_user.get(user_id)
        if index is None:
            index = self._by_user[user_id] = UserIndex()
        return index

    def users(self) -> list[int]:
        return list(self._by_user)

    def total(self) -> int:
        return sum(len(i) for i in self._by_user.values())
