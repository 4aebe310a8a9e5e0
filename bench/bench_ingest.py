"""Ingestion: detector snapshots posted to ``/v1/face`` by 1 and 8 clients.

Run from the project root (about 1 minute):

    python bench/bench_ingest.py [--clients 1,8] [--posts 400] [--only-norm]

Snapshots are made the way ``fkvideo_detector -r 0`` makes them: the real ``FacePipeline``
runs over the synthetic 1280x720 indoor clip (``bench_detector.indoor_clip``) and, when
``../shared/data`` is present, ``mpf_video_01.mp4`` (640x480); each ``Snapshot`` becomes the
daemon's own multipart request (``post.request.build_request``: the full frame as
``photo`` (JPEG), ``bbox``, ``face0`` (the 112x112 normalized PNG), ``cam_id``,
``timestamp``, ``detectorParams`` and an ``Idempotency-Key``). The snapshots are posted
round robin, each post with its own key (a new ``seq``), so every post stores a face.

The backend is the real ``fkvideo_backend serve`` in a subprocess (``bench_backend.Server``)
with a fresh data folder; the clients are threads of this process (``requests``, one
session each), so the client's CPU shares the machine with the server's. Per client count:
posts, faces stored, faces/s (faces / wall time), latency p50/p95, the server's CPU time per
face (user + sys, and the part of its event loop thread: HTTP, multipart, responses), the
part of it spent in the SFace embedding and the rest ("outside SFace": what the ingestion
path itself costs; timed by ``bench/ingest_probe/sitecustomize.py`` in the server), the
part of the server's CPU spent in Python's cyclic garbage collector (``gc.callbacks``), the
client's own CPU per face (this process), "faces/s the server CPU allows" (cores / server
CPU per face: the capacity figure that does not depend on what else runs on the machine)
and the server's RSS after the run.

Then (``--stages N``) the CPU per face of each stage of ``Backend.add_faces`` (decode,
embedding, thumbnail, encodes, file writes, SQL), measured in this process with
``time.process_time`` on the same snapshots, one post at a time. On a loaded machine every
CPU figure is inflated (SFace: 14.5 ms idle, 25-30 ms at load 15): compare runs taken at the
same load.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import _env_omp1  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)
import _proc
import numpy as np
import requests
from _env import ROOT
from bench_backend import Server, new_token, rss_mb
from bench_detector import format_table, indoor_clip, machine_line

from videodetector.detector.snapshot import Snapshot

DEFAULT_DATA = ROOT.parent / "shared" / "data"


def detector_config(clip: Path, token: str, url: str, only_norm: bool = False):
    from videodetector.detector.config import parse_config

    args = ["--source", str(clip), "--camid", "bench", "--api-url", url,
            "--api-token", token, "-r", "0"]
    return parse_config(args + (["--only-norm"] if only_norm else []))


def clip_snapshots(clip: Path, limit: int) -> list[Snapshot]:
    """The snapshots ``fkvideo_detector -r 0`` makes of ``clip`` (at most ``limit``)."""
    from videodetector.core.models import YuNetDetector
    from videodetector.detector.pipeline import CameraSpec, FacePipeline
    from videodetector.detector.video.source import open_video, parse_source

    cfg = detector_config(clip, "t", "http://127.0.0.1:9")
    pipe = FacePipeline(cfg, CameraSpec("bench", str(clip)), YuNetDetector(), live=False)
    snaps: list[Snapshot] = []
    with open_video(parse_source(str(clip)), {}, 0, realtime=False) as video:
        for frame in video:
            snaps += pipe.process(frame)
            if len(snaps) >= limit:
                return snaps[:limit]
    return (snaps + pipe.finish())[:limit]


def make_snapshots(data: Path, limit: int = 32) -> list[Snapshot]:
    clips = [indoor_clip(16.0)]
    shared = data / "clips_faces" / "mpf_video_01.mp4"
    if shared.is_file():
        clips.append(shared)
    snaps: list[Snapshot] = []
    for clip in clips:
        snaps += clip_snapshots(clip, limit)
    if not snaps:
        raise SystemExit("the detector made no snapshot of the bench clips")
    return snaps


def _user_sys(stat_path: str) -> tuple[float, float]:
    with open(stat_path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    """The server's CPU seconds so far; ProcessLookupError when it is gone."""
    return _proc.process_cpu(pid, gone=None)


@dataclasses.dataclass(frozen=True)
class ServerCpu:
    """The server's CPU seconds so far: user, sys, and the event loop's share (its main
    thread: HTTP, multipart parsing, responses); the rest ran in worker threads (the
    handler's decode, embedding, files, SQL) or the runtimes' own threads."""

    user: float
    sys: float
    loop: float

    @classmethod
    def of(cls, pid: int) -> ServerCpu:
        user, system = _user_sys(f"/proc/{pid}/stat")
        return cls(user, system, sum(_user_sys(f"/proc/{pid}/task/{pid}/stat")))

    def __sub__(self, other: ServerCpu) -> ServerCpu:
        return ServerCpu(self.user - other.user, self.sys - other.sys, self.loop - other.loop)

    @property
    def total(self) -> float:
        return self.user + self.sys


class Poster:
    """``posts`` detector requests spread over ``clients`` threads."""

    def __init__(self, url: str, token: str, snaps: Sequence[Snapshot], only_norm: bool,
                 run: str) -> None:
        from videodetector.detector.post.request import build_request

        cfg = detector_config(Path("x.mp4"), token, url, only_norm)
        self.requests = [build_request(s, cfg) for s in snaps]
        self.snaps = snaps
        self.cfg = cfg
        self.run = run
        self.lock = threading.Lock()
        self.next = 0
        self.latencies: list[float] = []
        self.faces = 0
        self.errors: list[str] = []

    def _take(self, total: int) -> int | None:
        with self.lock:
            if self.next >= total:
                return None
            self.next += 1
            return self.next - 1

    def client(self, total: int) -> None:
        from videodetector.detector.post.request import build_request

        session = requests.Session()
        while (i := self._take(total)) is not None:
            snap = self.snaps[i % len(self.snaps)]
            req = build_request(dataclasses.replace(snap, seq=i, run_id=self.run), self.cfg)
            t0 = time.perf_counter()
            resp = session.post(req.url, headers=dict(req.headers), data=list(req.data),
                                files=list(req.files), timeout=120)
            dt = time.perf_counter() - t0
            with self.lock:
                self.latencies.append(dt)
                if resp.status_code == 200:
                    self.faces += len(resp.json()["results"])
                elif len(self.errors) < 5:
                    self.errors.append(f"{resp.status_code} {resp.text[:200]}")


PROBE_DIR = ROOT / "bench" / "ingest_probe"  # its sitecustomize times the server's SFace runs


def probe_env(probe_file: Path) -> dict[str, str]:
    """The environment of a server that reports its embedding CPU to ``probe_file``."""
    path = os.pathsep.join(p for p in (str(PROBE_DIR), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "BENCH_INGEST_PROBE": str(probe_file)}


def probe_seconds(pid: int, probe_file: Path | None) -> tuple[float, float] | None:
    """The server's CPU seconds in ``FaceEngine.embed_aligned`` and in Python's garbage
    collector so far (None: no probe): asked with SIGUSR1, answered in ``probe_file``."""
    if probe_file is None:
        return None
    probe_file.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            embed, gc_cpu = (float(v) for v in probe_file.read_text().split())
            return embed, gc_cpu
        except (OSError, ValueError):  # not written yet
            time.sleep(0.02)
    return None


def run_clients(server: Server, token: str, snaps: Sequence[Snapshot], clients: int,
                posts: int, only_norm: bool, probe_file: Path | None = None) -> dict:
    poster = Poster(server.url, token, snaps, only_norm, f"run{clients}-{time.time()}")
    pid = server.proc.pid
    probe0 = probe_seconds(pid, probe_file)
    cpu0 = ServerCpu.of(pid)
    client0 = time.process_time()
    threads = [threading.Thread(target=poster.client, args=(posts,)) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    cpu = ServerCpu.of(pid) - cpu0
    client = time.process_time() - client0
    probe1 = probe_seconds(pid, probe_file)
    faces = max(1, poster.faces)
    embed = gc_cpu = None
    if probe0 is not None and probe1 is not None:
        embed, gc_cpu = ((b - a) / faces for a, b in zip(probe0, probe1, strict=True))
    ms = 1000 * np.array(poster.latencies)
    for err in poster.errors:
        print(f"  error: {err}", flush=True)
    return {"clients": clients, "posts": posts, "faces": poster.faces,
            "seconds": round(wall, 2), "faces_per_s": round(poster.faces / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "cpu_ms_per_face": round(1000 * cpu.total / faces, 1),
            "user_ms": round(1000 * cpu.user / faces, 1),
            "sys_ms": round(1000 * cpu.sys / faces, 1),
            "loop_ms": round(1000 * cpu.loop / faces, 1),
            "embed_ms": None if embed is None else round(1000 * embed, 1),
            "outside_ms": None if embed is None else round(1000 * (cpu.total / faces - embed),
                                                           1),
            "gc_ms": None if gc_cpu is None else round(1000 * gc_cpu, 2),
            "client_ms_per_face": round(1000 * client / faces, 1),
            "capacity": (round(poster.faces / cpu.total * len(os.sched_getaffinity(0)), 1)
                         if cpu.total > 0 else None),
            "rss_mb": rss_mb(pid), "load": round(os.getloadavg()[0], 2)}


def served_model(url: str, token: str) -> tuple[str, str]:
    """The embedding model the server resolved (``embedding_model`` auto) and why
    (``GET /v1/models``)."""
    r = requests.get(url + "/v1/models", headers={"Authorization": f"Token {token}"},
                     timeout=30)
    r.raise_for_status()
    body = r.json()
    return body["active"], body.get("chosen_because", "")


COLUMNS = (
    ("model", "model", "<"), ("clients", "clients", ">"), ("posts", "posts", ">"),
    ("faces", "faces stored", ">"),
    ("seconds", "seconds", ">"), ("faces_per_s", "faces/s", ">"), ("p50_ms", "p50 ms", ">"),
    ("p95_ms", "p95 ms", ">"), ("cpu_ms_per_face", "server CPU ms/face", ">"),
    ("user_ms", "user", ">"), ("sys_ms", "sys", ">"), ("loop_ms", "event loop", ">"),
    ("embed_ms", "in SFace", ">"), ("outside_ms", "outside SFace", ">"),
    ("gc_ms", "of which Python GC", ">"),
    ("client_ms_per_face", "client CPU ms/face", ">"),
    ("capacity", "faces/s the server CPU allows", ">"),
    ("rss_mb", "server RSS MB", ">"), ("load", "load after", ">"),
)


STAGES = (  # (name, owner, attribute): the handler's domain calls, timed in-process
    ("validate photo (thumbnail made on read)", "service", "validate_photo"),
    ("decode photo (for thumbnails)", "service", "decode_for_thumbnails"),
    ("decode face0 (cv2, a plain RGB PNG)", "service", "decode_plain_png"),
    ("decode face0 (Pillow, any other)", "service", "decode_photo"),
    ("embed (SFace)", "engine", "FaceEngine.embed_aligned"),
    ("thumbnail crop", "imaging", "Photo.thumbnail"),
    ("encode thumbnail/normalized", "service", "encode"),
    ("write files + fsync", "storage", "FileStore.write_all"),
    ("SQL: insert rows", "service", "Backend._insert_faces"),
    ("render the response rows", "service", "Backend.face_rows"),
)


def _timed(name: str, fn, totals: dict[str, float]):
    # process CPU, not the thread's: the embedding runs in the model runtime's own threads
    # (OpenVINO) while the calling thread waits; the posts run one at a time here
    def wrapper(*args, **kwargs):
        t0 = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.process_time() - t0
    return wrapper


def stage_cpu(snaps: Sequence[Snapshot], posts: int, model: str = "auto") -> list[dict]:
    """CPU (process time: the posts run one at a time, and the model runtime has threads of
    its own) per face of each stage of ``Backend.add_faces`` run in this process on the same
    snapshots (what the server's worker threads do per POST, without
    HTTP: the server's event loop column is that part); ``model``: the server's."""
    from videodetector.backend import engine, imaging, service, storage
    from videodetector.backend.settings import Settings

    owners = {"service": service, "engine": engine, "storage": storage, "imaging": imaging}
    totals: dict[str, float] = {}
    saved = []
    for name, owner, attr in STAGES:
        obj = owners[owner]
        if "." in attr:
            obj, attr = getattr(obj, attr.split(".")[0]), attr.split(".")[1]
        if not hasattr(obj, attr):  # an older tree (an A/B run): not timed
            continue
        saved.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, _timed(name, getattr(obj, attr), totals))
    try:
        with tempfile.TemporaryDirectory(prefix="bench-stages-") as tmp:
            backend = service.Backend(Settings(data_dir=Path(tmp), embedding_model=model))
            run = f"stages-{time.time()}"

            def post(i: int) -> None:
                snap = dataclasses.replace(snaps[i % len(snaps)], seq=i, run_id=run)
                ids = backend.add_faces(1, service.FacePost(
                    photo=snap.frame_jpeg, face_images=[snap.face_png],
                    boxes=[tuple(float(v) for v in snap.bbox)],
                    cam_id=snap.cam_id, timestamp=snap.timestamp,
                    idempotency_key=snap.idempotency_key))
                backend.face_rows(1, ids)

            for i in range(4):  # warm-up: models, SQL statements
                post(i)
            totals.clear()
            t0 = time.process_time()
            for i in range(posts):
                post(i + 4)
            total = time.process_time() - t0
            backend.close()
    finally:
        for obj, attr, fn in saved:
            setattr(obj, attr, fn)
    rows = [{"stage": name, "ms": round(1000 * totals.get(name, 0.0) / posts, 2)}
            for name, _, _ in STAGES]
    rows.append({"stage": "other (SQL reads, persons, checks)",
                 "ms": round(1000 * (total - sum(totals.values())) / posts, 2)})
    rows.append({"stage": "total Backend.add_faces + rows", "ms": round(1000 * total / posts, 2)})
    return rows


def start_profile(base: Path | None, clients: int, pid: int, extra: Sequence[str] = ()
                  ) -> subprocess.Popen | None:
    if base is None:
        return None
    out = base.with_name(f"{base.name}.{clients}.txt")
    proc = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--format", "raw",
                             "--rate", "200", "--output", str(out), "--nonblocking", "--threads",
                             *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the first post
    return proc


def stop_profile(proc: subprocess.Popen | None) -> None:
    if proc is not None:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="test media folder")
    p.add_argument("--clients", default="1,8", help="client counts, one run each")
    p.add_argument("--posts", type=int, default=400, help="posts per run")
    p.add_argument("--warmup", type=int, default=8, help="untimed posts before the runs")
    p.add_argument("--only-norm", action="store_true",
                   help="post only face0, without the full frame (--only-norm)")
    p.add_argument("--model-threads", type=int, default=1, help="backend --model-threads")
    p.add_argument("--server-args", default="", help="extra fkvideo_backend serve options")
    p.add_argument("--stages", type=int, default=100,
                   help="posts run in-process for the per-stage CPU table (0: none)")
    p.add_argument("--profile", type=Path, default=None,
                   help="record the server with py-spy during each run into "
                        "PROFILE.<clients>.txt (collapsed stacks per thread; needs py-spy)")
    p.add_argument("--profile-args", default="",
                   help="extra py-spy record options, e.g. '--gil' (only samples holding the "
                        "GIL: Python CPU) or '--idle'")
    args = p.parse_args(argv)
    args.clients = [int(c) for c in args.clients.split(",") if c.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark; print and return {"machine", "snapshots", "rows", "table"}."""
    args = parse_args(argv)
    print(f"# bench_ingest: {machine_line()}", flush=True)
    snaps = make_snapshots(args.data)
    sizes = sorted({(len(s.frame_jpeg or b""), len(s.face_png)) for s in snaps})
    print(f"{len(snaps)} detector snapshots (photo JPEG {sizes[0][0]}-{sizes[-1][0]} bytes, "
          f"face0 PNG ~{sizes[0][1]} bytes)", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        data_dir = Path(tmp) / "data"
        token = new_token(data_dir)
        probe: Path | None = Path(tmp) / "embed-cpu.txt"
        saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "BENCH_INGEST_PROBE")}
        os.environ.update(probe_env(probe))
        try:
            server = Server(data_dir, args.model_threads, args.server_args.split()).start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        if not probe.exists():  # the probe did not load: SIGUSR1 would end the server
            probe = None
        try:
            model, why = served_model(server.url, token)
            print(f"server embedding model: {model} ({why})", flush=True)
            if args.warmup:
                run_clients(server, token, snaps, 1, args.warmup, args.only_norm, probe)
            for clients in args.clients:
                spy = start_profile(args.profile, clients, server.proc.pid,
                                    args.profile_args.split())
                row = run_clients(server, token, snaps, clients, args.posts, args.only_norm,
                                  probe)
                stop_profile(spy)
                row = {"model": model, **row}
                print(f"  {clients} client(s): {row['faces_per_s']} faces/s, p50 "
                      f"{row['p50_ms']} ms, p95 {row['p95_ms']} ms", flush=True)
                rows.append(row)
        finally:
            server.stop()
    table = format_table(rows, COLUMNS)
    what = "face0 only" if args.only_norm else "photo + bbox + face0"
    print(f"\nPOST /v1/face, detector snapshots ({what}):\n")
    print(table)
    model = rows[0]["model"] if rows else "auto"
    stages = stage_cpu(snaps, args.stages, model) if args.stages > 0 else []
    if stages:
        print(f"\nCPU per face by stage, Backend.add_faces in-process ({args.stages} posts of "
              f"photo + bbox + face0, {model}; load {os.getloadavg()[0]:.2f}):\n")
        print(format_table(stages, (("stage", "stage", "<"), ("ms", "CPU ms/face", ">"))))
    return {"machine": machine_line(), "snapshots": len(snaps), "rows": rows, "table": table,
            "stages": stages}


if __name__ == "__main__":
    main()
