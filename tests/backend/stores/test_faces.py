"""stores.faces: face rows, gallery links, pages, idempotency keys, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from videodetector.backend.storage import PageRequest
from videodetector.backend.stores.faces import (
    FaceStore,
    IdempotencyStore,
    PgFaceStore,
    SqlIdempotencyStore,
    face_store,
)

from .conftest import face_values


def _faces(db: Any, user: int, metas: list[str], **over: Any) -> list[int]:
    store = face_store(db)
    with db.transaction() as conn:
        return [store.insert(conn, face_values(user, n, meta=m, **over))
                for n, m in enumerate(metas)]


def test_the_store_fits_the_database(db: Any) -> None:
    assert isinstance(face_store(db), PgFaceStore) == (db.dialect == "postgresql")


def test_rows_keep_the_order_asked_and_skip_other_users_faces(db: Any) -> None:
    store: FaceStore = face_store(db)
    mine = _faces(db, 1, ["a", "b"])
    theirs = _faces(db, 2, ["c"])
    rows = store.rows(1, [mine[1], theirs[0], mine[0]])
    assert [r["id"] for r in rows] == [mine[1], mine[0]]
    assert sorted(store.ids(1)) == sorted(mine)


def test_gallery_links_and_pages(db: Any) -> None:
    store: FaceStore = face_store(db)
    ids = _faces(db, 1, ["x", "x", "y"])
    with db.transaction() as conn:
        store.link(conn, 1, ids[0], ["g", "h"])
        store.link(conn, 1, ids[0], ["g"], keep_existing=True)  # already there: no error
        store.link(conn, 1, ids[2], ["g"])
    assert store.galleries_of(ids) == {ids[0]: ["default", "g", "h"], ids[1]: ["default"],
                                       ids[2]: ["default", "g"]}
    everything = PageRequest(None, None, None)
    assert store.page(1, everything).ids == sorted(ids, reverse=True)
    assert store.page(1, everything, gallery="g").ids == [ids[2], ids[0]]
    assert store.page(1, everything, meta="x").ids == [ids[1], ids[0]]
    assert store.page(1, everything, meta="x", gallery="g").ids == [ids[0]]
    first = store.page(1, PageRequest(1, None, None))
    assert first.ids == [ids[2]] and first.has_older
    result, rows = store.meta_page(1, everything)
    assert result.ids == [ids[2], ids[0]]
    assert (rows[ids[0]]["meta"], rows[ids[0]]["n"]) == ("x", 2)
    with db.transaction() as conn:
        store.unlink(conn, ids[0], ["h"])
    assert store.galleries_of([ids[0]])[ids[0]] == ["default", "g"]
    with db.transaction() as conn:
        store.unlink(conn, ids[0])
    assert store.galleries_of([ids[0]])[ids[0]] == ["default"]


def test_delete_update_and_friends(db: Any) -> None:
    store: FaceStore = face_store(db)
    ids = _faces(db, 1, ["a", "b"], cam_id="cam", person_id=7)
    assert store.photo_in_use("p0.jpeg")
    with db.transaction() as conn:
        store.update(conn, 1, ids[1], {"meta": "changed"})
        assert store.place(conn, ids[1])["cam_id"] == "cam"
        days = store.camera_days(conn, 1, 7, "cam", 0.0, 2e9)
        store.mark_friend(conn, ids[1])
    assert days == 1
    row = store.rows(1, [ids[1]])[0]
    assert (row["meta"], row["friend"]) == ("changed", 1)
    assert store.latest_camera_event(1) == max(ids)
    assert [r["id"] for r in store.camera_events(1, ids[0], 10)] == [ids[1]]
    with db.transaction() as conn:
        store.link(conn, 1, ids[0], ["g"])
        store.delete(conn, [ids[0]])
    assert store.rows(1, ids) == [store.rows(1, [ids[1]])[0]]
    assert not store.photo_in_use("p0.jpeg")
    assert store.galleries_of([ids[0]]) == {ids[0]: ["default"]}


def test_idempotency_keys_remember_and_expire(db: Any) -> None:
    keys: IdempotencyStore = SqlIdempotencyStore(db)
    assert keys.earlier(1, "k") is None
    with db.transaction() as conn:
        keys.remember(conn, 1, "k", [5, 6], at=100.0)
        keys.remember(conn, 1, "new", [7], at=300.0)
    assert keys.earlier(1, "k") == [5, 6] and keys.earlier(2, "k") is None
    with db.transaction() as conn:
        keys.forget_before(conn, 200.0)
    assert keys.earlier(1, "k") is None and keys.earlier(1, "new") == [7]
