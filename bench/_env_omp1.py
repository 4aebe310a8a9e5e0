"""``_env`` plus ``OMP_NUM_THREADS=1`` (see ``_env``): the first import of the detector and
end-to-end benches. OpenMP pools read the variable when their library loads; faiss is the one
OpenMP user in this environment (and OpenBLAS falls back to it)."""

from __future__ import annotations

import os

import _env  # noqa: F401  (sys.path, OPENBLAS_NUM_THREADS)

os.environ.setdefault("OMP_NUM_THREADS", "1")
