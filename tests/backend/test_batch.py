"""Batch enrollment (POST /v1/faces/batch) and emptying a gallery (DELETE
/v1/faces/gallery/<name>) on the real backend with real models."""

from __future__ import annotations

import base64
import json
import uuid

import numpy as np

from tests.backend.conftest import Api, error_of, person_photo, png_bytes
from videodetector.backend import batch as batch_module


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def face_count(api: Api) -> int:
    return len(api.get("/v1/faces", params={"limit": 0}).json()["results"])


def make_gallery(api: Api) -> str:
    name = "g" + uuid.uuid4().hex[:10]
    assert api.post(f"/v1/galleries/{name}").status_code == 201
    return name


def test_one_bad_item_never_fails_the_others(api: Api):
    g = make_gallery(api)
    blank = png_bytes(np.full((200, 200, 3), 128, np.uint8))
    r = api.post("/v1/faces/batch", json={"galleries": [g], "items": [
        {"id": "person1", "photo": "data:image/jpeg;base64," + b64(person_photo("A")),
         "meta": "Jane"},
        {"id": "garbage", "photo": b64(b"definitely not a picture")},
        {"id": "noface", "image": b64(blank), "metadata": "nobody"},
        {"id": "badgallery", "photo": b64(person_photo("C")), "galleries": ["nosuch"]},
        {"id": "unknownfield", "photo": b64(person_photo("C")), "colour": "red"},
        "not an object",
        {"photo": b64(person_photo("B")), "galleries": []},
    ]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] == ["person1", 6]
    assert [f["id"] for f in body["fail"]] == ["garbage", "noface", "badgallery",
                                               "unknownfield", 5]
    res = body["results"]
    assert [x["status"] for x in res] == ["success"] + ["fail"] * 5 + ["success"]
    assert res[1]["param"] == "items[1].photo" and "not a valid" in res[1]["reason"]
    assert "No faces found" in res[2]["reason"]
    assert "nosuch" in res[3]["reason"] and res[3]["param"] == "items[3].galleries"
    assert res[4]["param"] == "items[4].colour"
    assert all(x["code"] == "BAD_PARAM" for x in res[1:6])
    (jane,) = res[0]["face_ids"]
    face = api.get(f"/v1/face/id/{jane}").json()
    assert face["meta"] == "Jane" and face["galleries"] == ["default", g]
    (other,) = res[6]["face_ids"]
    assert api.get(f"/v1/face/id/{other}").json()["galleries"] == ["default"]
    assert face_count(api) == 2
    # the stored faces are searchable like any other
    hits = api.post("/v1/identify", files={"photo": person_photo("A")}).json()["results"]
    assert [h["face"]["id"] for v in hits.values() for h in v] == [jane]


def test_multipart_files_are_items(api: Api):
    g = make_gallery(api)
    files = [("photo", ("a.jpg", person_photo("A"), "image/jpeg")),
             ("photo", ("b.jpg", person_photo("B"), "image/jpeg")),
             ("photo", ("c.txt", b"text", "text/plain"))]
    r = api.post("/v1/faces/batch", files=files, data={"galleries": g, "meta": "visitor"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] == [0, 1] and [f["index"] for f in body["fail"]] == [2]
    for item in body["results"][:2]:
        face = api.get(f"/v1/face/id/{item['face_ids'][0]}").json()
        assert face["meta"] == "visitor" and g in face["galleries"]
    # an "items" part refers to the files by name
    items = [{"id": "x", "photo": "multipart:first", "meta": "first"},
             {"id": "y", "photo": "multipart:missing"}]
    r = api.post("/v1/faces/batch", files={
        "items": (None, json.dumps(items)),
        "first": ("c.jpg", person_photo("C"), "image/jpeg")})
    body = r.json()
    assert body["success"] == ["x"] and body["fail"][0]["id"] == "y"
    assert "missing" in body["fail"][0]["reason"]


def test_idempotency_per_item(api: Api):
    items = [{"photo": b64(person_photo("A"))}, {"photo": b64(b"broken")},
             {"photo": b64(person_photo("B")), "idempotency_key": "own-key"}]
    first = api.post("/v1/faces/batch", json={"items": items},
                     headers={"Idempotency-Key": "req-1"}).json()
    assert first["success"] == [0, 2] and face_count(api) == 2
    # the retry stores nothing twice; the item that failed is tried again
    items[1] = {"photo": b64(person_photo("C"))}
    again = api.post("/v1/faces/batch", json={"items": items, "idempotency_key": "req-1"}).json()
    assert again["success"] == [0, 1, 2]
    assert [x["replayed"] for x in again["results"]] == [True, False, True]
    assert again["results"][0]["face_ids"] == first["results"][0]["face_ids"]
    assert again["results"][2]["face_ids"] == first["results"][2]["face_ids"]
    assert face_count(api) == 3
    # an item key works across requests and without a request key
    alone = api.post("/v1/faces/batch", json=[
        {"photo": b64(person_photo("B")), "idempotency_key": "own-key"}]).json()
    assert alone["results"][0]["replayed"] is True and face_count(api) == 3


def test_limits(api: Api, monkeypatch):
    error_of(api.post("/v1/faces/batch", json={"items": [{"photo": "x"}] * 101}), 413,
             "BAD_PARAM")
    error_of(api.post("/v1/faces/batch", json={"items": []}), 400, "BAD_PARAM")
    error_of(api.post("/v1/faces/batch", json={"items": [{"photo": "x"}], "colour": 1}), 400,
             "BAD_PARAM")
    error_of(api.post("/v1/faces/batch", json={"items": [{"photo": "x"}],
                                                "galleries": ["nosuch"]}), 400, "BAD_PARAM")
    error_of(api.post("/v1/faces/batch", json={"items": [{"photo": "x"}],
                                                "mf_selector": "many"}), 400, "BAD_PARAM")
    huge = b64(b"\0" * (10 * 1024 * 1024 + 1))
    r = api.post("/v1/faces/batch", json={"items": [{"photo": huge},
                                                     {"photo": b64(person_photo("D"))}]})
    body = r.json()
    assert body["success"] == [1]
    assert "byte limit" in body["fail"][0]["reason"]
    # the pixel budget of a request: photos past it fail, the ones before are stored
    monkeypatch.setattr(batch_module, "MAX_PIXELS", 2_000_000)
    photo = person_photo("A")
    r = api.post("/v1/faces/batch", json={"items": [{"photo": b64(photo)}] * 8}).json()
    assert 1 <= len(r["success"]) < 8
    assert all("pixels" in f["reason"] for f in r["fail"])


def test_delete_all_faces_of_a_gallery(api: Api):
    g = make_gallery(api)
    in_g = api.post("/v1/faces/batch", json={"galleries": [g], "items": [
        {"photo": b64(person_photo("A"))}, {"photo": b64(person_photo("B"))}]}).json()
    outside = api.add_face(person_photo("C"))
    r = api.delete(f"/v1/faces/gallery/{g}")
    assert r.status_code == 200 and r.json() == {"deleted": 2}
    assert g in api.get("/v1/galleries").json()["results"]
    for item in in_g["results"]:
        error_of(api.get(f"/v1/face/id/{item['face_ids'][0]}"), 404, "NOT_FOUND")
    assert api.get(f"/v1/face/id/{outside['id']}").status_code == 200
    hits = api.post("/v1/identify", files={"photo": person_photo("A")}).json()["results"]
    assert all(v == [] for v in hits.values())
    assert api.delete(f"/v1/faces/gallery/{g}").json() == {"deleted": 0}
    error_of(api.delete("/v1/faces/gallery/nosuch"), 404, "NOT_FOUND")
    assert api.delete("/v1/faces/gallery/default").json() == {"deleted": 1}
    assert face_count(api) == 0


def test_openapi_documents_the_batch_routes(api: Api):
    paths = api.get("/v1/openapi.json").json()["paths"]
    post = paths["/v1/faces/batch"]["post"]
    assert set(post["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert "delete" in paths["/v1/faces/gallery/{gallery}"]
    assert "/v1/extract" in paths and "/v1/stat/list/{start}/{limit}" in paths


def test_batch_with_emotions_stores_and_says_unavailable(api: Api):
    r = api.post("/v1/faces/batch", json={"emotions": True, "items": [
        {"photo": b64(person_photo("A"))}]})
    assert r.status_code == 200, r.text
    assert r.json()["success"] == [0] and "emotions" in r.json()["unavailable"]
