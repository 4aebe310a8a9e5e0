"""Shared request plumbing for the routers: the backend, the user, parameters, photo bytes."""

from __future__ import annotations

import logging

import httpx
from fastapi import Request
from starlette.datastructures import UploadFile

from videodetector.backend import websession
from videodetector.backend.errors import bad_param, too_large
from videodetector.backend.params import Params, read_params, read_upload
from videodetector.backend.service import Backend
from videodetector.backend.views import Urls

log = logging.getLogger(__name__)


def get_backend(request: Request) -> Backend:
    return request.app.state.backend


def current_user(request: Request) -> int:
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


async def photo_bytes(p: Params, name: str, backend: Backend) -> bytes | None:
    """An image parameter: an uploaded file, or an http(s) URL fetched with --fetch-urls."""
    value = p.single(name)
    if value is None or value == "":
        return None
    limit = backend.settings.max_photo_bytes
    if isinstance(value, UploadFile):
        return await read_upload(value, name, limit)
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        if not backend.settings.fetch_urls:
            raise bad_param(name, f"fetching {name} from a URL is disabled; upload the image "
                            "as multipart/form-data or start the backend with --fetch-urls",
                            value)
        return await fetch_url(value, name, limit, backend.settings.fetch_timeout)
    raise bad_param(name, f"{name} must be an uploaded image file or an http(s) URL", value)


async def fetch_url(url: str, name: str, limit: int, timeout: float) -> bytes:
    """GET a public, direct (no redirects) image URL, at most ``limit`` bytes."""
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            async with client.stream("GET", url) as resp:
                if resp.status_code != 200:
                    raise bad_param(name, f"could not fetch {name}: HTTP {resp.status_code}", url)
                data = bytearray()
                async for chunk in resp.aiter_bytes():
                    data.extend(chunk)
                    if len(data) > limit:
                        raise too_large(name, len(data), limit)
                return bytes(data)
    except httpx.HTTPError as exc:
        raise bad_param(name, f"could not fetch {name}: {exc}", url) from None


async def face_images(p: Params, backend: Backend) -> list[bytes]:
    """The video detector's normalized faces: ``face0``, ``face1``, ... (consecutive)."""
    out = []
    i = 0
    while f"face{i}" in p:
        data = await photo_bytes(p, f"face{i}", backend)
        if data is None:
            break
        out.append(data)
        i += 1
    return out
