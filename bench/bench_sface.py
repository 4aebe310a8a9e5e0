"""CPU per face of the SFace embedding, per runtime and model, A/B in one sitting.

Run from the project root (about 1 minute):

    python bench/bench_sface.py [--rounds 3] [--faces 20] [--batch 1,4]

Variants: the float model through onnxruntime, OpenCV's DNN and OpenVINO (f32), the
``sface-2021dec-bf16`` model (OpenVINO, bfloat16) and ``sface-2021dec-int8`` (onnxruntime).
Faces: the MEDS-II stills of ``../shared/data`` found by YuNet and aligned (``align_face``),
as the product does; random 112x112 images when the data is absent (the cost does not depend
on the pixels). The variants run interleaved, ``--rounds`` times, so load drift hits all of
them alike; per variant the best round is kept.

Per variant: CPU ms per face with one thread (``time.process_time`` of the whole process:
native worker threads count), the same per face for ``--batch`` faces per call, and with two
concurrent callers (two nets / two infer requests, as the backend runs it: CPU ms per face
and faces/s by the wall clock), and the largest difference to the onnxruntime float vectors
(cosine).

``--callers N`` (default 8): N threads embedding one face at a time, each spending
``--between-ms`` of CPU between faces (the rest of a request: ~5 ms for a detector's post),
per ``--caps`` value C (default 1,8): C=1 each through ``embed`` (one face per run, two infer
requests), C>1 through the backend's micro-batcher (``core/batcher.py`` as
``engine.embed_batcher`` makes it: faces arriving while both requests run go into the next
run together, at most C): CPU ms per face of the embedding alone (process time minus the
busy part) and the mean faces per run; OpenVINO variants only (the others run a batch one
face at a time). ``--rss``: per OpenVINO variant and cap, a process of its own loads it as
the backend does (``max_batch=C``: buffers sized at load) and runs batches of 1..C faces
from two threads: RSS before, after loading and after the batches.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

import _env  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)
import cv2
import numpy as np
from _env import ROOT
from bench_detector import format_table, machine_line

from videodetector.core.models import (
    SFACE_BF16_NAME,
    SFACE_INT8_NAME,
    SFACE_NAME,
    SFaceEmbedder,
    YuNetDetector,
    align_face,
)

DEFAULT_DATA = ROOT.parent / "shared" / "data"
VARIANTS = {  # name -> (model, runtime)
    "float onnxruntime": (SFACE_NAME, "onnxruntime"),
    "float opencv": (SFACE_NAME, "opencv"),
    "float openvino f32": (SFACE_NAME, "openvino"),
    "bf16 openvino": (SFACE_BF16_NAME, "openvino"),
    "int8 onnxruntime": (SFACE_INT8_NAME, "onnxruntime"),
}


def real_faces(data: Path, limit: int) -> list[np.ndarray]:
    det = YuNetDetector()
    faces = []
    for path in sorted((data / "stills_meds").glob("*.jpg"))[:limit]:
        img = cv2.imread(str(path))
        found = det.detect(img) if img is not None else None
        if found is not None and len(found):
            faces.append(align_face(img, found.landmarks[int(np.argmax(found.score))]))
    return faces


def cpu_per_face(emb: SFaceEmbedder, batch: list[np.ndarray], calls: int) -> float:
    emb.embed_batch(batch)  # warm-up
    t = time.process_time()
    for _ in range(calls):
        emb.embed_batch(batch)
    return (time.process_time() - t) / (calls * len(batch)) * 1000


def concurrent(emb: SFaceEmbedder, face: np.ndarray, calls: int) -> tuple[float, float]:
    def work() -> None:
        for _ in range(calls):
            emb.embed(face)
    threads = [threading.Thread(target=work) for _ in range(2)]
    t, w = time.process_time(), time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return (time.process_time() - t) / (2 * calls) * 1000, 2 * calls / (time.perf_counter() - w)


def _busy(ms: float) -> None:
    end = time.thread_time() + ms / 1000
    while time.thread_time() < end:
        pass


def callers_cpu(emb: SFaceEmbedder, faces: list[np.ndarray], callers: int, between_ms: float,
                cap: int, calls: int) -> tuple[float, float]:
    """(CPU ms per face of the embeddings, mean faces per run) for ``callers`` threads,
    through a micro-batcher of at most ``cap`` faces per run (1: ``embed``, no batcher)."""
    from videodetector.core.batcher import MicroBatcher

    batched = cap > 1
    batcher = MicroBatcher(emb.embed_batch, slots=emb.workers, max_batch=cap)
    embed = batcher.submit if batched else emb.embed

    def work(k: int) -> None:
        for i in range(calls):
            _busy(between_ms)
            embed(faces[(k + i) % len(faces)])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(callers)]
    t = time.process_time()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    n = callers * calls
    ms = (time.process_time() - t) / n * 1000 - between_ms
    return ms, (batcher.items / batcher.calls if batched else 1.0)


def load(names: list[str], max_batch: int = 8) -> dict[str, SFaceEmbedder]:
    cv2.setNumThreads(1)
    out = {}
    for name in names:
        model, runtime = VARIANTS[name]
        try:
            out[name] = SFaceEmbedder(threads=1, model=model, runtime=runtime, workers=2,
                                      max_batch=max_batch)
        except ImportError as exc:
            print(f"# {name}: skipped ({exc})")
    return out


def measure(embs: dict[str, SFaceEmbedder], faces: list[np.ndarray], rounds: int,
            calls: int, batches: list[int], callers: int = 0,
            between_ms: float = 5.0, caps: tuple[int, ...] = (1, 8)) -> list[dict]:
    ref = SFaceEmbedder().embed_batch(faces)
    rows = {n: {"variant": n,
                "min_cos_to_float": float((e.embed_batch(faces) * ref).sum(1).min())}
            for n, e in embs.items()}
    for _ in range(rounds):
        for name, emb in embs.items():
            row = rows[name]
            for b in batches:
                batch = [faces[i % len(faces)] for i in range(b)]
                ms = cpu_per_face(emb, batch, max(1, calls // b))
                row[f"batch{b}_ms"] = min(row.get(f"batch{b}_ms", ms), ms)
            ms, fps = concurrent(emb, faces[0], calls)
            row["two_callers_ms"] = min(row.get("two_callers_ms", ms), ms)
            row["two_callers_fps"] = max(row.get("two_callers_fps", fps), fps)
            if callers and emb.runtime == "openvino":
                for cap in caps:
                    ms, per_run = callers_cpu(emb, faces, callers, between_ms, cap, calls)
                    row[f"cap{cap}_ms"] = min(row.get(f"cap{cap}_ms", ms), ms)
                    row.setdefault(f"cap{cap}_per_run", []).append(per_run)
    for row in rows.values():
        for key in [k for k in row if k.endswith("_per_run")]:
            row[key] = sum(row[key]) / len(row[key])
    return list(rows.values())


def rss_child(name: str, cap: int) -> dict:
    """This process's RSS (MB) with the variant loaded as the backend loads it (two infer
    requests, ``max_batch=cap``), then after two callers ran batches of 1, 2, ... cap faces
    (two runs each, growing: the order that grew buffers one size at a time)."""
    import _proc

    model, runtime = VARIANTS[name]
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (112, 112, 3), np.uint8) for _ in range(cap)]
    before = _proc.rss_mb(os.getpid())
    emb = SFaceEmbedder(threads=1, model=model, runtime=runtime, workers=2, max_batch=cap)
    loaded = _proc.rss_mb(os.getpid())

    def work() -> None:
        for n in range(1, cap + 1):
            for _ in range(2):
                emb.embed_batch(faces[:n])

    threads = [threading.Thread(target=work) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return {"variant": name, "cap": cap, "rss_start": before, "rss_loaded": loaded,
            "rss_after": _proc.rss_mb(os.getpid())}


def rss_rows(names: list[str], caps: list[int]) -> list[dict]:
    """``rss_child`` per OpenVINO variant and cap, each in a process of its own."""
    import json
    import subprocess
    import sys

    rows = []
    for name in names:
        if VARIANTS[name][1] != "openvino":
            continue
        for cap in caps:
            out = subprocess.run([sys.executable, __file__, "--rss-child", name, str(cap)],
                                 capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="test media folder")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best kept)")
    p.add_argument("--calls", type=int, default=20, help="calls per measurement")
    p.add_argument("--faces", type=int, default=20, help="real faces to use at most")
    p.add_argument("--batch", default="1,4", help="faces per call, comma-separated")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    p.add_argument("--callers", type=int, default=8,
                   help="threads for the micro-batcher A/B (0: skip it)")
    p.add_argument("--between-ms", type=float, default=5.0,
                   help="CPU ms each caller spends between two faces")
    p.add_argument("--caps", default="1,8",
                   help="micro-batcher caps for the callers A/B (1: no batcher), comma-separated")
    p.add_argument("--rss", action="store_true",
                   help="also RSS per OpenVINO variant and cap, a process each")
    p.add_argument("--rss-child", nargs=2, metavar=("VARIANT", "CAP"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.rss_child:
        import json

        print(json.dumps(rss_child(a.rss_child[0], int(a.rss_child[1]))))
        return {}
    names = [v for v in a.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or a.rounds < 1 or a.calls < 1:
        p.error(f"bad --variants {unknown} / --rounds {a.rounds} / --calls {a.calls}")
    faces = real_faces(a.data, a.faces) if (a.data / "stills_meds").is_dir() else []
    source = f"{len(faces)} MEDS-II faces" if faces else "random faces (no test media)"
    if not faces:
        rng = np.random.default_rng(0)
        faces = [rng.integers(0, 256, (112, 112, 3), np.uint8) for _ in range(4)]
    batches = [int(b) for b in a.batch.split(",")]
    caps = [int(c) for c in a.caps.split(",")]
    if min(batches + caps) < 1:
        p.error(f"--batch and --caps need sizes >= 1, got {a.batch} / {a.caps}")
    rows = measure(load(names, max(batches + caps)), faces, a.rounds, a.calls, batches,
                   a.callers, a.between_ms, tuple(caps))
    cols = [("variant", "variant", "<"),
            *[(f"batch{b}_ms", f"batch {b} ms/face", ">") for b in batches],
            ("two_callers_ms", "2 callers ms/face", ">"),
            ("two_callers_fps", "2 callers faces/s", ">"),
            *[col for c in caps for col in (
                (f"cap{c}_ms", f"{a.callers} callers cap {c} ms/face", ">"),
                (f"cap{c}_per_run", f"cap {c} faces per run", ">"))],
            ("min_cos_to_float", "min cos to float", ">")]
    # the callers columns are measured for the OpenVINO runtimes only: "-" elsewhere
    shown = [{**{key: "-" for key, _, _ in cols},
              **{k: (f"{v:.4f}" if k == "min_cos_to_float" else f"{v:.1f}")
                 if isinstance(v, float) else v for k, v in r.items()}} for r in rows]
    table = format_table(shown, cols)
    print(f"# bench_sface: {machine_line()}\n# input: {source}\n")
    print("CPU ms per face (1 thread; batchN: N faces per call), two concurrent callers, "
          f"{a.callers} callers ({a.between_ms} ms CPU between faces) through a "
          "micro-batcher of at most N faces per run (cap 1: one face per run, no batcher; "
          "CPU of the embeddings alone):\n")
    print(table)
    rss = rss_rows(names, caps) if a.rss else []
    if rss:
        print("\nRSS MB of a process with the variant loaded as the backend does (2 infer "
              "requests, buffers sized for the cap at load), then after 2 callers ran "
              "batches of 1, 2, ... cap faces:\n")
        print(format_table([{k: f"{v:.0f}" if isinstance(v, float) else v
                             for k, v in r.items()} for r in rss],
                           (("variant", "variant", "<"), ("cap", "cap", ">"),
                            ("rss_start", "before load", ">"),
                            ("rss_loaded", "loaded", ">"), ("rss_after", "after batches", ">"))))
    return {"machine": machine_line(), "rows": rows, "table": table, "rss": rss}


if __name__ == "__main__":
    main()
