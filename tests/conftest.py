"""Shared test fixtures. Media from ../shared/data is optional: tests that need it skip."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()


def shared_file(rel: str) -> Path:
    """Path of a file under ../shared/data, or skip the test with a clear reason."""
    path = SHARED_DATA / rel
    if not path.is_file():
        pytest.skip(f"needs test media {path} (../shared/data is absent on this machine)")
    return path


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs test media folder {SHARED_DATA}")
    return SHARED_DATA
