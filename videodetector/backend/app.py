"""The ASGI application: ``create_app(settings)``.

Every API route exists under ``/v0`` and ``/v1``, with or without a trailing
slash. Errors are JSON ``{code, reason, ...}`` (9.1 "Error Reporting"). Stored
images are served without authentication under ``/<upload_path>/`` (like
findface-upload); their names carry a random part.
"""

from __future__ import annotations

import hmac
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from videodetector.backend import (
    batch,
    cameras,
    camhealth,
    console,
    events,
    extract_api,
    faces,
    galleries,
    history,
    models_api,
    openapi,
    persons,
    report,
    stats,
    sync,
    thumbs,
    watchlists,
    webhooks,
    websession,
)
from videodetector.backend.deps import current_user, max_body_bytes
from videodetector.backend.errors import ApiError, bad_param, not_found, too_large
from videodetector.backend.metrics import (
    MetricsMiddleware,
    RequestMetrics,
    StoredObjects,
    user_metrics_text,
)
from videodetector.backend.plugin_host import PluginHost
from videodetector.backend.retention import RetentionThread
from videodetector.backend.service import Backend
from videodetector.backend.settings import Settings
from videodetector.core.models import ModelError

log = logging.getLogger(__name__)

API_VERSIONS = ("v0", "v1")


class TrailingSlashMiddleware:
    """``/v1/face/`` is ``/v1/face``: clients written for 9.1 use both."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and len(scope["path"]) > 1 and scope["path"].endswith("/"):
            scope = dict(scope)
            scope["path"] = scope["path"].rstrip("/") or "/"
            raw = scope.get("raw_path")
            if raw:
                scope["raw_path"] = raw.rstrip(b"/") or b"/"
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuse (413) a request whose declared Content-Length exceeds the limit, unread; stop
    reading a body without Content-Length (chunked) once it exceeds the limit."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.limit:
                err = too_large("body", int(length), self.limit)
                resp = JSONResponse(err.body(), status_code=err.status,
                                    headers={"Connection": "close"})
                await resp(scope, receive, send)
                return
            receive = self._counting(receive)
        await self.app(scope, receive, send)

    def _counting(self, receive: Receive) -> Receive:
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise too_large("body", seen, self.limit)
            return message

        return counted


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(x) for x in first.get("loc", ()) if x not in ("path", "query", "body")]
        param = loc[-1] if loc else "request"
        value = first.get("input")
        value = value if isinstance(value, str | int | float | bool) else None
        return error_response(bad_param(param, f"{param}: {first.get('msg', 'invalid')}", value))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            err = ApiError(404, "NOT_FOUND", f"no such method: {request.method} "
                           f"{request.url.path}")
        elif exc.status_code == 405:
            err = ApiError(405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed on "
                           f"{request.url.path}")
        else:
            err = ApiError(exc.status_code, "HTTP_ERROR", str(exc.detail))
        return error_response(err)

    @app.exception_handler(sqlite3.OperationalError)
    async def db_error(_: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        log.exception("database error")
        return error_response(ApiError(503, "SERVICE_UNAVAILABLE", f"database error: {exc}"))

    @app.exception_handler(OSError)
    async def storage_error(_: Request, exc: OSError) -> JSONResponse:
        log.exception("storage error")
        return error_response(ApiError(503, "SERVICE_UNAVAILABLE", f"storage error: {exc}"))

    @app.exception_handler(ModelError)
    async def model_error(_: Request, exc: ModelError) -> JSONResponse:
        return error_response(ApiError(503, "SERVICE_UNAVAILABLE", f"face models: {exc}"))

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(ApiError(500, "INTERNAL_ERROR",
                                       f"internal error: {type(exc).__name__}"))


def stored_file(backend: Backend, rel: str) -> Path | None:
    """The stored image named by an /uploads/ path, or None (also for names no stored file
    can have: empty, NUL, overlong, outside the store, unfinished ``.tmp``)."""
    if not rel or "\x00" in rel or len(rel) > 1024:
        return None
    try:
        path = backend.files.path(rel)
        if path is None or not path.is_file() or path.name.endswith(".tmp"):
            return None
    except (OSError, ValueError):
        return None
    return path


def metrics_user(settings: Settings, backend: Backend, header: str | None) -> int | None:
    """Who may read /metrics: None for the metrics token (every tenant), else the API token's
    user (its own counts only); 401 AUTH_FAILED otherwise."""
    secret = settings.metrics_token
    if secret and header:
        scheme, _, key = header.strip().partition(" ")
        if scheme.lower() in ("bearer", "token") and hmac.compare_digest(
                key.strip().encode(), secret.encode()):
            return None
    return backend.tokens.user_for_header(header)


def _upload_route(upload_path: str) -> str:
    return f"/{upload_path}/{{rel:path}}"


def _may_match_under(path: str, first: str) -> bool:
    """Whether a route of ``path`` may match a path whose first segment is ``first``."""
    segment = path.lstrip("/").split("/")[0]
    return segment == first or "{" in segment or path == ""  # "": a mount at the root


def _serve_uploads_first(app: FastAPI, upload_path: str) -> None:
    """Move the stored-image route in front of every route when no other route can match a
    path under ``/<upload_path>/``: a GET of a photo, thumbnail or normalized face then tries
    one route instead of every API route first (~0.5 ms of CPU). No answer changes, as no
    other route matches those paths; with an upload_path such as ``v1/img`` it stays last."""
    routes = app.router.routes
    upload = next(r for r in routes if getattr(r, "path", None) == _upload_route(upload_path))
    first = upload_path.split("/")[0]
    for other in iter_route_contexts(routes):
        if other.original_route is not upload and _may_match_under(other.path or "", first):
            log.info("%s is tried after %s (same first path segment)",
                     _upload_route(upload_path), other.path)
            return
    routes.remove(upload)
    routes.insert(0, upload)


def _install_misc_routes(app: FastAPI, backend: Backend, metrics: RequestMetrics) -> None:
    upload_path = backend.settings.upload_path

    @app.get(_upload_route(upload_path), include_in_schema=False)
    def upload(rel: str) -> Response:
        path = stored_file(backend, rel)
        if path is None and thumbs.is_lazy_name(rel):  # a thumbnail made on first read
            made = thumbs.make_on_read(backend.files, backend.thumbnail_keys, rel,
                                       backend.faces_store.thumbnail_in_use)
            if isinstance(made, bytes):  # made but not stored (a full disk)
                return Response(made, media_type="image/jpeg")
            path = made
        if path is None:
            raise not_found("file", rel)
        return FileResponse(path)

    @app.get("/metrics", include_in_schema=False)
    def metrics_route(request: Request) -> PlainTextResponse:
        user = metrics_user(backend.settings, backend, request.headers.get("authorization"))
        text = _metrics_text(backend, metrics, user)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/docs", include_in_schema=False)
    async def docs_versions() -> dict[str, Any]:
        return {"versions": list(API_VERSIONS), "docs": "/v1/docs",
                "openapi": "/v1/openapi.json"}

    @app.get("/v0/docs", include_in_schema=False)
    @app.get("/docs/{version}", include_in_schema=False)
    async def docs_redirect() -> RedirectResponse:
        return RedirectResponse("/v1/docs")


def _metrics_text(backend: Backend, metrics: RequestMetrics, user: int | None) -> str:
    """Everything for the metrics token (``user`` None); a token's own counts otherwise,
    from collectors made for that user alone (not a filter over the full registry)."""
    if user is None:
        return metrics.render()
    return user_metrics_text(backend, user)


def _needs_user(dependant: Any) -> bool:
    return any(d.call is current_user or _needs_user(d) for d in dependant.dependencies)


def _install_openapi_auth(app: FastAPI, routers: list[APIRouter]) -> None:
    """Declare how a request authenticates (the ``Authorization: Token <key>`` header, or the
    console's session cookie with its CSRF header) so /v1/docs can send it and the spec tells
    which operations need it (those of ``routers``, mounted at /v1, that depend on
    ``current_user``)."""
    default = app.openapi

    def openapi_with_auth() -> dict[str, Any]:
        if app.openapi_schema is None:
            authenticated = {("/v1" + r.path_format, m.lower()) for router in routers
                             for r in router.routes
                             if isinstance(r, APIRoute) and _needs_user(r.dependant)
                             for m in r.methods}
            app.openapi_schema = openapi.add_security(default(), authenticated,
                                                      websession.COOKIE, "X-CSRF-Token")
        return app.openapi_schema

    app.openapi = openapi_with_auth  # type: ignore[method-assign]


def create_app(settings: Settings | None = None, backend: Backend | None = None) -> FastAPI:
    """The FastAPI app for ``settings`` (opens the data directory now; models load at
    startup with ``preload_models``, else on first use)."""
    settings = settings or Settings()
    backend = backend or Backend(settings)
    metrics = RequestMetrics()
    metrics.collectors.append(StoredObjects(backend))
    stats.add_metrics(metrics, backend)
    backend.plugins = PluginHost.load(settings, backend)  # 9.2; none unless configured
    metrics.collectors.append(backend.plugins)
    backend.search_seconds = metrics.search

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.preload_models:
            await run_in_threadpool(backend.engine.load)
            if settings.gae:
                try:
                    await run_in_threadpool(backend.engine.age_gender)
                except ApiError as exc:
                    log.error("gae is enabled but unavailable: %s", exc.reason)
                _, error = await run_in_threadpool(backend.engine.emotion_classifier)
                if error is not None:
                    log.error("gae is enabled but emotions are unavailable: %s", error)
        retention = RetentionThread(backend).start() if settings.history_max_age else None
        deliverer = webhooks.Deliverer(backend).start()
        log.info("backend ready: data in %s", settings.data_dir.resolve())
        try:
            yield
        finally:
            await deliverer.stop()
            if retention is not None:
                retention.stop()
            backend.plugins.close()
            backend.close()

    app = FastAPI(
        title="videodetector backend",
        description="FindFace Server 2.6 compatible face recognition API (/v0 and /v1). "
                    "Authenticate with 'Authorization: Token <key>'.",
        version="1",
        docs_url="/v1/docs",
        openapi_url="/v1/openapi.json",
        redoc_url=None,
        lifespan=lifespan,
    )
    # TrailingSlashMiddleware already maps /x/ to /x: Starlette's own slash redirect could only
    # redirect a path to itself (and would copy the client's Host header into Location)
    app.router.redirect_slashes = False
    app.state.backend = backend
    app.state.metrics = metrics
    _install_error_handlers(app)
    versioned = [faces.router, galleries.router, persons.router, cameras.router,
                 extract_api.router, stats.router, batch.router, sync.router,
                 models_api.router, camhealth.router]
    v1_only = [events.router, history.router, report.router, watchlists.router,
               webhooks.router]
    # A request tries the routes in the order they were added, and each route tried costs
    # Python (~1-2 us each, ~150 per version): /v1 (detectors, the console) comes before
    # /v0, and faces.router (POST /v1/face) first. No route of one prefix can match a path
    # of the other, so the order changes no answer; the OpenAPI document lists /v1 alone,
    # in the same order as before.
    for router in versioned:
        app.include_router(router, prefix="/v1", responses=openapi.ERRORS)
    for router in v1_only:
        app.include_router(router, prefix="/v1", responses=openapi.ERRORS)
    for router in versioned:
        app.include_router(router, prefix="/v0", responses=openapi.ERRORS,
                           include_in_schema=False)
    app.include_router(stats.router, include_in_schema=False)  # 8.6's own /stat/... paths
    console.install(app, settings)
    _install_misc_routes(app, backend, metrics)
    backend.plugins.mount(app, backend)  # /v1/plugins/<name>/...
    _serve_uploads_first(app, settings.upload_path)
    _install_openapi_auth(app, [*versioned, *v1_only, console.router])
    app.add_middleware(BodyLimitMiddleware, limit=max_body_bytes(backend))
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(TrailingSlashMiddleware)
    return app
