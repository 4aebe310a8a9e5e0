"""The embedding model recorded for this store (model_choice.py): the ``settings`` row
``embedding_model`` (the key/value table every schema revision has)."""

from __future__ import annotations

from typing import Protocol

from videodetector.backend.stores import Db

KEY = "embedding_model"


class StoreModelStore(Protocol):
    def recorded(self) -> str | None:
        """The recorded model, None before the first backend resolved one."""

    def record_first(self, model: str) -> str:
        """Record ``model`` unless a model is recorded already (another process was first);
        returns the recorded one."""

    def record(self, model: str) -> None:
        """Record ``model``, replacing what was recorded."""


class SqlStoreModelStore:
    """``StoreModelStore`` over the ``settings`` table (SQLite and PostgreSQL)."""

    def __init__(self, db: Db) -> None:
        self.db = db

    def recorded(self) -> str | None:
        value = self.db.scalar("SELECT value FROM settings WHERE key = ?", (KEY,))
        return None if value is None else str(value)

    def record_first(self, model: str) -> str:
        with self.db.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO settings (key, value) VALUES (?, ?)",
                         (KEY, model))
            return str(conn.execute("SELECT value FROM settings WHERE key = ?",
                                    (KEY,)).fetchone()[0])

    def record(self, model: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                         (KEY, model))
