"""Fault injection for the backend's storage tests, and the consistency check they share.

The faults are outside the product: the kernel reporting a full disk to the image writes
(``DiskFull``), and the database itself refusing a COMMIT (``CommitFault``: a trigger violates
a deferred foreign key, which SQLite and PostgreSQL check at COMMIT, the point where a full
disk shows up in SQLite's WAL mode). ``assert_consistent`` checks what the fix promises: the
in-memory index is the database, and the image files on disk are exactly those the database
refers to.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from videodetector.backend.service import Backend
from videodetector.backend.storage import TMP_SUFFIX, Database
from videodetector.core import durable


class DiskFull:
    """While ``on``, the image store's fsync fails with ENOSPC, as it does on a full disk
    (delayed allocation): the ``.tmp`` file exists, with data, when the error comes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.on = False
        self.hits = 0
        real = os.fsync

        def fsync(fd: int) -> None:
            if self.on:
                self.hits += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(fd)

        monkeypatch.setattr(durable.os, "fsync", fsync)  # the image store writes through it


# Every table a request writes; a write to any of them makes the COMMIT fail.
_WATCHED = {"faces": ("INSERT", "UPDATE", "DELETE"), "face_galleries": ("INSERT", "DELETE"),
            "galleries": ("INSERT", "DELETE"), "persons": ("INSERT", "UPDATE", "DELETE"),
            "idempotency": ("INSERT",)}


_PG_FAULT = (
    "CREATE TABLE IF NOT EXISTS fault_parent (id BIGINT PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS fault_child (ref BIGINT REFERENCES fault_parent (id) "
    "DEFERRABLE INITIALLY DEFERRED)",
    "CREATE OR REPLACE FUNCTION fault_fire() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN INSERT INTO fault_child VALUES (1); RETURN NULL; END $$",
)


class CommitFault:
    """While on (``with CommitFault(db):`` or ``set(True)``), every COMMIT of a transaction
    that wrote a face, gallery, person or idempotency row fails in SQLite itself
    (``FOREIGN KEY constraint failed``, raised by COMMIT, the transaction left open)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.active = False
        if db.dialect == "postgresql":
            for sql in _PG_FAULT:
                db.execute_raw(sql)
            return
        with db.lock:
            db.conn.executescript(
                "CREATE TABLE IF NOT EXISTS fault_parent (id INTEGER PRIMARY KEY);"
                "CREATE TABLE IF NOT EXISTS fault_child (ref INTEGER REFERENCES "
                "fault_parent (id) DEFERRABLE INITIALLY DEFERRED);")

    def set(self, on: bool) -> None:
        if on == self.active:
            return
        if self.db.dialect == "postgresql":
            for table, events in _WATCHED.items():
                for event in events:
                    name = f"fault_{table}_{event.lower()}"
                    self.db.execute_raw(
                        f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH STATEMENT "
                        "EXECUTE FUNCTION fault_fire()" if on
                        else f"DROP TRIGGER {name} ON {table}")
            self.active = on
            return
        script = []
        for table, events in _WATCHED.items():
            for event in events:
                name = f"fault_{table}_{event.lower()}"
                script.append(f"CREATE TRIGGER {name} AFTER {event} ON {table} BEGIN "
                              "INSERT INTO fault_child VALUES (1); END;" if on
                              else f"DROP TRIGGER {name};")
        with self.db.lock:
            self.db.conn.executescript("".join(script))
        self.active = on

    def __enter__(self) -> CommitFault:
        self.set(True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.set(False)


def stored_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def assert_consistent(backend: Backend, orphans_allowed: bool = False) -> dict[int, set[int]]:
    """The index holds exactly the database's faces (ids, embeddings, cameras, persons); the
    upload directory holds no ``.tmp`` file and exactly the images the database refers to
    (``orphans_allowed``: at least those, after a crash). Returns user -> face ids."""
    with backend.db.lock:
        rows = backend.db.rows("SELECT id, user_id, cam_id, person_id, embedding, photo, "
                               "thumbnail, normalized FROM faces")
        db: dict[int, dict[int, Any]] = {}
        for r in rows:
            db.setdefault(r["user_id"], {})[r["id"]] = r
        for user in set(db) | set(backend.index.users()):
            index = backend.index(user)
            faces = db.get(user, {})
            assert set(int(i) for i in index.ids) == set(faces), f"user {user}: index != db"
            for face_id, r in faces.items():
                vector, cam, person = index.entry(face_id)
                assert np.array_equal(vector, np.frombuffer(r["embedding"], np.float32))
                assert (cam, person) == (r["cam_id"], r["person_id"]), face_id
    on_disk = stored_files(backend.files.root)
    assert not [f for f in on_disk if f.endswith(TMP_SUFFIX)], on_disk
    referenced = {r[k] for r in rows for k in ("photo", "thumbnail", "normalized")}
    missing = referenced - on_disk
    assert not missing, f"images of stored faces are missing: {sorted(missing)}"
    if not orphans_allowed:
        orphans = on_disk - referenced
        assert not orphans, f"images of no face: {sorted(orphans)}"
    return {user: set(faces) for user, faces in db.items()}
