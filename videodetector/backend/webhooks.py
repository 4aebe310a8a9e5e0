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

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import sqlite3
import time
import weakref
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from videodetector.backend import events, views, watchlists
from videodetector.backend.deps import current_user, get_backend, params_of
from videodetector.backend.errors import ApiError, bad_param, not_found
from videodetector.backend.fetch import IPNetwork, checked_address, networks
from videodetector.backend.params import DbId, Params
from videodetector.backend.service import Backend
from videodetector.backend.timeutil import iso, now

log = logging.getLogger(__name__)
router = APIRouter(tags=["webhooks"])

MATCHES = ("all", "watchlist", "unknown")
MAX_HOOKS = 20  # per token
MAX_URL = 2000
MAX_SECRET = 200
MAX_CAMS = 100
POLL_SECONDS = 0.5
BATCH = 50  # events read per round
TIMEOUT = 5.0  # seconds per delivery
BACKOFF_BASE = 0.5
BACKOFF_MAX = 300.0
LEASE_SECONDS = 30.0  # a webhook's delivery lease; renewed when half of it is left

SCHEMA = """
CREATE TABLE IF NOT EXISTS webhooks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    url TEXT NOT NULL,
    secret TEXT,
    cam_ids TEXT NOT NULL DEFAULT '[]',
    match TEXT NOT NULL DEFAULT 'all',
    enabled INTEGER NOT NULL DEFAULT 1,
    cursor INTEGER NOT NULL,
    created TEXT NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS webhooks_user ON webhooks (user_id);
CREATE TABLE IF NOT EXISTS webhook_leases (
    hook_id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    expires REAL NOT NULL
);
"""

_schema_ready: weakref.WeakSet[Any] = weakref.WeakSet()  # databases with the table


def ensure_schema(backend: Backend) -> None:
    with backend.db.lock:
        if backend.db in _schema_ready:
            return
        backend.db.conn.executescript(SCHEMA)
        _schema_ready.add(backend.db)


def backoff(failures: int) -> float:
    """Seconds to wait after ``failures`` failed deliveries in a row (>= 1)."""
    return min(BACKOFF_MAX, BACKOFF_BASE * 2 ** min(max(failures - 1, 0), 30))


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Hook:
    id: int
    user: int
    url: str
    secret: str | None
    cam_ids: tuple[str, ...]
    match: str
    cursor: int
    failures: int

    @classmethod
    def of(cls, row: sqlite3.Row) -> Hook:
        return cls(row["id"], row["user_id"], row["url"], row["secret"],
                   tuple(json.loads(row["cam_ids"])), row["match"], row["cursor"],
                   row["failures"])

    def wants(self, row: sqlite3.Row, match: dict[str, Any] | None) -> bool:
        if self.cam_ids and row["cam_id"] not in self.cam_ids:
            return False
        if self.match == "watchlist":
            return match is not None
        return not (self.match == "unknown" and match is not None)


def hook_json(row: sqlite3.Row) -> dict[str, Any]:
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


def hook_row(backend: Backend, user: int, hook_id: int) -> sqlite3.Row:
    ensure_schema(backend)
    row = backend.db.row("SELECT * FROM webhooks WHERE id = ? AND user_id = ?",
                         (hook_id, user))
    if row is None:
        raise not_found("webhook", hook_id)
    return row


def create_hook(backend: Backend, user: int, fields: dict[str, Any]) -> dict[str, Any]:
    ensure_schema(backend)
    with backend.db.transaction() as conn:
        n = conn.execute("SELECT COUNT(*) FROM webhooks WHERE user_id = ?", (user,)).fetchone()
        if n[0] >= MAX_HOOKS:
            raise bad_param("url", f"a token has at most {MAX_HOOKS} webhooks", n[0])
        cursor = events.latest_id(backend, user)  # new events only
        cur = conn.execute(
            "INSERT INTO webhooks (user_id, url, secret, cam_ids, match, enabled, cursor, "
            "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (user, fields["url"], fields.get("secret"), fields.get("cam_ids", "[]"),
             fields.get("match", "all"), fields.get("enabled", 1), cursor, iso(now())))
        hook_id = int(cur.lastrowid or 0)
    return hook_json(hook_row(backend, user, hook_id))


def update_hook(backend: Backend, user: int, hook_id: int, fields: dict[str, Any]
                ) -> dict[str, Any]:
    hook_row(backend, user, hook_id)
    if fields:
        sets = ", ".join(f"{k} = ?" for k in fields)
        with backend.db.transaction() as conn:
            # a changed configuration is tried at once
            conn.execute(f"UPDATE webhooks SET {sets}, failures = 0, next_try = 0 "
                         "WHERE id = ? AND user_id = ?", (*fields.values(), hook_id, user))
    return hook_json(hook_row(backend, user, hook_id))


async def check_address(backend: Backend, fields: dict[str, Any]) -> None:
    if "url" in fields:
        allow = networks(backend.settings.fetch_allow)
        await checked_address(httpx.URL(fields["url"]), "url", allow)


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
async def list_hooks(request: Request, user: int = Depends(current_user)) -> dict[str, Any]:
    """The token's webhooks with their delivery state (the secret is never shown)."""
    backend = get_backend(request)

    def work() -> list[dict[str, Any]]:
        ensure_schema(backend)
        return [hook_json(r) for r in backend.db.rows(
            "SELECT * FROM webhooks WHERE user_id = ? ORDER BY id", (user,))]

    return {"results": await run_in_threadpool(work)}


@router.post("/webhooks", status_code=201, openapi_extra=HOOK_DOC)
async def create_webhook(request: Request, user: int = Depends(current_user)) -> JSONResponse:
    """Create a webhook (``url``, ``secret``, ``cam_ids``, ``match``, ``enabled``); it gets
    the events that arrive from now on. 201 with the webhook."""
    backend = get_backend(request)
    fields = hook_fields(await params_of(request), creating=True)
    await check_address(backend, fields)
    out = await run_in_threadpool(create_hook, backend, user, fields)
    return JSONResponse(out, status_code=201)


@router.get("/webhooks/{hook_id}")
async def get_webhook(hook_id: DbId, request: Request,
                      user: int = Depends(current_user)) -> dict[str, Any]:
    row = await run_in_threadpool(hook_row, get_backend(request), user, hook_id)
    return hook_json(row)


@router.put("/webhooks/{hook_id}", openapi_extra=HOOK_DOC)
async def put_webhook(hook_id: DbId, request: Request,
                      user: int = Depends(current_user)) -> dict[str, Any]:
    """Change fields (``secret: ""`` removes the secret); resets the backoff."""
    backend = get_backend(request)
    fields = hook_fields(await params_of(request), creating=False)
    await check_address(backend, fields)
    return await run_in_threadpool(update_hook, backend, user, hook_id, fields)


@router.delete("/webhooks/{hook_id}", status_code=204)
async def delete_webhook(hook_id: DbId, request: Request,
                         user: int = Depends(current_user)) -> Response:
    backend = get_backend(request)

    def work() -> None:
        hook_row(backend, user, hook_id)
        with backend.db.transaction() as conn:
            conn.execute("DELETE FROM webhooks WHERE id = ? AND user_id = ?", (hook_id, user))
            conn.execute("DELETE FROM webhook_leases WHERE hook_id = ?", (hook_id,))

    await run_in_threadpool(work)
    return Response(status_code=204)


# -- delivery ------------------------------------------------------------------

class _NoRequest:
    scope: dict[str, Any] = {}


def due_hooks(backend: Backend, at: float) -> list[Hook]:
    ensure_schema(backend)
    rows = backend.db.rows("SELECT * FROM webhooks WHERE enabled = 1 AND next_try <= ?", (at,))
    return [Hook.of(r) for r in rows]


def claim(backend: Backend, hook_id: int, owner: str, at: float) -> Hook | None:
    """Take (or renew) the webhook's lease if it is free, expired or ``owner``'s; the
    webhook as stored now (its cursor) when ``owner`` holds the lease, else None."""
    with backend.db.transaction() as conn:
        conn.execute("INSERT INTO webhook_leases (hook_id, owner, expires) VALUES (?, ?, ?) "
                     "ON CONFLICT (hook_id) DO UPDATE SET owner = excluded.owner, "
                     "expires = excluded.expires WHERE webhook_leases.owner = excluded.owner "
                     "OR webhook_leases.expires <= ?", (hook_id, owner, at + LEASE_SECONDS, at))
        row = conn.execute("SELECT w.* FROM webhooks w JOIN webhook_leases l ON "
                           "l.hook_id = w.id AND l.owner = ? WHERE w.id = ? AND w.enabled = 1",
                           (owner, hook_id)).fetchone()
    return None if row is None else Hook.of(row)


def renew(backend: Backend, hook_id: int, owner: str, at: float) -> bool:
    """Extend ``owner``'s lease; False when it is no longer ``owner``'s."""
    with backend.db.transaction() as conn:
        cur = conn.execute("UPDATE webhook_leases SET expires = ? WHERE hook_id = ? AND "
                           "owner = ?", (at + LEASE_SECONDS, hook_id, owner))
        return cur.rowcount == 1


def release(backend: Backend, owner: str) -> None:
    """Give up every lease of ``owner`` (a process that stops)."""
    with backend.db.transaction() as conn:
        conn.execute("DELETE FROM webhook_leases WHERE owner = ?", (owner,))


_OWNED = "EXISTS (SELECT 1 FROM webhook_leases WHERE hook_id = ? AND owner = ?)"


def record(backend: Backend, hook: Hook, cursor: int, delivered: int,
           error: str | None, owner: str) -> bool:
    """Persist a round (the new cursor, the failure state) if ``owner`` still holds the
    lease; False when another process took it meanwhile (the round is then its to redo)."""
    with backend.db.transaction() as conn:
        if error is None:
            cur = conn.execute(
                "UPDATE webhooks SET cursor = MAX(cursor, ?), delivered = delivered + ?, "
                f"failures = 0, next_try = 0, last_error = NULL WHERE id = ? AND {_OWNED}",
                (cursor, delivered, hook.id, hook.id, owner))
            return cur.rowcount == 1
        failures = hook.failures + 1
        cur = conn.execute(
            "UPDATE webhooks SET cursor = MAX(cursor, ?), delivered = delivered + ?, "
            f"failures = ?, next_try = ?, last_error = ? WHERE id = ? AND {_OWNED}",
            (cursor, delivered, failures, time.time() + backoff(failures), error[:500],
             hook.id, hook.id, owner))
        return cur.rowcount == 1


class Deliverer:
    """The delivery worker of one backend process (started and stopped by the app)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.allow: tuple[IPNetwork, ...] = networks(backend.settings.fetch_allow)
        self.urls = views.Urls(backend.settings, _NoRequest())  # type: ignore[arg-type]
        self.running: dict[int, asyncio.Task[None]] = {}
        self.task: asyncio.Task[None] | None = None
        self.errors = 0
        # this process's name in webhook_leases
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

    def start(self) -> Deliverer:
        self.task = asyncio.get_running_loop().create_task(self.run())
        return self

    async def stop(self) -> None:
        tasks = [t for t in (self.task, *self.running.values()) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        try:
            await run_in_threadpool(release, self.backend, self.owner)
        except sqlite3.Error as exc:  # they expire on their own
            self._log(f"cannot release the webhook leases: {exc}")

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False,
                                     trust_env=False) as client:
            while True:
                try:
                    hooks = await run_in_threadpool(due_hooks, self.backend, time.time())
                except sqlite3.Error as exc:
                    self._log(f"cannot read webhooks: {exc}")
                    hooks = []
                for hook in hooks:
                    if hook.id not in self.running:
                        task = asyncio.create_task(self.deliver(client, hook))
                        self.running[hook.id] = task
                        task.add_done_callback(lambda _, i=hook.id: self.running.pop(i, None))
                await asyncio.sleep(POLL_SECONDS)

    def _log(self, message: str) -> None:
        self.errors += 1
        if self.errors == 1 or self.errors % 100 == 0:  # rate-limited
            log.warning("webhooks: %s (%d problems so far)", message, self.errors)

    async def deliver(self, client: httpx.AsyncClient, hook: Hook) -> None:
        """One round for one webhook: its next events, in order, until one fails; only
        under the webhook's lease (another process may hold it)."""
        backend = self.backend
        if not await run_in_threadpool(events.new_events, backend, hook.user, hook.cursor, 1):
            return  # nothing new: no lease taken, no write
        leased = await run_in_threadpool(claim, backend, hook.id, self.owner, time.time())
        if leased is None:
            return  # another process delivers this webhook
        hook = leased  # its cursor as stored now
        rows = await run_in_threadpool(events.new_events, backend, hook.user, hook.cursor,
                                       BATCH)
        if not rows:
            return
        found = await run_in_threadpool(watchlists.best_matches, backend, hook.user,
                                        [int(r["id"]) for r in rows])
        cursor, delivered, error = hook.cursor, 0, None
        renew_at = time.time() + LEASE_SECONDS / 2
        for row in rows:
            if time.time() >= renew_at:
                if not await run_in_threadpool(renew, backend, hook.id, self.owner,
                                               time.time()):
                    self._log(f"webhook {hook.id}: lease lost mid-round; another process "
                              "delivers from the stored cursor")
                    return
                renew_at = time.time() + LEASE_SECONDS / 2
            match = found.get(int(row["id"]))
            if hook.wants(row, match):
                error = await self.post(client, hook, row, match)
                if error is not None:
                    break
                delivered += 1
            cursor = int(row["id"])
        if error is not None:
            self._log(f"webhook {hook.id} of user {hook.user}: {error}")
        if not await run_in_threadpool(record, backend, hook, cursor, delivered, error,
                                       self.owner):
            self._log(f"webhook {hook.id}: lease lost before the round was recorded")

    async def post(self, client: httpx.AsyncClient, hook: Hook, row: sqlite3.Row,
                   match: dict[str, Any] | None) -> str | None:
        """POST one event; None when the receiver took it, else the reason."""
        body = json.dumps({"event_id": int(row["id"]), "webhook_id": hook.id,
                           "event": events.stream_json(row, self.urls),
                           "watchlist_match": match}, separators=(",", ":")).encode()
        url = httpx.URL(hook.url)
        headers = {"Content-Type": "application/json", "X-Event-Id": str(row["id"]),
                   "X-Webhook-Id": str(hook.id), "User-Agent": "videodetector-webhook",
                   "Host": url.netloc.decode("ascii")}
        if hook.secret:
            headers["X-Signature"] = signature(hook.secret, body)
        try:
            ip = await checked_address(url, "url", self.allow)
            target = url.copy_with(host=str(ip))
            ext = {"sni_hostname": url.host} if url.scheme == "https" else {}
            request = client.build_request("POST", target, content=body, headers=headers,
                                           extensions=ext)
            resp = await client.send(request)
        except ApiError as exc:
            return exc.reason
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if not 200 <= resp.status_code < 300:
            return f"the receiver answered HTTP {resp.status_code}"
        return None
