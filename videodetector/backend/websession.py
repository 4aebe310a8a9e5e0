"""Browser sessions of the operator console: a server-side session per login.

The console logs in once with the API token (``POST /v1/session``, the token in a JSON body,
never in a URL). The answer sets an HttpOnly, SameSite=Strict cookie that holds a random
session id; only a SHA-256 of that id is stored (table ``web_sessions``), next to the user and
a CSRF token. Requests authenticated by the cookie may read (GET/HEAD); anything else must also
send the CSRF token in the ``X-CSRF-Token`` header (double submit against the stored value).
Sessions live in the database, so every backend process sharing it accepts them, a restart
keeps them, and logout (``DELETE /v1/session``) ends them everywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from starlette.requests import Request

from videodetector.backend.errors import ApiError, auth_failed
from videodetector.backend.storage import Database, insert

COOKIE = "vd_session"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 12 * 3600  # absolute lifetime: log in again after 12 hours
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def csrf_failed(reason: str) -> ApiError:
    return ApiError(403, "CSRF_FAILED", reason)


@dataclass(frozen=True)
class Session:
    user: int
    csrf: str
    expires: float


class SessionStore:
    """Sessions in the backend's database (table ``web_sessions``, made by the schema's
    revisions)."""

    def __init__(self, db: Database, lifetime: float = SESSION_SECONDS) -> None:
        if lifetime <= 0:
            raise ValueError(f"session lifetime must be positive, not {lifetime!r}")
        self.db = db
        self.lifetime = lifetime

    def create(self, user: int) -> tuple[str, Session]:
        """A new session for ``user``: (the cookie value, the session). Prunes expired ones."""
        session_id = secrets.token_urlsafe(32)
        now = time.time()
        session = Session(user, secrets.token_urlsafe(24), now + self.lifetime)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM web_sessions WHERE expires < ?", (now,))
            insert(conn, "web_sessions", {"id_hash": _digest(session_id), "user_id": user,
                                          "csrf": session.csrf, "created": now,
                                          "expires": session.expires})
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        row = self.db.row("SELECT s.user_id, s.csrf, s.expires FROM web_sessions s JOIN users u "
                          "ON u.id = s.user_id WHERE s.id_hash = ?", (_digest(session_id),))
        if row is None or row["expires"] < time.time():
            return None
        return Session(int(row["user_id"]), row["csrf"], float(row["expires"]))

    def delete(self, session_id: str | None) -> None:
        if session_id:
            with self.db.transaction() as conn:
                conn.execute("DELETE FROM web_sessions WHERE id_hash = ?",
                             (_digest(session_id),))

    def user_for_request(self, request: Request) -> int:
        """The user of the request's session cookie; a write must carry the CSRF header."""
        session = self.get(request.cookies.get(COOKIE))
        if session is None:
            raise auth_failed("the console session has expired or was ended; log in again")
        if request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
                raise csrf_failed(f"a request authenticated by the session cookie must send the "
                                  f"session's CSRF token in the {CSRF_HEADER} header")
        return session.user
