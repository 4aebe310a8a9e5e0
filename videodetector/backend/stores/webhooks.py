"""Webhooks (table ``webhooks``: configuration and delivery state) and their delivery leases
(table ``webhook_leases``: which backend process delivers a webhook, until when). Both tables
are made by the schema's revisions (``backend/migrations``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from videodetector.backend.timeutil import iso, now

CONFIG_COLUMNS = frozenset({"url", "secret", "cam_ids", "match", "enabled"})
_OWNED = "EXISTS (SELECT 1 FROM webhook_leases WHERE hook_id = ? AND owner = ?)"


class TooManyWebhooks(ValueError):
    """The user already has the most webhooks allowed (``count``)."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} webhooks already")
        self.count = count


class WebhookStore(Protocol):
    """Webhooks of each user and the delivery leases of the backend processes."""

    def list(self, user: int) -> Sequence[Any]: ...

    def get(self, user: int, hook_id: int) -> Any | None: ...

    def create(self, user: int, fields: dict[str, Any], cursor: int, limit: int) -> int:
        """A new webhook (``fields``: url, secret, cam_ids, match, enabled) delivering the
        events after ``cursor``; its id. ``TooManyWebhooks`` when the user has ``limit``."""

    def update(self, user: int, hook_id: int, fields: dict[str, Any]) -> None:
        """Change the configuration; the backoff starts over (tried at once)."""

    def delete(self, user: int, hook_id: int) -> None:
        """The webhook and its lease."""

    def due(self, at: float) -> Sequence[Any]:
        """Enabled webhooks (of every user) whose backoff has passed at ``at``."""

    def claim(self, hook_id: int, owner: str, at: float, seconds: float) -> Any | None:
        """Take (or renew) the webhook's lease until ``at + seconds`` if it is free, expired
        at ``at`` or ``owner``'s: the webhook's row as stored now, else None."""

    def renew(self, hook_id: int, owner: str, until: float) -> bool:
        """Extend ``owner``'s lease; False when it is no longer ``owner``'s."""

    def release(self, owner: str) -> None:
        """Give up every lease of ``owner``."""

    def record(self, hook_id: int, owner: str, cursor: int, delivered: int,
               failure: tuple[int, float, str] | None) -> bool:
        """A delivery round's outcome, while ``owner`` still holds the lease: the cursor
        (never moved back), ``delivered`` more, and the failure state ``(failures,
        next_try, error)`` or none. False when the lease is another's."""


class SqlWebhookStore:
    """``WebhookStore`` over SQLite or PostgreSQL (pgdb translates the SQL)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def list(self, user: int) -> Sequence[Any]:
        return self.db.rows("SELECT * FROM webhooks WHERE user_id = ? ORDER BY id", (user,))

    def get(self, user: int, hook_id: int) -> Any | None:
        return self.db.row("SELECT * FROM webhooks WHERE id = ? AND user_id = ?",
                           (hook_id, user))

    def create(self, user: int, fields: dict[str, Any], cursor: int, limit: int) -> int:
        with self.db.transaction() as conn:
            n = conn.execute("SELECT COUNT(*) FROM webhooks WHERE user_id = ?",
                             (user,)).fetchone()[0]
            if n >= limit:
                raise TooManyWebhooks(n)
            cur = conn.execute(
                "INSERT INTO webhooks (user_id, url, secret, cam_ids, match, enabled, cursor, "
                "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (user, fields["url"], fields.get("secret"), fields.get("cam_ids", "[]"),
                 fields.get("match", "all"), fields.get("enabled", 1), cursor, iso(now())))
            return int(cur.lastrowid or 0)

    def update(self, user: int, hook_id: int, fields: dict[str, Any]) -> None:
        unknown = set(fields) - CONFIG_COLUMNS
        if unknown:
            raise ValueError(f"not webhook settings: {sorted(unknown)}")
        if not fields:
            return
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.db.transaction() as conn:
            conn.execute(f"UPDATE webhooks SET {sets}, failures = 0, next_try = 0 "
                         "WHERE id = ? AND user_id = ?", (*fields.values(), hook_id, user))

    def delete(self, user: int, hook_id: int) -> None:
        with self.db.transaction() as conn:
            cur = conn.execute("DELETE FROM webhooks WHERE id = ? AND user_id = ?",
                               (hook_id, user))
            if cur.rowcount:
                conn.execute("DELETE FROM webhook_leases WHERE hook_id = ?", (hook_id,))

    def due(self, at: float) -> Sequence[Any]:
        return self.db.rows("SELECT * FROM webhooks WHERE enabled = 1 AND next_try <= ?", (at,))

    def claim(self, hook_id: int, owner: str, at: float, seconds: float) -> Any | None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO webhook_leases (hook_id, owner, expires) VALUES (?, ?, ?) "
                "ON CONFLICT (hook_id) DO UPDATE SET owner = excluded.owner, "
                "expires = excluded.expires WHERE webhook_leases.owner = excluded.owner "
                "OR webhook_leases.expires <= ?", (hook_id, owner, at + seconds, at))
            return conn.execute(
                "SELECT w.* FROM webhooks w JOIN webhook_leases l ON l.hook_id = w.id AND "
                "l.owner = ? WHERE w.id = ? AND w.enabled = 1", (owner, hook_id)).fetchone()

    def renew(self, hook_id: int, owner: str, until: float) -> bool:
        with self.db.transaction() as conn:
            cur = conn.execute("UPDATE webhook_leases SET expires = ? WHERE hook_id = ? AND "
                               "owner = ?", (until, hook_id, owner))
            return cur.rowcount == 1

    def release(self, owner: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM webhook_leases WHERE owner = ?", (owner,))

    def record(self, hook_id: int, owner: str, cursor: int, delivered: int,
               failure: tuple[int, float, str] | None) -> bool:
        failures, next_try, error = failure if failure is not None else (0, 0.0, None)
        with self.db.transaction() as conn:
            cur = conn.execute(
                "UPDATE webhooks SET cursor = MAX(cursor, ?), delivered = delivered + ?, "
                f"failures = ?, next_try = ?, last_error = ? WHERE id = ? AND {_OWNED}",
                (cursor, delivered, failures, next_try, error, hook_id, hook_id, owner))
            return cur.rowcount == 1
