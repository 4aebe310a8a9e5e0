"""stores.tokens: users by the hash of their token, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from videodetector.backend.auth import token_hash
from videodetector.backend.stores.tokens import SqlTokenStore, TokenStore


def test_a_token_hash_names_its_user_and_no_other(db: Any) -> None:
    store: TokenStore = SqlTokenStore(db)
    a = store.create_user(token_hash("alpha"), "long")
    b = store.create_user(token_hash("AB12-CD34"), "short")
    assert a != b
    assert store.user_of(token_hash("alpha")) == a
    assert store.user_of(token_hash("AB12-CD34")) == b
    assert store.user_of(token_hash("unknown")) is None
    assert db.scalar("SELECT kind FROM users WHERE id = ?", (b,)) == "short"
