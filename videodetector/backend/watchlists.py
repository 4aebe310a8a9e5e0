"""Watch lists: galleries whose faces raise alerts when a camera event matches them.

A gallery is marked as a watch list with a colour and a threshold preset (``low``,
``medium``, ``strict``: the confidence thresholds of reference 9.1, see confidence.py). The
settings live in the table ``gallery_settings``, owned by ``stores/watchlists.py`` (made by
the schema's revision 0002, ``backend/migrations``).

Matches are computed when read (``POST /v1/watchlists/matches``): each event's stored
embedding is compared with the faces of every watch list of the token, so the answer is right
also after a watch list, its faces or its threshold changed. The best match at or above its
list's threshold wins (ties: the list named first). Cost: one matrix product of (events x
watch-list faces) per request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends

from videodetector.backend.deps import BackendDep, ParamsDep, UserDep
from videodetector.backend.errors import bad_param, not_found
from videodetector.backend.params import GalleryName, Params
from videodetector.backend.service import DEFAULT_GALLERY, Backend
from videodetector.core.confidence import (
    CONF_LOW,
    CONF_MEDIUM,
    CONF_STRICT,
    confidence_from_cosine,
)

router = APIRouter(tags=["watch lists"])

PRESETS = {"low": CONF_LOW, "medium": CONF_MEDIUM, "strict": CONF_STRICT}
DEFAULT_COLOR = "#dc2626"
COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
MAX_IDS = 1000  # events per matches request

@dataclass(frozen=True)
class WatchList:
    gallery: str
    color: str
    threshold: str  # a preset name

    @property
    def min_confidence(self) -> float:
        return PRESETS[self.threshold]

    def json(self, watchlist: bool = True) -> dict[str, Any]:
        return {"gallery": self.gallery, "watchlist": watchlist, "color": self.color,
                "threshold": self.threshold, "min_confidence": self.min_confidence}



def all_settings(backend: Backend, user: int) -> list[tuple[WatchList, bool]]:
    """Settings of the token's existing galleries (a deleted gallery's row is ignored)."""
    rows = backend.watchlists_store.settings(user)
    return [(WatchList(r["gallery"], r["color"], r["threshold"]), bool(r["watchlist"]))
            for r in rows]


def watch_lists(backend: Backend, user: int) -> list[WatchList]:
    return [w for w, on in all_settings(backend, user) if on]


def parse_settings(gallery: str, p: Params) -> tuple[WatchList, bool]:
    unknown = sorted(set(p.values) - {"watchlist", "color", "threshold"})
    if unknown:
        raise bad_param(unknown[0], f"unknown field {unknown[0]!r}; the settings are "
                        "watchlist, color, threshold")
    color = p.text("color", DEFAULT_COLOR, max_len=7) or DEFAULT_COLOR
    if not COLOR.match(color):
        raise bad_param("color", "color must be #rrggbb", color)
    threshold = p.text("threshold", "medium", max_len=16) or "medium"
    if threshold not in PRESETS:
        raise bad_param("threshold", f"threshold must be one of {', '.join(PRESETS)}",
                        threshold)
    return WatchList(gallery, color.lower(), threshold), p.flag("watchlist", True)


def put_settings(backend: Backend, user: int, gallery: str, p: Params) -> dict[str, Any]:
    if gallery == DEFAULT_GALLERY:
        raise bad_param("gallery", "default holds every face (camera events too), so it "
                        "cannot be a watch list; make a gallery for it", gallery)
    backend.require_gallery(user, gallery)
    watch, on = parse_settings(gallery, p)
    backend.watchlists_store.put(user, gallery, on, watch.color, watch.threshold)
    return watch.json(on)


def get_settings(backend: Backend, user: int, gallery: str) -> dict[str, Any]:
    backend.require_gallery(user, gallery)
    for watch, on in all_settings(backend, user):
        if watch.gallery == gallery:
            return watch.json(on)
    return WatchList(gallery, DEFAULT_COLOR, "medium").json(False)


def forget_gallery(backend: Backend, user: int, gallery: str) -> None:
    """Drop a deleted gallery's settings (a new gallery of that name starts plain)."""
    backend.watchlists_store.forget(user, gallery)


# -- matching ------------------------------------------------------------------

def best_matches(backend: Backend, user: int, event_ids: list[int]
                 ) -> dict[int, dict[str, Any]]:
    """For each event (face) id with a match: the best watch-list face at or above its
    list's threshold: ``{gallery, color, threshold, face_id, meta, confidence}``."""
    lists = watch_lists(backend, user)
    if not lists or not event_ids:
        return {}
    best: dict[int, tuple[float, WatchList, int]] = {}
    with backend.db.lock:
        index = backend.index(user)
        events = [i for i in dict.fromkeys(event_ids) if i in index]
        if not events:
            return {}
        queries = np.stack([index.vector(i) for i in events])
        for watch in lists:
            mask = index.mask(face_ids=backend.gallery_face_ids(user, watch.gallery))
            if mask is None or not mask.any():
                continue
            faces = index.ids[mask]
            # (the index keeps no public matrix view; this reads its rows in place)
            cos = queries @ index._vectors[: index.n][mask].T
            cos[faces[None, :] == np.array(events)[:, None]] = -1.0  # never the event itself
            cols = np.argmax(cos, axis=1)
            conf = confidence_from_cosine(cos[np.arange(len(events)), cols])
            for row, event in enumerate(events):
                c = float(conf[row])
                if c >= watch.min_confidence and c > best.get(event, (-1.0,))[0]:
                    best[event] = (c, watch, int(faces[cols[row]]))
    metas = {r["id"]: r["meta"] for r in backend.face_rows(user, [f for _, _, f in
                                                                  best.values()])}
    return {event: {"gallery": w.gallery, "color": w.color, "threshold": w.threshold,
                    "face_id": face, "meta": metas.get(face, ""),
                    "confidence": round(c, 4)}
            for event, (c, w, face) in best.items()}


def unknown_alert_cameras(backend: Backend, user: int) -> set[str]:
    """Cameras of the token whose events with no watch-list match are alerts."""
    return backend.watchlists_store.unknown_alert_cameras(user)


def set_unknown_alerts(backend: Backend, user: int, cam_id: str, p: Params
                       ) -> dict[str, Any]:
    unknown = sorted(set(p.values) - {"unknown"})
    if unknown:
        raise bad_param(unknown[0], f"unknown field {unknown[0]!r}; the setting is unknown")
    if not backend.cameras_store.exists(user, cam_id):
        raise not_found("camera", cam_id)
    on = p.flag("unknown")
    backend.watchlists_store.set_unknown_alerts(user, cam_id, on)
    return {"cam_id": cam_id, "unknown": on}


def alerts_of(backend: Backend, user: int, ids: list[int]) -> list[dict[str, Any]]:
    """Per event id: its best watch-list ``match`` and ``alert``: ``"watchlist"``,
    ``"unknown"`` (no match, on a camera with unknown-face alerts) or null."""
    found = best_matches(backend, user, ids)
    cams = unknown_alert_cameras(backend, user)
    cam_of = backend.history_store.event_cameras(user, ids) if cams else {}
    out = []
    for i in ids:
        match = found.get(i)
        alert = "watchlist" if match else ("unknown" if cam_of.get(i) in cams else None)
        out.append({"id": i, "match": match, "alert": alert})
    return out


def event_ids(p: Params) -> list[int]:
    raw = p.raw("ids")
    if not isinstance(raw, list) or len(raw) > MAX_IDS:
        raise bad_param("ids", f"ids must be a list of at most {MAX_IDS} event ids")
    out = []
    for i, value in enumerate(raw):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad_param(f"ids[{i}]", "an event id is an integer", value)
        out.append(value)
    return out


# -- routes --------------------------------------------------------------------

SETTINGS_DOC = {"requestBody": {"content": {"application/json": {"schema": {
    "type": "object", "additionalProperties": False, "properties": {
        "watchlist": {"type": "boolean", "description": "true: events matching a face of "
                      "this gallery are alerts"},
        "color": {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"},
        "threshold": {"type": "string", "enum": list(PRESETS),
                      "description": "low 0.5690 (FAR 1e-1), medium 0.6616 (1e-3), "
                      "strict 0.7834 (1e-5)"}}}}}}}
UNKNOWN_DOC = {"requestBody": {"content": {"application/json": {"schema": {
    "type": "object", "additionalProperties": False, "properties": {
        "unknown": {"type": "boolean"}}}}}}}
MATCHES_DOC = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["ids"], "properties": {
        "ids": {"type": "array", "maxItems": MAX_IDS, "items": {"type": "integer"}}}}}}}}


async def matches_body(p: ParamsDep) -> list[int]:
    return event_ids(p)


EventIdsDep = Annotated[list[int], Depends(matches_body)]


@router.get("/watchlists")
def list_watch_lists(user: UserDep, backend: BackendDep) -> dict[str, Any]:
    """Settings of every gallery that has some (``watchlist`` true or false)."""
    return {"results": [w.json(on) for w, on in all_settings(backend, user)]}


@router.get("/galleries/{gallery}/watchlist")
def get_watch_list(gallery: GalleryName, user: UserDep, backend: BackendDep) -> dict[str, Any]:
    """The gallery's watch-list settings (``watchlist: false`` when never set)."""
    return get_settings(backend, user, gallery)


@router.put("/galleries/{gallery}/watchlist", openapi_extra=SETTINGS_DOC)
def put_watch_list(gallery: GalleryName, user: UserDep, p: ParamsDep,
                   backend: BackendDep) -> dict[str, Any]:
    """Mark a gallery as a watch list (or not): ``watchlist``, ``color`` (#rrggbb),
    ``threshold`` (low / medium / strict)."""
    return put_settings(backend, user, gallery, p)


@router.post("/watchlists/matches", openapi_extra=MATCHES_DOC)
def watch_list_matches(user: UserDep, ids: EventIdsDep, backend: BackendDep) -> dict[str, Any]:
    """The best watch-list match of each event id (``null`` when none) and its alert:
    ``{"results": [{"id", "match": {gallery, color, threshold, face_id, meta,
    confidence} | null, "alert": "watchlist" | "unknown" | null}]}``."""
    return {"results": alerts_of(backend, user, ids)}


@router.get("/watchlists/cameras")
def list_unknown_alerts(user: UserDep, backend: BackendDep) -> dict[str, Any]:
    """Cameras with "unknown face" alerts on: ``{"results": [cam_id, ...]}``."""
    return {"results": sorted(unknown_alert_cameras(backend, user))}


@router.put("/watchlists/cameras/{cam_id}", openapi_extra=UNKNOWN_DOC)
def put_unknown_alerts(cam_id: str, user: UserDep, p: ParamsDep,
                       backend: BackendDep) -> dict[str, Any]:
    """Switch "unknown face" alerts of a camera on or off (``{"unknown": true}``): its events
    that match no watch list are then alerts too."""
    return set_unknown_alerts(backend, user, cam_id, p)
