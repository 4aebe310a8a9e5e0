"""Behaviour the plain-``def`` handlers must keep from the async ones (issue 11): request
parts are read in async dependencies, and a replayed request does not read its images again.

A guard of the restructuring (it passed before it too): with the photo read in a dependency,
the Idempotency-Key replay must still be looked up first, for POST /face
(``faces.earlier_of`` before ``faces.enrollment_of``) and per batch item."""

from __future__ import annotations

from pathlib import Path

from videodetector.backend.server import BackendServer
from videodetector.backend.settings import Settings

from .conftest import Api
from .test_hostile import _Handler, local_http  # noqa: F401 - the fixture


def test_a_replayed_enrollment_does_not_fetch_its_photo_again(tmp_path: Path,
                                                              local_http: str) -> None:  # noqa: F811
    settings = Settings(data_dir=tmp_path, log_level="warning", fetch_urls=True,
                        fetch_allow=("127.0.0.0/8",))
    url = local_http + "/face.jpg"
    with BackendServer(settings) as srv:
        api = Api(srv.url, srv.create_token())
        first = api.post("/v1/face", json={"photo": url}, headers={"Idempotency-Key": "k1"})
        again = api.post("/v1/face", json={"photo": url}, headers={"Idempotency-Key": "k1"})
        assert first.status_code == again.status_code == 200, (first.text, again.text)
        assert again.json()["results"] == first.json()["results"]
        item = {"photo": url, "idempotency_key": "b1"}
        batch = [api.post("/v1/faces/batch", json={"items": [item]}).json() for _ in range(2)]
        assert [b["results"][0]["replayed"] for b in batch] == [False, True]
        assert batch[0]["results"][0]["face_ids"] == batch[1]["results"][0]["face_ids"]
    assert _Handler.hits == ["/face.jpg", "/face.jpg"]  # once per first request only
