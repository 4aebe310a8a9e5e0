"""Import slow modules in a background thread while the daemon starts.

filterpy's ``KalmanFilter`` (the tracker) pulls in scipy (``scipy.stats``, ``scipy.optimize``):
about 0.9 s of CPU, two thirds of the daemon's start-up, and nothing of it is needed before the
tracker has a track to predict (the second frame with a face; see ``tracker/filter.py``).

A camera worker reading a file offline calls :func:`import_tracker_modules` once its first
frame is processed: the import then runs on the other core while the pipeline decodes and
detects (work that releases the GIL). Started earlier it would only slow the start: creating
the detector's onnxruntime session holds the GIL, and the two threads would share it
(measured: session creation 0.08 s alone, 0.29 s next to the import, under load). The first
frame never waits for scipy; a face in it is tracked from the second frame on, which waits for
the import if it is not done yet (the reader waits too: an offline file loses no frame).

A live source, or a file paced in real time, drops the frames that come while the pipeline is
busy: its worker starts the import before it creates its detector and waits for it before it
opens the source, as the daemon did before (no start-up gain there, and no frame lost).

An import that fails here is only logged at DEBUG: the module's real import, where it is used,
raises the error again.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Iterable

log = logging.getLogger(__name__)

# What the tracker imports lazily (tracker/filter.py, tracker/distances.py).
TRACKER_MODULES = ("filterpy.kalman", "scipy.optimize")


_started: threading.Thread | None = None
_lock = threading.Lock()


def import_tracker_modules() -> threading.Thread:
    """:func:`import_in_background` of TRACKER_MODULES, once per process (later calls return
    the thread of the first)."""
    global _started
    with _lock:
        if _started is None:
            _started = import_in_background(TRACKER_MODULES)
        return _started


def import_in_background(modules: Iterable[str] = TRACKER_MODULES) -> threading.Thread:
    """Start a thread importing ``modules`` in order and return it (already started).

    Not a daemon thread (even when started from one, e.g. a camera worker): an interpreter
    that exits while a module is half imported may crash, so a process that ends earlier
    waits for the import (well under a second on an idle machine)."""
    names = tuple(modules)
    thread = threading.Thread(target=_import_all, args=(names,), name="preload", daemon=False)
    thread.start()
    return thread


def _import_all(names: tuple[str, ...]) -> None:
    for name in names:
        start = time.perf_counter()
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - raised again by the real import
            log.debug("background import of %s failed", name, exc_info=True)
            continue
        log.debug("imported %s in the background (%.2f s)", name, time.perf_counter() - start)
