"""Request-body descriptions for /v1/docs (the routes read JSON or forms themselves)."""

from __future__ import annotations

from typing import Any


def body(files: dict[str, str] | None = None, **fields: str) -> dict[str, Any]:
    """``openapi_extra`` for a route taking multipart/form-data (with ``files``) or JSON."""
    props: dict[str, Any] = {
        name: {"type": "string", "format": "binary", "description": desc}
        for name, desc in (files or {}).items()
    }
    props.update({name: {"type": "string", "description": desc}
                  for name, desc in fields.items()})
    schema = {"type": "object", "properties": props}
    json_props = {name: {"description": desc} for name, desc in fields.items()}
    json_props.update({name: {"type": "string", "description": "an http(s) URL (--fetch-urls)"}
                       for name in (files or {})})
    return {"requestBody": {"content": {
        "multipart/form-data": {"schema": schema},
        "application/json": {"schema": {"type": "object", "properties": json_props}},
    }}}


PHOTO = ("JPEG, PNG or WebP, at most 10 MB; in JSON: base64 or a data: URI (or a URL with "
         "--fetch-urls)")
ATTRIBUTES = "JSON object of custom attributes, returned with the face (16 KiB as JSON)"
THRESHOLD = "strict (0.7834), medium (0.6616), low (0.5690), none, or 0..1; default 0.75"
MF = "reject, biggest (default) or all"
BBOX = "JSON list of boxes [[x1, y1, x2, y2], ...]"

DETECT = body({"photo": PHOTO}, gender="true: return gender (needs --gae)",
              age="true: return age (needs --gae)",
              emotions="true: the two most likely emotions, most likely first (needs --gae; "
                       "otherwise unavailable.emotions in the answer says why)")
VERIFY = body({"photo1": PHOTO, "photo2": PHOTO}, bbox1=BBOX, bbox2=BBOX,
              threshold=THRESHOLD, mf_selector=MF)
IDENTIFY = body({"photo": PHOTO, "face0": "an already normalized face (video detector)"},
                x1="box", y1="box", x2="box", y2="box", bbox=BBOX, n="results per face (1)",
                threshold=THRESHOLD, mf_selector=MF,
                strict="true: fail if an index shard is down (one shard here, always live; "
                       "X-Live-Servers: 1/1)")
FACE = body({"photo": PHOTO, "face0": "the normalized face (video detector): embedded as is"},
            meta="user-defined string", galleries="gallery names (JSON list or a,b)",
            bbox=BBOX, mf_selector=MF, cam_id="camera id: makes the face a history event",
            timestamp="ISO 8601 capture time", detectorParams="JSON from the video detector",
            gender="true (needs --gae)", age="true (needs --gae)",
            idempotency_key="same as the Idempotency-Key header", attributes=ATTRIBUTES,
            facen="true: each face in the answer carries its facen (base64 float32)",
            unique_args="alias of attributes")
FACE_PUT = body({"photo": PHOTO + ": replaces the face's image, the id stays",
                 "face0": "a normalized face replacing the face's image"},
                meta="new meta",
                person_id='an existing person of this token, "new" (the server creates a '
                          'person) or null (clears)',
                galleries='{"add"|"del"|"set": ["gallery", ...]}',
                attributes=ATTRIBUTES + "; replaces them, null clears", bbox=BBOX,
                mf_selector=MF)
CAMERA = body(meta="user-defined string", enabled="true (default) or false",
              url="stream URL", detector="video detector name (GET /camera?detector=)",
              roi="WxH+X+Y or [W, H, X, Y]", rot="WxH+X+Y or [W, H, X, Y]")
HISTORY = body(person_id="person id", cam_ids="camera ids", start="ISO 8601",
               end="ISO 8601", friend="true or false",
               matched="true: joined to a person; false: unknown person",
               watchlist="true: matches a watch list at its threshold; false: matches none",
               limit="per page, 0 = all")


ERROR_BODY = {
    "type": "object",
    "required": ["code", "reason"],
    "properties": {
        "code": {"type": "string", "description": "BAD_PARAM, MALFORMED_JSON, AUTH_FAILED, "
                 "NOT_FOUND, METHOD_NOT_ALLOWED, SERVICE_UNAVAILABLE, INTERNAL_ERROR"},
        "reason": {"type": "string"},
        "param": {"type": "string", "description": "the parameter in error (BAD_PARAM)"},
    },
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": ERROR_BODY}}}


# The error answers every route can give (9.1 "Error Reporting"), documented once for all.
ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("BAD_PARAM (a parameter named in `param` is invalid) or MALFORMED_JSON"),
    401: _error("AUTH_FAILED: no or an unknown 'Authorization: Token <key>'"),
    404: _error("NOT_FOUND"),
    405: _error("METHOD_NOT_ALLOWED"),
    413: _error("BAD_PARAM: the body, a file or the request's decoded pixels exceed a limit"),
    503: _error("SERVICE_UNAVAILABLE: database, storage or models unavailable"),
}


_ID = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
PERSON_MERGE = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "required": ["person_id"], "properties": {
        "person_id": {**_ID, "description": "the person to merge into this one (its faces "
                      "move here)"}}}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["person_id"],
                                       "properties": {"person_id": {
                                           "type": "string", "pattern": "^[1-9][0-9]{0,17}$"}}}},
}}}
NOT_THIS_PERSON = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "required": ["face_ids"], "properties": {
        "face_ids": {"type": "array", "items": _ID, "minItems": 1, "maxItems": 1000,
                     "description": "face ids of this person that are someone else"}}}},
}}}


# /faces/sync's own answer when a cursor cannot be served
RESYNC = {410: _error("RESYNC_REQUIRED: the cursor is older than the deletions kept "
                      "(sync_tombstone_ttl) or than the served embedding model, or unknown to "
                      "this server; clear the mirror and start again without a cursor")}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


SYNC = {"parameters": [
    _query("gallery", {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,48}$"},
           "the gallery to mirror (default: default)"),
    _query("cursor", {"type": "integer", "minimum": 0},
           "the cursor of the previous page; none or 0: from the start"),
    _query("last_updated_at", {"type": "number"},
           "instead of a cursor: changes after this time (epoch seconds or ISO 8601)"),
    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000},
           "faces and deletions per page (100)"),
]}


# -- authentication ----------------------------------------------------------------
# An API client sends ``Authorization: Token <key>``; the console sends the HttpOnly session
# cookie (websession.py) and, with every request that is not GET/HEAD/OPTIONS, the session's
# CSRF token in a header. Each operation lists both ways (an OR); its own "security" wins.

SAFE_METHODS = frozenset({"get", "head", "options"})


def security_schemes(cookie: str, csrf_header: str) -> dict[str, Any]:
    return {
        "Token": {"type": "apiKey", "in": "header", "name": "Authorization",
                  "description": "Token <key> (fkvideo_backend token)"},
        "Session": {"type": "apiKey", "in": "cookie", "name": cookie,
                    "description": "the console's session: HttpOnly, SameSite=Strict (Secure "
                    "over https), set by POST /v1/session, ended by DELETE /v1/session; "
                    "12 hours at most"},
        "CSRF": {"type": "apiKey", "in": "header", "name": csrf_header,
                 "description": "with the session cookie, every request other than GET, HEAD "
                 "and OPTIONS sends the session's CSRF token (the csrf of POST or GET "
                 "/v1/session); 403 CSRF_FAILED otherwise"},
    }


def requirement(method: str) -> list[dict[str, list[str]]]:
    """Token, or the session cookie (plus the CSRF header when the method writes)."""
    session: dict[str, list[str]] = {"Session": []}
    if method.lower() not in SAFE_METHODS:
        session["CSRF"] = []
    return [{"Token": []}, session]


def add_security(schema: dict[str, Any], authenticated: set[tuple[str, str]],
                 cookie: str, csrf_header: str) -> dict[str, Any]:
    """Declare the schemes and give each operation its requirement: ``authenticated`` holds
    the (path, method) pairs that need a user; the others are open (``security: []``)."""
    schema.setdefault("components", {})["securitySchemes"] = security_schemes(cookie,
                                                                              csrf_header)
    schema["security"] = [{"Token": []}, {"Session": []}]
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            if method in ("parameters", "summary", "description") or "security" in op:
                continue
            op["security"] = requirement(method) if (path, method) in authenticated else []
    return schema
