"""/metrics through prometheus_client: requests by route and status, request latency
(histogram per route), /identify latency (whole request and index search), enroll latency
(``POST /face``), stored objects, faces per gallery (``backend_gallery_faces{user, gallery}``)
and the plugin host's counters.

``RequestMetrics.registry`` is this app's own ``CollectorRegistry`` (never the global one:
tests run several apps in one process); the scrape-time figures are ``Collector`` objects.
An API token's view (``tenant_text``) is rendered from collectors made for that user only,
so nothing of another tenant can appear in it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from videodetector.backend import person_store

# No *_created series: the exposition stays as it was (one line per figure), and it is
# process-wide on purpose: each program owns its process.
disable_created_metrics()

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SEARCH_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
# the route templates (as MetricsMiddleware records them) timed as identify / enroll
IDENTIFY_ROUTES = frozenset(f"/{v}{p}" for v in ("v0", "v1")
                            for p in ("/identify", "/faces/gallery/{gallery}/identify"))
ENROLL_ROUTES = frozenset(("/v0/face", "/v1/face"))


class Observer(Protocol):
    def observe(self, amount: float) -> None: ...


class _Null:
    def observe(self, amount: float) -> None:
        pass


NULL_OBSERVER: Observer = _Null()


class RequestMetrics:
    """The app's registry and the histograms/counters observed on the request path."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("backend_requests", "HTTP requests by method, route and status.",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("backend_request_duration_seconds", "Request latency.",
                                 ["method", "route"], registry=self.registry,
                                 buckets=LATENCY_BUCKETS)
        self.identify = Histogram(
            "backend_identify_seconds", "Whole /identify requests answered 2xx (all routes).",
            registry=self.registry, buckets=LATENCY_BUCKETS)
        self.search = Histogram(
            "backend_identify_search_seconds",
            "Index search per probe face in /identify (inside backend_identify_seconds).",
            registry=self.registry, buckets=SEARCH_BUCKETS)
        self.enroll = Histogram(
            "backend_enroll_seconds", "Whole POST /face (enroll) requests answered 2xx.",
            registry=self.registry, buckets=LATENCY_BUCKETS)
        # more metric families, read at scrape time: Collector objects, or (the older
        # interface, still accepted) callables returning exposition text
        self.collectors: list[Collector | Callable[[], str]] = []
        self.registry.register(_Extra(self.collectors))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
        if 200 <= status < 300:
            if route in IDENTIFY_ROUTES:
                self.identify.observe(seconds)
            elif method == "POST" and route in ENROLL_ROUTES:
                self.enroll.observe(seconds)

    def render(self) -> str:
        """Everything (the metrics token's view)."""
        return generate_latest(self.registry).decode()


class _Extra(Collector):
    def __init__(self, collectors: list[Collector | Callable[[], str]]) -> None:
        self._collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for item in list(self._collectors):
            if hasattr(item, "collect"):
                yield from item.collect()  # type: ignore[union-attr]
            else:
                yield from text_string_to_metric_families(item())  # type: ignore[operator]


def render_collectors(collectors: Iterable[Collector]) -> str:
    """Exposition text of a few collectors (a throw-away registry: one tenant's view)."""
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry).decode()


def stored_counts(backend: Any, user: int | None) -> dict[str, tuple[str, float]]:
    """Stored object counts: of every tenant (``user`` None), or of one user."""
    db = backend.db
    if user is not None:
        def count(table: str) -> float:
            return float(db.scalar(f"SELECT COUNT(*) FROM {table} WHERE user_id = ?", (user,)))

        return {"backend_faces": ("Stored faces of this token.", count("faces")),
                "backend_persons": ("Persons (8.2) of this token.", count("persons")),
                "backend_cameras": ("Cameras of this token.", count("cameras")),
                **person_store.gauges(db, user)}
    return {
        "backend_faces": ("Stored faces.", float(backend.index.total())),
        "backend_persons": ("Persons (8.2).", float(db.scalar("SELECT COUNT(*) FROM persons"))),
        "backend_cameras": ("Cameras.", float(db.scalar("SELECT COUNT(*) FROM cameras"))),
        "backend_users": ("Tokens.", float(db.scalar("SELECT COUNT(*) FROM users"))),
        **person_store.gauges(db),
    }


class StoredObjects(Collector):
    """``backend_faces``, ``backend_persons``, ``backend_cameras`` (+ ``backend_users`` for
    every tenant): of every tenant, or of ``user`` only."""

    def __init__(self, backend: Any, user: int | None = None) -> None:
        self.backend = backend
        self.user = user

    def collect(self) -> Iterator[Metric]:
        for name, (help_text, value) in stored_counts(self.backend, self.user).items():
            yield GaugeMetricFamily(name, help_text, value=value)


class GalleryFaces(Collector):
    """``backend_gallery_faces{user, gallery}``: of every user, or of ``user`` only."""

    def __init__(self, db: Any, user: int | None = None) -> None:
        self.db = db
        self.user = user

    def collect(self) -> Iterator[Metric]:
        yield gallery_faces_family(gallery_face_counts(self.db, self.user))


def user_metrics_text(backend: Any, user: int) -> str:
    """The metrics a token sees of its own: collectors made for that user alone (not a
    filter over the full registry)."""
    return render_collectors([StoredObjects(backend, user), GalleryFaces(backend.db, user)])


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


def gallery_faces_family(counts: dict[tuple[int, str], int]) -> Metric:
    """``backend_gallery_faces{user="3",gallery="default"} 12`` (a gauge)."""
    family = GaugeMetricFamily("backend_gallery_faces",
                               "Faces per gallery and user (token owner id).",
                               labels=["user", "gallery"])
    for (user, gallery), n in sorted(counts.items()):
        family.add_metric([str(user), gallery], float(n))
    return family


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
            path = getattr(route, "path", None)
            version = scope["path"][:3]
            if path is None:
                path = "unmatched"  # one label for every path no route has (not "/v1unmatched")
            elif version in ("/v0", "/v1") and not path.startswith(version):
                path = version + path
            self.metrics.observe(scope["method"], path, status["code"],
                                 time.perf_counter() - start)
