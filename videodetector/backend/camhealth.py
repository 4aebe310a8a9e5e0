"""Camera health and preview pictures, reported by the detector that runs the camera.

The detector (fkvideo_detector in camera-list mode) posts each of its cameras' health every
few seconds (``POST /v1/camera/<id>/health``, small JSON) and, when the answer asks for it,
one downscaled JPEG of the current frame (``PUT /v1/camera/<id>/preview``). The backend never
connects to a camera itself: the detector already has the stream open (with its credentials
and transport), so no second connection loads the camera, no camera URL becomes a way for the
backend to reach into the network (SSRF), and it works when only the detector can reach the
camera (NAT, firewalls). The console reads ``GET /v1/camera/<id>/health`` (or all cameras at
once with ``GET /v1/cameras/health``) and ``GET /v1/camera/<id>/preview.jpg``.

Both live in the database (one row per camera, bounded: the newest report and one preview;
``stores/cameras.py`` owns them), so every backend process sharing it answers the same and a
restart keeps the last picture. A report older than ``STALE_INTERVALS`` of its own interval
shows as ``stale``.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import cv2
import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from videodetector.backend.deps import CamerasDep, UserDep
from videodetector.backend.errors import bad_param, malformed_json, not_found, too_large
from videodetector.backend.params import load_json
from videodetector.backend.stores.cameras import CameraStore
from videodetector.backend.timeutil import iso

router = APIRouter(tags=["cameras"])

MAX_HEALTH_BYTES = 4096  # JSON body of a health report
MAX_PREVIEW_BYTES = 1 << 20  # a preview JPEG
MAX_PREVIEW_SIDE = 1280  # px, the longer side of a preview
MAX_FRAME_SIDE = 16384
STALE_INTERVALS = 3  # a report is stale after this many of its intervals without a new one
PREVIEW_MAX_AGE = 300.0  # s: an older preview is asked for again
STATES = ("starting", "running", "reconnecting", "source_down", "restarting", "ended",
          "failed", "stopped")
BIG = 2 ** 53

class HealthReport(BaseModel):
    """What a detector says about one of its cameras (unknown fields are ignored)."""

    model_config = ConfigDict(extra="ignore", strict=False)

    detector: str = Field(min_length=1, max_length=256, description="the detector's name")
    version: str = Field("", max_length=64, description="the detector's version")
    state: str = Field("running", pattern="^(" + "|".join(STATES) + ")$")
    interval: float = Field(5.0, ge=1, le=300, description="seconds until the next report")
    fps_in: float = Field(0.0, ge=0, le=10000, description="frames per second decoded")
    fps_processed: float = Field(0.0, ge=0, le=10000,
                                 description="frames per second through the face pipeline")
    frames_in: int = Field(0, ge=0, le=BIG)
    frames_processed: int = Field(0, ge=0, le=BIG)
    frames_dropped: int = Field(0, ge=0, le=BIG, description="frames dropped (fell behind)")
    reconnects: int = Field(0, ge=0, le=BIG)
    crashes: int = Field(0, ge=0, le=BIG)
    last_frame_time: float | None = Field(None, ge=0, le=1e11,
                                          description="unix time of the last decoded frame")
    last_frame_age: float | None = Field(None, ge=0, le=1e9,
                                         description="s since the last decoded frame, when "
                                                     "the report was sent (no clock skew)")
    frame_width: int | None = Field(None, ge=1, le=MAX_FRAME_SIDE)
    frame_height: int | None = Field(None, ge=1, le=MAX_FRAME_SIDE)
    error: str | None = Field(None, max_length=500, description="the camera's last error")


HEALTH_DOC = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": HealthReport.model_json_schema()}}}}
PREVIEW_DOC = {"requestBody": {"required": True, "content": {"image/jpeg": {"schema": {
    "type": "string", "format": "binary",
    "description": f"JPEG, at most {MAX_PREVIEW_BYTES} bytes and {MAX_PREVIEW_SIDE} px on "
                   "the longer side"}}}}}



def own_camera(cams: CameraStore, user: int, cam_id: str) -> None:
    if not cams.exists(user, cam_id):
        raise not_found("camera", cam_id)


async def read_body(request: Request, param: str, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(param, int(declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(param, size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_report(raw: bytes) -> HealthReport:
    try:
        data = load_json(raw)
    except ValueError as exc:
        raise malformed_json(f"the health report is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise bad_param("body", "the health report must be a JSON object", data)
    try:
        return HealthReport.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "body"
        raise bad_param(name, f"{name}: {first['msg']}", first.get("input")) from None


def preview_wanted(row: Any, now: float) -> bool:
    """Ask the detector for a picture: none yet, the console asked since the last one, or
    the last one is older than PREVIEW_MAX_AGE."""
    if row is None or row["preview_received"] is None:
        return True
    requested = row["preview_requested"] or 0.0
    return requested > row["preview_received"] or now - row["preview_received"] > PREVIEW_MAX_AGE


def utc_iso(ts: float | None) -> str | None:
    return None if ts is None else iso(datetime.fromtimestamp(ts, UTC))


def health_json(cam_id: str, row: Any, now: float) -> dict[str, Any]:
    """What the console shows: ``status`` none (no detector ever reported), stale (the last
    report is older than STALE_INTERVALS of its interval) or ok; the report; the preview."""
    report = json.loads(row["report"]) if row is not None and row["report"] else None
    out: dict[str, Any] = {"cam_id": cam_id, "status": "none", "report": None,
                           "received": None, "age": None, "preview": None}
    if report is not None:
        age = max(0.0, now - row["received"])
        out.update(report=report, received=utc_iso(row["received"]), age=round(age, 1),
                   status="stale" if age > STALE_INTERVALS * report["interval"] else "ok")
    if row is not None and row["preview_received"] is not None:
        out["preview"] = {"width": row["preview_width"], "height": row["preview_height"],
                          "frame_width": row["frame_width"], "frame_height": row["frame_height"],
                          "received": utc_iso(row["preview_received"]),
                          "age": round(max(0.0, now - row["preview_received"]), 1)}
    return out


async def health_body(request: Request) -> HealthReport:
    """The request's health report (read before the handler runs)."""
    return parse_report(await read_body(request, "body", MAX_HEALTH_BYTES))


async def preview_body(request: Request) -> bytes:
    """The request's preview JPEG, at most MAX_PREVIEW_BYTES (checked by the handler)."""
    return await read_body(request, "preview", MAX_PREVIEW_BYTES)


HealthDep = Annotated[HealthReport, Depends(health_body)]
PreviewDep = Annotated[bytes, Depends(preview_body)]


@router.post("/camera/{cam_id}/health", openapi_extra=HEALTH_DOC)
def post_health(cam_id: str, user: UserDep, report: HealthDep,
                cams: CamerasDep) -> dict[str, Any]:
    """A detector's health report for one of its cameras (JSON, at most 4096 bytes). Answers
    ``{"preview_wanted": true}`` when the backend wants a new picture (``PUT .../preview``)."""
    own_camera(cams, user, cam_id)
    now = time.time()
    cams.set_health(user, cam_id, {"report": report.model_dump_json(), "received": now})
    return {"preview_wanted": preview_wanted(cams.health(cam_id), now)}


def decode_preview(data: bytes) -> tuple[int, int]:
    """(width, height) of a preview JPEG; 400 if it is not a JPEG of at most
    MAX_PREVIEW_SIDE px on its longer side."""
    if not data.startswith(b"\xff\xd8"):
        raise bad_param("preview", "the preview must be a JPEG image")
    header = _jpeg_size(data)  # the size is checked before anything is decoded
    if header is None:
        raise bad_param("preview", "the preview is not a readable JPEG image")
    width, height = header
    if max(width, height) > MAX_PREVIEW_SIDE:
        raise bad_param("preview", f"the preview is {width}x{height}; at most "
                        f"{MAX_PREVIEW_SIDE} px on the longer side", f"{width}x{height}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
    if image is None:
        raise bad_param("preview", "the preview is not a readable JPEG image")
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame marker (read before any decoding)."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(data[i + 5:i + 7], "big")
            width = int.from_bytes(data[i + 7:i + 9], "big")
            return (width, height) if width and height else None
        i += 2 + length
    return None


def frame_size(request: Request, width: int, height: int) -> tuple[int, int]:
    """``?frame_width=&frame_height=``: the camera frame the preview was scaled from (the
    preview's own size when absent); same shape as the preview within 2%."""
    out = []
    for name, default in (("frame_width", width), ("frame_height", height)):
        text = request.query_params.get(name)
        if text is None:
            out.append(default)
            continue
        if not text.isdigit() or not 1 <= int(text) <= MAX_FRAME_SIDE:
            raise bad_param(name, f"{name} must be an integer 1..{MAX_FRAME_SIDE}", text)
        out.append(int(text))
    fw, fh = out
    if abs(fw / fh - width / height) > 0.02 * (width / height) + 1.0 / min(width, height):
        raise bad_param("frame_width", f"a {width}x{height} preview cannot be a scaled "
                        f"{fw}x{fh} frame", f"{fw}x{fh}")
    return fw, fh


FRAME_QUERY = [{"name": n, "in": "query", "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_FRAME_SIDE},
                "description": "size of the camera frame the preview was scaled from"}
               for n in ("frame_width", "frame_height")]


@router.put("/camera/{cam_id}/preview", status_code=204,
            openapi_extra={**PREVIEW_DOC, "parameters": FRAME_QUERY})
def put_preview(cam_id: str, request: Request, user: UserDep, data: PreviewDep,
                cams: CamerasDep) -> Response:
    """A detector's current picture of the camera: a JPEG (body, ``image/jpeg``) of at most
    1 MiB and 1280 px on its longer side, scaled from a ``frame_width`` x ``frame_height``
    frame."""
    width, height = decode_preview(data)
    fw, fh = frame_size(request, width, height)
    own_camera(cams, user, cam_id)
    cams.set_health(user, cam_id, {
        "preview": data, "preview_width": width, "preview_height": height,
        "frame_width": fw, "frame_height": fh, "preview_received": time.time()})
    return Response(status_code=204)


@router.post("/camera/{cam_id}/preview/request", status_code=202)
def request_preview(cam_id: str, user: UserDep, cams: CamerasDep) -> dict[str, Any]:
    """Ask the camera's detector for a new picture: it sends one after its next health
    report (within its interval, 5 s by default)."""
    own_camera(cams, user, cam_id)
    cams.set_health(user, cam_id, {"preview_requested": time.time()})
    return {"requested": True}


@router.get("/camera/{cam_id}/health")
def get_health(cam_id: str, user: UserDep, cams: CamerasDep) -> dict[str, Any]:
    """The camera's latest health report and preview (``status``: ok, stale or none)."""
    own_camera(cams, user, cam_id)
    return health_json(cam_id, cams.health(cam_id), time.time())


@router.get("/cameras/health")
def all_health(user: UserDep, cams: CamerasDep) -> list[dict[str, Any]]:
    """``GET /camera/<id>/health`` of every camera of the token, in camera order."""
    now = time.time()
    return [health_json(r["cam"], r if r["cam_id"] is not None else None, now)
            for r in cams.all_health(user)]


@router.get("/camera/{cam_id}/preview.jpg", response_class=Response, responses={
    200: {"content": {"image/jpeg": {}}, "description": "the latest preview"}})
def get_preview(cam_id: str, user: UserDep, cams: CamerasDep) -> Response:
    """The latest picture the camera's detector sent (404 NOT_FOUND when none yet)."""
    own_camera(cams, user, cam_id)
    data = cams.preview(cam_id)
    if data is None:
        raise not_found("preview of camera", cam_id)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})
