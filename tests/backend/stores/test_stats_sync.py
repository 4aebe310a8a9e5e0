"""stores/stats.py and stores/sync.py on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from videodetector.backend.stores.stats import SqlStatsStore
from videodetector.backend.stores.sync import SqlSyncStore


def _face(conn: Any, owner: int, photo: str, person: int | None = None) -> int:
    return conn.execute(
        "INSERT INTO faces (user_id, timestamp, ts, day, x1, y1, x2, y2, photo, photo_hash, "
        "thumbnail, normalized, embedding, person_id) VALUES (?, 't', 0, 'd', 0, 0, 1, 1, ?, "
        "'h', 't', 'n', ?, ?) RETURNING id", (owner, photo, b"\0" * 8, person)).fetchone()[0]


def test_counts_files_and_created(database: Any, user: int) -> None:  # noqa: F811
    with database.transaction() as conn:
        for name in ("b", "a"):
            conn.execute("INSERT INTO galleries (user_id, name, created) VALUES (?, ?, ?)",
                         (user, name, f"created {name}"))
        ids = [_face(conn, user, f"p{i}", person=None) for i in range(3)]
        for face in ids[:2]:
            conn.execute("INSERT INTO face_galleries (face_id, user_id, gallery) "
                         "VALUES (?, ?, 'b')", (face, user))
    stats = SqlStatsStore(database)
    assert list(stats.face_counts(user).items()) == [("default", 3), ("a", 0), ("b", 2)]
    assert sorted(r["photo"] for r in stats.gallery_faces(user, "b")) == ["p0", "p1"]
    assert len(stats.gallery_faces(user, "default")) == 3
    assert stats.gallery_created(user, "a") == "created a"
    assert stats.gallery_created(user, "zz") is None
    assert stats.face_counts(user + 100_000) == {"default": 0}


def test_changes_after_a_cursor(database: Any, user: int) -> None:  # noqa: F811
    with database.transaction() as conn:
        for face, gallery, at in ((1, "g", 10.0), (2, "other", 20.0), (3, "g", 30.0),
                                  (4, "g", 40.0)):
            conn.execute("INSERT INTO face_changes (user_id, gallery, face_id, at) "
                         "VALUES (?, ?, ?, ?)", (user, gallery, face, at))
    sync = SqlSyncStore(database)
    rows = sync.changes(user, "g", 0, 10)
    assert [r["face_id"] for r in rows] == [1, 3, 4]
    assert [r["face_id"] for r in sync.changes(user, "g", rows[0]["seq"], 1)] == [3]
    first = sync.first_seq_after(25.0)
    assert first == rows[1]["seq"]
    assert sync.first_seq_after(1e12) is None


def test_a_merge_records_the_moved_faces_in_their_galleries(database: Any,  # noqa: F811
                                                            user: int) -> None:
    """person_store.merge_persons (automatic and operator merges, track joins through
    move_faces) records each moved face once per gallery it is in, after the cursor, in
    the merge's transaction; faces it does not move are not reported."""
    from videodetector.backend import changes, person_store
    from videodetector.backend.index import UserIndex

    with database.transaction() as conn:
        conn.execute("INSERT INTO galleries (user_id, name, created) VALUES (?, 'vip', 'c')",
                     (user,))
        a, b = (person_store.create_person(conn, user) for _ in range(2))
        kept = _face(conn, user, "k", person=a)
        moved = [_face(conn, user, f"m{i}", person=b) for i in range(3)]
        conn.execute("INSERT INTO face_galleries (face_id, user_id, gallery) "
                     "VALUES (?, ?, 'vip')", (moved[0], user))
        for face in (kept, *moved):
            changes.record(conn, user, face, (), changes.galleries_now(conn, face))
    sync = SqlSyncStore(database)
    cursor = sync.last_seq()
    index = UserIndex(dim=2)
    for face, person in ((kept, a), *((m, b) for m in moved)):
        index.add(face, [1.0, 0.0], None, person)
    with person_store.person_transaction(database, index) as (conn, log):
        person_store.merge_persons(conn, log, user, a, b, "auto")
    default = sync.changes(user, "default", cursor, 100)
    assert sorted(r["face_id"] for r in default) == sorted(moved)
    assert [r["face_id"] for r in sync.changes(user, "vip", cursor, 100)] == [moved[0]]
    assert not any(r["deleted"] for r in default)
    assert sync.last_seq() == max(r["seq"] for r in default)  # in the one transaction
