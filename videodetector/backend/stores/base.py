"""What the stores share: one store object per database, made (and its tables created) once."""

from __future__ import annotations

import threading
import weakref
from typing import Any, TypeVar

T = TypeVar("T", bound="PerDatabase")

_lock = threading.RLock()  # a store's setup may make another store (history: watch lists)


class PerDatabase:
    """A store bound to one ``Database``/``PgDatabase``; ``of(db)`` gives the one instance
    of this class for ``db`` (``setup`` runs once, e.g. ``CREATE TABLE IF NOT EXISTS``)."""

    _instances: weakref.WeakKeyDictionary[Any, Any]

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls._instances = weakref.WeakKeyDictionary()

    def __init__(self, db: Any) -> None:
        self.db = db

    def setup(self) -> None:
        """Create what the store needs in ``db`` (idempotent); nothing by default."""

    @classmethod
    def of(cls: type[T], db: Any) -> T:
        found = cls._instances.get(db)
        if found is None:
            with _lock:
                found = cls._instances.get(db)
                if found is None:
                    found = cls(db)
                    found.setup()
                    cls._instances[db] = found
        return found
