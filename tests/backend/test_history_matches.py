"""The stored watch-list matches of history.py against the reference, watchlists.best_matches.

A real ``Backend`` (real SQLite, its in-memory index; no models needed) gets rows written
straight into its tables and index (as the bench does), then random operations: new events,
a face added to a watch list, a threshold changed, a list switched off or on. After each,
the matches ``event_matches`` gives (and the ``watchlist`` filter built on it) must be what
``best_matches`` computes from the index for every event. Also: the query plan of every
filter reads ``faces`` through an index.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videodetector.backend import history, watchlists
from videodetector.backend.params import Params
from videodetector.backend.service import Backend
from videodetector.backend.settings import Settings
from videodetector.backend.storage import PageRequest, page_ids

USER = 1
DIM = 128
LISTS = ("vip", "wanted")


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


class Store:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        # orthonormal identities: two of them score 0.47, below every threshold
        q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(DIM, 6)))
        self.centres = [unit(q[:, i]) for i in range(6)]

    def face(self, vec: np.ndarray, cam: str | None, gallery: str | None = None) -> int:
        b = self.backend
        with b.db.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO faces (user_id, cam_id, timestamp, ts, day, x1, y1, x2, y2, photo, "
                "photo_hash, thumbnail, normalized, embedding, model) VALUES (?, ?, "
                "'2024-01-01T00:00:00', 1704067200, '2024-01-01', 0, 0, 1, 1, 'p', 'h', 't', "
                "'n', ?, ?)", (USER, cam, vec.tobytes(), b.model))
            face = int(cur.lastrowid)
            if gallery:
                conn.execute("INSERT INTO face_galleries VALUES (?, ?, ?)",
                             (face, USER, gallery))
        b.index(USER).add(face, vec, cam)
        return face

    def near(self, centre: int, noise: float, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return unit(self.centres[centre] + rng.normal(scale=noise, size=DIM))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    backend = Backend(Settings(data_dir=tmp_path, preload_models=False))
    with backend.db.transaction() as conn:
        for name in LISTS:
            conn.execute("INSERT INTO galleries VALUES (?, ?, 'now')", (USER, name))
    yield Store(backend)
    backend.close()


def check_against_reference(store: Store) -> None:
    b = store.backend
    events = [r[0] for r in b.db.rows("SELECT id FROM faces WHERE user_id = ? AND cam_id IS "
                                      "NOT NULL ORDER BY id", (USER,))]
    want = watchlists.best_matches(b, USER, events)
    lists = history.refresh_matches(b, USER)
    got = history.stored_matches(b, USER, events, lists)
    q = history.prepare(b, USER, history.EventFilter(watchlist=True))
    filtered = page_ids(b.db, q.id_col, q.where, q.args, PageRequest(None)).ids
    q = history.prepare(b, USER, history.EventFilter(watchlist=False))
    rest = page_ids(b.db, q.id_col, q.where, q.args, PageRequest(None)).ids
    assert sorted(filtered + rest) == events
    for e in events:
        w, g = want.get(e), got.get(e)
        if (w is None) != (g is None) or (w and (w["gallery"], w["face_id"]) != (
                g["gallery"], g["face_id"])):
            # only a confidence within float noise of a threshold may go either way
            conf = (w or g)["confidence"]
            assert min(abs(conf - t) for t in watchlists.PRESETS.values()) < 1e-3, (e, w, g)
            continue
        if w:
            assert w == g
        assert (e in filtered) == (w is not None)


OPS = st.one_of(
    st.tuples(st.just("event"), st.integers(0, 5), st.sampled_from([0.02, 0.06, 0.09, 0.5]),
              st.integers(0, 10_000)),
    st.tuples(st.just("enroll"), st.sampled_from(LISTS), st.integers(0, 5),
              st.integers(0, 10_000)),
    st.tuples(st.just("threshold"), st.sampled_from(LISTS),
              st.sampled_from(list(watchlists.PRESETS))),
    st.tuples(st.just("toggle"), st.sampled_from(LISTS), st.booleans()),
)


def apply(store: Store, op: tuple[Any, ...]) -> None:
    b = store.backend
    if op[0] == "event":
        store.face(store.near(op[1], op[2], op[3]), f"cam{op[3] % 3}")
    elif op[0] == "enroll":
        store.face(store.near(op[2], 0.03, op[3]), None, op[1])
    elif op[0] == "threshold":
        current = watchlists.get_settings(b, USER, op[1])
        watchlists.put_settings(b, USER, op[1], Params(
            {"watchlist": current["watchlist"], "threshold": op[2]}))
    else:
        watchlists.put_settings(b, USER, op[1], Params({"watchlist": op[2]}))


@settings(max_examples=15, deadline=None)
@given(ops=st.lists(OPS, min_size=3, max_size=25))
def test_stored_matches_follow_the_reference(tmp_path_factory: pytest.TempPathFactory,
                                             ops: list[tuple[Any, ...]]) -> None:
    backend = Backend(Settings(data_dir=tmp_path_factory.mktemp("m"), preload_models=False))
    try:
        with backend.db.transaction() as conn:
            for name in LISTS:
                conn.execute("INSERT INTO galleries VALUES (?, ?, 'now')", (USER, name))
        store = Store(backend)
        watchlists.put_settings(backend, USER, "wanted", Params({"watchlist": True}))
        for i, op in enumerate(ops):
            apply(store, op)
            if i % 3 == 2 or i == len(ops) - 1:  # also several changes between two reads
                check_against_reference(store)
    finally:
        backend.close()


def test_matches_are_kept_incrementally_and_start_over_on_change(store: Store) -> None:
    b = store.backend
    watchlists.put_settings(b, USER, "wanted", Params({"watchlist": True, "threshold": "low"}))
    listed = store.face(store.near(0, 0.03, 1), None, "wanted")
    events = [store.face(store.near(i % 2, 0.03, 10 + i), "cam0") for i in range(6)]
    history.refresh_matches(b, USER)
    state = b.db.row("SELECT fingerprint, cursor FROM event_match_state WHERE user_id = ?",
                     (USER,))
    assert state["cursor"] == events[-1]
    got = history.stored_matches(b, USER, events, watchlists.watch_lists(b, USER))
    assert sorted(got) == events[0::2] and {m["face_id"] for m in got.values()} == {listed}
    # a new event: only it is matched (the cursor moves, the fingerprint stays)
    later = store.face(store.near(0, 0.03, 99), "cam1")
    history.refresh_matches(b, USER)
    again = b.db.row("SELECT fingerprint, cursor FROM event_match_state WHERE user_id = ?",
                     (USER,))
    assert again["fingerprint"] == state["fingerprint"] and again["cursor"] == later
    # a reading with nothing new writes nothing
    changes = b.db.scalar("SELECT total_changes()")
    history.refresh_matches(b, USER)
    assert b.db.scalar("SELECT total_changes()") == changes
    # the list is switched off: no matches at all
    watchlists.put_settings(b, USER, "wanted", Params({"watchlist": False}))
    history.refresh_matches(b, USER)
    assert b.db.scalar("SELECT COUNT(*) FROM event_matches") == 0
    # deleting an event deletes its match
    watchlists.put_settings(b, USER, "wanted", Params({"watchlist": True}))
    history.refresh_matches(b, USER)
    assert b.db.scalar("SELECT COUNT(*) FROM event_matches WHERE face_id = ?", (later,)) == 1
    with b.db.transaction() as conn:
        conn.execute("DELETE FROM faces WHERE id = ?", (later,))
    assert b.db.scalar("SELECT COUNT(*) FROM event_matches WHERE face_id = ?", (later,)) == 0


FILTERS = [history.EventFilter(), history.EventFilter(cam_ids=("cam0",)),
           history.EventFilter(cam_ids=("cam0", "cam1")), history.EventFilter(cam_ids=()),
           history.EventFilter(start=0, end=2e9), history.EventFilter(person_id=3),
           history.EventFilter(friend=True), history.EventFilter(friend=False),
           history.EventFilter(matched=True), history.EventFilter(matched=False),
           history.EventFilter(watchlist=True), history.EventFilter(watchlist=False),
           history.EventFilter(cam_ids=("cam0",), start=0, friend=True, watchlist=True)]


@pytest.mark.parametrize("f", FILTERS, ids=repr)
def test_no_filter_scans_the_events_table(store: Store, f: history.EventFilter) -> None:
    b = store.backend
    watchlists.put_settings(b, USER, "wanted", Params({"watchlist": True}))
    for i in range(30):
        store.face(store.near(i % 6, 0.05, i), f"cam{i % 3}")
    q = history.prepare(b, USER, f)
    for sql, args in ((f"SELECT {q.id_col} FROM {q.where} AND {q.id_col} < ? ORDER BY "
                       f"{q.id_col} DESC LIMIT 50", (*q.args, 1 << 40)),
                      (f"SELECT COUNT(*) FROM {q.where}", q.args)):
        plan = [r["detail"] for r in b.db.rows("EXPLAIN QUERY PLAN " + sql, args)]
        scans = [d for d in plan if d.startswith("SCAN") and "INDEX" not in d
                 and "CONSTANT" not in d]
        assert not scans, plan
    assert sum(history.counts(b, USER, f)[k] for k in ("watchlist", "unknown")) >= 0


def test_a_page_reads_only_near_its_bounds(store: Store) -> None:
    """A wide time range is read in id order; the "is there an older / newer page" checks
    start next to the page (they used to start at the oldest event and walk the whole
    history up to the range). Measured in SQLite VM steps, not time."""
    b = store.backend
    n = 3 * history.TS_PROBE
    vec = store.near(0, 0.05, 1).tobytes()
    with b.db.transaction() as conn:
        conn.executemany(
            "INSERT INTO faces (user_id, cam_id, timestamp, ts, day, x1, y1, x2, y2, photo, "
            "photo_hash, thumbnail, normalized, embedding, model) VALUES (?, 'cam0', "
            "'2024-01-01T00:00:00', ?, '2024-01-01', 0, 0, 1, 1, 'p', 'h', 't', 'n', ?, ?)",
            [(USER, 1_700_000_000.0 + i, vec, b.model) for i in range(n)])
    f = history.EventFilter(start=1_700_000_000.0 + n // 3)  # the newest two thirds
    q = history.prepare(b, USER, f)
    steps = [0]  # hundreds of SQLite VM instructions

    def count() -> int:
        steps[0] += 1
        return 0

    with b.db.lock:
        b.db.conn.set_progress_handler(count, 100)  # once per 100 VM instructions
        try:
            page = page_ids(b.db, q.id_col, q.where, q.args, PageRequest(50))
        finally:
            b.db.conn.set_progress_handler(None, 100)
    assert len(page.ids) == 50 and page.has_older and not page.has_newer
    assert steps[0] < 60, steps[0]  # ~50 index entries (the old way: ~250, n // 3 of them)
