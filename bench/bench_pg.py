"""PostgreSQL + pgvector as the shared store: migrate-db, identify, and enroll with 1 and 2
backend processes.

Run from the project root (starts its own PostgreSQL 16 + pgvector from the pgserver wheel,
with fsync on, unless ``--db`` names a server):

    python bench/bench_pg.py [--size 100000] [--clients 8] [--seconds 30] [--db URL]

1. ``migrate-db``: a SQLite store with ``--size`` synthetic clustered faces (bench_index's
   generator: the same shape as real SFace embeddings, no image files) is moved to a fresh
   PostgreSQL database with ``migrate_db.migrate``; seconds, and seconds per 100k faces.
2. Identify on that store, in this process through the product's ``Backend``: held-out probes
   ("known": a new sample of a stored identity; "stranger": a new identity), top-1 search
   p50/p95 with pgvector (HNSW cosine index, the serving path on PostgreSQL) and with the
   embedded index (SQLite: exact scan, or faiss HNSW at or above ``index_ann_min_faces``);
   recall@1 of each against exact search (numpy over all vectors).
3. Enroll: 1, then 2 ``fkvideo_backend serve --db`` processes on one fresh database and one
   image folder; ``--clients`` threads post real photos (one face each) round robin over the
   processes for ``--seconds``; faces stored per second, latency p50/p95.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import numpy as np  # noqa: E402
import requests  # noqa: E402
from bench_backend import DEFAULT_DATA, Server, backend_cli, enrollment_photos  # noqa: E402
from bench_detector import format_table  # noqa: E402
from bench_index import centres, fill, probes  # noqa: E402

from tests.pg import PgCluster  # noqa: E402
from videodetector.backend import migrate_db  # noqa: E402
from videodetector.backend.service import Backend, NewFace  # noqa: E402
from videodetector.backend.settings import Settings  # noqa: E402

PROBES = 200


def machine() -> str:
    return f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"


def settings_for(**values: object) -> Settings:
    return Settings(**{k: v for k, v in values.items() if v is not None})


def percentiles(seconds: Sequence[float]) -> tuple[float, float]:
    ms = 1000 * np.asarray(seconds)
    return round(float(np.percentile(ms, 50)), 2), round(float(np.percentile(ms, 95)), 2)


# ------------------------------------------------------------------------------ 1. migrate


def migrate_row(root: Path, url: str, size: int, seed: int) -> dict:
    source = root / "sqlite-site"
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


def search_rows(root: Path, url: str, size: int, seed: int) -> list[dict]:
    source = root / "sqlite-site"
    queries = probes(centres(size // 10, seed), PROBES, seed)
    rows = []
    stores = {"pgvector HNSW": settings_for(data_dir=source, db=url),
              "embedded (SQLite)": settings_for(data_dir=source)}
    for name, settings in stores.items():
        backend = Backend(settings)
        try:
            user, matrix, ids = _vectors(backend)
            backend.identify(user, [_face(queries["known"][0])], 1, None)  # warm up
            for kind, qs in queries.items():
                times, hits = [], []
                for q in qs:
                    t0 = time.perf_counter()
                    found = backend.identify(user, [_face(q)], 1, None)[0]
                    times.append(time.perf_counter() - t0)
                    hits.append(found[0][0] if found else -1)
                exact = ids[np.argmax(matrix @ qs.T, axis=0)]
                p50, p95 = percentiles(times)
                rows.append({"store": name, "faces": size, "probes": kind, "p50_ms": p50,
                             "p95_ms": p95,
                             "recall": round(float(np.mean(np.asarray(hits) == exact)), 3)})
        finally:
            backend.close()
    return rows


def _face(vector: np.ndarray) -> NewFace:
    return NewFace(box=(0, 0, 1, 1), aligned=np.zeros((1, 1, 3), np.uint8),
                   embedding=np.asarray(vector, np.float32))


def _vectors(backend: Backend) -> tuple[int, np.ndarray, np.ndarray]:
    rows = backend.db.rows("SELECT user_id, id, embedding FROM faces ORDER BY id")
    ids = np.array([r[1] for r in rows])
    matrix = np.frombuffer(b"".join(bytes(r[2]) for r in rows), np.float32).reshape(len(rows), -1)
    return int(rows[0][0]), matrix, ids


SEARCH_COLUMNS = [("store", "store", "<"), ("faces", "faces", ">"), ("probes", "probes", "<"),
                  ("p50_ms", "identify p50 ms", ">"), ("p95_ms", "p95 ms", ">"),
                  ("recall", "recall@1 vs exact", ">")]


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


# ------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000, help="faces for 1 and 2")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0, help="per enroll run")
    parser.add_argument("--processes", default="1,2", help="backend processes per enroll run")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    photos = [p.read_bytes() for p in enrollment_photos(args.data)[:64]]
    cluster = PgCluster.start(durable=True)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-pg-") as tmp:
            root = Path(tmp)
            url = cluster.new_database("store")
            migrated = [migrate_row(root, url, args.size, args.seed)]
            print(f"\nmigrate-db ({machine()})\n" + format_table(migrated, MIGRATE_COLUMNS))
            searched = search_rows(root, url, args.size, args.seed)
            print(f"\nidentify ({machine()})\n" + format_table(searched, SEARCH_COLUMNS))
            enrolled = [enroll_row(cluster, root, int(n), args.clients, args.seconds, photos)
                        for n in args.processes.split(",")] if photos else []
            if enrolled:
                print(f"\nenroll ({machine()})\n" + format_table(enrolled, ENROLL_COLUMNS))
    finally:
        cluster.stop()
    return {"machine": machine(), "migrate": migrated, "search": searched,
            "enroll": enrolled}


if __name__ == "__main__":
    main()
