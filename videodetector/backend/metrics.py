"""Prometheus text-format metrics: requests by route and status, latency, stored objects,
faces per gallery (``backend_gallery_faces{user, gallery}``)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RequestMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self.latency_sum: dict[tuple[str, str], float] = defaultdict(float)
        self.latency_count: dict[tuple[str, str], int] = defaultdict(int)
        # more metric families: each returns its own text-format lines
        self.collectors: list[Callable[[], str]] = []

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, str(status))] += 1
            self.latency_sum[(method, route)] += seconds
            self.latency_count[(method, route)] += 1

    def render(self, gauges: dict[str, tuple[str, float]]) -> str:
        lines = ["# HELP backend_requests_total HTTP requests by method, route and status.",
                 "# TYPE backend_requests_total counter"]
        with self._lock:
            for (method, route, status), n in sorted(self.requests.items()):
                lines.append(f'backend_requests_total{{method="{method}",route="{_esc(route)}",'
                             f'status="{status}"}} {n}')
            lines += ["# HELP backend_request_duration_seconds Request latency.",
                      "# TYPE backend_request_duration_seconds summary"]
            for (method, route), total in sorted(self.latency_sum.items()):
                labels = f'method="{method}",route="{_esc(route)}"'
                count = self.latency_count[(method, route)]
                lines.append(f"backend_request_duration_seconds_sum{{{labels}}} {total:.6f}")
                lines.append(f"backend_request_duration_seconds_count{{{labels}}} {count}")
        return ("\n".join(lines) + "\n" + render_gauges(gauges)
                + "".join(collect() for collect in self.collectors))


def render_gauges(gauges: dict[str, tuple[str, float]]) -> str:
    lines = []
    for name, (help_text, value) in gauges.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value:g}"]
    return "\n".join(lines) + "\n"


def gallery_face_counts(db: Any, user: int | None = None) -> dict[tuple[int, str], int]:
    """(user id, gallery) -> faces, for every gallery (``default`` = all of a user's faces)
    of every user, or of ``user`` only. ``db`` is a ``storage.Database``."""
    where, args = ("WHERE user_id = ?", (user,)) if user is not None else ("", ())
    counts = {(r[0], "default"): 0 for r in db.rows(
        f"SELECT id FROM users {where.replace('user_id', 'id')}", args)}
    counts.update({(r[0], "default"): int(r[1]) for r in db.rows(
        f"SELECT user_id, COUNT(*) FROM faces {where} GROUP BY user_id", args)})
    counts.update({(r[0], r[1]): 0 for r in db.rows(
        f"SELECT user_id, name FROM galleries {where}", args)})
    for u, gallery, n in db.rows(f"SELECT user_id, gallery, COUNT(*) FROM face_galleries "
                                 f"{where} GROUP BY user_id, gallery", args):
        if (u, gallery) in counts:
            counts[(u, gallery)] = int(n)
    return counts


def render_gallery_faces(counts: dict[tuple[int, str], int]) -> str:
    """``backend_gallery_faces{user="3",gallery="default"} 12`` lines (a gauge)."""
    lines = ["# HELP backend_gallery_faces Faces per gallery and user (token owner id).",
             "# TYPE backend_gallery_faces gauge"]
    for (user, gallery), n in sorted(counts.items()):
        lines.append(f'backend_gallery_faces{{user="{user}",gallery="{_esc(gallery)}"}} {n}')
    return "\n".join(lines) + "\n"


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


class MetricsMiddleware:
    """Times each HTTP request and records it under its route template (e.g. /v1/face/id/...)."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            version = scope["path"][:3]
            if version in ("/v0", "/v1") and not path.startswith(version):
                path = version + path
            self.metrics.observe(scope["method"], path, status["code"],
                                 time.perf_counter() - start)
