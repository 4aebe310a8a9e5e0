"""stores/watchlists.py (and the events' cameras of stores/history.py) on SQLite and
PostgreSQL: settings are upserted and follow their gallery, unknown-face alerts only count
for existing cameras of the user."""

from __future__ import annotations

from typing import Any

from videodetector.backend.stores.cameras import SqlCameraStore
from videodetector.backend.stores.history import SqlHistoryStore
from videodetector.backend.stores.watchlists import SqlWatchListStore


def _gallery(db: Any, owner: int, name: str) -> None:
    with db.transaction() as conn:
        conn.execute("INSERT INTO galleries (user_id, name, created) VALUES (?, ?, 't')",
                     (owner, name))


def test_settings_upsert_and_follow_the_gallery(database: Any, user: int) -> None:  # noqa: F811
    store = SqlWatchListStore(database)
    _gallery(database, user, "vip")
    _gallery(database, user, "banned")
    store.put(user, "vip", True, "#00ff00", "low")
    store.put(user, "vip", False, "#0000ff", "strict")  # replaces
    store.put(user, "banned", True, "#ff0000", "medium")
    store.put(user, "gone", True, "#ff0000", "medium")  # no such gallery: not listed
    got = [(r["gallery"], bool(r["watchlist"]), r["color"], r["threshold"])
           for r in store.settings(user)]
    assert got == [("banned", True, "#ff0000", "medium"), ("vip", False, "#0000ff", "strict")]
    assert list(store.settings(user + 100_000)) == []
    store.forget(user, "banned")
    assert [r["gallery"] for r in store.settings(user)] == ["vip"]


def test_unknown_alerts_of_existing_cameras(database: Any, user: int) -> None:  # noqa: F811
    store, cams = SqlWatchListStore(database), SqlCameraStore(database)
    a, b = cams.create(user, {}), cams.create(user, {})
    store.set_unknown_alerts(user, a, True)
    store.set_unknown_alerts(user, b, True)
    store.set_unknown_alerts(user, b, False)
    store.set_unknown_alerts(user, "no-such-camera", True)
    assert store.unknown_alert_cameras(user) == {a}
    cams.delete(user, a)
    assert store.unknown_alert_cameras(user) == set()


def test_event_cameras(database: Any, user: int) -> None:  # noqa: F811
    cam = SqlCameraStore(database).create(user, {})
    ids = []
    with database.transaction() as conn:
        for cam_id in (cam, None):
            ids.append(conn.execute(
                "INSERT INTO faces (user_id, timestamp, ts, day, x1, y1, x2, y2, photo, "
                "photo_hash, thumbnail, normalized, embedding, cam_id) VALUES (?, 't', 0, 'd', "
                "0, 0, 1, 1, 'p', 'h', 't', 'n', ?, ?) RETURNING id",
                (user, b"\0" * 8, cam_id)).fetchone()[0])
    store = SqlHistoryStore(database)
    assert store.event_cameras(user, [*ids, 10**9]) == {ids[0]: cam}
    assert store.event_cameras(user + 100_000, ids) == {}
