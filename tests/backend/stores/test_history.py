"""stores/history.py (with history_query.py and stores/report.py) on SQLite and PostgreSQL:
the index a filter is read through, pages and snapshot counts, and the stored watch-list
matches following the lists."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from videodetector.backend.history_query import EventFilter, build_query
from videodetector.backend.storage import PageRequest
from videodetector.backend.stores.history import SqlHistoryStore
from videodetector.backend.stores.report import SqlReportStore

MODEL = "test-model"


@dataclass(frozen=True)
class Watch:
    gallery: str
    threshold: str = "medium"
    min_confidence: float = 0.6


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(16).astype(np.float32)
    return v / np.linalg.norm(v)


def _faces(db: Any, owner: int, rows: list[tuple[str | None, int | None, np.ndarray]]
           ) -> list[int]:
    """Faces (cam_id, person_id, vector) of ``owner``, in id order."""
    with db.transaction() as conn:
        return [conn.execute(
            "INSERT INTO faces (user_id, timestamp, ts, day, x1, y1, x2, y2, photo, "
            "photo_hash, thumbnail, normalized, embedding, model, cam_id, person_id, friend) "
            "VALUES (?, 't', ?, 'd', 0, 0, 1, 1, 'p', 'h', 't', 'n', ?, ?, ?, ?, 0) "
            "RETURNING id", (owner, float(i), vec.tobytes(), MODEL, cam, person)).fetchone()[0]
            for i, (cam, person, vec) in enumerate(rows)]


def test_index_choice(database: Any, user: int) -> None:  # noqa: F811
    store = SqlHistoryStore(database)
    _faces(database, user, [("cam", None, _unit(1))])
    assert store.choose_index(user, EventFilter(person_id=1)) == "events_person"
    assert store.choose_index(user, EventFilter(cam_ids=("cam",))) == "events_cam"
    assert store.choose_index(user, EventFilter(start=0.0)) == "events_ts"
    assert store.choose_index(user, EventFilter(watchlist=True)) is None
    assert store.choose_index(user, EventFilter(friend=True)) == "events_friend"
    assert store.choose_index(user, EventFilter(matched=False)) == "events_unmatched"
    assert store.choose_index(user, EventFilter()) == "events_id"


def test_pages_and_counts(database: Any, user: int) -> None:  # noqa: F811
    store = SqlHistoryStore(database)
    ids = _faces(database, user, [("a", None, _unit(2)), ("b", 7, _unit(3)),
                                  ("a", 7, _unit(4)), (None, None, _unit(5))])
    store.refresh_matches(user, MODEL, [])

    def query(f: EventFilter) -> Any:
        return build_query(user, f, store.choose_index(user, f))

    assert store.page(query(EventFilter()), PageRequest(2)).ids == [ids[2], ids[1]]
    assert store.count({"all": query(EventFilter()), "a": query(EventFilter(cam_ids=("a",))),
                        "known": query(EventFilter(matched=True))}) == {
        "all": 3, "a": 2, "known": 2}
    with database.transaction() as conn:
        conn.execute("INSERT INTO cameras (id, user_id, seq, meta, created) "
                     "VALUES ('a', ?, 1, 'Gate', 't')", (user,))
    names = SqlReportStore(database)
    assert names.camera_names(user, ["a", "b", None]) == {"a": "Gate"}
    assert names.person_names(user, [None]) == {}


def test_matches_follow_the_lists(database: Any, user: int) -> None:  # noqa: F811
    store = SqlHistoryStore(database)
    near, far = _unit(10), _unit(11)
    listed, event_near, event_far = _faces(database, user, [
        (None, None, near), ("cam", None, near), ("cam", None, far)])
    with database.transaction() as conn:
        conn.execute("INSERT INTO galleries (user_id, name, created) VALUES (?, 'vip', 't')",
                     (user,))
        conn.execute("INSERT INTO face_galleries (face_id, user_id, gallery) "
                     "VALUES (?, ?, 'vip')", (listed, user))
    store.refresh_matches(user, MODEL, [Watch("vip")])
    rows = [tuple(r) for r in store.match_rows(user, [event_near, event_far, listed])]
    assert [(r[0], r[1], r[2]) for r in rows] == [(event_near, "vip", listed)]
    assert rows[0][3] > 0.9
    store.refresh_matches(user, MODEL, [])  # the list switched off: matches go
    assert list(store.match_rows(user, [event_near])) == []
    store.refresh_matches(user, MODEL, [Watch("vip", "strict", 1.01)])  # none that close
    assert list(store.match_rows(user, [event_near])) == []
