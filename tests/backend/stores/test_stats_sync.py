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
