"""stores.persons: persons, their faces, events and operator corrections, on SQLite and
PostgreSQL."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from videodetector.backend import person_store
from videodetector.backend.errors import ApiError
from videodetector.backend.index import UserIndex
from videodetector.backend.storage import PageRequest
from videodetector.backend.stores.faces import face_store
from videodetector.backend.stores.persons import PersonStore, SqlPersonStore

from .conftest import face_values


def _setup(db: Any) -> tuple[int, int, list[int], UserIndex]:
    faces = face_store(db)
    index = UserIndex()
    with db.transaction() as conn:
        a = person_store.create_person(conn, 1, "A")
        b = person_store.create_person(conn, 1)
        ids = [faces.insert(conn, face_values(1, n, person_id=p))
               for n, p in enumerate([a, a, b])]
    for n, (face_id, p) in enumerate(zip(ids, [a, a, b], strict=True)):
        index.add(face_id, np.full(128, n, np.float32), None, p)
    return a, b, ids, index


def test_persons_of_a_user_and_their_faces(db: Any) -> None:
    store: PersonStore = SqlPersonStore(db)
    a, b, ids, _ = _setup(db)
    assert store.get(1, a)["meta"] == "A"
    with pytest.raises(ApiError) as caught:
        store.get(2, a)  # another tenant's person: the same 404 as a free id
    assert caught.value.status == 404
    assert store.face_ids(1, a) == ids[:2]
    store.set_meta(1, b, "B")
    assert store.get(1, b)["meta"] == "B"
    assert store.page(1, PageRequest(None, None, None)).ids == [b, a]


def test_merge_and_undo_move_faces_and_record_events(db: Any) -> None:
    store: PersonStore = SqlPersonStore(db)
    a, b, ids, index = _setup(db)
    with pytest.raises(ApiError):
        store.merge(index, 1, a, a)
    store.merge(index, 1, a, str(b))
    assert store.face_ids(1, a) == ids and index.person_of(ids[2]) == a
    assert store.page(1, PageRequest(None, None, None)).ids == [a]  # b is merged away
    merge = store.events(1, b)[0]
    assert (merge["kind"], merge["other_id"]) == ("merge", b)
    undo = store.undo(index, 1, merge["id"])
    assert undo["kind"] == "unmerge"
    assert store.face_ids(1, b) == [ids[2]] and index.person_of(ids[2]) == b


def test_not_this_person_unassigns_the_faces(db: Any) -> None:
    store: PersonStore = SqlPersonStore(db)
    a, b, ids, index = _setup(db)
    with pytest.raises(ApiError):
        store.not_this_person(index, 1, a, [ids[2]])  # a face of b
    store.not_this_person(index, 1, a, [ids[0]])
    assert store.face_ids(1, a) == [ids[1]] and index.person_of(ids[0]) is None
    assert [e["kind"] for e in store.events(1, a)] == ["not_this_person"]
