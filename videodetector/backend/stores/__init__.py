"""Storage owners: one module per resource, each a small ``typing.Protocol`` naming its
operations and the implementation over the database.

The layers of the backend: routers (HTTP, no SQL) -> ``service.Backend`` (the domain:
detection, embedding, identify, the in-memory index, persons) -> these stores (all SQL of
their resource) -> ``storage.Database`` (SQLite) or ``pgdb.PgDatabase`` (PostgreSQL).
``PgDatabase`` translates the SQLite-style SQL, so one implementation serves both; where
PostgreSQL needs its own statement (pgvector search) a subclass holds it.

A store's write methods take the open transaction's connection (``conn``): the domain
decides what one transaction holds (the faces, their index entries and images or none of
them); reads go through the database itself.

One way to reach a store: ``Backend`` builds each one once, as an attribute
(``faces_store``, ``galleries_store``, ``persons_store``, ``tokens_store``,
``idempotency_store``, ``index_feed``, ``cameras_store``, ``history_store``,
``watchlists_store``, ``webhooks_store``, ``stats_store``, ``sync_store``, ``report_store``,
``sessions_store``); routers take it from the backend or through a dependency alias in
``deps.py``. No store creates tables: the schema is made and upgraded by the Alembic
revisions in ``backend/migrations`` when the database is opened.
"""

from __future__ import annotations

from typing import Any, Protocol


class Db(Protocol):
    """What the stores use of ``storage.Database`` and ``pgdb.PgDatabase``."""

    dialect: str

    def rows(self, sql: str, args: Any = ()) -> list[Any]: ...

    def row(self, sql: str, args: Any = ()) -> Any: ...

    def scalar(self, sql: str, args: Any = ()) -> Any: ...

    def transaction(self) -> Any: ...
