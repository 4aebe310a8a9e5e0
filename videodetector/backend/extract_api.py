"""HTTP side of the Extraction API (8.5, see ``extraction.py``).

* On the backend: ``POST /v1/extract`` (and ``/v0/extract``), with the usual token.
* As its own small server, like ``findface-extraction-api`` on port 18666:
  ``fkvideo_backend extraction-api [--host 127.0.0.1] [--port 18666] [--gae] [--fetch-urls]``
  answers ``POST /`` without a token or a data directory (bind it to localhost or a private
  network, as the reference does).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import anyio.from_thread
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from videodetector.backend.deps import UserDep, fetch_url
from videodetector.backend.engine import shared_engine
from videodetector.backend.errors import ApiError, bad_param
from videodetector.backend.extraction import (
    MAX_REQUESTS,
    Extractor,
    error_json,
    parse_request,
    parse_requests,
)
from videodetector.backend.fetch import networks
from videodetector.backend.inline import (
    Parts,
    decode_base64_image,
    is_url,
    part_name,
    read_json_and_parts,
)
from videodetector.backend.model_choice import choose_embedding_model, cpu_runs_bf16
from videodetector.backend.settings import AUTO_MODEL, Settings
from videodetector.core.models import ModelError

log = logging.getLogger(__name__)

EXTRACT_DOC = {"requestBody": {"content": {
    "application/json": {"schema": {"type": "object", "properties": {"requests": {
        "type": "array", "maxItems": MAX_REQUESTS, "items": {"type": "object", "properties": {
            "image": {"type": "string", "description": "multipart:PART, an http(s) URL "
                      "(--fetch-urls) or base64 / data: URI"},
            "roi": {"type": "object", "description": "{left, top, right, bottom}"},
            "detector": {"type": "string", "enum": ["nnd", "legacy", "prenormalized"]},
            **{f: {"type": "boolean"} for f in ("need_facen", "need_gender", "need_age",
                                                 "need_emotions", "need_normalized",
                                                 "auto_rotate")}}}}}}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "request": {"type": "string", "description": 'JSON {"requests": [...]}'}},
        "additionalProperties": {"type": "string", "format": "binary"}}},
}}}

router = APIRouter(tags=["extraction"])


def max_body(settings: Settings) -> int:
    return 3 * settings.max_photo_bytes + (1 << 20)


async def fetch_image(url: str, param: str, settings: Settings) -> bytes:
    """An image URL, fetched only with ``fetch_urls`` (the error says how to turn it on)."""
    if not settings.fetch_urls:
        raise bad_param(param, f"{param} is a URL, and fetching URLs is disabled (the safe "
                        "default); upload the image instead, or start the server with "
                        "--fetch-urls (fetch_urls = True in the config file)", url)
    return await fetch_url(url, param, settings.max_photo_bytes, settings.fetch_timeout,
                           networks(settings.fetch_allow))


async def image_bytes(value: str, param: str, parts: Parts, settings: Settings) -> bytes:
    """The bytes an ``image`` value names: a multipart part, a URL, or base64 text."""
    name = part_name(value)
    if name is not None:
        return await parts.read(name, param)
    if is_url(value):
        return await fetch_image(value, param, settings)
    return decode_base64_image(value, param, settings.max_photo_bytes)


@dataclass(frozen=True)
class ExtractionBody:
    """The JSON of an extraction request and its multipart parts (images read later)."""

    body: Any
    parts: Parts


async def extraction_body(request: Request) -> ExtractionBody:
    settings = extractor_of(request).settings
    body, parts = await read_json_and_parts(request, "request", MAX_REQUESTS,
                                            max_body(settings), settings.max_photo_bytes)
    return ExtractionBody(body, parts)


ExtractionBodyDep = Annotated[ExtractionBody, Depends(extraction_body)]


def run_extraction(extractor: Extractor, request: ExtractionBody) -> dict[str, Any]:
    """Each request in turn (in the handler's worker thread); an image is read (a part, or
    fetched) on the event loop (``anyio.from_thread.run``) just before it is analysed."""
    settings = extractor.settings
    responses = []
    for i, item in enumerate(parse_requests(request.body)):
        param = f"requests[{i}].image"
        try:
            req = parse_request(item, i)
            data = anyio.from_thread.run(image_bytes, req.image, param, request.parts,
                                         settings)
            responses.append(extractor.extract(req, data, param))
        except ApiError as exc:
            responses.append({"faces": [], "error": error_json(exc)})
        except ModelError as exc:
            responses.append({"faces": [], "error": {"code": "SERVICE_UNAVAILABLE",
                                                     "desc": f"face models: {exc}"}})
    return {"responses": responses}


def extractor_of(request: Request) -> Extractor:
    app = request.app
    if getattr(app.state, "extractor", None) is None:
        backend = app.state.backend
        app.state.extractor = Extractor(backend.settings, backend.engine)
    return app.state.extractor


@router.post("/extract", openapi_extra=EXTRACT_DOC)
def extract(request: Request, user: UserDep, body: ExtractionBodyDep) -> dict[str, Any]:
    """Extraction API (8.5): ``{"requests": [...]}`` -> ``{"responses": [...]}``; no
    database. ``image`` is ``multipart:PART``, a URL (--fetch-urls) or base64."""
    return run_extraction(extractor_of(request), body)


def create_extraction_app(settings: Settings) -> FastAPI:
    """The Extraction API alone: ``POST /`` (8.5.2), no token, no data directory.
    ``embedding_model`` auto: the rule of a new store (no store here, nothing recorded)."""
    from videodetector.backend.app import BodyLimitMiddleware, TrailingSlashMiddleware

    choice = choose_embedding_model(settings.embedding_model, None, {},
                                    settings.embedding_model == AUTO_MODEL and cpu_runs_bf16())
    log.info("extraction API: embedding model %s (%s)", choice.model, choice.reason)
    settings = settings.with_changes(embedding_model=choice.model)
    extractor = Extractor(settings, shared_engine(settings.model_threads,
                                                  settings.detector_threshold,
                                                  settings.embedding_model,
                                                  settings.embed_max_batch))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.preload_models:
            await run_in_threadpool(extractor.engine.load)
        log.info("extraction API ready")
        yield

    app = FastAPI(title="videodetector extraction API", version="1", lifespan=lifespan,
                  description="findface-extraction-api (8.5) compatible: POST / "
                  '{"requests": [...]}', docs_url="/docs", redoc_url=None)
    app.state.extractor = extractor

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.post("/", openapi_extra=EXTRACT_DOC)
    def root(body: ExtractionBodyDep) -> dict[str, Any]:
        return run_extraction(extractor, body)

    app.add_middleware(BodyLimitMiddleware, limit=max_body(settings))
    app.add_middleware(TrailingSlashMiddleware)
    return app


DEFAULT_PORT = 18666  # findface-extraction-api's port (8.5.2)


def serve_extraction(settings: Settings) -> None:
    """Serve the Extraction API alone in the foreground until SIGINT/SIGTERM."""
    import uvicorn

    from videodetector.backend.server import bind_socket, uvicorn_config

    sock = bind_socket(settings.host, settings.port)
    log.info("extraction API listening on http://%s:%d", settings.host, sock.getsockname()[1])
    uvicorn.Server(uvicorn_config(create_extraction_app(settings), settings)).run(
        sockets=[sock])
