"""Face methods (9.1.2): /detect, /verify, /identify, /face, /face/id, /face/meta, /faces, /meta,
and their custom-gallery variants (9.1.3)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from videodetector.backend import openapi, views
from videodetector.backend.deps import (
    BackendDep,
    ParamsDep,
    UserDep,
    face_images,
    fetches_an_image,
    image_budget,
    photo_bytes,
    replayed_ids,
    urls_of,
)
from videodetector.backend.embeddings import vector_of
from videodetector.backend.errors import bad_param, not_found
from videodetector.backend.extraction import attrs_unavailable, facen_b64
from videodetector.backend.params import DbId, GalleryName, Params
from videodetector.backend.probe import detected_boxes, detected_faces, probe_faces
from videodetector.backend.service import (
    UNSET,
    Backend,
    FacePost,
    NewFace,
    box_key,
    face_box_json,
)
from videodetector.backend.storage import PageRequest
from videodetector.backend.timeutil import parse_time
from videodetector.core.confidence import confidence_from_cosine

router = APIRouter(tags=["faces"])

FACE_FIELDS = {"photo", "bbox", "mf_selector", "meta", "galleries", "cam_id", "timestamp",
               "detectorParams", "gender", "age", "emotions", "idempotency_key",
               "attributes", "unique_args"}
ATTRIBUTES = ("attributes", "unique_args")  # unique_args: the name face_recognition_backend uses


def render_faces(request: Request, backend: Backend, user: int, ids: list[int],
                 facen: bool = False) -> list[dict[str, Any]]:
    """The faces' JSON; with ``facen``, each with its embedding (base64 float32 LE)."""
    rows = backend.face_rows(user, ids)
    galleries = backend.galleries_of([r["id"] for r in rows])
    urls = urls_of(request)
    out = [views.face_json(r, galleries[r["id"]], urls) for r in rows]
    if facen:
        vectors = facens(backend, [r["id"] for r in rows])
        for face in out:
            face["facen"] = vectors.get(face["id"])
    return out


def facens(backend: Backend, ids: list[int]) -> dict[int, str | None]:
    """The faces' ``facen``: base64 of the little-endian float32 vector of the model the
    backend serves (``backend.model``: what /identify compares), read in one query per 500
    faces; None for a face without a vector of that model (served partially,
    ``--allow-partial``). Faces that do not exist are left out."""
    return {i: _b64(blob) for i, blob in backend.faces_store.vectors(ids, backend.model).items()}


def _b64(blob: bytes | None) -> str | None:
    vector = vector_of(blob)
    return None if vector is None else facen_b64(vector)


def wanted_attrs(backend: Backend, p: Params) -> frozenset[str]:
    return backend.check_attrs_request(p.flag("gender"), p.flag("age"), p.flag("emotions"))


def page_request(p: Params, default_limit: int | None) -> PageRequest:
    limit = p.integer("limit", default_limit, lo=0, hi=100000)
    return PageRequest(limit or None, p.integer("max_id"), p.integer("min_id"))


# -- detect / verify / identify ---------------------------------------------
# Each request is parsed by an async dependency (its images read, fetched and header-checked
# there); the handler itself is a plain ``def`` that FastAPI runs in its threadpool.

@dataclass(frozen=True)
class DetectRequest:
    want: frozenset[str]
    data: bytes


async def detect_request(p: ParamsDep, backend: BackendDep) -> DetectRequest:
    want = wanted_attrs(backend, p)
    data = await photo_bytes(p, "photo", backend)
    if data is None:
        raise bad_param("photo", "photo is required")
    return DetectRequest(want, data)


@router.post("/detect", openapi_extra=openapi.DETECT)
def detect(user: UserDep, req: Annotated[DetectRequest, Depends(detect_request)],
           p: ParamsDep, backend: BackendDep) -> dict[str, Any]:
    """Detect faces on ``photo`` (``gender``/``age``/``emotions`` with --gae):
    ``{faces, orientation}``."""
    if not req.want:  # boxes only: found on the photo decoded at the detector's scale
        found, boxes = detected_boxes(backend, req.data)
        return {"faces": [face_box_json(b) for b in boxes], "orientation": found.orientation,
                **unavailable_member(p, backend)}
    photo, found = detected_faces(backend, req.data, req.want)  # each at the scale it needs
    faces = []
    for box, new in found:
        item: dict[str, Any] = face_box_json(box)
        if new is not None:
            item.update({k: v for k, v in new.attrs.items() if v is not None})
        faces.append(item)
    return {"faces": faces, "orientation": photo.orientation, **unavailable_member(p, backend)}


@dataclass(frozen=True)
class VerifyRequest:
    threshold: float | None
    selector: str
    photos: tuple[bytes | None, bytes | None]
    boxes: tuple[Any, Any]


async def verify_request(p: ParamsDep, backend: BackendDep) -> VerifyRequest:
    threshold = p.threshold()
    selector = p.mf_selector()
    budget = image_budget(backend)
    data1 = await photo_bytes(p, "photo1", backend, budget)
    data2 = await photo_bytes(p, "photo2", backend, budget)
    return VerifyRequest(threshold, selector, (data1, data2), (p.boxes("bbox1"), p.boxes("bbox2")))


def _verify_faces(backend: Backend, req: VerifyRequest, n: int) -> list[NewFace]:
    data, boxes = req.photos[n - 1], req.boxes[n - 1]
    if data is None:
        raise bad_param(f"photo{n}", f"photo{n} is required")
    return probe_faces(backend, data, req.selector, f"photo{n}", boxes=boxes,
                       bbox_param=f"bbox{n}")


@router.post("/verify", openapi_extra=openapi.VERIFY)
def verify(user: UserDep, req: Annotated[VerifyRequest, Depends(verify_request)],
           backend: BackendDep) -> dict[str, Any]:
    """Compare the faces on ``photo1`` and ``photo2`` (``bbox1``, ``bbox2``, ``threshold``,
    ``mf_selector``)."""
    threshold = req.threshold
    faces1, faces2 = _verify_faces(backend, req, 1), _verify_faces(backend, req, 2)
    results, matched = [], {i: False for i in range(len(faces1))}
    for i, f1 in enumerate(faces1):
        for f2 in faces2:
            cos = float(f1.embedding @ f2.embedding)
            conf = float(confidence_from_cosine(cos, backend.model))
            item: dict[str, Any] = {"bbox1": face_box_json(f1.box),
                                    "bbox2": face_box_json(f2.box), "confidence": conf}
            if threshold is not None:
                item["verified"] = conf >= threshold
                matched[i] = matched[i] or item["verified"]
            results.append(item)
    out: dict[str, Any] = {"results": results}
    if threshold is not None:
        out["verified"] = all(matched.values())
    return out


# The face index is one in-process shard, always live: ``strict`` (9.1: fail when a
# tntapi shard is down) is validated and can never trigger; X-Live-Servers says 1/1.
LIVE_SERVERS = "1/1"


@dataclass(frozen=True)
class IdentifyRequest:
    threshold: float | None
    n: int
    selector: str
    boxes: Any
    data: bytes | None
    uploads: list[bytes]


async def identify_request(p: ParamsDep, backend: BackendDep) -> IdentifyRequest:
    p.flag("strict")
    threshold = p.threshold()
    n = p.integer("n", 1, lo=1, hi=100000)
    selector = p.mf_selector()
    boxes = p.boxes("bbox")
    single = p.xyxy()
    if single is not None:
        boxes = [single]
    budget = image_budget(backend)
    data = await photo_bytes(p, "photo", backend, budget)
    uploads = await face_images(p, backend, budget)
    return IdentifyRequest(threshold, n, selector, boxes, data, uploads)


IdentifyDep = Annotated[IdentifyRequest, Depends(identify_request)]


def _identify(request: Request, response: Response, backend: Backend, user: int,
              req: IdentifyRequest, gallery: str | None) -> dict[str, Any]:
    response.headers["X-Live-Servers"] = LIVE_SERVERS
    if gallery is not None:
        backend.require_gallery(user, gallery)
    if req.data is not None and not req.uploads:  # a photo: found (or located) on it
        faces = probe_faces(backend, req.data, req.selector, boxes=req.boxes)
    else:
        _, faces = backend.faces_of_request(req.data, req.uploads, req.boxes, req.selector,
                                            frozenset())
    hits = backend.identify(user, faces, req.n, req.threshold, gallery)
    results: dict[str, list[dict[str, Any]]] = {}
    all_ids = sorted({fid for h in hits for fid, _ in h})
    rendered = {f["id"]: f for f in render_faces(request, backend, user, all_ids)}
    for face, face_hits in zip(faces, hits, strict=True):
        results[box_key(face.box)] = [
            {"confidence": conf, "face": rendered[fid]}
            for fid, conf in face_hits if fid in rendered
        ]
    return {"results": results}


@router.post("/identify", openapi_extra=openapi.IDENTIFY)
def identify(request: Request, response: Response, user: UserDep, req: IdentifyDep,
             backend: BackendDep) -> dict[str, Any]:
    """Search the faces on ``photo`` (or in ``x1,y1,x2,y2`` / ``bbox``, or the normalized
    ``face0``) among the stored faces; ``n``, ``threshold``, ``mf_selector``, ``strict``."""
    return _identify(request, response, backend, user, req, None)


@router.post("/faces/gallery/{gallery}/identify", openapi_extra=openapi.IDENTIFY)
def identify_in_gallery(gallery: GalleryName, request: Request, response: Response,
                        user: UserDep, req: IdentifyDep, backend: BackendDep
                        ) -> dict[str, Any]:
    """/identify restricted to one gallery."""
    return _identify(request, response, backend, user, req, gallery)


# -- POST /face ----------------------------------------------------------------

@dataclass(frozen=True)
class Enrollment:
    """A POST /face: its Idempotency-Key, and the ids of its earlier run (a replay found
    before the images were read) or the parsed post."""

    key: str | None
    earlier: list[int] | None
    post: FacePost | None


async def enrollment_of(request: Request, user: UserDep, p: ParamsDep, backend: BackendDep
                        ) -> Enrollment:
    """A replayed request is answered from its earlier run. When an image is a URL, the
    replay is looked up first (a replay fetches nothing); uploads are in the body already,
    so their post is parsed here and the handler looks the key up in its own worker-thread
    hop (one hop less per detector post)."""
    key = idempotency_key(request, p)
    if key and fetches_an_image(p):
        earlier = await replayed_ids(backend, user, key)
        if earlier is not None:
            return Enrollment(key, earlier, None)
    return Enrollment(key, None, await face_post(p, backend, key))


# response_model=None: FastAPI would otherwise infer one from ``-> dict[str, Any]`` and
# validate every answer against it in one more worker-thread hop (pydantic over the rows);
# the schema it documented is kept.
FACE_ANSWER = {200: {"content": {"application/json": {"schema": {
    "additionalProperties": True, "title": "Response Add Face V1 Face Post", "type": "object"}}}}}


@router.post("/face", openapi_extra=openapi.FACE, response_model=None, responses=FACE_ANSWER)
def add_face(request: Request, user: UserDep,
             enrollment: Annotated[Enrollment, Depends(enrollment_of)], p: ParamsDep,
             backend: BackendDep) -> dict[str, Any]:
    """Add the faces on ``photo`` (``bbox``, ``mf_selector``, ``meta``, ``galleries``,
    ``cam_id``) or the video detector's normalized ``face0`` with ``bbox``, ``timestamp``
    and ``detectorParams``. Honours the ``Idempotency-Key`` header."""
    earlier = enrollment.earlier
    if enrollment.post is not None and enrollment.key:
        earlier = backend.replay(user, enrollment.key)
    if enrollment.post is None or earlier is not None:  # a replay
        results = render_faces(request, backend, user, earlier or [])
    else:
        ids = backend.add_faces(user, enrollment.post)
        results = render_faces(request, backend, user, ids, p.flag("facen"))
    return {"results": results, **unavailable_member(p, backend)}


def unavailable_member(p: Params, backend: Backend) -> dict[str, Any]:
    """``{"unavailable": {"emotions": reason}}`` when emotions were asked and cannot be
    answered (--gae off, model not loadable), else nothing."""
    asked = p.flag("emotions")
    missing = attrs_unavailable(asked, backend.emotions_unavailable() if asked else None)
    return {"unavailable": missing} if missing else {}


IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,128}")  # 1..128 printable ASCII, no space
MAX_CAM_ID = 256  # characters of a cam_id
MAX_EXTRA = 16384  # characters of a face's custom attributes (and extra fields), as JSON
MAX_ATTRIBUTE_NAME = 256  # characters of an attribute's name


def idempotency_key(request: Request, p: Params) -> str | None:
    """The ``Idempotency-Key`` header (or ``idempotency_key`` field): 1..128 printable ASCII
    characters without spaces; BAD_PARAM naming where it came from otherwise."""
    header = request.headers.get("idempotency-key")
    name, key = ("Idempotency-Key", header) if header else (
        "idempotency_key", p.text("idempotency_key", max_len=1024))
    if not key:
        return None
    if not IDEMPOTENCY_KEY_RE.fullmatch(key):
        raise bad_param(name, f"{name} must be 1 to 128 printable ASCII characters without "
                        "spaces", key)
    return key


def extra_fields(p: Params) -> dict[str, Any]:
    """The face's custom attributes: unknown text fields of a POST /face and the members of
    its ``attributes`` (or ``unique_args``) JSON object, which win; bounded in total."""
    extra: dict[str, Any] = {
        k: v for k, v in p.values.items()
        if k not in FACE_FIELDS and not k.startswith("face") and isinstance(v, str)}
    given = attributes_param(p)
    return check_attributes("body", {**extra, **(given or {})})


def attributes_param(p: Params) -> dict[str, Any] | None:
    """``attributes`` (alias ``unique_args``): a JSON object, or null/{} for none."""
    names = [n for n in ATTRIBUTES if n in p.values]
    if not names:
        return None
    if len(names) > 1:
        raise bad_param("unique_args", "give attributes or unique_args, not both")
    name = names[0]
    value = p.json(name, max_chars=MAX_EXTRA) if p.values[name] is not None else None
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise bad_param(name, f"{name} must be a JSON object of custom attributes", value)
    return check_attributes(name, value)


def check_attributes(param: str, attrs: dict[str, Any]) -> dict[str, Any]:
    for key in attrs:
        if not 0 < len(key) <= MAX_ATTRIBUTE_NAME or "\x00" in key:
            raise bad_param(param, f"attribute names are 1-{MAX_ATTRIBUTE_NAME} characters "
                            "without NUL", key)
    size = len(json.dumps(attrs))
    if size > MAX_EXTRA:
        raise bad_param(param, f"the custom attributes ({', '.join(sorted(attrs))[:200]}) "
                        f"are {size} characters as JSON, more than {MAX_EXTRA}", size)
    return attrs


async def face_post(p: Params, backend: Backend, key: str | None) -> FacePost:
    cam_id = p.text("cam_id", max_len=MAX_CAM_ID) or None
    ts = p.raw("timestamp")
    detector_params = p.json("detectorParams") if "detectorParams" in p else None
    extra = extra_fields(p)
    budget = image_budget(backend)
    return FacePost(
        photo=await photo_bytes(p, "photo", backend, budget),
        face_images=await face_images(p, backend, budget),
        boxes=p.boxes("bbox"),
        mf_selector=p.mf_selector(),
        meta=p.text("meta", "") or "",
        galleries=p.str_list("galleries"),
        cam_id=cam_id,
        timestamp=parse_time("timestamp", ts) if ts not in (None, "") else None,
        detector_params=detector_params,
        extra=extra,
        want_attrs=wanted_attrs(backend, p),
        idempotency_key=key,
    )


# -- /face/id/<id> -------------------------------------------------------------

@router.get("/face/id/{face_id}")
def get_face(face_id: DbId, request: Request, user: UserDep, backend: BackendDep
             ) -> dict[str, Any]:
    """The face; ``facen=true`` adds its feature vector."""
    want = Params(dict(request.query_params)).flag("facen")
    faces = render_faces(request, backend, user, [face_id], want)
    if not faces:
        raise not_found("face", face_id)
    return faces[0]


@router.get("/face/id/{face_id}/facen")
def get_facen(face_id: DbId, user: UserDep, backend: BackendDep) -> dict[str, Any]:
    """The stored face's feature vector (reference 8.7.3 "Get Facen"): ``{id, facen}``,
    base64 of the little-endian float32 L2-normalised embedding that /identify compares."""
    row = backend.face_row(user, face_id)  # 404 unless the user's face
    return {"id": row["id"], "facen": facens(backend, [row["id"]]).get(row["id"])}


@dataclass(frozen=True)
class FaceUpdate:
    """A parsed PUT /face/id (UNSET: leave as it is)."""

    meta: str | None
    person: Any
    galleries: dict[str, list[str]] | None
    attributes: Any
    image: FacePost | None


async def face_update_of(p: ParamsDep, backend: BackendDep) -> FaceUpdate:
    meta = p.text("meta")
    # absent: leave it; null or "": clear (so not p.raw, which maps null to the default)
    person = p.values["person_id"] if "person_id" in p.values else UNSET
    galleries = gallery_ops(p)
    given = attributes_param(p)
    attributes = UNSET if given is None else given
    return FaceUpdate(meta, person, galleries, attributes, await image_post(p, backend))


@router.put("/face/id/{face_id}", openapi_extra=openapi.FACE_PUT)
def put_face(face_id: DbId, request: Request, user: UserDep,
             change: Annotated[FaceUpdate, Depends(face_update_of)], backend: BackendDep
             ) -> dict[str, Any]:
    """Change ``meta``, ``person_id``, ``galleries`` (``{"add"|"del"|"set": [...]}``) and
    ``attributes`` (a JSON object replaces them; null or {} clears them); with ``photo`` (or
    a normalized ``face0``; ``bbox``, ``mf_selector``) the face's image and embedding are
    replaced and the face keeps its id."""
    backend.update_face(user, face_id, change.meta, change.person, change.galleries,
                        attributes=change.attributes, image=change.image)
    return render_faces(request, backend, user, [face_id])[0]


async def image_post(p: Params, backend: Backend) -> FacePost | None:
    """A replacement image of PUT /face/id (``photo`` or ``face0``), or None."""
    budget = image_budget(backend)
    photo = await photo_bytes(p, "photo", backend, budget)
    faces = await face_images(p, backend, budget)
    if photo is None and not faces:
        return None
    return FacePost(photo=photo, face_images=faces, boxes=p.boxes("bbox"),
                    mf_selector=p.mf_selector(), want_attrs=wanted_attrs(backend, p))


def gallery_ops(p: Params) -> dict[str, list[str]] | None:
    if "galleries" not in p:
        return None
    value = p.json("galleries")
    if not isinstance(value, dict) or not value or set(value) - {"add", "del", "set"}:
        raise bad_param("galleries", 'galleries must be {"add": [...]}, {"del": [...]} or '
                        '{"set": [...]}', value)
    out = {}
    for op, names in value.items():
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise bad_param("galleries", f"galleries.{op} must be a list of gallery names",
                            names)
        out[op] = names
    return out


@router.delete("/face/id/{face_id}", status_code=204)
def delete_face(face_id: DbId, user: UserDep, backend: BackendDep) -> Response:
    if not backend.delete_faces(user, [face_id]):
        raise not_found("face", face_id)
    return Response(status_code=204)


# -- lists ---------------------------------------------------------------------

def _face_list(request: Request, backend: Backend, user: int, meta: str | None = None,
               gallery: str | None = None) -> dict[str, Any]:
    page = page_request(Params(dict(request.query_params)), backend.settings.page_limit)
    result = backend.faces_store.page(user, page, meta, gallery)
    return {**views.page_links(request, result),
            "results": render_faces(request, backend, user, result.ids)}


@router.get("/faces")
def list_faces(request: Request, user: UserDep, backend: BackendDep) -> dict[str, Any]:
    """All faces, newest first; ``limit``, ``max_id`` / ``min_id`` pagination."""
    return _face_list(request, backend, user)


@router.get("/faces/gallery/{gallery}")
def list_gallery_faces(gallery: GalleryName, request: Request, user: UserDep,
                       backend: BackendDep) -> dict[str, Any]:
    """The faces of one gallery, newest first, paginated."""
    backend.require_gallery(user, gallery)
    return _face_list(request, backend, user, gallery=gallery)


@router.get("/face/meta/{meta:path}")
def faces_by_meta(meta: str, request: Request, user: UserDep, backend: BackendDep
                  ) -> dict[str, Any]:
    """Faces whose meta is exactly ``meta`` (case-sensitive, URL-encoded)."""
    return _face_list(request, backend, user, meta)


@router.get("/face/gallery/{gallery}/meta/{meta:path}")
def gallery_faces_by_meta(gallery: GalleryName, meta: str, request: Request, user: UserDep,
                          backend: BackendDep) -> dict[str, Any]:
    backend.require_gallery(user, gallery)
    return _face_list(request, backend, user, meta, gallery)


def _meta_list(request: Request, backend: Backend, user: int, gallery: str | None
               ) -> dict[str, Any]:
    page = page_request(Params(dict(request.query_params)), backend.settings.page_limit)
    result, rows = backend.faces_store.meta_page(user, page, gallery)
    faces = {f["id"]: f for f in render_faces(request, backend, user, result.ids)}
    results = [{"meta": rows[i]["meta"], "count": rows[i]["n"], "face": faces[i]}
               for i in result.ids if i in rows and i in faces]
    return {**views.page_links(request, result), "results": results}


@router.get("/meta")
def list_meta(request: Request, user: UserDep, backend: BackendDep) -> dict[str, Any]:
    """Each meta string with its face count and first face, paginated."""
    return _meta_list(request, backend, user, None)


@router.get("/meta/gallery/{gallery}")
def list_gallery_meta(gallery: GalleryName, request: Request, user: UserDep,
                      backend: BackendDep) -> dict[str, Any]:
    backend.require_gallery(user, gallery)
    return _meta_list(request, backend, user, gallery)
