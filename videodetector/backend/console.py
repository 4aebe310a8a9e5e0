"""The operator console: static pages at ``/`` and its login session under ``/v1/session``.

The pages are plain JavaScript and CSS shipped inside the package (``web/``), no build step,
nothing fetched from elsewhere: a Content-Security-Policy of ``'self'`` keeps it that way and
blocks inline script. They call the public API with the session cookie (see ``websession``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from videodetector.backend import openapi, websession
from videodetector.backend.deps import BackendDep, UserDep
from videodetector.backend.errors import auth_failed, bad_param, not_found
from videodetector.backend.params import read_params
from videodetector.backend.settings import Settings

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent / "web"
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".svg": "image/svg+xml", ".png": "image/png"}
LOGIN_MAX_BYTES = 4096

router = APIRouter(tags=["console session"])


def security_headers(settings: Settings) -> dict[str, str]:
    """What every console page is sent with: only this origin (and the upload URL's, if the
    images are served elsewhere); no framing, no referrer, no MIME sniffing."""
    img = "'self' data: blob:"
    if settings.upload_url:
        parts = urlsplit(settings.upload_url)
        if parts.scheme in ("http", "https") and parts.netloc:
            img += f" {parts.scheme}://{parts.netloc}"
    csp = (f"default-src 'none'; script-src 'self'; style-src 'self'; img-src {img}; "
           "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
    return {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
            "Cache-Control": "no-cache"}


def static_file(name: str) -> Path | None:
    """A file of ``web/`` by its plain name (no folders), if it exists and may be served."""
    if "/" in name or "\\" in name or name.startswith("."):
        return None
    path = WEB_DIR / name
    if path.suffix not in STATIC_TYPES or not path.is_file():
        return None
    return path


def _sessions(request: Request) -> websession.SessionStore:
    return request.app.state.sessions


def _set_cookie(response: Response, request: Request, value: str, max_age: int) -> None:
    response.set_cookie(websession.COOKIE, value, max_age=max_age, path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


LOGIN_DOC = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["token"],
    "properties": {"token": {"type": "string", "minLength": 1, "maxLength": 256}}}}}}}


async def login_token(request: Request) -> str:
    """The token of a login: a JSON body ``{"token": ...}`` sent as application/json."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise bad_param("Content-Type", "log in with a JSON body {\"token\": ...} sent as "
                        "application/json", ctype or None, status=415)
    p = await read_params(request, LOGIN_MAX_BYTES)
    token = p.raw("token")
    if not isinstance(token, str) or not token.strip():
        raise bad_param("token", "token must be the API token as a string")
    return token.strip()


@router.post("/session", openapi_extra=LOGIN_DOC, responses={
    415: {"description": "BAD_PARAM: the body must be application/json"}})
def login(request: Request, token: Annotated[str, Depends(login_token)],
          backend: BackendDep) -> JSONResponse:
    """Log the console in: a JSON body ``{"token": "<API token>"}`` (JSON only, so a form on
    another site cannot post it). Sets the HttpOnly session cookie; answers ``{"csrf": ...}``,
    the value to send as ``X-CSRF-Token`` with every write."""
    sessions = _sessions(request)
    user = backend.tokens.user_for_header(f"Token {token}")
    session_id, session = sessions.create(user)
    response = JSONResponse({"csrf": session.csrf, "expires_in": int(sessions.lifetime)})
    _set_cookie(response, request, session_id, int(sessions.lifetime))
    return response


@router.get("/session", openapi_extra={"security": [{"Session": []}]})
def session_info(request: Request) -> dict[str, Any]:
    """The console's current session: ``{"csrf": ...}``, or 401 when not logged in."""
    session = _sessions(request).get(request.cookies.get(websession.COOKIE))
    if session is None:
        raise auth_failed("not logged in")
    return {"csrf": session.csrf}


@router.delete("/session", status_code=204)
def logout(request: Request, _: UserDep) -> Response:
    """Log out: the session ends (for every process) and the cookie is cleared."""
    _sessions(request).delete(request.cookies.get(websession.COOKIE))
    response = Response(status_code=204)
    _set_cookie(response, request, "", 0)
    return response


def install(app: FastAPI, settings: Settings) -> None:
    """Mount the console: ``/`` (the page), ``/static/<file>``, and ``/v1/session``."""
    # the session cookie counts as credentials only where the console is mounted (deps.py)
    app.state.sessions = app.state.backend.sessions_store
    app.include_router(router, prefix="/v1", responses=openapi.ERRORS)
    headers = security_headers(settings)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html; charset=utf-8",
                            headers=headers)

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        path = static_file(name)
        if path is None:
            raise not_found("file", name)
        return FileResponse(path, media_type=STATIC_TYPES[path.suffix], headers=headers)
