"""Storage owners: one per resource, each a small Protocol and its SQL implementation over
``storage.Database`` (SQLite) or ``pgdb.PgDatabase`` (PostgreSQL)."""
