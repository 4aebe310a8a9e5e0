"""JSON representations of stored objects (face, history event, person, camera) and page links."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request

from videodetector.backend.settings import Settings
from videodetector.backend.storage import PageResult


class Urls:
    """Absolute URLs of stored images: ``<upload_url or own address>/<upload_path>/<rel>``."""

    def __init__(self, settings: Settings, request: Request) -> None:
        base = settings.upload_url or own_base_url(settings, request.scope.get("server"))
        self.prefix = f"{base}/{settings.upload_path}/"

    def __call__(self, rel: str | None) -> str | None:
        return None if not rel else self.prefix + rel


def own_base_url(settings: Settings, server: tuple[str, int | None] | None) -> str:
    """``http://<address>:<port>`` of the socket the request came in on (``scope["server"]``,
    the server's own address), else of the configured host and port. Never the client's
    ``Host`` header: a client must not choose the links given to others."""
    host, port = server if server else (settings.host, settings.port)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}" if port in (None, 80) else f"http://{host}:{port}"


def face_json(row: sqlite3.Row, galleries: list[str], urls: Urls) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row["id"],
        "meta": row["meta"],
        "galleries": galleries,
        "person_id": row["person_id"],
        "friend": bool(row["friend"]),
        "cam_id": row["cam_id"],
        "photo": urls(row["photo"]),
        "photo_hash": row["photo_hash"],
        "thumbnail": urls(row["thumbnail"]),
        "normalized": urls(row["normalized"]),
        "timestamp": row["timestamp"],
        "x1": row["x1"], "x2": row["x2"], "y1": row["y1"], "y2": row["y2"],
    }
    if row["gender"] is not None:
        out["gender"] = row["gender"]
        out["gender_confidence"] = row["gender_confidence"]
    if row["age"] is not None:
        out["age"] = row["age"]
    if row["emotions"] is not None:
        out["emotions"] = json.loads(row["emotions"])
    if row["detector_params"]:
        out["detectorParams"] = json.loads(row["detector_params"])
    out["attributes"] = json.loads(row["extra"]) if row["extra"] else {}
    return out


def event_json(row: sqlite3.Row, urls: Urls) -> dict[str, Any]:
    """A history event (8.2.3, 8.2.4): a face posted with a ``cam_id``."""
    return {
        "id": row["id"],
        "face_id": row["id"],
        "person_id": row["person_id"],
        "cam_id": row["cam_id"],
        "meta": row["meta"],
        "friend": bool(row["friend"]),
        "timestamp": row["timestamp"],
        "photo": urls(row["photo"]),
        "photo_hash": row["photo_hash"],
        "thumbnail": urls(row["thumbnail"]),
        "screenshot": urls(row["thumbnail"]),
        "normalized": urls(row["normalized"]),
        "x1": row["x1"], "x2": row["x2"], "y1": row["y1"], "y2": row["y2"],
    }


def camera_json(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "meta": row["meta"],
        "enabled": bool(row["enabled"]),
        "url": row["url"],
        "detector": row["detector"],
        "roi": json.loads(row["roi"]) if row["roi"] else None,
        "rot": json.loads(row["rot"]) if row["rot"] else None,
    }


def page_links(request: Request, page: PageResult,
               carry: Sequence[tuple[str, str]] = ()) -> dict[str, str | None]:
    """``next_page`` / ``prev_page``: path and query of the neighbouring pages, or null.

    The query keeps the request's own query parameters; ``carry`` adds parameters that came
    another way (a POST body's filters), so that following the link -- by GET, or by POST
    with or without the original body -- asks for the same selection.
    """
    carried = {k for k, _ in carry}
    keep = [(k, v) for k, v in request.query_params.multi_items()
            if k not in ("max_id", "min_id") and k not in carried]

    def link(key: str, value: int) -> str:
        return f"{request.url.path}?{urlencode([*keep, (key, str(value)), *carry])}"

    return {
        "next_page": link("max_id", page.ids[-1]) if page.has_older else None,
        "prev_page": link("min_id", page.ids[0]) if page.has_newer else None,
    }
