"""``fkvideo_backend migrate-db``: move a site from its SQLite data directory to PostgreSQL.

    fkvideo_backend migrate-db --from /var/lib/fkvideo/backend \\
        --to postgresql://fkvideo@db-host/fkvideo [--to-data-dir /srv/fkvideo/backend]

1. Both stores get the current schema (as starting the backend on them would), every table
   the backend may make included.
2. Every table of the SQLite file is copied into the table of the same name, the columns both
   have (PostgreSQL's generated vector columns fill themselves). Tables with a primary key are
   copied in batches, each committed, as upserts: an interrupted run is simply run again, and
   rows copied before are overwritten with their current value. A table without one is
   replaced whole in one transaction. The HNSW vector indexes are dropped during the copy and
   built once at the end. Identity sequences then continue after the copied ids.
3. Images: ``<from>/uploads`` is copied to ``<to-data-dir>/uploads`` (files already there with
   the same size are skipped; each file is written to a temporary name and renamed), and the
   file system is synced before the run says it is done. Same directory: nothing to copy.
4. Checks, printed as a table: row counts of every table, a sample of rows compared column by
   column, a sample of images compared by SHA-256, and identify answers (top-5 of a sample of
   stored faces searched on both stores). The exit status is 0 only when every check passed.

Stop the source backend first: rows deleted from the source after they were copied stay in
the target (the counts check reports it).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SOURCE_FILE = "backend.sqlite3"
SKIP_TABLES = {"sqlite_sequence",  # SQLite's own bookkeeping
               "alembic_version"}  # each store's schema revision, set by prepare_store
IDENTIFY_TOP = 5


@dataclass(frozen=True)
class MigrateOptions:
    source: Path  # the SQLite site's data directory
    target_url: str  # postgresql://...
    target_dir: Path  # the PostgreSQL site's data directory (images)
    batch: int = 1000
    sample: int = 50

    def __post_init__(self) -> None:
        if not (self.source / SOURCE_FILE).is_file():
            raise ValueError(f"--from: no {SOURCE_FILE} in {str(self.source)!r}")
        if not self.target_url.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"--to must be a postgresql:// URL, got {self.target_url!r}")
        if not 1 <= self.batch <= 100_000:
            raise ValueError(f"--batch must be 1..100000, got {self.batch}")
        if not 0 <= self.sample <= 100_000:
            raise ValueError(f"--sample must be 0..100000, got {self.sample}")


@dataclass
class Report:
    copied: dict[str, int] = field(default_factory=dict)  # table -> rows written
    images: tuple[int, int] = (0, 0)  # (copied, already there)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # (check, ok, detail)

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, ok, detail))


# ------------------------------------------------------------------------------ schema


def prepare_store(settings: Any) -> str:
    """Bring a store to the current schema with every table the backend makes (all made
    by the schema's revisions when the backend opens it), then close it; returns the
    embedding model it serves (``auto`` resolved and recorded, model_choice.py)."""
    from videodetector.backend.service import Backend

    backend = Backend(settings)
    backend.close()
    return backend.model


# ------------------------------------------------------------------------------ tables


@dataclass(frozen=True)
class TablePlan:
    name: str
    columns: tuple[str, ...]  # copied: in both, not generated in the target
    key: tuple[str, ...]  # the target's primary key (empty: replaced whole)


def source_tables(src: sqlite3.Connection) -> list[str]:
    rows = src.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    return [name for (name,) in rows if name not in SKIP_TABLES
            and not name.startswith("sqlite_")]


def plan_table(src: sqlite3.Connection, pg: Any, table: str) -> TablePlan | None:
    """What to copy of ``table``; None when the target has no such table."""
    target = pg.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND table_name = %s AND is_generated = 'NEVER' AND "
        "COALESCE(identity_generation, '') <> 'ALWAYS' ORDER BY ordinal_position",
        (table,)).fetchall()
    if not target:
        return None
    have = {name for (name,) in target}
    source = [row[1] for row in src.execute(f'PRAGMA table_info("{table}")')]
    key = pg.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
        (table,)).fetchall()
    columns = tuple(c for c in source if c in have)
    key_cols = tuple(k for (k,) in key)
    if not set(key_cols) <= set(columns):
        key_cols = ()
    return TablePlan(table, columns, key_cols)


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


def upsert_sql(plan: TablePlan) -> str:
    marks = ", ".join("%s" for _ in plan.columns)
    sql = f'INSERT INTO "{plan.name}" ({_quoted(plan.columns)}) VALUES ({marks})'
    if not plan.key:
        return sql
    rest = [c for c in plan.columns if c not in plan.key]
    if not rest:
        return f"{sql} ON CONFLICT ({_quoted(plan.key)}) DO NOTHING"
    sets = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in rest)
    return f"{sql} ON CONFLICT ({_quoted(plan.key)}) DO UPDATE SET {sets}"


def _batches(src: sqlite3.Connection, plan: TablePlan, size: int
             ) -> Iterator[list[tuple[Any, ...]]]:
    """The source rows in rowid order, ``size`` at a time (keyset, so memory stays flat)."""
    last = None
    cols = _quoted(plan.columns)
    while True:
        if last is None:
            rows = src.execute(f'SELECT rowid, {cols} FROM "{plan.name}" ORDER BY rowid '
                               f"LIMIT ?", (size,)).fetchall()
        else:
            rows = src.execute(f'SELECT rowid, {cols} FROM "{plan.name}" WHERE rowid > ? '
                               f"ORDER BY rowid LIMIT ?", (last, size)).fetchall()
        if not rows:
            return
        last = rows[-1][0]
        yield [tuple(row[1:]) for row in rows]


def copy_table(src: sqlite3.Connection, pg: Any, plan: TablePlan, batch: int,
               lock: Callable[[Any], None]) -> int:
    """Copy one table; returns the rows written."""
    sql, written = upsert_sql(plan), 0
    if not plan.key:  # no way to tell copied rows apart: replace the table in one go
        with pg.transaction():
            lock(pg)
            pg.execute(f'DELETE FROM "{plan.name}"')
            for rows in _batches(src, plan, batch):
                pg.cursor().executemany(sql, rows)
                written += len(rows)
        return written
    for rows in _batches(src, plan, batch):
        with pg.transaction():
            lock(pg)
            pg.cursor().executemany(sql, rows)
        written += len(rows)
    return written


def drop_vector_indexes(pg: Any) -> list[str]:
    """Drop the HNSW indexes (the backend makes them again at start, and ``restore`` below):
    one graph insert per copied row costs far more than one build over all of them."""
    rows = pg.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = "
                      "current_schema() AND indexdef ILIKE '%USING hnsw%'").fetchall()
    for name, _ in rows:
        pg.execute(f'DROP INDEX IF EXISTS "{name}"')
    return [definition for _, definition in rows]


def restore_indexes(pg: Any, definitions: list[str]) -> None:
    pg.execute("SET maintenance_work_mem = '512MB'")
    for definition in definitions:
        pg.execute(definition.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS", 1))


def reset_identities(pg: Any) -> None:
    """Identity sequences continue after the highest copied id of their table."""
    rows = pg.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND is_identity = 'YES'").fetchall()
    for table, column in rows:
        pg.execute(f"SELECT setval(pg_get_serial_sequence('\"{table}\"', '{column}'), "
                   f'GREATEST((SELECT MAX("{column}") FROM "{table}"), 1))')


# ------------------------------------------------------------------------------ images


def copy_images(source: Path, target: Path) -> tuple[int, int]:
    """Copy the image tree; returns (copied, already there). Leftover temporary files of an
    interrupted write (``*.tmp``) are not images and are skipped."""
    if source.resolve() == target.resolve() or not source.is_dir():
        return 0, 0
    copied = present = 0
    for path in sorted(source.rglob("*")):
        if not path.is_file() or path.name.endswith(".tmp"):
            continue
        dest = target / path.relative_to(source)
        if dest.is_file() and dest.stat().st_size == path.stat().st_size:
            present += 1
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".migrate.tmp")
        shutil.copyfile(path, partial)
        os.replace(partial, dest)
        copied += 1
    os.sync()  # the run says "done" only once every copied byte is on disk
    return copied, present


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


# ------------------------------------------------------------------------------ checks


def _same(a: Any, b: Any) -> bool:
    if isinstance(b, memoryview):
        b = bytes(b)
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and float(a) == float(b)
    return a == b


def check_tables(src: sqlite3.Connection, pg: Any, plans: list[TablePlan], sample: int,
                 report: Report) -> None:
    for plan in plans:
        n_src = src.execute(f'SELECT COUNT(*) FROM "{plan.name}"').fetchone()[0]
        n_dst = pg.execute(f'SELECT COUNT(*) FROM "{plan.name}"').fetchone()[0]
        report.check(f"rows {plan.name}", n_src == n_dst, f"{n_src} -> {n_dst}")
        if not plan.key or not n_src or not sample:
            continue
        cols = _quoted(plan.columns)
        picked = src.execute(f'SELECT {cols} FROM "{plan.name}" ORDER BY random() LIMIT ?',
                             (sample,)).fetchall()
        where = " AND ".join(f'"{k}" = %s' for k in plan.key)
        keys = [plan.columns.index(k) for k in plan.key]
        bad = 0
        for row in picked:
            got = pg.execute(f'SELECT {cols} FROM "{plan.name}" WHERE {where}',
                             tuple(row[i] for i in keys)).fetchone()
            if got is None or not all(_same(a, b) for a, b in zip(row, got, strict=True)):
                bad += 1
        report.check(f"sample {plan.name}", bad == 0, f"{len(picked) - bad}/{len(picked)} equal")


def check_images(src: sqlite3.Connection, options: MigrateOptions, report: Report) -> None:
    source, target = options.source / "uploads", options.target_dir / "uploads"
    if source.resolve() == target.resolve() or not options.sample:
        return
    names = [n for row in src.execute("SELECT photo, thumbnail, normalized FROM faces "
                                      "ORDER BY random() LIMIT ?", (options.sample,))
             for n in row if n]
    bad = [n for n in names if _sha256(source / n) != _sha256(target / n)]
    report.check("sample images", not bad, f"{len(names) - len(bad)}/{len(names)} equal"
                 + (f", first different: {bad[0]}" if bad else ""))


def check_identify(src_settings: Any, dst_settings: Any, src: sqlite3.Connection,
                   sample: int, report: Report) -> None:
    """The top-5 of stored faces' own vectors, searched on both stores."""
    from videodetector.backend.service import Backend, NewFace

    rows = src.execute("SELECT user_id, embedding FROM faces ORDER BY random() LIMIT ?",
                       (min(sample, 20),)).fetchall()
    if not rows:
        return
    before, after = Backend(src_settings), Backend(dst_settings)
    try:
        same_top1 = overlap = 0
        for user, blob in rows:
            face = NewFace(box=(0, 0, 1, 1), aligned=np.zeros((1, 1, 3), np.uint8),
                           embedding=np.frombuffer(blob, np.float32))
            a = [fid for fid, _ in before.identify(user, [face], IDENTIFY_TOP, None)[0]]
            b = [fid for fid, _ in after.identify(user, [face], IDENTIFY_TOP, None)[0]]
            same_top1 += bool(a) and bool(b) and a[0] == b[0]
            overlap += len(set(a) & set(b))
        total = len(rows)
        report.check("identify top-1", same_top1 == total, f"{same_top1}/{total} same")
        report.check("identify top-5", True, f"{overlap}/{total * IDENTIFY_TOP} shared "
                     "(informational: PostgreSQL's index is approximate)")
    finally:
        before.close()
        after.close()


# ------------------------------------------------------------------------------ run


def migrate(options: MigrateOptions, settings_for: Callable[..., Any],
            echo: Callable[[str], None] = print) -> Report:
    """Copy the site; ``settings_for(data_dir=..., db=...)`` makes a backend's Settings."""
    import psycopg

    from videodetector.backend import thumbs
    from videodetector.backend.pgdb import WRITE_LOCK

    src_settings = settings_for(data_dir=options.source, db=None)
    dst_settings = settings_for(data_dir=options.target_dir, db=options.target_url)
    echo("schema: bringing both stores to the current version")
    model = prepare_store(src_settings)
    options.target_dir.mkdir(parents=True, exist_ok=True)
    # the empty target records the source's model (auto would choose one for a new store)
    prepare_store(dst_settings.with_changes(embedding_model=model))
    report = Report()

    def lock(conn: Any) -> None:  # the backends' write lock: no process writes meanwhile
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))

    src = sqlite3.connect(f"file:{options.source / SOURCE_FILE}?mode=ro", uri=True)
    try:
        with psycopg.connect(options.target_url, autocommit=True) as pg:
            plans = [p for p in (plan_table(src, pg, t) for t in source_tables(src)) if p]
            indexes = drop_vector_indexes(pg)
            for plan in plans:
                report.copied[plan.name] = copy_table(src, pg, plan, options.batch, lock)
                echo(f"copied {plan.name}: {report.copied[plan.name]} rows")
            echo(f"building {len(indexes)} vector index(es)")
            restore_indexes(pg, indexes)
            reset_identities(pg)
            report.images = copy_images(options.source / "uploads",
                                        options.target_dir / "uploads")
            echo(f"images: {report.images[0]} copied, {report.images[1]} already there")
            # names of thumbnails made on read were signed with the source's keys
            thumbs.add_keys(options.source, options.target_dir)
            check_tables(src, pg, plans, options.sample, report)
        check_images(src, options, report)
        check_identify(src_settings, dst_settings, src, options.sample, report)
    finally:
        src.close()
    return report


def format_report(report: Report) -> str:
    lines = ["| check | ok | detail |", "|---|---|---|"]
    lines += [f"| {name} | {'yes' if ok else 'NO'} | {detail} |"
              for name, ok, detail in report.checks]
    lines.append(f"\nmigration {'verified' if report.ok else 'NOT verified: see NO above'}")
    return "\n".join(lines)


def build_parser(prog: str = "fkvideo_backend migrate-db") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="copy a SQLite site (its data "
                                     "directory) to PostgreSQL, then compare both")
    parser.add_argument("--from", dest="source", required=True,
                        help="the SQLite site's data directory (holds backend.sqlite3)")
    parser.add_argument("--to", dest="target", required=True, help="postgresql://... URL")
    parser.add_argument("--to-data-dir", dest="target_dir", default=None,
                        help="the PostgreSQL site's data directory, where the images go "
                             "(default: the --from directory: images stay where they are)")
    parser.add_argument("--batch", type=int, default=1000, help="rows per transaction")
    parser.add_argument("--sample", type=int, default=50,
                        help="rows, images and faces compared per check (0: counts only)")
    return parser


def main(argv: list[str], settings_for: Callable[..., Any],
         prog: str = "fkvideo_backend migrate-db") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        options = MigrateOptions(Path(args.source), args.target,
                                 Path(args.target_dir or args.source), args.batch, args.sample)
    except ValueError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    try:
        report = migrate(options, settings_for)
    except (OSError, sqlite3.Error) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # psycopg's errors: unreachable server, refused login, ...
        if type(exc).__module__.startswith("psycopg"):
            print(f"{prog}: PostgreSQL: {exc}", file=sys.stderr)
            return 1
        raise
    print(format_report(report))
    return 0 if report.ok else 1
