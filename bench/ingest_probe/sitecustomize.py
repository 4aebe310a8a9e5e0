"""bench_ingest's probe, loaded into the backend it starts (this folder is put first on the
server's PYTHONPATH, so Python imports this ``sitecustomize`` at start-up).

It wraps ``FaceEngine.embed_aligned`` (the SFace run of a face0 post) to add up the CPU time
(``time.thread_time``) the server spends in it; on SIGUSR1 it writes that total (seconds,
text) to ``$BENCH_INGEST_PROBE``, so the bench can report the server's CPU per face
*outside* the embedding: the part the ingestion path itself costs. Nothing runs between
signals (a polling thread cost ~0.4 ms of CPU per face).
"""

from __future__ import annotations

import os
import signal
import threading
import time

_PATH = os.environ.get("BENCH_INGEST_PROBE")


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

    def report(signum, frame) -> None:  # noqa: ANN001 - a signal handler
        with lock:
            value = total[0]
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(repr(value))
        os.replace(tmp, path)

    signal.signal(signal.SIGUSR1, report)
    report(None, None)  # installed: the bench only signals a server that wrote this


if _PATH:
    _install(_PATH)
