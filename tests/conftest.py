"""Shared test fixtures. Media from ../shared/data is optional: tests that need it skip."""

from __future__ import annotations

import importlib
import sys
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


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch):
    """Import a bench script as a module by name (bench/ is not a package; a bench's first
    import, ``_env``, and the benches it imports resolve from bench/ on ``sys.path``)."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))

    def load(name: str):
        return sys.modules.get(name) or importlib.import_module(name)

    return load
