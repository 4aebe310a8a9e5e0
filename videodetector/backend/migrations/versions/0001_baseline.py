"""Baseline: the schema before Alembic (version 4).

The backend's core tables as the hand-written scheme left them at its version 4, on SQLite
and PostgreSQL from one definition.

On an empty database it creates everything. On a database made before Alembic (SQLite
``PRAGMA user_version`` 0..4, PostgreSQL ``settings.schema_version`` 4) it adds only what is
missing -- tables, columns, indexes, triggers -- as the old steps did, and keeps every row:
``face_changes`` created on a database with faces is filled with them (the old version 2
step), ``faces.model`` added to old rows says ``sface-2021dec`` (version 3).

Never edit this file once shipped: a later change of the schema is a new revision.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import logging
import warnings

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection, Dialect

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

log = logging.getLogger("videodetector.backend.migrations")

LEGACY_VERSION = 4  # what PRAGMA user_version / settings.schema_version said at this schema


class _Vector(sa.types.UserDefinedType):  # type: ignore[type-arg]
    """pgvector's ``vector`` without a dimension (each model's is set by its index)."""

    cache_ok = True

    def get_col_spec(self, **kw: object) -> str:
        return "vector"


def _tables(dialect: str) -> sa.MetaData:
    """The tables and indexes. SQLite: INTEGER (a rowid alias for the keys), REAL, BLOB,
    AUTOINCREMENT; PostgreSQL: BIGINT identities, DOUBLE PRECISION, BYTEA, plus the pgvector
    ``vec`` columns and ``face_log``."""
    sqlite = dialect == "sqlite"
    integer = sa.Integer() if sqlite else sa.BigInteger()
    real = sa.REAL() if sqlite else sa.Double()
    text, blob = sa.Text(), sa.LargeBinary()
    md = sa.MetaData()

    def key_id(name: str) -> sa.Column:  # INTEGER PRIMARY KEY AUTOINCREMENT / identity
        return sa.Column(name, integer, sa.Identity(), primary_key=True,
                         nullable=sqlite or None)

    def col(name: str, type_: sa.types.TypeEngine, default: str | None = None,
            null: bool = False) -> sa.Column:
        return sa.Column(name, type_, nullable=null,
                         server_default=None if default is None else sa.text(default))

    auto = {"sqlite_autoincrement": True}
    sa.Table("settings", md, sa.Column("key", text, primary_key=True, nullable=sqlite or None),
             col("value", text))
    sa.Table("users", md, key_id("id"), col("token_hash", text), col("kind", text),
             col("created", text), sa.UniqueConstraint("token_hash"), **auto)
    sa.Table("galleries", md, col("user_id", integer), col("name", text), col("created", text),
             sa.PrimaryKeyConstraint("user_id", "name"))
    sa.Table("persons", md, key_id("id"), col("user_id", integer), col("meta", text, "''"),
             col("created", text), sa.Index("persons_user", "user_id", "id"), **auto)
    faces = [
        key_id("id"), col("user_id", integer), col("meta", text, "''"),
        col("person_id", integer, null=True), col("cam_id", text, null=True),
        col("timestamp", text), col("ts", real), col("day", text),
        col("friend", integer, "0"),
        *(col(c, integer) for c in ("x1", "y1", "x2", "y2")),
        *(col(c, text) for c in ("photo", "photo_hash", "thumbnail", "normalized")),
        col("gender", text, null=True), col("gender_confidence", real, null=True),
        col("age", integer, null=True), col("detector_params", text, null=True),
        col("extra", text, null=True), col("embedding", blob),
        col("model", text, "'sface-2021dec'"), col("emotions", text, null=True)]
    if not sqlite:
        faces.append(sa.Column("vec", _Vector(), sa.Computed(
            "fkvideo_f32_vector(embedding)", persisted=True)))
    sa.Table("faces", md, *faces,
             sa.Index("faces_user", "user_id", "id"),
             sa.Index("faces_meta", "user_id", "meta", "id"),
             sa.Index("faces_person", "user_id", "person_id", "cam_id", "ts"),
             sa.Index("faces_cam", "user_id", "cam_id", "id"),
             sa.Index("faces_photo", "photo"), **auto)
    sa.Table("face_galleries", md, col("face_id", integer), col("user_id", integer),
             col("gallery", text), sa.PrimaryKeyConstraint("face_id", "gallery"),
             sa.Index("face_galleries_gallery", "user_id", "gallery", "face_id"))
    sa.Table("cameras", md, sa.Column("id", text, primary_key=True, nullable=sqlite or None),
             col("user_id", integer), col("seq", integer), col("meta", text, "''"),
             col("enabled", integer, "1"),
             *(col(c, text, null=True) for c in ("url", "detector", "roi", "rot")),
             col("created", text), sa.Index("cameras_user", "user_id", "detector", "seq"))
    # Embeddings made by another model than faces.model (regenerate.py); faces.embedding is
    # the vector of faces.model.
    embeddings = [col("face_id", integer), col("model", text), col("vector", blob),
                  col("created", real)]
    if not sqlite:
        embeddings.append(sa.Column("vec", _Vector(), sa.Computed(
            "fkvideo_f32_vector(vector)", persisted=True)))
    sa.Table("embeddings", md, *embeddings, sa.PrimaryKeyConstraint("face_id", "model"),
             sa.Index("embeddings_model", "model", "face_id"))
    # every vector or face image regenerate.py replaced, in order; the faces a job has done
    sa.Table("regenerated", md, key_id("seq"), col("face_id", integer), col("model", text),
             **auto)
    sa.Table("regenerate_done", md, col("job", text), col("face_id", integer),
             sa.PrimaryKeyConstraint("job", "face_id"))
    sa.Table("idempotency", md, col("user_id", integer), col("key", text),
             col("face_ids", text), col("created", real),
             sa.PrimaryKeyConstraint("user_id", "key"))
    # the change feed of /v1/faces/sync (sync.py): one row per (face, gallery)
    sa.Table("face_changes", md, key_id("seq"), col("user_id", integer), col("gallery", text),
             col("face_id", integer), col("deleted", integer, "0"), col("at", real),
             sa.UniqueConstraint("user_id", "gallery", "face_id"),
             sa.Index("face_changes_feed", "user_id", "gallery", "seq"),
             sa.Index("face_changes_tombstones", "deleted", "at"), **auto)
    if not sqlite:
        # every change of a face that its in-memory index entry depends on, by any process
        # (Backend.catch_up)
        sa.Table("face_log", md,
                 sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), primary_key=True),
                 col("face_id", sa.BigInteger()), col("user_id", sa.BigInteger()),
                 col("at", sa.Double(), "extract(epoch FROM clock_timestamp())"))
    return md


SQLITE_TRIGGERS = ("""CREATE TRIGGER IF NOT EXISTS faces_deleted AFTER DELETE ON faces BEGIN
    DELETE FROM embeddings WHERE face_id = OLD.id;
    DELETE FROM regenerate_done WHERE face_id = OLD.id;
END""",)

# Before the tables: the extension and the float32 blob -> vector function of ``vec``.
PG_BEFORE = (
    "CREATE EXTENSION IF NOT EXISTS vector",
    # little-endian float32 bytes -> vector, exactly (sign, exponent, mantissa; denormals 0)
    """CREATE OR REPLACE FUNCTION fkvideo_f32_vector(b bytea) RETURNS vector
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT array_agg(CASE WHEN e = 0 THEN 0::float8 ELSE
        (1 - 2 * s) * (1 + m / 8388608.0::float8) * power(2::float8, e - 127) END
        ORDER BY i)::vector
    FROM (SELECT i, get_byte(b, 4 * i + 3) >> 7 AS s,
                 ((get_byte(b, 4 * i + 3) & 127) << 1) | (get_byte(b, 4 * i + 2) >> 7) AS e,
                 ((get_byte(b, 4 * i + 2) & 127) << 16) | (get_byte(b, 4 * i + 1) << 8)
                 | get_byte(b, 4 * i) AS m
          FROM generate_series(0, length(b) / 4 - 1) AS i) AS parts
    $$""",
)

# After the tables: face_log's trigger and SQLite's faces_deleted trigger for PostgreSQL.
PG_AFTER = (
    """CREATE OR REPLACE FUNCTION fkvideo_face_log() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN
        IF TG_OP = 'DELETE' THEN
            INSERT INTO face_log (face_id, user_id) VALUES (OLD.id, OLD.user_id);
        ELSE
            INSERT INTO face_log (face_id, user_id) VALUES (NEW.id, NEW.user_id);
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE OR REPLACE TRIGGER faces_logged
    AFTER INSERT OR DELETE OR UPDATE OF person_id, cam_id, embedding, model ON faces
    FOR EACH ROW EXECUTE FUNCTION fkvideo_face_log()""",
    """CREATE OR REPLACE FUNCTION fkvideo_faces_deleted() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN
        DELETE FROM embeddings WHERE face_id = OLD.id;
        DELETE FROM regenerate_done WHERE face_id = OLD.id;
        RETURN OLD;
    END $$""",
    """CREATE OR REPLACE TRIGGER faces_deleted AFTER DELETE ON faces
    FOR EACH ROW EXECUTE FUNCTION fkvideo_faces_deleted()""",
)

# The old version 2 step: existing faces enter the change feed as present.
FILL_FACE_CHANGES = (
    "INSERT INTO face_changes (user_id, gallery, face_id, at) "
    "SELECT user_id, 'default', id, ts FROM faces WHERE TRUE ORDER BY id "
    "ON CONFLICT DO NOTHING",
    "INSERT INTO face_changes (user_id, gallery, face_id, at) "
    "SELECT g.user_id, g.gallery, g.face_id, f.ts FROM face_galleries g "
    "JOIN faces f ON f.id = g.face_id WHERE TRUE ORDER BY g.face_id ON CONFLICT DO NOTHING",
)


_RENDERED: dict[tuple[object, ...], dict[str, list[str]]] = {}


def _ddl(dialect: Dialect) -> dict[str, list[str]]:
    """Each table's CREATE TABLE and CREATE INDEX statements, rendered once per process
    and kind of database (many tests make fresh databases)."""
    key = (dialect.name, dialect.server_version_info)
    if key not in _RENDERED:
        _RENDERED[key] = _render(dialect)
    return _RENDERED[key]


def _render(dialect: Dialect) -> dict[str, list[str]]:
    md = _tables(dialect.name)
    return {t.name: [str(sa.schema.CreateTable(t).compile(dialect=dialect)).strip(),
                     *(str(sa.schema.CreateIndex(i).compile(dialect=dialect))
                       for i in sorted(t.indexes, key=lambda i: str(i.name)))]
            for t in md.sorted_tables}


def _complete(bind: Connection, table: sa.Table) -> list[str]:
    """Add the columns and indexes ``table`` lacks (a database made before Alembic); the
    names of what was added."""
    inspector = sa.inspect(bind)
    with warnings.catch_warnings():  # SQLAlchemy does not know pgvector's type: only names
        warnings.filterwarnings("ignore", "Did not recognize type", sa.exc.SAWarning)
        have = {c["name"] for c in inspector.get_columns(table.name)}
    added = []
    for column in table.columns:
        if column.name not in have:
            spec = sa.schema.CreateColumn(column).compile(dialect=bind.dialect)
            op.execute(f"ALTER TABLE {table.name} ADD COLUMN {spec}")
            added.append(f"{table.name}.{column.name}")
    indexes = {i["name"] for i in inspector.get_indexes(table.name)}
    for index in table.indexes:
        if index.name not in indexes:
            index.create(bind)
            added.append(str(index.name))
    return added


def _take_over(bind: Connection, existing: set[str]) -> None:
    """A database made before Alembic: create the tables it lacks, complete the others."""
    md = _tables(bind.dialect.name)
    added = []
    for table in md.sorted_tables:
        if table.name not in existing:
            table.create(bind)
            added.append(table.name)
            if table.name == "face_changes" and "faces" in existing:
                for sql in FILL_FACE_CHANGES:
                    op.execute(sql)
        else:
            added += _complete(bind, table)
    log.info("database made before Alembic taken over; added: %s",
             ", ".join(added) or "nothing")


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect
    if dialect.name == "postgresql":
        for sql in PG_BEFORE:
            op.execute(sql)
    ddl = _ddl(dialect)
    existing = set(sa.inspect(bind).get_table_names()) & set(ddl)
    if existing:
        _take_over(bind, existing)
    else:
        for statements in ddl.values():
            for sql in statements:
                bind.exec_driver_sql(sql)
    for sql in SQLITE_TRIGGERS if dialect.name == "sqlite" else PG_AFTER:
        op.execute(sql)
    # what the hand-written scheme read: a program from before Alembic still opens this
    op.execute("INSERT INTO settings (key, value) VALUES "
               f"('schema_version', '{LEGACY_VERSION}') "
               "ON CONFLICT (key) DO UPDATE SET value = excluded.value")
    if dialect.name == "sqlite":
        op.execute(f"PRAGMA user_version = {LEGACY_VERSION}")


def downgrade() -> None:
    raise NotImplementedError("the baseline is not downgraded (it would drop every table)")
