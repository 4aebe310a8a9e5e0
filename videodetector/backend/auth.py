"""Tokens (4.3): long (``0123456789_abcdefghijklmnopqrstuvw``) or short (``A0B1-C2D3``).

A token is a user: everything created with it (faces, galleries, persons, cameras)
belongs to it. Only a SHA-256 of each token is stored.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import threading

from videodetector.backend.errors import auth_failed
from videodetector.backend.stores import Db
from videodetector.backend.stores.tokens import SqlTokenStore, TokenStore

_SHORT_ALPHABET = string.ascii_uppercase + string.digits
# Letters and digits only: a token that began with "-" would read as an option
# on a command line (``--api-token -x...``), and "_" gains nothing.
_LONG_ALPHABET = string.ascii_letters + string.digits
_LONG_LENGTH = 32  # 32 x log2(62) = 190 bits


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token_text(short: bool = False) -> str:
    if short:
        chars = [secrets.choice(_SHORT_ALPHABET) for _ in range(8)]
        return "".join(chars[:4]) + "-" + "".join(chars[4:])
    return "".join(secrets.choice(_LONG_ALPHABET) for _ in range(_LONG_LENGTH))


def create_token(db: Db, short: bool = False) -> str:
    """Create a user and return its token (shown once; only its hash is kept)."""
    token = new_token_text(short)
    SqlTokenStore(db).create_user(token_hash(token), "short" if short else "long")
    return token


class TokenChecker:
    """``Authorization: Token <key>`` -> user id. Known tokens are cached in memory."""

    def __init__(self, store: TokenStore) -> None:
        self.store = store
        self._cache: dict[str, int] = {}
        self._lock = threading.Lock()

    def cached_user(self, header: str | None) -> int | None:
        """The user of a well-formed ``header`` whose token is already known (no database
        read, so callable from the event loop); None otherwise (ask
        :meth:`user_for_header`)."""
        digest = _header_digest(header) if header else None
        if digest is None:
            return None
        with self._lock:
            return self._cache.get(digest)

    def user_for_header(self, header: str | None) -> int:
        if not header:
            raise auth_failed("no Authorization header; send 'Authorization: Token <key>'")
        digest = _header_digest(header)
        if digest is None:
            raise auth_failed("the Authorization header must be 'Token <key>'")
        with self._lock:
            user = self._cache.get(digest)
        if user is None:
            user = self.store.user_of(digest)
            if user is None:
                raise auth_failed("unknown token")
            with self._lock:
                self._cache[digest] = int(user)
        return int(user)


def _header_digest(header: str) -> str | None:
    """The token hash of ``Token <key>``, or None for any other form."""
    scheme, _, key = header.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "token" or not key:
        return None
    return token_hash(key)
