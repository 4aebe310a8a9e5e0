"""Camera methods (9.1.4). ``GET /camera?detector=NAME`` is what fkvideo_detector polls.

``roi`` / ``rot`` are accepted as ``[W, H, X, Y]`` (the API's form) or ``"WxH+X+Y"``
(the detector's flag form) and returned in the form they were given.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from videodetector.backend import openapi, views
from videodetector.backend.deps import BackendDep, CamerasDep, ParamsDep, UserDep
from videodetector.backend.errors import bad_param, not_found
from videodetector.backend.params import MAX_TEXT, Params, load_json
from videodetector.backend.stores.cameras import CameraStore
from videodetector.core.geometry import region_rect
from videodetector.core.sourcespec import parse_source

router = APIRouter(tags=["cameras"])


MAX_REGION = 16384  # a roi/rot lies within a 16384 x 16384 frame
MAX_REGION_TEXT = 64  # characters of a "WxH+X+Y" region
MAX_CAMERA_URL = 2048
MAX_DETECTOR = 256  # characters of a detector name


def region(name: str, value: Any) -> str | None:
    """A validated roi/rot as stored JSON text, or None to clear it: sizes 1..16384, offsets
    0..16384, inside a 16384 x 16384 frame (whether it fits the camera's actual frame is only
    known to the detector)."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str) and len(value) > MAX_REGION_TEXT:
        raise bad_param(name, f"{name} is longer than {MAX_REGION_TEXT} characters", value)
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = load_json(value)
        except ValueError:
            raise bad_param(name, f"{name} must be WxH+X+Y or [W, H, X, Y]", value) from None
    integers = (isinstance(value, list) and len(value) == 4
                and all(isinstance(v, int) and not isinstance(v, bool) for v in value))
    if not (isinstance(value, str) or integers):
        raise bad_param(name, f"{name} must be WxH+X+Y or [W, H, X, Y] (integers)", value)
    try:
        rect = region_rect(value)
    except ValueError as exc:
        raise bad_param(name, f"{name}: {exc}", value) from None
    if rect is None or not region_in_bounds(rect.w, rect.h, rect.x, rect.y):
        raise bad_param(name, f"{name}: width and height must be 1..{MAX_REGION}, offsets "
                        f"0..{MAX_REGION}, and the region inside {MAX_REGION}x{MAX_REGION}",
                        value)
    return json.dumps(str(rect) if isinstance(value, str) else value)


def region_in_bounds(w: int, h: int, x: int, y: int, limit: int = MAX_REGION) -> bool:
    return 1 <= w <= limit and 1 <= h <= limit and 0 <= x <= limit - w and 0 <= y <= limit - h


_NETWORK_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def camera_url(value: str, roots: tuple[Path, ...]) -> str:
    """A camera ``url``: a network stream (``scheme://``, not ``file://``), or a local file or
    device (a path, ``file://``, ``file@FPS:PATH``, ``/dev/videoN``) only under one of
    ``roots`` (``camera_file_roots``; none by default). A scheme the detector cannot open
    is left to the detector, which marks that camera failed."""
    if not value:
        return value
    if not value.isprintable():
        raise bad_param("url", "url must not contain control characters", value)
    scheme = _NETWORK_URL_RE.match(value)
    if scheme and scheme.group(1).lower() != "file":
        return value
    try:
        spec = parse_source(value)
    except ValueError as exc:
        raise bad_param("url", f"url: {exc}".replace("--source", "url"), value) from None
    if not path_under(spec.url, roots):
        allowed = ", ".join(str(r) for r in roots) or "none configured"
        raise bad_param("url", f"url names a local file or device ({spec.url}); those are "
                        f"allowed only under camera_file_roots ({allowed}); use a network "
                        "stream URL (rtsp://, http://, ...)", value)
    return value


def path_under(path: str, roots: tuple[Path, ...]) -> bool:
    """True if ``path`` is absolute and, with ``.`` and ``..`` resolved (lexically: the path is
    the detector host's, not this one's), inside one of ``roots``."""
    if not os.path.isabs(path):
        return False
    norm = os.path.normpath(path)
    return any(norm == str(root) or norm.startswith(str(root).rstrip("/") + "/")
               for root in roots)


def camera_fields(p: Params, roots: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The camera fields present in the request, validated."""
    out: dict[str, Any] = {}
    limits = {"meta": MAX_TEXT, "url": MAX_CAMERA_URL, "detector": MAX_DETECTOR}
    for name, limit in limits.items():
        if name in p.values:
            value = p.raw(name)
            out[name] = None if value is None else p.text(name, max_len=limit)
    if "meta" in out and out["meta"] is None:
        out["meta"] = ""
    if out.get("url"):
        out["url"] = camera_url(out["url"], roots)
    if "enabled" in p.values:
        out["enabled"] = int(p.flag("enabled", True))
    for name in ("roi", "rot"):
        if name in p.values:
            out[name] = region(name, p.raw(name))
    return out


def camera_row(cams: CameraStore, user: int, cam_id: str) -> Any:
    row = cams.get(user, cam_id)
    if row is None:
        raise not_found("camera", cam_id)
    return row


@router.post("/camera", status_code=201, openapi_extra=openapi.CAMERA)
def create_camera(user: UserDep, p: ParamsDep, backend: BackendDep,
                  cams: CamerasDep) -> JSONResponse:
    """Create a camera: ``meta``, ``enabled`` (default true), ``url``, ``detector``, ``roi``,
    ``rot``. 201 with the camera."""
    fields = camera_fields(p, backend.settings.camera_file_roots)
    cam_id = cams.create(user, fields)
    return JSONResponse(views.camera_json(camera_row(cams, user, cam_id)), status_code=201)


@router.get("/camera")
def list_cameras(user: UserDep, cams: CamerasDep,
                 detector: str | None = None) -> list[dict[str, Any]]:
    """All cameras (a JSON list), or only those of ``?detector=NAME``."""
    return [views.camera_json(r) for r in cams.list(user, detector)]


@router.get("/camera/{cam_id}")
def get_camera(cam_id: str, user: UserDep, cams: CamerasDep) -> dict[str, Any]:
    return views.camera_json(camera_row(cams, user, cam_id))


@router.put("/camera/{cam_id}", openapi_extra=openapi.CAMERA)
def put_camera(cam_id: str, user: UserDep, p: ParamsDep, backend: BackendDep,
               cams: CamerasDep) -> dict[str, Any]:
    """Change ``meta``, ``url``, ``detector``, ``enabled``, ``roi``, ``rot``."""
    fields = camera_fields(p, backend.settings.camera_file_roots)
    camera_row(cams, user, cam_id)
    cams.update(user, cam_id, fields)
    return views.camera_json(camera_row(cams, user, cam_id))


@router.delete("/camera/{cam_id}", status_code=204)
def delete_camera(cam_id: str, user: UserDep, cams: CamerasDep) -> Response:
    camera_row(cams, user, cam_id)
    cams.delete(user, cam_id)
    return Response(status_code=204)
