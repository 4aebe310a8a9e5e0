"""Watch-list notifier: an example backend plugin (9.2).

After a face is stored (``POST /v1/face``, e.g. by fkvideo_detector) that matches a face of
the token's watch-list gallery at or above ``threshold``, it appends an alert as one JSON
line to ``alerts_file`` and, if ``url`` is set, POSTs the same JSON there (``timeout``
seconds; a failure is raised, so the backend counts it in
``backend_plugin_errors_total{plugin="watchlist",kind="face_stored"}``).

``GET /v1/plugins/watchlist/alerts?limit=N`` (token required) lists the token's recent
alerts, newest first. Faces enrolled into the watch-list gallery itself raise no alert.

Configuration: ``watchlist.json`` next to this file, e.g.
``{"gallery": "watchlist", "threshold": 0.75, "alerts_file": "/var/lib/fkvideo/alerts.jsonl",
"url": null, "timeout": 3.0, "keep": 1000}``.
"""

from __future__ import annotations

import collections
import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from videodetector.backend.errors import bad_param
from videodetector.backend.plugins import Plugin, PluginApp, StoredFace


class WatchList(Plugin):
    def activate(self, app: PluginApp) -> None:
        c = self.config
        self.gallery = str(c.get("gallery", "watchlist"))
        self.threshold = float(c.get("threshold", 0.75))
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if not c.get("alerts_file"):
            raise ValueError("alerts_file is required (where alerts are appended)")
        self.alerts_file = Path(c["alerts_file"])
        self.url = c.get("url") or None
        self.timeout = float(c.get("timeout", 3.0))
        self.recent: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=int(c.get("keep", 1000)))
        self.lock = threading.Lock()
        app.add_handler("/alerts", self.list_alerts)

    def face_stored(self, face: StoredFace) -> None:
        if self.gallery in face.galleries or self.gallery not in self.ctx.galleries(face.user):
            return
        hits = [(i, c) for i, c in self.ctx.identify(face.user, face.facen, self.gallery, 2,
                                                     self.threshold) if i != face.id]
        if not hits:
            return
        match_id, confidence = hits[0]
        match = self.ctx.face(face.user, match_id) or {}
        alert = {"time": time.time(), "user": face.user, "face_id": face.id,
                 "cam_id": face.cam_id, "match_face_id": match_id,
                 "match_meta": match.get("meta"), "confidence": round(confidence, 4),
                 "gallery": self.gallery}
        with self.lock:
            self.recent.append(alert)
            with self.alerts_file.open("a", encoding="utf-8") as f:
                f.write(json.dumps(alert) + "\n")
        if self.url:
            body = json.dumps(alert).encode()
            req = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                resp.read(1024)

    def list_alerts(self, request: Any, user: int | None) -> dict[str, Any]:
        raw = request.query_params.get("limit", "50")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise bad_param("limit", "limit must be an integer in 1..1000", raw)
        with self.lock:
            mine = [a for a in self.recent if a["user"] == user]
        return {"alerts": mine[::-1][:int(raw)]}
