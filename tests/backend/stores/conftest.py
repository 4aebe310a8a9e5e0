"""A fresh database of each kind (SQLite file, PostgreSQL database) for the store tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

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
