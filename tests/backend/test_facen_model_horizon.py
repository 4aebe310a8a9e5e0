"""changes.follow_facen_model: a backend starting on another embedding model than at its
previous start moves the sync horizon past every cursor given so far (no models needed:
the real store, SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from videodetector.backend import changes
from videodetector.backend.settings import Settings
from videodetector.backend.storage import open_database


@pytest.fixture
def db(tmp_path: Path, db_url: str | None):
    database = open_database(Settings(data_dir=tmp_path, db=db_url))
    yield database
    database.close()


def test_a_model_switch_invalidates_every_cursor_a_restart_none(db, caplog):
    caplog.set_level(logging.INFO, logger="videodetector.backend.changes")
    # first start, empty store: recorded, nothing to invalidate
    assert changes.follow_facen_model(db, "m1") is False
    assert changes.facen_model(db) == "m1"
    # a switch before any change: no cursor but 0 was ever given, no seq taken
    assert changes.follow_facen_model(db, "m2") is False
    assert (changes.facen_model(db), changes.last_seq(db), changes.horizon(db)) == ("m2", 0, 0)
    with db.transaction() as conn:
        changes.record(conn, 1, 7, (), ["default"])
    cursor = changes.last_seq(db)
    assert cursor > 0
    assert changes.follow_facen_model(db, "m2") is False  # a restart: nothing moves
    assert changes.horizon(db) == 0
    assert changes.follow_facen_model(db, "m1") is True
    # the newest cursor is now older than the horizon; a full listing's cursor is not
    assert cursor < changes.horizon(db) == changes.last_seq(db)
    assert sum("facen is now the m1 embedding (was m2)" in r.getMessage()
               for r in caplog.records) == 1
    # the next change still gets a new, larger seq
    with db.transaction() as conn:
        changes.record(conn, 1, 7, (), ["default"])
    assert changes.last_seq(db) > changes.horizon(db)
