"""Shared request plumbing for the routers: the backend, the user, parameters, photo bytes."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from videodetector.backend import websession
from videodetector.backend.errors import bad_param
from videodetector.backend.fetch import fetch_url, networks
from videodetector.backend.imaging import PixelBudget
from videodetector.backend.inline import decode_base64_image
from videodetector.backend.params import Params, check_text, read_params, read_upload
from videodetector.backend.service import Backend
from videodetector.backend.stores.cameras import CameraStore
from videodetector.backend.stores.stats import StatsStore
from videodetector.backend.stores.webhooks import WebhookStore
from videodetector.backend.views import Urls

log = logging.getLogger(__name__)

MAX_URL = 2048  # characters of a URL parameter
IMAGE_FORMS = "an uploaded image file, base64 (or a data: URI) or an http(s) URL"


def get_backend(request: Request) -> Backend:
    return request.app.state.backend


async def backend_of(request: Request) -> Backend:
    """``BackendDep``: async, so FastAPI calls it on the event loop (a plain ``def``
    dependency costs a worker-thread hop per request, ~0.1 ms of CPU, for a lookup)."""
    return request.app.state.backend


async def current_user(request: Request) -> int:
    """``UserDep``: :func:`user_of_request`. A token already known is answered on the event
    loop (no database read); anything else (a new token, the session cookie, an error) is
    worked out in the threadpool as before."""
    backend: Backend = request.app.state.backend
    user = backend.tokens.cached_user(request.headers.get("authorization"))
    if user is not None:
        return user
    return await run_in_threadpool(user_of_request, request)


def user_of_request(request: Request) -> int:
    """The user (token owner) of the request; 401 AUTH_FAILED otherwise. Without an
    Authorization header, the console's session cookie (CSRF-checked for writes) counts."""
    backend = get_backend(request)
    header = request.headers.get("authorization")
    sessions = getattr(request.app.state, "sessions", None)
    if header is None and sessions is not None and websession.COOKIE in request.cookies:
        return sessions.user_for_request(request)
    return backend.tokens.user_for_header(header)


async def params_of(request: Request) -> Params:
    backend = get_backend(request)
    return await read_params(request, max_body_bytes(backend))


def max_body_bytes(backend: Backend) -> int:
    """Room for a frame, a few normalized faces and text fields."""
    return 3 * backend.settings.max_photo_bytes + (1 << 20)


def urls_of(request: Request) -> Urls:
    return Urls(get_backend(request).settings, request)


# Dependency aliases for the routers: handlers are plain ``def`` functions (FastAPI runs them
# in its threadpool) that name what they need, e.g. ``def f(backend: BackendDep, user: UserDep)``.
# The request body is read by the async dependency ``ParamsDep`` before the handler runs.
BackendDep = Annotated[Backend, Depends(backend_of)]
UserDep = Annotated[int, Depends(current_user)]
ParamsDep = Annotated[Params, Depends(params_of)]
UrlsDep = Annotated[Urls, Depends(urls_of)]


MAX_FACE_PARTS = 64  # face0..face63: normalized faces in one request


def image_budget(backend: Backend) -> PixelBudget:
    """The decoded-pixel budget of one request (``max_request_pixels``)."""
    return PixelBudget(backend.settings.max_request_pixels)


async def photo_bytes(p: Params, name: str, backend: Backend,
                      budget: PixelBudget | None = None) -> bytes | None:
    """An image parameter: an uploaded file, or an http(s) URL fetched with --fetch-urls.
    Its header is checked (format, ``max_size``, the request's pixel ``budget``) here, before
    anything is decoded."""
    data = await _image_param(p, name, backend)
    if data is not None:
        s = backend.settings
        (budget or image_budget(backend)).take(data, name, s.max_size, "max_size")
    return data


async def _image_param(p: Params, name: str, backend: Backend) -> bytes | None:
    value = p.single(name)
    if value is None or value == "":
        return None
    s = backend.settings
    limit = s.max_photo_bytes
    if isinstance(value, UploadFile):
        return await read_upload(value, name, limit)
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        if not s.fetch_urls:
            raise bad_param(name, f"fetching {name} from a URL is disabled; upload the image "
                            "as multipart/form-data or start the backend with --fetch-urls",
                            value)
        check_text(name, value, MAX_URL)
        return await fetch_url(value, name, limit, s.fetch_timeout, networks(s.fetch_allow))
    if isinstance(value, str):  # base64 or a data: URI (a JSON body), refused by length first
        return decode_base64_image(value, name, limit, IMAGE_FORMS)
    raise bad_param(name, f"{name} must be {IMAGE_FORMS}", value)


def fetches_an_image(p: Params) -> bool:
    """Whether an image parameter (``photo``, ``face0``...) is an http(s) URL to fetch."""
    names = ["photo", *(n for n in p.names() if n.startswith("face") and n[4:].isdigit())]
    return any(isinstance(v := p.single(n), str) and v.startswith(("http://", "https://"))
               for n in names)


async def replayed_ids(backend: Backend, user: int, key: str) -> list[int] | None:
    """``Backend.replay`` (a database read) from an async dependency: in the threadpool."""
    return await run_in_threadpool(backend.replay, user, key)


async def face_images(p: Params, backend: Backend, budget: PixelBudget | None = None
                      ) -> list[bytes]:
    """The video detector's normalized faces: ``face0``, ``face1``, ... (consecutive, at most
    ``MAX_FACE_PARTS``), each at most ``max_normalized_size`` on a side."""
    s = backend.settings
    budget = budget or image_budget(backend)
    out = []
    i = 0
    while f"face{i}" in p:
        if i >= MAX_FACE_PARTS:
            raise bad_param(f"face{i}", f"at most {MAX_FACE_PARTS} normalized faces "
                            f"(face0..face{MAX_FACE_PARTS - 1}) per request", i)
        data = await _image_param(p, f"face{i}", backend)
        if data is None:
            break
        budget.take(data, f"face{i}", s.max_normalized_size, "max_normalized_size")
        out.append(data)
        i += 1
    return out


# stores-b: the storage owners of cameras (and their health), history, webhooks, watch lists


def cameras_of(backend: BackendDep) -> CameraStore:
    return backend.cameras_store


CamerasDep = Annotated[CameraStore, Depends(cameras_of)]


def webhooks_of(backend: BackendDep) -> WebhookStore:
    return backend.webhooks_store


WebhooksDep = Annotated[WebhookStore, Depends(webhooks_of)]


def stats_of(backend: BackendDep) -> StatsStore:
    return backend.stats_store


StatsDep = Annotated[StatsStore, Depends(stats_of)]
