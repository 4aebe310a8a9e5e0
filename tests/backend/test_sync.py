"""Faces keep what clients give them (issue 9): custom attributes, the /v1/faces/sync change
feed an edge device mirrors a gallery from, the facen of a stored face, replacing a face's
image in place, base64 images on the classic routes. Real server, real models, real SQLite."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.backend.conftest import (
    SERVER_SETTINGS,
    Api,
    error_of,
    person_photo,
    png_bytes,
    side_by_side,
)
from tests.backend.faultkit import CommitFault, assert_consistent
from videodetector.backend.server import BackendServer
from videodetector.backend.settings import Settings
from videodetector.backend.storage import SCHEMA_VERSION

MAX_PHOTO = 400_000  # bytes: the photos used here are under 200 kB


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, store: str | None
           ) -> Iterator[BackendServer]:
    with BackendServer(Settings(data_dir=tmp_path_factory.mktemp("sync"), db=store,
                                max_photo_bytes=MAX_PHOTO, **SERVER_SETTINGS)) as srv:
        yield srv


@pytest.fixture
def api(server: BackendServer) -> Api:
    return Api(server.url, server.create_token())


def facen(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), "<f4")


# -- custom attributes ---------------------------------------------------------------

def test_attributes_round_trip_everywhere_a_face_is_rendered(api: Api) -> None:
    attrs = {"user_id": 42, "name": "Ann", "tags": ["vip", "staff"], "nested": {"a": None}}
    face = api.add_face(person_photo("A"), attributes=json.dumps(attrs), badge="B-17",
                        meta="ann")
    want = {**attrs, "badge": "B-17"}  # unknown text fields are attributes too
    assert face["attributes"] == want
    assert api.get(f"/v1/face/id/{face['id']}").json()["attributes"] == want
    assert api.get("/v1/faces").json()["results"][0]["attributes"] == want
    assert api.get("/v1/face/meta/ann").json()["results"][0]["attributes"] == want
    r = api.post("/v1/identify", files={"photo": ("a.jpg", person_photo("A"), "image/jpeg")})
    (hits,) = r.json()["results"].values()
    assert hits[0]["face"]["attributes"] == want

    # PUT replaces them (JSON body), null clears them; other fields are left alone
    r = api.put(f"/v1/face/id/{face['id']}", json={"attributes": {"user_id": 43}})
    assert r.status_code == 200, r.text
    assert r.json()["attributes"] == {"user_id": 43} and r.json()["meta"] == "ann"
    r = api.put(f"/v1/face/id/{face['id']}", json={"meta": "x"})
    assert r.json()["attributes"] == {"user_id": 43}
    r = api.put(f"/v1/face/id/{face['id']}", json={"attributes": None})
    assert r.json()["attributes"] == {}
    # the rival's name, unique_args, is accepted
    r = api.put(f"/v1/face/id/{face['id']}", data={"unique_args": '{"user_name": "Ann"}'})
    assert r.json()["attributes"] == {"user_name": "Ann"}


def test_attributes_limits(api: Api) -> None:
    photo = person_photo("B")
    big = {"k": "x" * 16400}
    body = error_of(api.post("/v1/face", files={"photo": ("b.jpg", photo, "image/jpeg")},
                             data={"attributes": json.dumps(big)}), 400, "BAD_PARAM")
    assert body["param"] == "attributes"
    for bad in ('["a"]', '"text"', "{not json"):
        r = api.post("/v1/face", files={"photo": ("b.jpg", photo, "image/jpeg")},
                     data={"attributes": bad})
        assert error_of(r, 400, "BAD_PARAM")["param"] == "attributes"
    r = api.post("/v1/face", files={"photo": ("b.jpg", photo, "image/jpeg")},
                 data={"attributes": json.dumps({"x" * 300: 1})})
    assert error_of(r, 400, "BAD_PARAM")["param"] == "attributes"
    r = api.post("/v1/face", files={"photo": ("b.jpg", photo, "image/jpeg")},
                 data={"attributes": "{}", "unique_args": "{}"})
    error_of(r, 400, "BAD_PARAM")
    face = api.add_face(photo)
    assert face["attributes"] == {}
    r = api.put(f"/v1/face/id/{face['id']}", json={"attributes": big})
    assert error_of(r, 400, "BAD_PARAM")["param"] == "attributes"
    assert api.get("/v1/faces").json()["results"][0]["attributes"] == {}  # nothing stored


# -- facen of a stored face ------------------------------------------------------------

def test_facen_of_a_stored_face_is_the_one_identify_compares(api: Api) -> None:
    face = api.add_face(person_photo("C"))
    r = api.get(f"/v1/face/id/{face['id']}/facen")
    assert r.status_code == 200, r.text
    stored = facen(r.json()["facen"])
    assert r.json()["id"] == face["id"] and stored.shape == (128,)
    assert abs(float(np.linalg.norm(stored)) - 1.0) < 1e-4
    # the extraction API embeds the same photo the same way; identify finds it at ~1.0
    r = api.post("/v1/extract", json={"requests": [
        {"image": base64.b64encode(person_photo("C")).decode(), "need_facen": True}]})
    assert r.status_code == 200, r.text
    extracted = facen(r.json()["responses"][0]["faces"][0]["facen"])
    assert float(stored @ extracted) > 0.9999
    r = api.post("/v1/identify", files={"photo": ("c.jpg", person_photo("C"), "image/jpeg")},
                 data={"threshold": "none"})
    (hits,) = r.json()["results"].values()
    assert hits[0]["face"]["id"] == face["id"] and hits[0]["confidence"] > 0.99
    error_of(api.get("/v1/face/id/999999999/facen"), 404, "NOT_FOUND")
    # the same vector with the face (GET facen=true; POST /face facen=true, as the rival's
    # face creation returns face_encoding)
    r = api.get(f"/v1/face/id/{face['id']}", params={"facen": "true"})
    assert r.json()["facen"] == api.get(f"/v1/face/id/{face['id']}/facen").json()["facen"]
    assert "facen" not in api.get(f"/v1/face/id/{face['id']}").json()
    again = api.add_face(person_photo("C"), facen="true")
    assert float(facen(again["facen"]) @ stored) > 0.9999


# -- replacing a face's image -----------------------------------------------------------

def test_replace_image_keeps_the_id_and_search_finds_the_new_face(api: Api) -> None:
    face = api.add_face(person_photo("A"), meta="m", attributes='{"k": 1}')
    before = api.get(f"/v1/face/id/{face['id']}/facen").json()["facen"]
    r = api.put(f"/v1/face/id/{face['id']}",
                files={"photo": ("d.jpg", person_photo("D"), "image/jpeg")})
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["id"] == face["id"] and new["meta"] == "m" and new["attributes"] == {"k": 1}
    assert new["normalized"] != face["normalized"] and new["photo"] != face["photo"]
    after = api.get(f"/v1/face/id/{face['id']}/facen").json()["facen"]
    assert float(facen(before) @ facen(after)) < 0.5
    assert api.get("/v1/faces").json()["results"] == [new]  # no second face

    def best(photo: str) -> list[dict[str, Any]]:
        r = api.post("/v1/identify", files={"photo": ("p.jpg", person_photo(photo),
                                                      "image/jpeg")})
        (hits,) = r.json()["results"].values()
        return hits

    assert [h["face"]["id"] for h in best("D")] == [face["id"]]
    assert best("A") == []  # the old embedding is gone from the index
    # the old images are deleted, the new ones served
    assert api.session.get(face["normalized"]).status_code == 404
    assert api.session.get(new["normalized"]).status_code == 200
    # a replacement with no face, or two, changes nothing
    flat = np.full((200, 200, 3), 128, np.uint8)
    r = api.put(f"/v1/face/id/{face['id']}", files={"photo": ("f.png", png_bytes(flat),
                                                              "image/png")})
    error_of(r, 400, "BAD_PARAM")
    two = side_by_side(person_photo("A"), person_photo("B"))
    r = api.put(f"/v1/face/id/{face['id']}", files={"photo": ("t.jpg", two, "image/jpeg")},
                data={"mf_selector": "all"})
    error_of(r, 400, "BAD_PARAM")
    assert api.get(f"/v1/face/id/{face['id']}/facen").json()["facen"] == after


# -- base64 images on the classic routes ------------------------------------------------

def test_base64_json_images_on_the_classic_routes(api: Api) -> None:
    text = base64.b64encode(person_photo("B")).decode()
    r = api.post("/v1/detect", json={"photo": text})
    assert r.status_code == 200, r.text
    assert len(r.json()["faces"]) == 1
    r = api.post("/v1/face", json={"photo": "data:image/jpeg;base64," + text, "meta": "b",
                                   "attributes": {"id": "b-1"}})
    assert r.status_code == 200, r.text
    face = r.json()["results"][0]
    assert face["attributes"] == {"id": "b-1"}
    r = api.post("/v1/identify", json={"photo": text})
    (hits,) = r.json()["results"].values()
    assert hits[0]["face"]["id"] == face["id"]
    r = api.put(f"/v1/face/id/{face['id']}", json={"photo": text})
    assert r.status_code == 200, r.text
    body = error_of(api.post("/v1/detect", json={"photo": "not base64!"}), 400, "BAD_PARAM")
    assert body["param"] == "photo" and "base64" in body["reason"]


def test_oversize_base64_is_refused_before_decoding(api: Api) -> None:
    # not even valid base64: refused by its length alone (413), never decoded (which gives 400)
    junk = "!" * (MAX_PHOTO * 4 // 3 + 16)
    for route in ("/v1/detect", "/v1/identify", "/v1/face"):
        body = error_of(api.post(route, json={"photo": junk}), 413, "BAD_PARAM")
        assert body["param"] == "photo"
    # a small file of too many pixels is refused from its header (max_size), as an upload is
    wide = base64.b64encode(png_bytes(np.zeros((8, 7000, 3), np.uint8))).decode()
    body = error_of(api.post("/v1/detect", json={"photo": wide}), 400, "BAD_PARAM")
    assert body["param"] == "photo" and "max_size" in body["reason"]


# -- the sync feed -------------------------------------------------------------------

class Mirror:
    """What an edge device keeps: id -> (meta, attributes, facen), built from the feed."""

    def __init__(self, api: Api, gallery: str) -> None:
        self.api, self.gallery = api, gallery
        self.cursor: int | None = None
        self.faces: dict[int, tuple[str, Any, str]] = {}

    def pull(self, limit: int = 2) -> None:
        while True:
            params: dict[str, Any] = {"gallery": self.gallery, "limit": limit}
            if self.cursor is not None:
                params["cursor"] = self.cursor
            r = self.api.get("/v1/faces/sync", params=params)
            assert r.status_code == 200, r.text
            page = r.json()
            ids = [f["id"] for f in page["faces"]] + [d["id"] for d in page["deleted"]]
            assert len(ids) == len(set(ids)) <= limit
            for d in page["deleted"]:
                self.faces.pop(d["id"], None)
            for f in page["faces"]:
                assert self.gallery in f["galleries"]
                self.faces[f["id"]] = (f["meta"], f["attributes"], f["facen"])
            assert self.cursor is None or page["cursor"] >= self.cursor
            self.cursor = page["cursor"]
            if not page["has_more"]:
                return


def server_gallery(api: Api, gallery: str) -> dict[int, tuple[str, Any, str]]:
    faces = api.get(f"/v1/faces/gallery/{gallery}", params={"limit": 0}).json()["results"]
    return {f["id"]: (f["meta"], f["attributes"],
                      api.get(f"/v1/face/id/{f['id']}/facen").json()["facen"])
            for f in faces}


OPS = st.lists(st.tuples(st.sampled_from(["add", "add_wl", "meta", "attrs", "move_in",
                                          "move_out", "delete", "replace"]),
                         st.integers(0, 7), st.sampled_from("ABCD")),
               min_size=1, max_size=7)


def apply(api: Api, op: str, pick: int, photo: str, ids: list[int]) -> None:
    if op.startswith("add") or not ids:
        extra = {"galleries": "wl"} if op == "add_wl" else {}
        ids.append(api.add_face(person_photo(photo), meta=f"m{pick}", **extra)["id"])
        return
    fid = ids[pick % len(ids)]
    path = f"/v1/face/id/{fid}"
    if op == "delete":
        assert api.delete(path).status_code == 204
        ids.remove(fid)
        return
    body: dict[str, Any] = {
        "meta": {"meta": f"n{pick}"}, "attrs": {"attributes": {"p": pick}},
        "move_in": {"galleries": {"add": ["wl"]}}, "move_out": {"galleries": {"del": ["wl"]}},
        "replace": {"photo": base64.b64encode(person_photo(photo)).decode()},
    }[op]
    r = api.put(path, json=body)
    assert r.status_code == 200, r.text


# every kind of change to one face, always tried (besides the random sequences)
LIFE_OF_A_FACE = [("add_wl", 0, "A"), ("add", 0, "B"), ("move_out", 0, "A"),
                  ("move_in", 0, "C"), ("meta", 0, "A"), ("attrs", 1, "A"),
                  ("replace", 0, "D"), ("delete", 0, "A"), ("move_in", 0, "A"),
                  ("delete", 0, "A")]


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@example(ops=LIFE_OF_A_FACE)
@given(ops=OPS)
def test_mirror_built_from_the_feed_equals_the_gallery(server: BackendServer, ops) -> None:
    api = Api(server.url, server.create_token())
    assert api.post("/v1/galleries/wl").status_code in (200, 201, 204)
    mirrors = [Mirror(api, "wl"), Mirror(api, "default")]
    ids: list[int] = []
    lagging = Mirror(api, "wl")  # pulls only at the end: sees the net effect
    for op, pick, photo in ops:
        apply(api, op, pick, photo, ids)
        for mirror in mirrors:
            mirror.pull()
            assert mirror.faces == server_gallery(api, mirror.gallery), (op, mirror.gallery)
    lagging.pull(limit=1)
    assert lagging.faces == server_gallery(api, "wl")


def test_sync_cursor_survives_restart_and_expires_with_the_tombstones(db_url, tmp_path) -> None:
    settings_ = Settings(data_dir=tmp_path, db=db_url, sync_tombstone_ttl=1.0, **SERVER_SETTINGS)
    with BackendServer(settings_) as srv:
        api = Api(srv.url, srv.create_token())
        a = api.add_face(person_photo("A"))["id"]
        b = api.add_face(person_photo("B"))["id"]
        old = Mirror(api, "default")
        old.pull()
        assert set(old.faces) == {a, b}
        assert api.delete(f"/v1/face/id/{a}").status_code == 204
        fresh = Mirror(api, "default")
        fresh.pull()
        token = api.token
    time.sleep(1.2)
    with BackendServer(settings_) as srv:  # prunes the tombstone (older than 1 s) at start
        api = Api(srv.url, token)
        fresh.api = api
        api.put(f"/v1/face/id/{b}", json={"meta": "changed"})
        fresh.pull()  # a cursor taken after the deletion still works after the restart
        assert fresh.faces == server_gallery(api, "default")
        assert fresh.faces[b][0] == "changed"
        r = api.get("/v1/faces/sync", params={"cursor": old.cursor})
        body = error_of(r, 410, "RESYNC_REQUIRED")
        assert body["param"] == "cursor"
        r = api.get("/v1/faces/sync", params={"cursor": 10**9})  # not from this server
        error_of(r, 410, "RESYNC_REQUIRED")
        restart = Mirror(api, "default")  # what the client does then: start over
        restart.pull()
        assert restart.faces == server_gallery(api, "default")


def test_sync_last_updated_at_and_bad_parameters(api: Api) -> None:
    a = api.add_face(person_photo("A"))["id"]
    time.sleep(0.05)
    mark = time.time()
    time.sleep(0.05)
    b = api.add_face(person_photo("B"))["id"]
    r = api.get("/v1/faces/sync", params={"last_updated_at": mark})
    assert [f["id"] for f in r.json()["faces"]] == [b]
    r = api.get("/v1/faces/sync", params={"last_updated_at": 0})
    assert [f["id"] for f in r.json()["faces"]] == [a, b]
    first = r.json()["faces"][0]
    assert {"facen", "updated_at", "seq", "attributes", "galleries"} <= set(first)
    error_of(api.get("/v1/faces/sync", params={"gallery": "nope"}), 404, "NOT_FOUND")
    for params in ({"cursor": -1}, {"cursor": "x"}, {"limit": 0}, {"limit": 1001},
                   {"last_updated_at": "yesterday"}, {"gallery": "bad name!"}):
        error_of(api.get("/v1/faces/sync", params=params), 400, "BAD_PARAM")


def test_a_database_made_before_versioning_is_upgraded_with_its_faces_in_the_feed(
        tmp_path) -> None:
    settings_ = Settings(data_dir=tmp_path, **SERVER_SETTINGS)
    with BackendServer(settings_) as srv:
        api = Api(srv.url, srv.create_token())
        assert api.post("/v1/galleries/wl").status_code in (200, 201, 204)
        api.add_face(person_photo("A"), galleries="wl")
        api.add_face(person_photo("B"))
        srv.backend.close()
    # what a version 1 database is: no change log, PRAGMA user_version never set
    conn = sqlite3.connect(tmp_path / "backend.sqlite3")
    conn.executescript("DROP TABLE face_changes; PRAGMA user_version = 0; "
                       "UPDATE settings SET value = '1' WHERE key = 'schema_version'; "
                       "DROP TABLE alembic_version;")  # made before Alembic
    conn.close()
    with BackendServer(settings_) as srv:
        api.url = srv.url
        assert srv.backend.db.scalar("PRAGMA user_version") == SCHEMA_VERSION == 4
        for gallery, n in (("wl", 1), ("default", 2)):
            mirror = Mirror(api, gallery)
            mirror.pull()
            assert mirror.faces == server_gallery(api, gallery) and len(mirror.faces) == n


def test_batch_items_carry_attributes(api: Api) -> None:
    photo = base64.b64encode(person_photo("A")).decode()
    r = api.post("/v1/faces/batch", json={"items": [
        {"id": "u1", "photo": photo, "attributes": {"user_id": "u1", "level": 3}},
        {"id": "u2", "photo": photo, "unique_args": {"user_id": "u2"}},
        {"id": "bad", "photo": photo, "attributes": ["not", "an", "object"]},
        {"id": "big", "photo": photo, "attributes": {"k": "x" * 16400}},
    ]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] == ["u1", "u2"]
    assert [f["id"] for f in body["fail"]] == ["bad", "big"]
    assert body["results"][2]["param"] == "items[2].attributes"
    got = {f["attributes"]["user_id"]: f["attributes"]
           for f in api.get("/v1/faces").json()["results"]}
    assert got == {"u1": {"user_id": "u1", "level": 3}, "u2": {"user_id": "u2"}}


def test_a_failed_replacement_changes_nothing(server: BackendServer, api: Api) -> None:
    """SQLite refuses the COMMIT of a replacement: 503, and the face, its embedding in the
    index, its images and the sync feed stay as they were; afterwards it works."""
    face = api.add_face(person_photo("A"))
    mirror = Mirror(api, "default")
    mirror.pull()
    before = api.get(f"/v1/face/id/{face['id']}", params={"facen": "true"}).json()
    new_photo = {"photo": ("d.jpg", person_photo("D"), "image/jpeg")}
    with CommitFault(server.backend.db):
        error_of(api.put(f"/v1/face/id/{face['id']}", files=new_photo), 503,
                 "SERVICE_UNAVAILABLE")
    assert api.get(f"/v1/face/id/{face['id']}", params={"facen": "true"}).json() == before
    r = api.post("/v1/identify", files={"photo": ("a.jpg", person_photo("A"), "image/jpeg")})
    assert [h["face"]["id"] for h in next(iter(r.json()["results"].values()))] == [face["id"]]
    assert_consistent(server.backend)
    mirror.pull()
    assert mirror.faces == server_gallery(api, "default")
    assert api.put(f"/v1/face/id/{face['id']}", files=new_photo).status_code == 200
    assert_consistent(server.backend)
    mirror.pull()
    assert mirror.faces == server_gallery(api, "default")
