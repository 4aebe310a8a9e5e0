"""The database the stores of stores-b's tests run on: SQLite and PostgreSQL (a real server,
tests/pg.py), one per test module; each test takes its own user ids."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from tests.backend.conftest import STORES
from videodetector.backend.settings import Settings
from videodetector.backend.storage import open_database

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
