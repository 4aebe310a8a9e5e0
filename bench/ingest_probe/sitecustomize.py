"""bench_ingest's probe, loaded into the backend it starts (this folder is put first on the
server's PYTHONPATH, so Python imports this ``sitecustomize`` at start-up).

It wraps ``FaceEngine.embed_aligned`` (the SFace run of a face0 post) to add up the CPU time
(``time.thread_time``) the server's threads spend in it, plus the CPU of the native threads
Python does not know (``/proc/self/task`` minus ``threading.enumerate()``): the model
runtime's own workers, where OpenVINO runs the inference while the calling thread waits
(the calling thread alone shows ~1 ms per face). It also adds up the CPU time of Python's
cyclic garbage collections (``gc.callbacks``), and counts SFace runs and the faces they
embedded (the micro-batcher's mean batch). On SIGUSR1 it writes the totals (text:
"embedding_seconds gc_seconds sface_runs sface_faces") to ``$BENCH_INGEST_PROBE``, so the
bench can report the server's CPU per face *outside* the embedding: the part the ingestion
path itself costs. Nothing runs between signals (a polling thread cost ~0.4 ms of CPU per
face).
"""

from __future__ import annotations

import os
import signal
import threading
import time

_PATH = os.environ.get("BENCH_INGEST_PROBE")


def _native_threads_cpu() -> float:
    """CPU seconds (user + system) of this process's threads that are not Python threads."""
    python = {t.native_id for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for tid in os.listdir("/proc/self/task"):
        if int(tid) in python:
            continue
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / tick


def _time_garbage_collections() -> list[float]:
    """[CPU seconds (``time.thread_time`` of the collecting thread) spent in Python's cyclic
    garbage collector so far], kept up to date by a ``gc.callbacks`` hook."""
    import gc

    total = [0.0]
    started: dict[int, float] = {}

    def hook(phase: str, info: dict) -> None:
        if phase == "start":
            started[threading.get_ident()] = time.thread_time()
        else:
            t0 = started.pop(threading.get_ident(), None)
            if t0 is not None:
                total[0] += time.thread_time() - t0

    gc.callbacks.append(hook)
    return total


def _count_sface_calls() -> list[int]:
    """[SFace runs, faces they embedded] so far (``SFaceEmbedder.embed_batch``): their ratio
    is the mean batch the server's micro-batcher formed."""
    from videodetector.core import models

    counts = [0, 0]
    lock = threading.Lock()
    original = models.SFaceEmbedder.embed_batch

    def embed_batch(self, faces):  # noqa: ANN001, ANN202 - a bench probe
        with lock:
            counts[0] += 1
            counts[1] += len(faces)
        return original(self, faces)

    models.SFaceEmbedder.embed_batch = embed_batch
    return counts


def _install(path: str) -> None:
    from videodetector.backend import engine

    lock = threading.Lock()
    total = [0.0]
    original = engine.FaceEngine.embed_aligned

    def embed_aligned(self, aligned):  # noqa: ANN001, ANN202 - a bench probe
        t0 = time.thread_time()
        try:
            return original(self, aligned)
        finally:
            spent = time.thread_time() - t0
            with lock:
                total[0] += spent

    engine.FaceEngine.embed_aligned = embed_aligned
    gc_total = _time_garbage_collections()
    calls = _count_sface_calls()

    def report(signum, frame) -> None:  # noqa: ANN001 - a signal handler
        with lock:
            value = total[0] + _native_threads_cpu()
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{value!r} {gc_total[0]!r} {calls[0]} {calls[1]}")
        os.replace(tmp, path)

    signal.signal(signal.SIGUSR1, report)
    report(None, None)  # installed: the bench only signals a server that wrote this


if _PATH:
    _install(_PATH)
