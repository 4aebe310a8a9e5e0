"""The first import of every bench script: ``import _env`` (or ``import _env_omp1``).

What it does, at import time:

* ``sys.path``: puts the repository root (``videodetector``, ``tests``) and ``bench/`` (so a bench
  imports another: ``from bench_detector import format_table``) first on ``sys.path`` (after
  any PYTHONPATH entries, so an A/B run can point at another checkout), whether
  the script is run as ``python bench/NAME.py`` from any directory or imported by the tests.
* ``OPENBLAS_NUM_THREADS=1``: numpy's OpenBLAS sizes its thread pool once, when numpy is first
  imported, from the environment; set later, it does nothing. One BLAS thread keeps a hidden pool
  from competing with the threads a bench sizes itself (onnxruntime, OpenCV, camera workers) and
  from making figures depend on the core count. It is a ``setdefault``: a value in your
  environment wins, and child processes a bench starts (daemon, backend) inherit it.

``_env_omp1`` imports this module and also sets ``OMP_NUM_THREADS=1`` (OpenMP pools: faiss's
HNSW search in the backend, and OpenBLAS's fallback). The detector and end-to-end benches use it;
the backend index/store benches (bench_index, bench_pg, bench_history, bench_photo_endpoints)
import only ``_env`` so faiss keeps its OpenMP threads as the backend has them in service.

Both must be imported before numpy (and anything importing numpy: cv2, faiss, videodetector):
isort keeps ``import _env`` first among the third-party imports (``_`` sorts before letters, and
plain imports before ``from`` imports); the standard-library imports above it load no numpy.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"

# After the PYTHONPATH entries: ``PYTHONPATH=<another checkout> python bench/NAME.py`` runs
# this bench against that checkout's videodetector (an A/B against an older commit).
_explicit = {p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
_at = max((i + 1 for i, p in enumerate(sys.path) if p in _explicit), default=0)
for _path in (str(ROOT), str(BENCH)):  # ROOT first, then bench/
    if _path not in sys.path:
        sys.path.insert(_at, _path)
        _at += 1

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
