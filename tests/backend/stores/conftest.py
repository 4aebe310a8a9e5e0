"""A fresh database of each kind (SQLite file, PostgreSQL database) for the store tests."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.backend.conftest import STORES
from videodetector.backend import person_store
from videodetector.backend.settings import Settings
from videodetector.backend.storage import open_database


@pytest.fixture
def db(db_url: str | None, tmp_path: Path) -> Iterator[Any]:
    database = open_database(Settings(data_dir=tmp_path, db=db_url))
    person_store.migrate(database)
    try:
        yield database
    finally:
        database.close()


def face_values(user: int, n: int, **over: Any) -> dict[str, Any]:
    """A face row as ``Backend`` stores one (face ``n`` of the test)."""
    return {"user_id": user, "meta": "", "person_id": None, "cam_id": None,
            "timestamp": "2026-11-26T12:00:00+00:00", "ts": 1_764_158_400.0 + n,
            "day": "2026-11-26", "x1": 0, "y1": 0, "x2": 10, "y2": 10,
            "photo": f"p{n}.jpeg", "photo_hash": f"h{n}", "thumbnail": f"t{n}.jpeg",
            "normalized": f"n{n}.png",
            "embedding": np.full(128, n, np.float32).tobytes(), **over}


# One database of each kind per test module (the stores that create their own tables);
# each test takes its own user ids.
_users = itertools.count(1000)


@pytest.fixture(scope="module", params=STORES)
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Any]:
    url = None
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_cluster").new_database()
    db = open_database(Settings(data_dir=tmp_path_factory.mktemp("store"), db=url))
    yield db
    db.close()


@pytest.fixture
def user() -> int:
    """A user id no other test of the session uses."""
    return next(_users)
