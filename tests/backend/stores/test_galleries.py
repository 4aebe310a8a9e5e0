"""stores.galleries: custom galleries of a user, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from videodetector.backend.stores.faces import SqlFaceStore
from videodetector.backend.stores.galleries import GalleryStore, SqlGalleryStore

from .conftest import face_values


def test_galleries_are_per_user_listed_by_name_and_removable(db: Any) -> None:
    store: GalleryStore = SqlGalleryStore(db)
    with db.transaction() as conn:
        store.add(conn, 1, "zoo")
        store.add(conn, 1, "alpha")
        store.add(conn, 2, "zoo")
        assert store.exists(1, "alpha", conn)
    assert store.names(1) == ["alpha", "zoo"]
    assert store.names(3) == []
    assert store.exists(2, "zoo") and not store.exists(2, "alpha")
    with db.transaction() as conn:
        store.remove(conn, 1, "zoo")
    assert store.names(1) == ["alpha"] and store.names(2) == ["zoo"]


def test_face_ids_of_a_gallery(db: Any) -> None:
    galleries, faces = SqlGalleryStore(db), SqlFaceStore(db)
    with db.transaction() as conn:
        galleries.add(conn, 1, "g")
        ids = [faces.insert(conn, face_values(1, n)) for n in range(3)]
        faces.link(conn, 1, ids[0], ["g"])
        faces.link(conn, 1, ids[2], ["g"])
    assert sorted(galleries.face_ids(1, "g").tolist()) == [ids[0], ids[2]]
    assert galleries.face_ids(2, "g").tolist() == []
