"""The OpenAPI spec tells how each operation authenticates: the API token header, or the
console's session cookie with its CSRF header for writes (websession.py); checked against
app.openapi() and against what the app answers without credentials."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from videodetector.backend import websession
from videodetector.backend.app import create_app
from videodetector.backend.auth import create_token
from videodetector.backend.settings import Settings


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("spec"), preload_models=False))
    yield app
    app.state.backend.close()


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield path, method, op


def test_cookie_and_csrf_schemes_next_to_the_token(app: Any) -> None:
    spec = app.openapi()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["Token"] == {"type": "apiKey", "in": "header", "name": "Authorization",
                                "description": "Token <key> (fkvideo_backend token)"}
    assert schemes["Session"]["type"] == "apiKey" and schemes["Session"]["in"] == "cookie"
    assert schemes["Session"]["name"] == websession.COOKIE
    assert "HttpOnly" in schemes["Session"]["description"]
    assert schemes["CSRF"]["in"] == "header"
    assert schemes["CSRF"]["name"].lower() == websession.CSRF_HEADER
    assert spec["security"] == [{"Token": []}, {"Session": []}]


def test_each_operation_declares_its_requirement(app: Any) -> None:
    spec = app.openapi()
    seen = set()
    for path, method, op in operations(spec):
        seen.add((method, path))
        if (method, path) == ("post", "/v1/session"):
            assert op["security"] == []  # the login itself
        elif (method, path) == ("get", "/v1/session"):
            assert op["security"] == [{"Session": []}]
        elif method in ("get", "head"):
            assert op["security"] == [{"Token": []}, {"Session": []}], (method, path)
        else:
            assert op["security"] == [{"Token": []}, {"Session": [], "CSRF": []}], (method, path)
    assert {("post", "/v1/face"), ("get", "/v1/history/report.html"),
            ("delete", "/v1/session")} <= seen


def concrete(path: str) -> str:
    """A path with each parameter filled by a valid-looking value."""
    return re.sub(r"\{(\w+)\}", lambda m: {"start": "0", "limit": "1", "name": "faces"}.get(
        m.group(1), "1" if m.group(1).endswith("id") else "x"), path)


def test_the_spec_tells_the_truth(app: Any) -> None:
    """Every operation the spec says needs credentials answers 401 without them; with a
    session cookie a write needs the CSRF header (403 without it)."""
    client = TestClient(app)
    spec = app.openapi()
    for path, method, op in operations(spec):
        if op["security"] == [] or path == "/v1/events/stream":
            continue
        r = client.request(method.upper(), concrete(path), json={})
        assert r.status_code == 401, (method, path, r.status_code, r.text[:200])
    key = create_token(app.state.backend.db)  # a real token, made as the CLI makes it
    login = client.post("/v1/session", json={"token": key})
    assert login.status_code == 200, login.text
    assert client.get("/v1/galleries").status_code == 200  # the cookie alone reads
    r = client.post("/v1/galleries/g1")
    assert r.status_code == 403 and r.json()["code"] == "CSRF_FAILED"
    r = client.post("/v1/galleries/g1", headers={"X-CSRF-Token": login.json()["csrf"]})
    assert r.status_code == 201, r.text


def test_docs_page_still_served(app: Any) -> None:
    assert TestClient(app).get("/v1/docs").status_code == 200
