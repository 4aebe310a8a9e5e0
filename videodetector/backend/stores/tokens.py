"""Users and their token hashes (4.3): a token is a user; only its SHA-256 is stored."""

from __future__ import annotations

from typing import Protocol

from videodetector.backend.storage import insert, utcnow_iso
from videodetector.backend.stores import Db


class TokenStore(Protocol):
    def create_user(self, token_hash: str, kind: str) -> int:
        """A new user owning the token with this hash (``kind``: long or short)."""
        ...

    def user_of(self, token_hash: str) -> int | None:
        """The user owning the token with this hash, or None."""
        ...


class SqlTokenStore:
    """``TokenStore`` over the ``users`` table (SQLite and PostgreSQL)."""

    def __init__(self, db: Db) -> None:
        self.db = db

    def create_user(self, token_hash: str, kind: str) -> int:
        with self.db.transaction() as conn:
            return insert(conn, "users", {"token_hash": token_hash, "kind": kind,
                                          "created": utcnow_iso()})

    def user_of(self, token_hash: str) -> int | None:
        user = self.db.scalar("SELECT id FROM users WHERE token_hash = ?", (token_hash,))
        return None if user is None else int(user)
