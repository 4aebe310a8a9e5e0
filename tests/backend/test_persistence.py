"""A restart loses nothing acknowledged; a second backend can fetch photo URLs (--fetch-urls)."""

from __future__ import annotations

import requests

from tests.backend.conftest import Api, error_of, person_photo
from videodetector.backend.server import BackendServer
from videodetector.backend.settings import Settings


def test_restart_keeps_everything(tmp_path):
    settings = Settings(data_dir=tmp_path, person_identify=True, friend_count=2,
                        log_level="warning")
    with BackendServer(settings) as srv:
        token = srv.create_token()
        api = Api(srv.url, token)
        api.post("/v1/galleries/keep")
        a = api.add_face(person_photo("A"), meta="alice", galleries="keep", cam_id="c1",
                         timestamp="2024-01-01T10:00:00")
        b = api.add_face(person_photo("B"), meta="bob", cam_id="c1",
                         timestamp="2024-01-01T10:00:00")
        cam = api.post("/v1/camera", json={"detector": "detec1", "url": "rtsp://x"}).json()
        deleted = api.add_face(person_photo("C"))
        assert api.delete(f"/v1/face/id/{deleted['id']}").status_code == 204
        api.post("/v1/face", files={"photo": person_photo("D")},
                 headers={"Idempotency-Key": "k1"})
        before = api.get("/v1/faces").json()

    with BackendServer(settings) as srv:  # same data dir, new process state
        api = Api(srv.url, token)
        after = api.get("/v1/faces").json()
        assert [f["id"] for f in after["results"]] == [f["id"] for f in before["results"]]
        assert [f["meta"] for f in after["results"]] == [f["meta"] for f in before["results"]]
        assert api.get("/v1/galleries").json() == {"results": ["default", "keep"]}
        assert api.get("/v1/camera?detector=detec1").json() == [cam]
        persons = {p["id"] for p in api.get("/v1/persons").json()["results"]}
        assert {a["person_id"], b["person_id"]} <= persons
        # the index was rebuilt: identify still works
        r = api.post("/v1/identify", files={"photo": person_photo("B")})
        (match,) = next(iter(r.json()["results"].values()))
        assert match["face"]["id"] == b["id"]
        error_of(api.get(f"/v1/face/id/{deleted['id']}"), 404, "NOT_FOUND")
        # images are still served (with the new server's address)
        face = api.get(f"/v1/face/id/{a['id']}").json()
        assert requests.get(face["photo"], timeout=10).content == person_photo("A")
        # the idempotency key survived: the retry is not stored again
        n = len(after["results"])
        api.post("/v1/face", files={"photo": person_photo("D")},
                 headers={"Idempotency-Key": "k1"})
        assert len(api.get("/v1/faces").json()["results"]) == n
        # person identification and friends continue across the restart
        again = api.add_face(person_photo("A"), cam_id="c1", timestamp="2024-01-02T10:00:00")
        assert again["person_id"] == a["person_id"] and again["friend"] is True
        # new ids never reuse old ones
        assert again["id"] > max(f["id"] for f in before["results"] + [deleted])


def test_fetch_urls(tmp_path):
    """--fetch-urls: a photo given as a URL (here, another backend's stored photo, on
    loopback: allowed with fetch_allow)."""
    with BackendServer(Settings(data_dir=tmp_path / "a", log_level="warning")) as src, \
         BackendServer(Settings(data_dir=tmp_path / "b", fetch_urls=True,
                                fetch_allow=("127.0.0.0/8",), log_level="warning")) as dst:
        stored = Api(src.url, src.create_token()).add_face(person_photo("A"))
        api = Api(dst.url, dst.create_token())
        r = api.post("/v1/face", json={"photo": stored["photo"], "meta": "Sam Berry"})
        assert r.status_code == 200, r.text
        face = r.json()["results"][0]
        assert face["photo_hash"] == stored["photo_hash"] and face["meta"] == "Sam Berry"
        r = api.post("/v1/detect", json={"photo": stored["photo"]})
        assert len(r.json()["faces"]) == 1
        body = error_of(api.post("/v1/face", json={"photo": src.url + "/uploads/nope.jpg"}),
                        400, "BAD_PARAM")
        assert body["param"] == "photo" and "404" in body["reason"]
        body = error_of(api.post("/v1/face", json={"photo": "http://127.0.0.1:9/x.jpg"}),
                        400, "BAD_PARAM")
        assert body["param"] == "photo"
