"""Camera health reports to the backend (camera-list mode), with a preview picture on request.

Every ``interval`` seconds a background thread posts each running camera's figures
(``POST <api-url><camera-url>/<id>/health``: fps in/processed, frames dropped, last frame time,
reconnects, state, this detector's name and version). When the backend's answer says
``preview_wanted`` (no picture yet, the console asked for one, or the last is old), the
current frame goes along, downscaled to at most ``PREVIEW_SIDE`` px as a JPEG
(``PUT .../<id>/preview``). The detector has the stream open already, so the backend never
connects to a camera.

Reporting never touches the pipeline: it reads counters and the reference to the last decoded
frame, runs in its own thread with the request timeout, and a backend that is down or does not
know these methods costs one log line per outage (``Trouble``), nothing else.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote

import cv2
import numpy as np
import requests

from videodetector import __version__
from videodetector.detector.config import DetectorConfig
from videodetector.detector.logprefix import label_of
from videodetector.detector.post.trouble import Trouble

log = logging.getLogger(__name__)

HEALTH_INTERVAL = 5.0  # s between two reports of a camera
PREVIEW_SIDE = 1280  # px, longer side of a preview
PREVIEW_MAX_BYTES = 1 << 20  # the backend's limit
PREVIEW_QUALITY = (80, 60, 40)  # JPEG qualities tried until the preview fits
OUTAGE_LOG_INTERVAL = 600.0  # s: an ongoing outage is summed up at most this often


class Reporting(Protocol):
    """What is read from a camera worker (``CameraWorker``)."""

    reader: Any
    counters: Any
    pipeline_stats: Any
    last_image: np.ndarray | None
    error: str | None

    @property
    def state(self) -> str: ...


def health_of(worker: Reporting, detector: str, interval: float,
              image: np.ndarray | None) -> dict[str, Any]:
    """The health report of one camera (the JSON body of ``POST .../health``); ``image``: the
    camera's last frame as read once for this report and its preview (None: none yet)."""
    stats = worker.reader.stats() if worker.reader is not None else None
    report: dict[str, Any] = {
        "detector": detector, "version": __version__, "state": worker.state,
        "interval": interval,
        "fps_in": round(stats.fps_in, 2) if stats else 0.0,
        "fps_processed": round(worker.counters.fps_processed, 2),
        "frames_in": stats.frames_in if stats else 0,
        "frames_processed": worker.pipeline_stats.frames,
        "frames_dropped": stats.dropped if stats else 0,
        "reconnects": stats.reconnects if stats else 0,
        "crashes": worker.counters.crashes,
        "last_frame_time": (stats.last_frame_time or None) if stats else None,
        "last_frame_age": (round(max(0.0, time.time() - stats.last_frame_time), 2)
                           if stats and stats.last_frame_time else None),
        # the camera's own error (a crash, a region outside the frame), else its source's
        # (why a stream is down, a file that ended early): the console shows it
        "error": (worker.error or (stats.problem if stats else ""))[:500] or None,
    }
    if image is not None:
        report["frame_height"], report["frame_width"] = image.shape[:2]
    return report


def preview_jpeg(image: np.ndarray, side: int = PREVIEW_SIDE,
                 max_bytes: int = PREVIEW_MAX_BYTES) -> bytes | None:
    """``image`` (BGR) scaled to at most ``side`` px on its longer side, as a JPEG of at most
    ``max_bytes``; None if no quality of PREVIEW_QUALITY gets it that small."""
    h, w = image.shape[:2]
    factor = min(1.0, side / max(h, w))
    if factor < 1.0:
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    for quality in PREVIEW_QUALITY:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok and len(buf) <= max_bytes:
            return buf.tobytes()
    return None


class HealthReporter:
    """Posts the health of ``workers()`` every ``interval`` seconds until ``stop()``."""

    def __init__(self, cfg: DetectorConfig, workers: Callable[[], dict[str, Reporting]],
                 interval: float = HEALTH_INTERVAL) -> None:
        if interval <= 0:
            raise ValueError(f"health interval must be > 0, got {interval!r}")
        self.cfg = cfg
        self.workers = workers
        self.interval = interval
        self.session = requests.Session()
        self.reports = 0  # delivered
        self.previews = 0  # delivered
        self.trouble = Trouble(log, f"health reports to {cfg.api_url}",
                               interval=OUTAGE_LOG_INTERVAL)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)

    def start(self) -> HealthReporter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.cfg.req_timeout * 2 + 1)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.report_all()

    def report_all(self) -> None:
        """One round: every camera once. A camera the backend refuses (e.g. deleted a moment
        ago) is skipped and the others are reported; a backend that cannot be reached ends the
        round (the next one tries again). Failures are logged once per outage."""
        failure: BaseException | None = None
        for cam_id, worker in list(self.workers().items()):
            if self._stop.is_set():
                return
            try:
                self.report(cam_id, worker)
            except (requests.ConnectionError, requests.Timeout) as exc:
                failure = exc
                break
            except (requests.RequestException, ValueError) as exc:
                failure = RuntimeError(f"camera {label_of(cam_id)}: {exc}")
            except Exception as exc:  # a bug here must never end the reports or the daemon
                log.exception("health report failed", extra={"cam_id": cam_id})
                failure = exc
        if failure is not None:
            self.trouble.failed(failure)
        else:
            self.trouble.recovered()

    def _url(self, cam_id: str, tail: str) -> str:
        base = self.cfg.api_url.rstrip("/") + "/" + self.cfg.camera_url.strip("/")
        return f"{base}/{quote(cam_id, safe='')}/{tail}"

    def _send(self, method: str, url: str, **kw: Any) -> requests.Response:
        resp = self.session.request(
            method, url, timeout=self.cfg.req_timeout, verify=self.cfg.to_verify_cert,
            headers={"Authorization": f"Token {self.cfg.api_token}", **kw.pop("headers", {})},
            **kw)
        resp.raise_for_status()
        return resp

    def report(self, cam_id: str, worker: Reporting) -> None:
        """Post one camera's health, and its preview when the backend wants one."""
        image = worker.last_image  # read once: the report's frame size is the preview's
        body = health_of(worker, self.cfg.detector_name, self.interval, image)
        answer = self._send("POST", self._url(cam_id, "health"), json=body).json()
        self.reports += 1
        if not (isinstance(answer, dict) and answer.get("preview_wanted")) or image is None:
            return
        jpeg = preview_jpeg(image)
        if jpeg is None:
            log.warning("the preview does not fit %d bytes; not sent", PREVIEW_MAX_BYTES,
                        extra={"cam_id": cam_id})
            return
        h, w = image.shape[:2]
        self._send("PUT", self._url(cam_id, "preview"), data=jpeg,
                   params={"frame_width": w, "frame_height": h},
                   headers={"Content-Type": "image/jpeg"})
        self.previews += 1
