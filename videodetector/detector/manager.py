"""Camera lists from the backend (5.1.4): poll ``GET <api-url><camera-url>?detector=NAME``.

Every ``--reload-timeout`` seconds the list is fetched and reconciled with the
running workers: a camera added starts, a camera removed or disabled stops, a
camera whose url/roi/rot changed restarts; the others are not touched. A camera that
cannot be started (``make_worker`` raises, e.g. its spool directory is locked; or, with
camera processes, its child refused it) is logged once per spec and tried again on every
poll; a camera that ended (a file, a configuration error) is not. A failed
fetch keeps the current set running. ``--single-pass`` fetches once and returns
when every worker has ended.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import requests

from videodetector.core.geometry import region_rect
from videodetector.detector.config import DetectorConfig
from videodetector.detector.logprefix import name_camera
from videodetector.detector.pipeline import CameraSpec

log = logging.getLogger(__name__)


class Worker(Protocol):
    camera: CameraSpec

    def start(self) -> Any: ...
    def stop(self) -> None: ...
    def join(self, timeout: float | None = None) -> None: ...
    def is_alive(self) -> bool: ...


def refused_where_it_runs(worker: Worker) -> bool:
    """A worker that ended because it could not be started where it runs (``refused``: a
    camera process, detector/groups.py): the next poll starts it again, as a camera whose
    ``make_worker`` raised. Workers without the attribute (one process) never are."""
    return bool(getattr(worker, "refused", False)) and not worker.is_alive()


def parse_camera(obj: dict[str, Any]) -> CameraSpec | None:
    """A CameraSpec from one element of the backend's list; None if disabled or unusable."""
    cam_id, url = str(obj.get("id") or ""), str(obj.get("url") or "")
    if not obj.get("enabled", True):
        return None
    if not cam_id or not url:
        log.warning("ignoring camera without id or url: %r", obj)
        return None
    regions = {}
    for key in ("roi", "rot"):
        try:
            regions[key] = region_rect(obj.get(key))
        except ValueError as exc:
            log.error("bad %s: %s; not started", key, exc, extra={"cam_id": cam_id})
            return None
    meta = obj.get("meta")
    return CameraSpec(cam_id, url, regions["roi"], regions["rot"],
                      name=meta if isinstance(meta, str) else "")


def fetch_cameras(cfg: DetectorConfig, session: requests.Session) -> list[CameraSpec]:
    """The enabled cameras registered under ``cfg.detector_name``. Raises on HTTP errors."""
    url = cfg.api_url.rstrip("/") + "/" + cfg.camera_url.lstrip("/")
    resp = session.get(
        url, params={"detector": cfg.detector_name},
        headers={"Authorization": f"Token {cfg.api_token}"},
        timeout=cfg.req_timeout, verify=cfg.to_verify_cert,
    )
    resp.raise_for_status()
    body = resp.json()  # ValueError if not JSON
    items = body.get("cameras", body.get("results", [])) if isinstance(body, dict) else body
    if not isinstance(items, list):
        raise ValueError(f"expected a JSON list of cameras, got {str(body)[:200]!r}")
    # The detector filter is also applied here in case a backend ignores ?detector=.
    mine = [o for o in items if isinstance(o, dict)
            and o.get("detector", cfg.detector_name) == cfg.detector_name]
    return [c for c in map(parse_camera, mine) if c is not None]


class CameraManager:
    """Keeps one worker per camera of this detector's list running."""

    def __init__(self, cfg: DetectorConfig, make_worker: Callable[[CameraSpec], Worker]) -> None:
        self.cfg = cfg
        self.make_worker = make_worker
        self.workers: dict[str, Worker] = {}
        self.session = requests.Session()
        self.fetch_errors = 0
        self.refused: dict[str, CameraSpec] = {}  # cameras that could not be started, as seen
        self._lock = threading.Lock()

    def reconcile(self, desired: Iterable[CameraSpec]) -> None:
        wanted: dict[str, CameraSpec] = {}
        for cam in desired:
            name_camera(cam.cam_id, cam.name)
            if len(wanted) >= self.cfg.detectors_max:
                log.warning("not started: --detectors-max %d reached", self.cfg.detectors_max,
                            extra={"cam_id": cam.cam_id})
                continue
            wanted[cam.cam_id] = cam
        with self._lock:
            for cam_id in list(self.workers):
                worker = self.workers[cam_id]
                if cam_id not in wanted or wanted[cam_id] != worker.camera:
                    why = "removed or disabled" if cam_id not in wanted else "changed"
                    log.info("%s in the backend, stopping", why, extra={"cam_id": cam_id})
                    worker.stop()
                    worker.join(10)
                    del self.workers[cam_id]
                elif refused_where_it_runs(worker):
                    del self.workers[cam_id]  # started again below
            for cam_id, cam in wanted.items():
                if cam_id not in self.workers:
                    self._start(cam)
            for cam_id in set(self.refused) - set(wanted):
                del self.refused[cam_id]

    def _start(self, cam: CameraSpec) -> None:
        """Start a worker; a camera that cannot even be set up (e.g. a bad url) is logged
        once per spec and skipped -- it must not take the daemon and the other cameras down."""
        try:
            worker = self.make_worker(cam)
        except Exception as exc:
            if self.refused.get(cam.cam_id) != cam:
                log.error("not started: %s", exc, extra={"cam_id": cam.cam_id})
                self.refused[cam.cam_id] = cam
            return
        self.refused.pop(cam.cam_id, None)
        self.workers[cam.cam_id] = worker
        worker.start()

    def poll_once(self) -> bool:
        try:
            cams = fetch_cameras(self.cfg, self.session)
        except (requests.RequestException, ValueError) as exc:
            self.fetch_errors += 1
            log.error("cannot fetch the camera list from %s: %s (keeping %d running)",
                      self.cfg.api_url, exc, len(self.workers))
            return False
        self.reconcile(cams)
        return True

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set (or, with --single-pass, until all workers end)."""
        while not stop.is_set():
            fetched = self.poll_once()
            if self.cfg.single_pass and fetched:
                self._wait_all(stop)
                return
            stop.wait(self.cfg.reload_timeout)
        self.stop_all()

    def _wait_all(self, stop: threading.Event) -> None:
        while not stop.is_set() and any(w.is_alive() for w in self.workers.values()):
            stop.wait(0.5)
        self.stop_all()

    def stop_all(self) -> None:
        with self._lock:
            for worker in self.workers.values():
                worker.stop()
            for worker in self.workers.values():
                worker.join(10)
