"""Webhooks: the token's camera events POSTed to a URL, at least once, signed.

``/v1/webhooks`` (create, list, change, delete; per token) configures them: ``url``, an
optional HMAC ``secret``, and filters ``cam_ids`` (empty: every camera) and ``match``
(``all``, ``watchlist``: only events matching a watch list, ``unknown``: only events matching
none).

Delivery: a worker in the backend process reads each webhook's new events from the database
after the webhook's ``cursor`` (the last event id it is done with, stored in the table
``webhooks``) and POSTs them one at a time, in id order. The cursor moves only after the
receiver answered 2xx (or the event did not pass the filters), so a restart of the backend or
a receiver that was down loses nothing: at least once. Receivers de-duplicate by the event id
(``X-Event-Id`` header and ``event_id`` in the body). A failure (no connection, timeout, an
answer other than 2xx) stops that webhook until ``next_try``, with exponential backoff
(``BACKOFF_BASE`` doubling up to ``BACKOFF_MAX``). Each webhook is delivered by its own task,
so a slow or dead receiver delays nobody else, and ingestion never waits for a webhook.

Body: ``{"event_id", "webhook_id", "event": <the event as the SSE stream has it>,
"watchlist_match": <the best watch-list match or null>}``. With a secret, ``X-Signature:
sha256=<hex HMAC-SHA256 of the body with the secret>``.

Addresses: the URL's host must resolve to a public address unless ``fetch_allow`` lists it
(the policy of photo URL fetching, fetch.py); checked at configuration time and again before
each delivery, which goes to the checked address (no DNS rebinding). Redirects are not
followed.

Several backend processes on one data directory: a process delivers a webhook only while it
holds the webhook's lease, a row of ``webhook_leases`` (owner, expiry) taken in a write
transaction when the webhook has new events (``claim``: free, expired, or already ours) and
renewed during a long round. The cursor is read again under the lease, and a round's result
is recorded only while the lease is still the process's own, so one process delivers each
event. A process that stops releases its leases; one that dies (or stalls for longer than
``LEASE_SECONDS``) loses them at their expiry, and another process then delivers again from
the stored cursor: the events of the dead process's unfinished round arrive a second time.
So: at least once, duplicates only after a lease expired mid-round (receivers de-duplicate by
event id).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from videodetector.backend import events
from videodetector.backend.deps import BackendDep, ParamsDep, UserDep, WebhooksDep
from videodetector.backend.errors import bad_param, not_found
from videodetector.backend.fetch import checked_address, networks
from videodetector.backend.params import DbId, Params
from videodetector.backend.service import Backend
from videodetector.backend.stores.webhooks import TooManyWebhooks, WebhookStore
from videodetector.backend.webhook_delivery import Deliverer  # noqa: F401 - app.py starts it

router = APIRouter(tags=["webhooks"])

MATCHES = ("all", "watchlist", "unknown")
MAX_HOOKS = 20  # per token
MAX_URL = 2000
MAX_SECRET = 200
MAX_CAMS = 100



def hook_json(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "url": row["url"], "has_secret": bool(row["secret"]),
            "cam_ids": json.loads(row["cam_ids"]), "match": row["match"],
            "enabled": bool(row["enabled"]), "cursor": row["cursor"],
            "delivered": row["delivered"], "failures": row["failures"],
            "next_try": row["next_try"] or None, "last_error": row["last_error"],
            "created": row["created"]}


# -- configuration -------------------------------------------------------------

def check_url(value: Any) -> httpx.URL:
    if not isinstance(value, str) or not value or len(value) > MAX_URL:
        raise bad_param("url", f"url must be an http(s) URL of at most {MAX_URL} characters",
                        value)
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, ValueError) as exc:
        raise bad_param("url", f"url is not a valid URL: {exc}", value) from None
    if url.scheme not in ("http", "https") or not url.host or url.userinfo:
        raise bad_param("url", "url must be an http(s) URL without credentials", value)
    return url


def hook_fields(p: Params, creating: bool) -> dict[str, Any]:
    """The columns a POST/PUT body sets (absent fields stay as they are on PUT)."""
    known = {"url", "secret", "cam_ids", "match", "enabled"}
    unknown = sorted(set(p.values) - known)
    if unknown:
        raise bad_param(unknown[0], f"unknown field {unknown[0]!r}; a webhook has "
                        f"{', '.join(sorted(known))}")
    out: dict[str, Any] = {}
    if creating or p.raw("url") is not None:
        out["url"] = str(check_url(p.raw("url")))
    if p.raw("secret") is not None:
        secret = p.text("secret", max_len=MAX_SECRET)
        out["secret"] = secret or None
    if p.raw("cam_ids") is not None:
        cams = p.str_list("cam_ids")
        if len(cams) > MAX_CAMS:
            raise bad_param("cam_ids", f"at most {MAX_CAMS} cameras", len(cams))
        out["cam_ids"] = json.dumps(cams)
    if p.raw("match") is not None:
        match = p.text("match", max_len=16)
        if match not in MATCHES:
            raise bad_param("match", f"match must be one of {', '.join(MATCHES)}", match)
        out["match"] = match
    if p.raw("enabled") is not None:
        out["enabled"] = int(p.flag("enabled"))
    return out


def hook_row(hooks: WebhookStore, user: int, hook_id: int) -> Any:
    row = hooks.get(user, hook_id)
    if row is None:
        raise not_found("webhook", hook_id)
    return row


async def check_address(backend: Backend, fields: dict[str, Any]) -> None:
    if "url" in fields:
        allow = networks(backend.settings.fetch_allow)
        await checked_address(httpx.URL(fields["url"]), "url", allow)


async def new_hook(p: ParamsDep, backend: BackendDep) -> dict[str, Any]:
    """The webhook a POST body configures, its address checked (DNS: async)."""
    fields = hook_fields(p, creating=True)
    await check_address(backend, fields)
    return fields


async def hook_changes(p: ParamsDep, backend: BackendDep) -> dict[str, Any]:
    """The changes of a PUT body, a new address checked."""
    fields = hook_fields(p, creating=False)
    await check_address(backend, fields)
    return fields


NewHookDep = Annotated[dict[str, Any], Depends(new_hook)]
HookChangesDep = Annotated[dict[str, Any], Depends(hook_changes)]


# -- routes --------------------------------------------------------------------

HOOK_DOC = {"requestBody": {"content": {"application/json": {"schema": {
    "type": "object", "additionalProperties": False, "properties": {
        "url": {"type": "string", "description": "http(s); a public address unless "
                "fetch_allow lists it"},
        "secret": {"type": "string", "description": "HMAC-SHA256 key: X-Signature header"},
        "cam_ids": {"type": "array", "items": {"type": "string"},
                    "description": "only these cameras (empty: all)"},
        "match": {"type": "string", "enum": list(MATCHES)},
        "enabled": {"type": "boolean"}}}}}}}


@router.get("/webhooks")
def list_hooks(user: UserDep, hooks: WebhooksDep) -> dict[str, Any]:
    """The token's webhooks with their delivery state (the secret is never shown)."""
    return {"results": [hook_json(r) for r in hooks.list(user)]}


@router.post("/webhooks", status_code=201, openapi_extra=HOOK_DOC)
def create_webhook(user: UserDep, fields: NewHookDep, backend: BackendDep,
                   hooks: WebhooksDep) -> JSONResponse:
    """Create a webhook (``url``, ``secret``, ``cam_ids``, ``match``, ``enabled``); it gets
    the events that arrive from now on. 201 with the webhook."""
    try:
        hook_id = hooks.create(user, fields, events.latest_id(backend, user), MAX_HOOKS)
    except TooManyWebhooks as exc:
        raise bad_param("url", f"a token has at most {MAX_HOOKS} webhooks", exc.count) from None
    return JSONResponse(hook_json(hook_row(hooks, user, hook_id)), status_code=201)


@router.get("/webhooks/{hook_id}")
def get_webhook(hook_id: DbId, user: UserDep, hooks: WebhooksDep) -> dict[str, Any]:
    return hook_json(hook_row(hooks, user, hook_id))


@router.put("/webhooks/{hook_id}", openapi_extra=HOOK_DOC)
def put_webhook(hook_id: DbId, user: UserDep, fields: HookChangesDep,
                hooks: WebhooksDep) -> dict[str, Any]:
    """Change fields (``secret: ""`` removes the secret); resets the backoff."""
    hook_row(hooks, user, hook_id)
    hooks.update(user, hook_id, fields)
    return hook_json(hook_row(hooks, user, hook_id))


@router.delete("/webhooks/{hook_id}", status_code=204)
def delete_webhook(hook_id: DbId, user: UserDep, hooks: WebhooksDep) -> Response:
    hook_row(hooks, user, hook_id)
    hooks.delete(user, hook_id)
    return Response(status_code=204)
