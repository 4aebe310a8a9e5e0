"""Many photos in one request (``update-samples`` of face_recognition_v2), and emptying a
gallery in one call (its ``clear-samples``).

``POST /v1/faces/batch`` enrolls a list of photos. Each item goes through the same path as
``POST /v1/face`` (``Backend.add_faces``: detection, person assignment, index, idempotency),
one after the other, and gets its own result: one bad item never fails the others.

Body: JSON ``{"items": [item, ...], <defaults>}`` (or a bare list of items), or multipart with
a JSON part ``items`` and file parts an item names as ``"photo": "multipart:PART"``; a
multipart body without ``items`` makes each file part one item, its text parts being the
defaults. An item: ``photo`` (alias ``image``: base64, a ``data:`` URI, ``multipart:PART`` or
an http(s) URL with --fetch-urls), ``meta`` (alias ``metadata``), ``galleries``, ``bbox``,
``mf_selector``, ``idempotency_key``, ``id`` (the client's own id, echoed), ``attributes``
(alias ``unique_args``: custom attributes stored and returned with the face). Defaults: ``meta``,
``galleries``, ``mf_selector``, ``gender``, ``age``, ``emotions``, ``idempotency_key``.

Idempotency per item: the item's ``idempotency_key``, else ``<request key>:<index>`` when the
request has one (``Idempotency-Key`` header or ``idempotency_key``): a retried request stores
only what the first attempt did not.

Limits: ``MAX_ITEMS`` items; each photo within the backend's ``max_photo_bytes`` and
``max_size``; all photos together at most ``MAX_PIXELS`` decoded pixels (an item over the
budget fails, the others go on); the whole body within the backend's body limit.

Answer (200 whenever the request itself is well-formed): ``results`` (one per item, in order:
``{index, id, status: "success", face_ids, replayed}`` or ``{index, id, status: "fail",
code, reason, param}``), ``success`` (the ids of the items stored: the client's ``id`` or the
index) and ``fail`` (``{id, index, code, reason}``), as update-samples answers.
"""

from __future__ import annotations

import io
import logging
import sqlite3
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio.from_thread
from fastapi import APIRouter, Depends, Request
from PIL import Image, UnidentifiedImageError

from videodetector.backend.deps import BackendDep, UserDep, max_body_bytes
from videodetector.backend.errors import ApiError, bad_param
from videodetector.backend.extract_api import image_bytes
from videodetector.backend.extraction import attrs_unavailable
from videodetector.backend.faces import check_attributes
from videodetector.backend.inline import Parts, read_json_and_parts
from videodetector.backend.params import GalleryName, Params
from videodetector.backend.service import DEFAULT_GALLERY, Backend, FacePost
from videodetector.core.models import ModelError

log = logging.getLogger(__name__)

router = APIRouter(tags=["faces"])

MAX_ITEMS = 100  # photos per request
MAX_PIXELS = 400_000_000  # decoded pixels of all photos of one request
MAX_KEY = 200  # characters of an idempotency key
ITEM_FIELDS = {"id", "photo", "image", "meta", "metadata", "galleries", "bbox", "mf_selector",
               "idempotency_key", "attributes", "unique_args"}
DEFAULT_FIELDS = {"items", "meta", "galleries", "mf_selector", "gender", "age", "emotions",
                  "idempotency_key"}


@dataclass
class Batch:
    items: list[dict[str, Any]]
    defaults: Params
    parts: Parts
    request_key: str | None
    want_attrs: frozenset[str] = frozenset()
    pixels: int = 0
    unexpected: int = field(default=0)  # failures that are not the client's fault


def parse_body(body: Any, parts: Parts) -> tuple[list[Any], dict[str, Any]]:
    """(items, defaults) of a JSON value and the multipart parts."""
    if body is None:  # multipart without "items": one item per file part
        if not len(parts):
            raise bad_param("items", "the request has no items: send JSON {\"items\": [...]} "
                            "or multipart file parts")
        items: Any = [{"photo": f"multipart-index:{i}"} for i in range(len(parts))]
        return items, dict(parts.fields)
    if isinstance(body, list):
        return body, dict(parts.fields)
    if not isinstance(body, dict):
        raise bad_param("items", 'the body must be {"items": [...]} or a list of items')
    unknown = sorted(set(body) - DEFAULT_FIELDS)
    if unknown:
        raise bad_param(unknown[0], f"unknown field {unknown[0]!r}; the request takes "
                        f"{', '.join(sorted(DEFAULT_FIELDS))}")
    return body.get("items"), {**parts.fields, **{k: v for k, v in body.items()
                                                  if k != "items"}}


def check_items(items: Any) -> list[Any]:
    if not isinstance(items, list) or not items:
        raise bad_param("items", "items must be a non-empty list")
    if len(items) > MAX_ITEMS:
        raise bad_param("items", f"at most {MAX_ITEMS} items per request, got {len(items)}",
                        len(items), status=413)
    return items


def check_key(key: Any, param: str) -> str | None:
    if key is None or key == "":
        return None
    if not isinstance(key, str) or len(key) > MAX_KEY:
        raise bad_param(param, f"{param} must be a string of at most {MAX_KEY} characters", key)
    return key


def item_key(batch: Batch, item: dict[str, Any], i: int) -> str | None:
    own = check_key(item.get("idempotency_key"), f"items[{i}].idempotency_key")
    if own is not None:
        return own
    return None if batch.request_key is None else f"{batch.request_key}:{i}"


def item_post(batch: Batch, item: Any, i: int) -> tuple[FacePost, str]:
    """The ``FacePost`` of item ``i`` (photo bytes still to read) and its photo value."""
    where = f"items[{i}]"
    if not isinstance(item, dict):
        raise bad_param(where, f"{where} must be an object", item)
    unknown = sorted(set(item) - ITEM_FIELDS)
    if unknown:
        raise bad_param(f"{where}.{unknown[0]}", f"{where}: unknown field {unknown[0]!r}; an "
                        f"item takes {', '.join(sorted(ITEM_FIELDS))}")
    photo = item.get("photo", item.get("image"))
    if not isinstance(photo, str) or not photo:
        raise bad_param(f"{where}.photo", f"{where}.photo must be base64, a data: URI, "
                        "multipart:PART or an http(s) URL", photo)
    p = Params({**batch.defaults.values, **{k: v for k, v in item.items()
                                             if k in ("galleries", "bbox", "mf_selector")}})
    meta = item.get("meta", item.get("metadata", batch.defaults.values.get("meta", "")))
    if not isinstance(meta, str):
        raise bad_param(f"{where}.meta", f"{where}.meta must be a string", meta)
    post = FacePost(photo=None, face_images=[], boxes=p.boxes("bbox"),
                    mf_selector=p.mf_selector(), meta=meta, galleries=p.str_list("galleries"),
                    extra=item_attributes(item, where),
                    want_attrs=batch.want_attrs, idempotency_key=item_key(batch, item, i))
    return post, photo


def item_attributes(item: dict[str, Any], where: str) -> dict[str, Any]:
    """An item's ``attributes`` (or ``unique_args``): a JSON object, bounded as on /face."""
    names = [n for n in ("attributes", "unique_args") if item.get(n) is not None]
    if not names:
        return {}
    param = f"{where}.{names[0]}"
    if len(names) > 1 or not isinstance(item[names[0]], dict):
        raise bad_param(param, f"{param} must be one JSON object (attributes or unique_args)",
                        item[names[0]])
    return check_attributes(param, item[names[0]])


def take_pixels(batch: Batch, data: bytes, param: str) -> None:
    """Count the photo's pixels (from its header) against ``MAX_PIXELS``."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, ValueError):
        return  # not an image: decoding says so with the usual message
    if batch.pixels + w * h > MAX_PIXELS:
        raise bad_param(param, f"{param} ({w}x{h}) would take the request's photos over "
                        f"{MAX_PIXELS} pixels; send it in another request", f"{w}x{h}",
                        status=413)
    batch.pixels += w * h


async def item_photo(batch: Batch, photo: str, param: str, backend: Backend) -> bytes:
    """An item's photo bytes: a multipart part, or base64 / a data: URI / a fetched URL."""
    if photo.startswith("multipart-index:"):
        return await batch.parts.read_index(int(photo.split(":")[1]), param)
    return await image_bytes(photo, param, batch.parts, backend.settings)


def enroll_item(backend: Backend, user: int, batch: Batch, item: Any, i: int
                ) -> dict[str, Any]:
    """One item, in the handler's worker thread. Its photo is read (a part, or fetched) only
    when the item is not a replay, on the event loop (``anyio.from_thread.run``), one item
    at a time, so a batch never holds more than one fetched photo."""
    post, photo = item_post(batch, item, i)
    if post.idempotency_key is not None:
        earlier = backend.replay(user, post.idempotency_key)
        if earlier is not None:
            return {"status": "success", "face_ids": earlier, "replayed": True}
    param = f"items[{i}].photo"
    post.photo = anyio.from_thread.run(item_photo, batch, photo, param, backend)
    take_pixels(batch, post.photo, param)
    ids = backend.add_faces(user, post)
    return {"status": "success", "face_ids": ids, "replayed": False}


def failure(exc: Exception, i: int, batch: Batch) -> dict[str, Any]:
    if isinstance(exc, ApiError):
        param = exc.extra.get("param")
        if param and not str(param).startswith("items["):
            param = f"items[{i}].{param}"
        return {"status": "fail", "code": exc.code, "reason": exc.reason, "param": param}
    batch.unexpected += 1
    if isinstance(exc, sqlite3.OperationalError | OSError | ModelError):
        return {"status": "fail", "code": "SERVICE_UNAVAILABLE",
                "reason": f"{type(exc).__name__}: {exc}", "param": None}
    log.error("batch item %d failed: %r", i, exc, exc_info=batch.unexpected == 1)
    return {"status": "fail", "code": "INTERNAL_ERROR",
            "reason": f"internal error: {type(exc).__name__}", "param": None}


async def read_batch(request: Request, backend: BackendDep) -> Batch:
    """The parsed request (its items' photos are read one by one as they are enrolled)."""
    s = backend.settings
    body, parts = await read_json_and_parts(request, "items", MAX_ITEMS,
                                            max_body_bytes(backend), s.max_photo_bytes)
    items, defaults = parse_body(body, parts)
    p = Params(defaults)
    header = request.headers.get("idempotency-key")
    key = check_key(header if header else p.raw("idempotency_key"), "idempotency_key")
    want = backend.check_attrs_request(p.flag("gender"), p.flag("age"), p.flag("emotions"))
    p.mf_selector()  # the defaults are checked once, for the whole request
    p.boxes("bbox")
    return Batch(check_items(items), p, parts, key, want)


BATCH_DOC = {"requestBody": {"content": {
    "application/json": {"schema": {"type": "object", "properties": {
        "items": {"type": "array", "maxItems": MAX_ITEMS, "items": {
            "type": "object", "properties": {
                "photo": {"type": "string", "description": "base64, data: URI, "
                          "multipart:PART or an http(s) URL (--fetch-urls)"},
                "meta": {"type": "string"}, "id": {"description": "echoed in the answer"},
                "attributes": {"type": "object", "description": "custom attributes"},
                "galleries": {"type": "array", "items": {"type": "string"}},
                "bbox": {"type": "array"}, "mf_selector": {"type": "string"},
                "idempotency_key": {"type": "string"}}}},
        "galleries": {"type": "array", "items": {"type": "string"}},
        "meta": {"type": "string"}, "mf_selector": {"type": "string"},
        "gender": {"type": "boolean"}, "age": {"type": "boolean"},
        "idempotency_key": {"type": "string",
                            "description": "items get <key>:<index> unless they have one"}}}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "items": {"type": "string", "description": "JSON list of items (optional: without "
                  "it every file part is one item)"},
        "galleries": {"type": "string"}, "meta": {"type": "string"}},
        "additionalProperties": {"type": "string", "format": "binary"}}},
}}}


@router.post("/faces/batch", openapi_extra=BATCH_DOC)
def add_faces_batch(user: UserDep, batch: Annotated[Batch, Depends(read_batch)],
                    backend: BackendDep) -> dict[str, Any]:
    """Enroll up to 100 photos in one request; one result per item (``results``), plus
    ``success`` (item ids) and ``fail`` (item ids with the reason). One bad item never fails
    the others. Per-item idempotency keys (or ``<Idempotency-Key>:<index>``)."""
    backend.check_galleries(user, batch.defaults.str_list("galleries"))
    results, success, fail = [], [], []
    for i, item in enumerate(batch.items):
        client_id = item.get("id", i) if isinstance(item, dict) else i
        try:
            result = enroll_item(backend, user, batch, item, i)
        except Exception as exc:  # noqa: BLE001 - one item's failure is its own result
            result = failure(exc, i, batch)
        results.append({"index": i, "id": client_id, **result})
        if result["status"] == "success":
            success.append(client_id)
        else:
            fail.append({"id": client_id, "index": i, "code": result["code"],
                         "reason": result["reason"]})
    if batch.unexpected:
        log.warning("batch enrollment of user %d: %d of %d items failed on the server side",
                    user, batch.unexpected, len(batch.items))
    out: dict[str, Any] = {"results": results, "success": success, "fail": fail}
    asked = batch.defaults.flag("emotions")
    missing = attrs_unavailable(asked, backend.emotions_unavailable() if asked else None)
    if missing:
        out["unavailable"] = missing
    return out


# -- emptying a gallery --------------------------------------------------------

def delete_gallery_faces(backend: Backend, user: int, gallery: str) -> int:
    """Delete every face in ``gallery`` (all the user's faces for ``default``); the gallery
    stays. Faces added while this runs may stay too."""
    backend.require_gallery(user, gallery)
    if gallery == DEFAULT_GALLERY:
        ids = backend.faces_store.ids(user)
    else:
        ids = [int(i) for i in backend.gallery_face_ids(user, gallery)]
    deleted = 0
    for start in range(0, len(ids), 5000):  # bounded transactions
        deleted += backend.delete_faces(user, ids[start:start + 5000])
    return deleted


@router.delete("/faces/gallery/{gallery}")
def clear_gallery(gallery: GalleryName, user: UserDep, backend: BackendDep) -> dict[str, Any]:
    """Delete all faces of a gallery and keep the (now empty) gallery: ``{"deleted": n}``.
    A face in several galleries is deleted (not only taken out of this one); on ``default``
    this deletes all of the token's faces."""
    return {"deleted": delete_gallery_faces(backend, user, gallery)}
