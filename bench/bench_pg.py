"""PostgreSQL + pgvector as the shared store: migrate-db, identify at 100k/1M against the
embedded index, gallery filters, enroll with 1 and 2 backend processes, the write lock.

Run from the project root (starts its own PostgreSQL 16 + pgvector from the pgserver wheel,
fsync on):

    python bench/bench_pg.py [--sizes 100000,1000000] [--keep DIR | --reuse DIR]
    python bench/bench_pg.py --keep /work/bench-data --sizes 100000,1000000 --build-only all
    python bench/bench_pg.py --reuse /work/bench-data --sizes 100000,1000000 --processes ''
    python bench/bench_pg.py --lock-ceiling 20

0. Stores, per size: SQLite (``bench_index.fill``: the same folder layout, so
   ``bench_index.py --keep DIR`` shares them and their graph snapshots) and PostgreSQL
   (``fill_pg``: the product's schema, binary COPY of the same rows, indexes re-created
   afterwards: 1M in minutes plus the HNSW build, instead of ``migrate-db`` row by row).
   ``--keep DIR`` builds what is missing there (the PostgreSQL data directory included) and
   keeps it; ``--reuse DIR`` only measures. Without either, all lives in a temporary folder.
1. ``migrate-db`` of a ``--migrate-size`` SQLite store into a throwaway database: seconds
   per 100k faces.
2. Identify in this process through the product's ``Backend``: held-out probes ("known": a
   new sample of a stored identity; "stranger": a new identity), top-1 p50/p95 with pgvector
   (HNSW cosine index) and with the embedded index (exact scan, or faiss HNSW at or above
   ``index_ann_min_faces``); recall@1 against exact search (numpy over all vectors). Then
   the real ``fkvideo_backend serve`` on each store: start-up, ``/identify`` with a
   normalized face (face0) p50/p95, RSS. Then galleries of ``--galleries`` fractions of the
   faces on PostgreSQL: each step of ``pgsearch.nearest`` timed alone, hits out of n.
3. Enroll: 1, then 2 ``fkvideo_backend serve --db`` processes on one fresh database and one
   image folder; ``--clients`` threads post real photos (one face each) round robin over the
   processes for ``--seconds``; faces stored per second, latency p50/p95.
4. ``--lock-ceiling SECONDS``: small write transactions per second committed by 1 and 2
   processes through ``PgDatabase.transaction()`` (the cluster-wide advisory lock), and by
   plain psycopg transactions with and without that lock.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import _env  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)
import numpy as np
import requests
from _env import ROOT
from bench_backend import (
    DEFAULT_DATA,
    Server,
    backend_cli,
    enrollment_photos,
    query_photo,
    rss_mb,
)
from bench_detector import format_table
from bench_index import (
    MODEL,
    SYNTHETIC_META,
    centres,
    face0_latency,
    faces_of,
    fill,
    fit_sface,
    normalized_face,
    probes,
)

from tests.pg import PgCluster
from videodetector.backend import migrate_db
from videodetector.backend.auth import token_hash
from videodetector.backend.pgdb import WRITE_LOCK
from videodetector.backend.pgsearch import EF_SEARCH_DEFAULT, EF_SEARCH_MAX
from videodetector.backend.service import Backend, NewFace
from videodetector.backend.settings import Settings
from videodetector.backend.stores.faces import face_store
from videodetector.backend.timeutil import iso

PROBES = 200


def machine() -> str:
    return f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"


def settings_for(**values: object) -> Settings:
    """The synthetic rows are sface-2021dec's (faces.model's default): pinned, not auto."""
    return Settings(**{"embedding_model": "sface-2021dec",
                       **{k: v for k, v in values.items() if v is not None}})


def percentiles(seconds: Sequence[float]) -> tuple[float, float]:
    ms = 1000 * np.asarray(seconds)
    return round(float(np.percentile(ms, 50)), 2), round(float(np.percentile(ms, 95)), 2)


# ------------------------------------------------------------------------------ 0. fill


FACE_COLUMNS = ("id", "user_id", "meta", "timestamp", "ts", "day", "x1", "y1", "x2", "y2",
                "photo", "photo_hash", "thumbnail", "normalized", "cam_id", "embedding")
FACE_TYPES = ("int8", "int8", "text", "text", "float8", "text", "int8", "int8", "int8", "int8",
              "text", "text", "text", "text", "text", "bytea")


def new_pg_token(data_dir: Path, url: str) -> str:
    """A token made by the product's CLI on the database (it also creates the schema)."""
    out = subprocess.run(backend_cli("token", "--data-dir", str(data_dir), "--db", url),
                         check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return out.split()[-1]


def fill_pg(url: str, data_dir: Path, size: int, seed: int, batch: int = 20_000,
            workers: int = 2) -> dict:
    """A PostgreSQL store of ``size`` synthetic faces, the same rows (ids, vectors, cameras)
    as ``bench_index.fill`` puts into SQLite with the same seed, in the backend's own schema
    (made by ``fkvideo_backend token`` and ``Backend``): the indexes of ``faces`` are dropped,
    the rows are COPYed in binary by ``workers`` connections (the generated ``vec`` column is
    computed by the server; row triggers off: no ``face_log`` rows, no backend is serving),
    then the indexes are re-created from their own definitions (HNSW included) and the
    table analyzed. Returns seconds per phase."""
    import psycopg

    t0 = time.perf_counter()
    data_dir.mkdir(parents=True, exist_ok=True)
    token = new_pg_token(data_dir, url)
    Backend(settings_for(data_dir=data_dir, db=url, index_ann_min_faces=0)).close()
    with psycopg.connect(url, autocommit=True) as conn:
        user = conn.execute("SELECT id FROM users WHERE token_hash = %s",
                            (token_hash(token),)).fetchone()[0]
        indexes = conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = "
                               "'faces' AND indexname <> 'faces_pkey'").fetchall()
        for name, _ in indexes:
            conn.execute(f"DROP INDEX {name}")
    out = {"schema_s": round(time.perf_counter() - t0, 1)}
    t0 = time.perf_counter()
    _copy_faces(url, user, size, seed, batch, workers)
    out["copy_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT setval(pg_get_serial_sequence('faces', 'id'), %s)", (size,))
        conn.execute("SET maintenance_work_mem = '2GB'")
        conn.execute(f"SET max_parallel_maintenance_workers = {max(workers - 1, 0)}")
        for name, definition in indexes:
            t1 = time.perf_counter()
            conn.execute(definition)
            print(f"  index {name}: {time.perf_counter() - t1:.1f} s", flush=True)
        out["index_s"] = round(time.perf_counter() - t0, 1)
        conn.execute("VACUUM ANALYZE faces")
    (data_dir / "bench-token").write_text(token)  # written last: the store is complete
    return out


def _copy_faces(url: str, user: int, size: int, seed: int, batch: int, workers: int) -> None:
    import queue

    import psycopg

    stamp = datetime.now(UTC)
    fixed = (user, SYNTHETIC_META, iso(stamp), stamp.timestamp(), stamp.date().isoformat(),
             0, 0, 112, 112, f"{SYNTHETIC_META}/none.jpg", SYNTHETIC_META,
             f"{SYNTHETIC_META}/none.jpg", f"{SYNTHETIC_META}/none.png")
    batches: queue.Queue = queue.Queue(maxsize=2 * workers)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SET session_replication_role = replica")  # no row triggers
                while (item := batches.get()) is not None:
                    first, vecs, cams = item
                    with conn.cursor().copy(f"COPY faces ({', '.join(FACE_COLUMNS)}) FROM "
                                            "STDIN WITH (FORMAT BINARY)") as copy:
                        copy.set_types(list(FACE_TYPES))
                        for i, (v, c) in enumerate(zip(vecs, cams, strict=True)):
                            copy.write_row((first + i, *fixed, c, v.tobytes()))
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
            errors.append(exc)
            while batches.get() is not None:  # let the producer finish
                pass

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    done = 0
    for vecs, cams in faces_of(size, centres(size // 10, seed), seed, batch):
        batches.put((done + 1, vecs, cams))  # ids 1..size, as SQLite numbers them
        done += len(vecs)
        if done % 200_000 < batch:
            print(f"  {done} faces copied", flush=True)
    for _ in threads:
        batches.put(None)
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


# ------------------------------------------------------------------------------ 1. migrate


def migrate_row(url: str, size: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-pg-migrate-") as tmp:
        source = Path(tmp) / "sqlite-site"
        source.mkdir()
        filled = fill(source, size, seed)
        options = migrate_db.MigrateOptions(source, url, source, batch=5000, sample=20)
        t0 = time.perf_counter()
        report = migrate_db.migrate(options, settings_for, echo=lambda _: None)
        seconds = time.perf_counter() - t0
    return {"faces": size, "fill_s": round(filled, 1), "migrate_s": round(seconds, 1),
            "per_100k_s": round(seconds * 100_000 / size, 1), "verified": report.ok}


MIGRATE_COLUMNS = [("faces", "faces", ">"), ("fill_s", "SQLite fill s", ">"),
                   ("migrate_s", "migrate-db s", ">"), ("per_100k_s", "s per 100k", ">"),
                   ("verified", "verified", "<")]


# ------------------------------------------------------------------------------ 2. identify


@dataclass(frozen=True)
class Stores:
    """The two stores of one size: folders, database, and whether they are complete."""

    size: int
    sqlite_dir: Path  # bench_index's layout: shared with ``bench_index.py --keep ROOT``
    pg_dir: Path  # the PostgreSQL backend's data folder (token, no image)
    pg_url: str

    @classmethod
    def at(cls, root: Path, cluster: PgCluster, size: int, seed: int, centres_kind: str
           ) -> Stores:
        name = f"faces_{size}_{centres_kind}_s{seed}"
        return cls(size, root / f"faces-{size}-{centres_kind}", root / f"pg-{name}",
                   cluster.database(name))

    def ready(self) -> tuple[bool, bool]:
        return (self.sqlite_dir / "bench-token").exists(), (self.pg_dir / "bench-token").exists()


def build_stores(stores: Stores, cluster: PgCluster, seed: int, reuse: bool,
                 only_pg: bool = False) -> dict:
    """Fill what is missing (``reuse``: nothing may be missing; ``only_pg``: leave SQLite
    alone); seconds per phase."""
    sqlite_ok, pg_ok = stores.ready()
    sqlite_ok = sqlite_ok or only_pg
    if reuse and not (sqlite_ok and pg_ok):
        raise SystemExit(f"--reuse: the {stores.size}-face stores are not complete under "
                         f"{stores.sqlite_dir.parent} (build them with --keep first)")
    built: dict = {"faces": stores.size}
    if not sqlite_ok:
        shutil.rmtree(stores.sqlite_dir, ignore_errors=True)
        print(f"filling SQLite with {stores.size} faces ...", flush=True)
        built["sqlite_fill_s"] = round(fill(stores.sqlite_dir, stores.size, seed), 1)
    if not pg_ok:
        shutil.rmtree(stores.pg_dir, ignore_errors=True)
        name = stores.pg_url.rsplit("/", 1)[1]
        cluster.drop_database(name)
        cluster.database(name)
        print(f"filling PostgreSQL with {stores.size} faces ...", flush=True)
        built.update({f"pg_{k}": v for k, v in
                      fill_pg(stores.pg_url, stores.pg_dir, stores.size, seed).items()})
    if len(built) > 1:
        print(f"  built: {built}", flush=True)
    return built


def search_rows(stores: Stores, queries: dict[str, np.ndarray], which: str = "both",
                ef_values: Sequence[int] = (EF_SEARCH_DEFAULT,)) -> list[dict]:
    """identify top-1 in this process, through the product's Backend, on both stores; on
    PostgreSQL one row per ``pg_ef_search`` value of ``ef_values``, measured interleaved
    (each probe asked with every value in turn, the order rotating), so that a load that
    changes during the run weighs on every value alike."""
    rows = []
    # pgvector serves /identify on PostgreSQL; the in-memory index of that backend is not
    # searched by it, so it gets no graph here (no 20-minute background build at 1M)
    backends = {"pgvector HNSW": settings_for(data_dir=stores.pg_dir, db=stores.pg_url,
                                              index_ann_min_faces=0,
                                              pg_ef_search=ef_values[0]),
                "embedded (SQLite)": settings_for(data_dir=stores.sqlite_dir)}
    if which == "postgresql":
        del backends["embedded (SQLite)"]
    for name, settings in backends.items():
        t0 = time.perf_counter()
        backend = Backend(settings)
        try:
            backend.index.wait()  # the embedded graph: its snapshot, else a build
            ready = time.perf_counter() - t0
            # the face store is all that pg_ef_search configures (Backend: face_store(db,
            # settings.pg_ef_search)); one per value, so one backend serves every value
            variants = ({ef: face_store(backend.db, ef) for ef in dict.fromkeys(ef_values)}
                        if settings.db else {"-": backend.faces_store})
            (user,) = backend.index.users()
            ids, matrix = backend.index(user).snapshot()
            for store in variants.values():  # warm up
                backend.faces_store = store
                backend.identify(user, [_face(queries["known"][0])], 1, None)
            for kind, qs in queries.items():
                times, hits = _interleaved(backend, user, variants, qs)
                exact = ids[np.argmax(matrix @ qs.T, axis=0)]
                for ef in variants:
                    p50, p95 = percentiles(times[ef])
                    rows.append({"store": name, "ef_search": ef, "faces": stores.size,
                                 "probes": kind, "p50_ms": p50, "p95_ms": p95,
                                 "ready_s": round(ready, 1),
                                 "recall": round(float(np.mean(np.asarray(hits[ef]) == exact)),
                                                 3),
                                 "load": round(os.getloadavg()[0], 1)})
                    print(f"  {rows[-1]}", flush=True)
            del matrix
        finally:
            backend.close()
    return rows


def _interleaved(backend: Backend, user: int, variants: dict, qs: np.ndarray
                 ) -> tuple[dict, dict]:
    """Seconds and top-1 face id of each probe with each face store of ``variants``."""
    times: dict = {k: [] for k in variants}
    hits: dict = {k: [] for k in variants}
    keys = list(variants)
    for i, q in enumerate(qs):
        for k in keys[i % len(keys):] + keys[:i % len(keys)]:
            backend.faces_store = variants[k]
            t0 = time.perf_counter()
            found = backend.identify(user, [_face(q)], 1, None)[0]
            times[k].append(time.perf_counter() - t0)
            hits[k].append(found[0][0] if found else -1)
    return times, hits


def _face(vector: np.ndarray) -> NewFace:
    return NewFace(box=(0, 0, 1, 1), aligned=np.zeros((1, 1, 3), np.uint8),
                   embedding=np.asarray(vector, np.float32))


SEARCH_COLUMNS = [("store", "store", "<"), ("ef_search", "pg_ef_search", ">"),
                  ("faces", "faces", ">"), ("probes", "probes", "<"),
                  ("p50_ms", "identify p50 ms", ">"), ("p95_ms", "p95 ms", ">"),
                  ("recall", "recall@1 vs exact", ">"), ("ready_s", "backend ready s", ">"),
                  ("load", "load", ">")]


def server_rows(stores: Stores, photo: Path | None, n: int, which: str = "both"
                ) -> list[dict]:
    """The real ``fkvideo_backend serve`` on each store: start-up (launch to serving) and
    ``/identify`` p50/p95 with a normalized face (``face0``: embedding + search + JSON)."""
    if photo is None:
        return []
    face0 = normalized_face(photo)
    rows = []
    for name, data_dir, extra in (
            ("pgvector HNSW", stores.pg_dir, ["--db", stores.pg_url,
                                               "--index-ann-min-faces", "0"]),
            ("embedded (SQLite)", stores.sqlite_dir, [])):
        if which == "postgresql" and data_dir == stores.sqlite_dir:
            continue
        token = (data_dir / "bench-token").read_text().strip()
        server = Server(data_dir, 1, extra_args=extra).start(timeout=900)
        try:
            lat = face0_latency(server.url, token, face0, n)
            rss = rss_mb(server.proc.pid)
        finally:
            server.stop()
        rows.append({"store": name, "faces": stores.size,
                     "startup_s": round(server.startup_seconds, 1), "p50_ms": lat["p50_ms"],
                     "p95_ms": lat["p95_ms"], "rss_mb": rss,
                     "load": round(os.getloadavg()[0], 1)})
        print(f"  {rows[-1]}", flush=True)
    return rows


SERVER_COLUMNS = [("store", "store", "<"), ("faces", "faces", ">"),
                  ("startup_s", "server start s", ">"),
                  ("p50_ms", "/identify face0 p50 ms", ">"), ("p95_ms", "p95 ms", ">"),
                  ("rss_mb", "server RSS MB", ">"), ("load", "load", ">")]


def gallery_rows(stores: Stores, queries: np.ndarray, fractions: Sequence[float],
                 n: int = 10) -> list[dict]:
    """A gallery filter on PostgreSQL: for a gallery of each fraction of the faces, the
    steps of ``pgsearch.nearest`` timed alone (HNSW with ef_search 40 and 1000, the exact
    scan of the gallery): hits out of ``n`` and p50 ms of each, and the path it takes."""
    import psycopg

    from videodetector.backend.pgdb import PgDatabase
    db = PgDatabase(stores.pg_url)
    rows = []
    try:
        user = int(db.scalar("SELECT MIN(user_id) FROM faces"))
        for fraction in fractions:
            name = f"bench-{fraction:g}"
            with psycopg.connect(stores.pg_url, autocommit=True) as conn:  # made once, kept
                if not conn.execute("SELECT 1 FROM face_galleries WHERE gallery = %s LIMIT 1",
                                    (name,)).fetchone():
                    conn.execute("INSERT INTO face_galleries (face_id, user_id, gallery) "
                                 "SELECT id, user_id, %s FROM faces WHERE random() < %s",
                                 (name, fraction))
                    conn.execute("ANALYZE face_galleries")
            row = {"faces": stores.size, "gallery": f"{100 * fraction:g} %", "n": n,
                   "load": round(os.getloadavg()[0], 1)}
            for label, run in _gallery_steps(db, user, name, n):
                times, hits = [], []
                for q in queries:
                    t0 = time.perf_counter()
                    hits.append(len(run(q)))
                    times.append(time.perf_counter() - t0)
                row[f"{label}_hits"] = round(float(np.mean(hits)), 1)
                row[f"{label}_ms"] = percentiles(times)[0]
            rows.append(row)
            print(f"  {row}", flush=True)
    finally:
        db.close()
    return rows


def _gallery_steps(db: object, user: int, gallery: str, n: int) -> list:
    from videodetector.backend import pgsearch
    model, dim = "sface-2021dec", 128

    def hnsw(ef: int):
        def run(q: np.ndarray) -> list:
            sql, args = pgsearch.vector_search_sql(user, model, dim, q, n, gallery)
            return db.rows_with({"hnsw.ef_search": str(ef)}, sql, args)
        return run

    return [("ef40", hnsw(40)), ("ef1000", hnsw(1000)),
            ("exact", lambda q: db.rows(*pgsearch.exact_search_sql(user, model, dim, q, n,
                                                                    gallery))),
            ("nearest", lambda q: pgsearch.nearest(db, user, model, dim, q, n, gallery))]


GALLERY_COLUMNS = [("faces", "faces", ">"), ("gallery", "gallery", ">"), ("n", "n", ">"),
                   ("ef40_hits", "ef_search 40 hits", ">"), ("ef40_ms", "p50 ms", ">"),
                   ("ef1000_hits", "ef_search 1000 hits", ">"), ("ef1000_ms", "p50 ms", ">"),
                   ("exact_hits", "exact hits", ">"), ("exact_ms", "p50 ms", ">"),
                   ("nearest_hits", "nearest() hits", ">"), ("nearest_ms", "p50 ms", ">"),
                   ("load", "load", ">")]


# ------------------------------------------------------------------------------ 3. enroll


def enroll_row(cluster: PgCluster, root: Path, processes: int, clients: int,
               seconds: float, photos: list[bytes]) -> dict:
    url, data_dir = cluster.new_database("enroll"), root / f"enroll-{processes}"
    data_dir.mkdir()
    servers = [Server(data_dir, threads=1, extra_args=["--db", url])
               for _ in range(processes)]
    try:
        for server in servers:
            server.start()
        out = subprocess.run(backend_cli("token", "--data-dir", str(data_dir), "--db", url),
                             check=True, capture_output=True, text=True, cwd=ROOT).stdout
        token = out.split()[-1]
        for base in (server.url for server in servers):  # models loaded before the clock
            requests.post(base + "/v1/face", headers={"Authorization": f"Token {token}"},
                          files={"photo": ("w.jpg", photos[0], "image/jpeg")}, timeout=120)
        stats = _post_for(servers, token, clients, seconds, photos)
    finally:
        for server in servers:
            server.stop()
    p50, p95 = percentiles(stats["latencies"] or [0.0])
    return {"processes": processes, "clients": clients, "faces": stats["faces"],
            "errors": stats["errors"], "faces_per_s": round(stats["faces"] / seconds, 1),
            "p50_ms": p50, "p95_ms": p95}


def _post_for(servers: list, token: str, clients: int, seconds: float,
              photos: list[bytes]) -> dict:
    stats = {"faces": 0, "errors": 0, "latencies": []}
    lock, stop = threading.Lock(), time.monotonic() + seconds

    def client(k: int) -> None:
        session, i = requests.Session(), k
        headers = {"Authorization": f"Token {token}"}
        while time.monotonic() < stop:
            base = servers[i % len(servers)].url
            t0 = time.perf_counter()
            r = session.post(base + "/v1/face", headers=headers, timeout=60,
                             files={"photo": ("p.jpg", photos[i % len(photos)], "image/jpeg")})
            with lock:
                stats["latencies"].append(time.perf_counter() - t0)
                if r.status_code == 200:
                    stats["faces"] += len(r.json()["results"])
                else:
                    stats["errors"] += 1
            i += clients

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return stats


ENROLL_COLUMNS = [("processes", "backend processes", ">"), ("clients", "clients", ">"),
                  ("faces", "faces stored", ">"), ("errors", "errors", ">"),
                  ("faces_per_s", "faces/s", ">"), ("p50_ms", "p50 ms", ">"),
                  ("p95_ms", "p95 ms", ">")]


# ------------------------------------------------------------------------------ 4. lock


LOCK_TABLE = "CREATE TABLE IF NOT EXISTS bench_lock (id BIGSERIAL PRIMARY KEY, at DOUBLE " \
             "PRECISION NOT NULL, pid INTEGER NOT NULL)"


def lock_worker(url: str, seconds: float, mode: str) -> None:
    """One process: prints "ready" once connected, waits for a line on stdin (every process
    is ready: go), then commits small write transactions (one INSERT each) for ``seconds``;
    prints "commits cpu_seconds". ``mode``: "product" =
    ``PgDatabase.transaction()`` (BEGIN, the cluster-wide advisory lock, COMMIT), "plain" =
    the same without the lock (psycopg, for comparison), "plain+lock" = that with the
    same advisory lock (the lock's own cost, without the product's pool and SQL layer)."""
    import psycopg

    from videodetector.backend.pgdb import PgDatabase
    db = PgDatabase(url) if mode == "product" else None
    conn = psycopg.connect(url, autocommit=True) if mode != "product" else None
    lock = "SELECT pg_advisory_xact_lock(%s)" if mode == "plain+lock" else None
    pid = os.getpid()
    print("ready", flush=True)
    sys.stdin.readline()
    commits, cpu0, stop = 0, time.process_time(), time.monotonic() + seconds
    while time.monotonic() < stop:
        if db is not None:
            with db.transaction() as tx:
                tx.execute("INSERT INTO bench_lock (at, pid) VALUES (?, ?)", (time.time(), pid))
        else:
            with conn.transaction():
                if lock:
                    conn.execute(lock, (WRITE_LOCK,))
                conn.execute("INSERT INTO bench_lock (at, pid) VALUES (%s, %s)",
                             (time.time(), pid))
        commits += 1
    print(commits, round(time.process_time() - cpu0, 2), flush=True)
    if db is not None:
        db.close()
    if conn is not None:
        conn.close()


def lock_rows(cluster: PgCluster, seconds: float, processes: Sequence[int]) -> list[dict]:
    """Write transactions per second through the product's write lock with 1 and 2
    processes, and the same transactions without the lock."""
    import psycopg
    rows = []
    for mode in ("product", "plain+lock", "plain"):
        for n in processes:
            url = cluster.new_database("lock")
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(LOCK_TABLE)
            procs = [subprocess.Popen([sys.executable, __file__, "--lock-worker", url,
                                       str(seconds), mode], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, cwd=ROOT)
                     for _ in range(n)]
            for p in procs:  # every process connected before the clock starts
                if p.stdout.readline().strip() != "ready":
                    raise RuntimeError("a lock worker did not start")
            for p in procs:
                p.stdin.write("go\n")
                p.stdin.flush()
            outs = [p.communicate(timeout=seconds + 120)[0].split() for p in procs]
            commits = sum(int(o[0]) for o in outs)
            rows.append({"mode": LOCK_MODES[mode], "processes": n,
                         "commits": commits, "per_s": round(commits / seconds, 1),
                         "ms_per_commit": round(1000 * seconds / max(commits, 1), 2),
                         "client_cpu_ms": round(1000 * sum(float(o[1]) for o in outs)
                                                / max(commits, 1), 2),
                         "load": round(os.getloadavg()[0], 1)})
            print(f"  {rows[-1]}", flush=True)
    return rows


LOCK_MODES = {"product": "PgDatabase.transaction() (pool, advisory lock)",
              "plain+lock": "psycopg transaction + the advisory lock",
              "plain": "psycopg transaction, no lock"}
LOCK_COLUMNS = [("mode", "transactions", "<"), ("processes", "processes", ">"),
                ("commits", "commits", ">"), ("per_s", "commits/s", ">"),
                ("ms_per_commit", "ms per commit", ">"),
                ("client_cpu_ms", "client CPU ms/commit", ">"), ("load", "load", ">")]


# ------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", "--size", default="100000",
                        help="stored faces for identify, comma-separated (e.g. 100000,1000000)")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="build the stores (and the PostgreSQL server's data) in DIR, or "
                             "reuse those already there; DIR is kept")
    parser.add_argument("--reuse", type=Path, default=None, metavar="DIR",
                        help="measure on the stores built in DIR by --keep (nothing is built)")
    parser.add_argument("--migrate-size", type=int, default=None,
                        help="faces for the migrate-db row (default: the smallest size, at "
                             "most 100000; 0 skips it; --reuse: 0)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0, help="per enroll run")
    parser.add_argument("--processes", default="1,2",
                        help="backend processes per enroll run ('' skips enroll)")
    parser.add_argument("--requests", type=int, default=50,
                        help="/identify requests per server row (0 skips the server rows)")
    parser.add_argument("--probes", type=int, default=PROBES, help="held-out probes per kind")
    parser.add_argument("--centres", choices=("sface", "uniform"), default="sface",
                        help="identity centres (bench_index.py): fitted to real SFace "
                             "embeddings, or uniform on the sphere")
    parser.add_argument("--stores", choices=("both", "postgresql"), default="both",
                        help="identify rows on both stores, or on PostgreSQL only")
    parser.add_argument("--ef-search", default=str(EF_SEARCH_DEFAULT),
                        help="pg_ef_search values of the PostgreSQL identify rows, "
                             f"comma-separated (default {EF_SEARCH_DEFAULT})")
    parser.add_argument("--galleries", default="0.001,0.01,0.1",
                        help="gallery sizes (fractions of the faces) for the filtered rows on "
                             "PostgreSQL ('' skips them)")
    parser.add_argument("--build-only", choices=("all", "postgresql"), default=None,
                        help="with --keep: build the stores (all, or only the PostgreSQL ones) "
                             "and stop")
    parser.add_argument("--lock-ceiling", type=float, default=0.0, metavar="SECONDS",
                        help="measure only the write-lock ceiling, SECONDS per run")
    parser.add_argument("--lock-worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seed", type=int, default=1, help="as bench_index.py's")
    args = parser.parse_args(argv)
    if args.keep and args.reuse:
        parser.error("--keep and --reuse exclude each other")
    if args.build_only and not args.keep:
        parser.error("--build-only needs --keep DIR")
    args.sizes = [int(x) for x in str(args.sizes).split(",") if x.strip()]
    args.ef_search = [int(x) for x in str(args.ef_search).split(",") if x.strip()]
    if not args.ef_search or not all(1 <= ef <= EF_SEARCH_MAX for ef in args.ef_search):
        parser.error(f"--ef-search: values in 1..{EF_SEARCH_MAX}, got {args.ef_search}")
    if args.migrate_size is None:
        args.migrate_size = 0 if args.reuse or args.build_only else min(min(args.sizes),
                                                                         100_000)
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.lock_worker:
        url, seconds, mode = args.lock_worker
        lock_worker(url, float(seconds), mode)
        return {}
    print(f"# bench_pg {' '.join(argv if argv is not None else sys.argv[1:])}: {machine()}, "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC", flush=True)
    folder = args.keep or args.reuse
    with tempfile.TemporaryDirectory(prefix="bench-pg-") as tmp:
        root = Path(folder or tmp)
        cluster = (PgCluster.open(root / "postgres", durable=True) if folder
                   else PgCluster.start(durable=True))
        try:
            if args.lock_ceiling:
                locked = lock_rows(cluster, args.lock_ceiling, (1, 2))
                print(f"\nwrite lock ({machine()})\n" + format_table(locked, LOCK_COLUMNS))
                return {"machine": machine(), "lock": locked}
            return _measure(args, root, cluster)
        finally:
            cluster.stop()


def _measure(args: argparse.Namespace, root: Path, cluster: PgCluster) -> dict:
    photos = enrollment_photos(args.data)
    MODEL.clear()
    if args.centres == "sface" and photos:
        fit_sface(photos, root / "sface-stats.npz")  # the same cache as bench_index's
    centres_kind = args.centres if MODEL or args.centres == "uniform" else "uniform"
    migrated = []
    if args.migrate_size:
        url = cluster.new_database("migrate")
        migrated = [migrate_row(url, args.migrate_size, args.seed)]
        cluster.drop_database(url.rsplit("/", 1)[1])
        print(f"\nmigrate-db ({machine()})\n" + format_table(migrated, MIGRATE_COLUMNS))
    built, searched, served, galleries = [], [], [], []
    for size in args.sizes:
        stores = Stores.at(root, cluster, size, args.seed, centres_kind)
        built.append(build_stores(stores, cluster, args.seed, bool(args.reuse),
                                  args.build_only == "postgresql"))
        if args.build_only:
            continue
        queries = probes(centres(size // 10, args.seed), args.probes, args.seed)
        searched += search_rows(stores, queries, args.stores, args.ef_search)
        galleries += gallery_rows(stores, queries["known"][:50],
                                  [float(x) for x in args.galleries.split(",") if x.strip()])
        if args.requests:
            served += server_rows(stores, query_photo(photos) if photos else None,
                                  args.requests, args.stores)
    if args.build_only:
        return {"machine": machine(), "built": built}
    print(f"\nidentify in-process, top-1, {args.probes} held-out probes per kind, "
          f"{centres_kind} centres ({machine()})\n" + format_table(searched, SEARCH_COLUMNS))
    if galleries:
        print(f"\nidentify with a gallery filter, PostgreSQL ({machine()})\n"
              + format_table(galleries, GALLERY_COLUMNS))
    if served:
        print(f"\nreal server, one client ({machine()})\n"
              + format_table(served, SERVER_COLUMNS))
    enrolled = []
    if photos and args.processes.strip():
        photo_bytes = [p.read_bytes() for p in photos[:64]]
        enroll_root = Path(tempfile.mkdtemp(prefix="bench-pg-enroll-"))
        try:
            enrolled = [enroll_row(cluster, enroll_root, int(n), args.clients, args.seconds,
                                   photo_bytes) for n in args.processes.split(",")]
        finally:
            shutil.rmtree(enroll_root, ignore_errors=True)
        print(f"\nenroll ({machine()})\n" + format_table(enrolled, ENROLL_COLUMNS))
    return {"machine": machine(), "migrate": migrated, "built": built, "search": searched,
            "galleries": galleries, "server": served, "enroll": enrolled}


if __name__ == "__main__":
    main()
