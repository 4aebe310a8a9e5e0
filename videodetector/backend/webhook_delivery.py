"""Delivery of webhooks (configured through webhooks.py, stored by stores/webhooks.py): a
worker in each backend process POSTs each webhook's new events, in order, signed, at least
once, under the webhook's lease. See webhooks.py for the whole story."""

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
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.concurrency import run_in_threadpool

from videodetector.backend import events, views, watchlists
from videodetector.backend.errors import ApiError
from videodetector.backend.fetch import IPNetwork, checked_address, networks
from videodetector.backend.service import Backend
from videodetector.backend.stores.webhooks import WebhookStore

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
BATCH = 50  # events read per round
TIMEOUT = 5.0  # seconds per delivery
BACKOFF_BASE = 0.5
BACKOFF_MAX = 300.0
LEASE_SECONDS = 30.0  # a webhook's delivery lease; renewed when half of it is left


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


class _NoRequest:
    scope: dict[str, Any] = {}


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

    @property
    def store(self) -> WebhookStore:
        """The backend's webhook store."""
        return self.backend.webhooks_store

    def _due(self, at: float) -> list[Hook]:
        return [Hook.of(r) for r in self.store.due(at)]

    def _release(self) -> None:
        self.store.release(self.owner)

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
            await run_in_threadpool(self._release)
        except sqlite3.Error as exc:  # they expire on their own
            self._log(f"cannot release the webhook leases: {exc}")

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False,
                                     trust_env=False) as client:
            while True:
                try:
                    hooks = await run_in_threadpool(self._due, time.time())
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
        leased = await run_in_threadpool(self.store.claim, hook.id, self.owner, time.time(),
                                         LEASE_SECONDS)
        if leased is None:
            return  # another process delivers this webhook
        hook = Hook.of(leased)  # its cursor as stored now
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
                if not await run_in_threadpool(self.store.renew, hook.id, self.owner,
                                               time.time() + LEASE_SECONDS):
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
        failure = None if error is None else (
            hook.failures + 1, time.time() + backoff(hook.failures + 1), error[:500])
        if not await run_in_threadpool(self.store.record, hook.id, self.owner, cursor,
                                       delivered, failure):
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
