"""History filters at scale: every /v1/history/search filter on a store of 100k camera events.

Run from the project root (about a minute; the figures are the SQL and Python of a request,
without HTTP):

    python bench/bench_history.py [--events 100000] [--repeat 30] [--keep DIR]

1. Fill: a fresh data folder (the product's ``Backend`` and its SQLite schema) gets rows
   inserted straight through the storage layer (``executemany``; no image files): 16 cameras
   with uneven traffic (the busiest about 10x the quietest), ~2k persons whose sighting counts
   follow a Zipf law (a few regulars, many seen once), 15 % of events with no person, friends
   among the regulars, capture times over 30 days in id order with some late arrivals, and
   synthetic embeddings (a unit centre per person plus noise; unknown faces random). Two
   watch-list galleries hold faces of 60 of the persons, so their events (a few %) match.
2. The first materialization of the watch-list matches of every event (``event_matches``).
3. For each filter: p50 / p95 of the first page (50 events, newest first, with the event
   rows) and of a deep page (``max_id`` at 90 % of the filter's result), and of the counts
   (events and alerts of the filter) -- and the query plan of the page query, which must
   use an index for ``faces`` (no ``SCAN faces`` without an index).

The machine may be shared; figures measured under load are floors, not the product's speed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _env  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)
import numpy as np

from videodetector.backend import history
from videodetector.backend.service import Backend
from videodetector.backend.settings import Settings
from videodetector.backend.storage import PageRequest, page_ids

USER = 1
CAMERAS = 16
PERSONS = 2000
DIM = 128
DAYS = 30
PAGE = 50
T0 = 1_700_000_000.0
WATCH = {"wanted": 20, "vip": 40}  # watch-list gallery -> persons on it
WATCH_FIRST = 100  # listed persons: 100.. (not the most frequent visitors)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def plan_events(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per event: camera index, person index (-1 = none), friend flag, capture time."""
    cam_w = 1.0 / np.arange(1, CAMERAS + 1) ** 0.8
    cams = rng.choice(CAMERAS, n, p=cam_w / cam_w.sum())
    person_w = 1.0 / np.arange(1, PERSONS + 1) ** 1.1
    persons = rng.choice(PERSONS, n, p=person_w / person_w.sum())
    persons[rng.random(n) < 0.15] = -1
    friend = (persons >= 0) & (persons < 40) & (rng.random(n) < 0.3)
    ts = T0 + np.sort(rng.random(n)) * DAYS * 86400
    late = rng.random(n) < 0.02  # spooled by a detector and posted late
    ts[late] -= rng.random(late.sum()) * 3600
    return {"cam": cams, "person": persons, "friend": friend, "ts": ts}


def fill(backend: Backend, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ev = plan_events(n, rng)
    centres = unit(rng.normal(size=(PERSONS, DIM)))
    now = iso(time.time())
    with backend.db.transaction() as conn:
        conn.executemany("INSERT INTO cameras (id, user_id, seq, meta, created) VALUES "
                         "(?, ?, ?, ?, ?)", [(f"cam{i:02d}", USER, i, f"Camera {i}", now)
                                             for i in range(CAMERAS)])
        conn.executemany("INSERT INTO persons (id, user_id, meta, created) VALUES (?, ?, ?, ?)",
                         [(i + 1, USER, f"person {i + 1}", now) for i in range(PERSONS)])
        first = WATCH_FIRST
        for gallery, count in WATCH.items():
            conn.execute("INSERT INTO galleries VALUES (?, ?, ?)", (USER, gallery, now))
            conn.execute("INSERT INTO gallery_settings VALUES (?, ?, 1, '#dc2626', 'medium')",
                         (USER, gallery))
            for p in range(first, first + count):  # one enrolled face per listed person
                vec = unit(centres[p] + rng.normal(scale=0.05, size=DIM))
                face = _insert(conn, None, None, False, T0, vec)
                conn.execute("INSERT INTO face_galleries VALUES (?, ?, ?)",
                             (face, USER, gallery))
            first += count
    for start in range(0, n, 20_000):
        sl = slice(start, min(n, start + 20_000))
        noise = rng.normal(scale=0.05, size=(sl.stop - sl.start, DIM))
        idx = ev["person"][sl]
        vecs = unit(np.where(idx[:, None] >= 0, centres[np.maximum(idx, 0)], 0) + noise
                    + (idx[:, None] < 0) * rng.normal(size=(len(idx), DIM)))
        with backend.db.transaction() as conn:
            for i, vec in zip(range(sl.start, sl.stop), vecs, strict=True):
                person = int(ev["person"][i])
                _insert(conn, f"cam{int(ev['cam'][i]):02d}", person + 1 if person >= 0 else None,
                        bool(ev["friend"][i]), float(ev["ts"][i]), vec)


def _insert(conn: Any, cam: str | None, person: int | None, friend: bool, ts: float,
            vec: np.ndarray) -> int:
    cur = conn.execute(
        "INSERT INTO faces (user_id, meta, person_id, cam_id, timestamp, ts, day, friend, x1, "
        "y1, x2, y2, photo, photo_hash, thumbnail, normalized, embedding, model) VALUES "
        "(?, '', ?, ?, ?, ?, ?, ?, 0, 0, 112, 112, 'x.jpg', 'h', 'x.jpg', 'x.png', ?, ?)",
        (USER, person, cam, iso(ts), ts, iso(ts)[:10], int(friend), vec.tobytes(),
         "sface-2021dec"))
    return int(cur.lastrowid)


def filters() -> dict[str, history.EventFilter]:
    day = T0 + 15 * 86400
    F = history.EventFilter
    return {
        "none": F(),
        "camera (busiest)": F(cam_ids=("cam00",)),
        "camera (quietest)": F(cam_ids=("cam15",)),
        "3 cameras": F(cam_ids=("cam03", "cam07", "cam11")),
        "time: 1 hour": F(start=day, end=day + 3600),
        "time: 1 day": F(start=day, end=day + 86400),
        "time: 20 days": F(start=day - 5 * 86400, end=day + 15 * 86400),
        "person (regular)": F(person_id=1),
        "person (rare)": F(person_id=1500),
        "friends": F(friend=True),
        "foes": F(friend=False),
        "matched": F(matched=True),
        "unmatched": F(matched=False),
        "watch-list match": F(watchlist=True),
        "no watch-list match": F(watchlist=False),
        "cam+day+match": F(cam_ids=("cam01",), start=day, end=day + 86400, watchlist=True),
        "person+friend+1 day": F(person_id=2, friend=True, start=day, end=day + 86400),
    }


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def page(backend: Backend, f: history.EventFilter, max_id: int | None) -> list[Any]:
    q = history.prepare(backend, USER, f)
    ids = page_ids(backend.db, q.id_col, q.where, q.args, PageRequest(PAGE, max_id)).ids
    return backend.face_rows(USER, ids)


def plan(backend: Backend, f: history.EventFilter) -> list[str]:
    q = history.prepare(backend, USER, f)
    rows = backend.db.rows(f"EXPLAIN QUERY PLAN SELECT {q.id_col} FROM {q.where} AND "
                           f"{q.id_col} < ? ORDER BY {q.id_col} DESC LIMIT {PAGE}",
                           (*q.args, 1 << 62))
    return [r["detail"] for r in rows]


def table_scans(details: list[str]) -> list[str]:
    """Plan steps that read a whole table (not through an index)."""
    return [d for d in details if d.startswith("SCAN ") and "INDEX" not in d
            and "CONSTANT ROW" not in d and "SUBQUERY" not in d]


def measure(backend: Backend, repeat: int) -> list[dict[str, Any]]:
    out = []
    for name, f in filters().items():
        q = history.prepare(backend, USER, f)
        every = page_ids(backend.db, q.id_col, q.where, q.args, PageRequest(None)).ids
        deep = every[int(len(every) * 0.9)] if len(every) > 2 * PAGE else None
        first = timed(lambda f=f: page(backend, f, None), repeat)
        deeper = timed(lambda f=f, d=deep: page(backend, f, d), repeat) if deep else None
        counted = timed(lambda f=f: history.counts(backend, USER, f), repeat)
        c = history.counts(backend, USER, f)
        details = plan(backend, f)
        out.append({"filter": name, "events": c["events"], "alerts": c["alerts"],
                    "first": first, "deep": deeper, "count": counted,
                    "plan": " / ".join(details), "scans": table_scans(details)})
    return out


def report(rows: list[dict[str, Any]]) -> str:
    head = ("| filter | events | alerts | first page p50/p95 ms | deep page p50/p95 ms | "
            "counts p50/p95 ms |\n|---|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        def ms(v: tuple[float, float] | None) -> str:
            return "-" if v is None else f"{v[0]:.1f} / {v[1]:.1f}"
        lines.append(f"| {r['filter']} | {r['events']} | {r['alerts']} | {ms(r['first'])} | "
                     f"{ms(r['deep'])} | {ms(r['count'])} |")
    return "\n".join(lines)


def run(n: int, repeat: int, keep: Path | None, seed: int = 7) -> list[dict[str, Any]]:
    data = keep or Path(tempfile.mkdtemp(prefix="bench-history-"))
    fresh = not (data / "backend.sqlite3").exists()
    try:
        backend = Backend(Settings(data_dir=data, preload_models=False,
                                   embedding_model="sface-2021dec")) if fresh else None
        if backend is not None:
            t0 = time.perf_counter()
            fill(backend, n, seed)
            print(f"filled {n} events in {time.perf_counter() - t0:.1f} s", flush=True)
            backend.close()
        backend = Backend(Settings(data_dir=data, preload_models=False,
                                   embedding_model="sface-2021dec"))
        t0 = time.perf_counter()
        history.refresh_matches(backend, USER)
        print(f"watch-list matches of every event: {time.perf_counter() - t0:.2f} s",
              flush=True)
        rows = measure(backend, repeat)
        backend.close()
    finally:
        if keep is None:
            shutil.rmtree(data, ignore_errors=True)
    print(report(rows))
    print("\nquery plans (page query):")
    for r in rows:
        print(f"- {r['filter']}: {r['plan']}")
    bad = [r["filter"] for r in rows if r["scans"]]
    print("\ntable scans: " + (", ".join(bad) if bad else "none"))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--keep", type=Path, help="data folder to fill once and reuse")
    args = ap.parse_args(argv)
    rows = run(args.events, args.repeat, args.keep)
    return 1 if any(r["scans"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
