"""The request/response examples of 4.4 and 9.1 (shapes and field names), over real HTTP."""

from __future__ import annotations

import json
import re

import requests

from tests.backend.conftest import Api, error_of, person_photo, side_by_side

FACE_KEYS = {"friend", "galleries", "id", "meta", "normalized", "person_id", "photo",
             "photo_hash", "thumbnail", "timestamp", "x1", "x2", "y1", "y2"}
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")


def check_face(face: dict) -> None:
    assert FACE_KEYS <= set(face), FACE_KEYS - set(face)
    assert isinstance(face["id"], int)
    assert all(isinstance(face[k], int) for k in ("x1", "x2", "y1", "y2"))
    assert face["x2"] > face["x1"] and face["y2"] > face["y1"]
    assert TS_RE.match(face["timestamp"]), face["timestamp"]
    assert face["galleries"][0] == "default"
    assert re.fullmatch(r"[0-9a-f]{40,64}", face["photo_hash"])


def test_galleries_list_create_4_4_2_and_4_4_3(api: Api):
    assert api.get("/v0/galleries").json() == {"results": ["default"]}
    r = api.post("/v0/galleries/testgal")
    assert r.status_code == 201 and r.json() == {"name": "testgal"}
    assert api.get("/v0/galleries/").json() == {"results": ["default", "testgal"]}
    error_of(api.post("/v0/galleries/testgal"), 400, "BAD_PARAM")
    body = error_of(api.post("/v0/galleries/bad.name"), 400, "BAD_PARAM")
    assert body["param"] == "gallery"


def test_detect_4_4_4(api: Api):
    r = api.post("/v0/detect", files={"photo": person_photo("A")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["orientation"] == 1
    assert len(body["faces"]) == 1
    assert set(body["faces"][0]) == {"x1", "x2", "y1", "y2"}
    # Two faces side by side: both found, biggest first.
    r = api.post("/v1/detect/", files={"photo": side_by_side(person_photo("A"),
                                                             person_photo("B"))})
    assert len(r.json()["faces"]) == 2


def test_add_face_4_4_5_and_images_are_served(api: Api):
    api.post("/v0/galleries/testgal")
    face = api.add_face(person_photo("A"), meta="Sam Berry")
    check_face(face)
    assert face["meta"] == "Sam Berry" and face["galleries"] == ["default"]
    face2 = api.add_face(person_photo("A"), meta="sample", galleries="testgal")
    assert face2["galleries"] == ["default", "testgal"]
    assert face2["photo_hash"] == face["photo_hash"]  # same photo, same hash
    assert face2["id"] != face["id"]
    for key, ctype in (("photo", "image/jpeg"), ("thumbnail", "image/jpeg"),
                       ("normalized", "image/png")):
        r = requests.get(face[key], timeout=10)  # served without a token, like findface-upload
        assert r.status_code == 200 and r.headers["content-type"] == ctype, key
    assert requests.get(face["photo"], timeout=10).content == person_photo("A")


def test_identify_4_4_6(api: Api):
    stored = api.add_face(person_photo("A"), meta="Sam Berry")
    api.add_face(person_photo("B"), meta="Other")
    r = api.post("/v0/identify", files={"photo": person_photo("A")})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    (key, matches), = results.items()
    assert re.fullmatch(r"\[\d+, \d+, \d+, \d+\]", key)
    assert len(matches) == 1  # n defaults to 1
    assert set(matches[0]) == {"confidence", "face"}
    assert matches[0]["face"]["id"] == stored["id"]
    assert matches[0]["confidence"] > 0.9
    check_face(matches[0]["face"])
    # n and threshold=none: every stored face, most similar first.
    r = api.post("/v1/identify", files={"photo": person_photo("A")},
                 data={"n": "10", "threshold": "none"})
    matches = next(iter(r.json()["results"].values()))
    assert [m["face"]["meta"] for m in matches] == ["Sam Berry", "Other"]
    assert matches[0]["confidence"] >= matches[1]["confidence"]
    # strict: the other person is not returned.
    r = api.post("/v1/identify", files={"photo": person_photo("B")},
                 data={"n": 10, "threshold": "strict"})
    assert [m["face"]["meta"] for m in next(iter(r.json()["results"].values()))] == ["Other"]
    # A person not in the database: an empty list under the face's box.
    r = api.post("/v1/identify", files={"photo": person_photo("C")})
    assert list(r.json()["results"].values()) == [[]]


def test_identify_strict_shard_option(api: Api):
    stored = api.add_face(person_photo("A"))
    for strict in ("true", "false"):
        r = api.post("/v1/identify", files={"photo": person_photo("A")}, data={"strict": strict})
        assert r.status_code == 200, r.text
        assert r.headers["X-Live-Servers"] == "1/1"  # one index shard, live
        assert next(iter(r.json()["results"].values()))[0]["face"]["id"] == stored["id"]
    r = api.post("/v1/identify", files={"photo": person_photo("A")}, data={"strict": "maybe"})
    assert r.status_code == 400
    assert r.json()["code"] == "BAD_PARAM" and r.json()["param"] == "strict"


def test_identify_with_box_params_and_mf_selector_all(api: Api):
    a = api.add_face(person_photo("A"), meta="A")
    b = api.add_face(person_photo("B"), meta="B")
    both = side_by_side(person_photo("A"), person_photo("B"))
    r = api.post("/v1/identify", files={"photo": both}, data={"mf_selector": "all"})
    results = r.json()["results"]
    assert len(results) == 2
    assert sorted(m[0]["face"]["id"] for m in results.values()) == sorted([a["id"], b["id"]])
    boxes = [json.loads(k) for k in results]
    right = max(boxes, key=lambda b: b[0])
    data = dict(zip(("x1", "y1", "x2", "y2"), map(str, right), strict=True))
    r = api.post("/v1/identify", files={"photo": both}, data=data)
    (key, matches), = r.json()["results"].items()
    assert json.loads(key) == right and matches[0]["face"]["meta"] == "B"


def test_verify_4_4_7(api: Api):
    r = api.post("/v0/verify", files={"photo1": person_photo("A"), "photo2": person_photo("A")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["verified"] is True
    (res,) = body["results"]
    assert set(res) == {"bbox1", "bbox2", "confidence", "verified"}
    assert set(res["bbox1"]) == {"x1", "x2", "y1", "y2"}
    r = api.post("/v0/verify", files={"photo1": person_photo("A"), "photo2": person_photo("B")})
    assert r.json()["verified"] is False
    r = api.post("/v0/verify", files={"photo1": person_photo("A"), "photo2": person_photo("B")},
                 data={"threshold": "none"})
    assert "verified" not in r.json() and "verified" not in r.json()["results"][0]
    assert 0 <= r.json()["results"][0]["confidence"] < 0.75


def test_verify_all_faces(api: Api):
    both = side_by_side(person_photo("A"), person_photo("B"))
    r = api.post("/v1/verify", files={"photo1": both, "photo2": person_photo("B")},
                 data={"mf_selector": "all"})
    body = r.json()
    assert len(body["results"]) == 2
    assert sorted(x["verified"] for x in body["results"]) == [False, True]
    assert body["verified"] is False  # not every face of photo1 has a match


def test_faces_lists_4_4_8_and_meta(api: Api):
    api.post("/v0/galleries/testgal")
    f1 = api.add_face(person_photo("A"), meta="Sam Berry")
    f2 = api.add_face(person_photo("B"), meta="sample", galleries="testgal")
    f3 = api.add_face(person_photo("C"), meta="Sam Berry")
    body = api.get("/v0/faces").json()
    assert set(body) == {"next_page", "prev_page", "results"}
    assert [f["id"] for f in body["results"]] == [f3["id"], f2["id"], f1["id"]]
    body = api.get("/v0/faces/gallery/testgal").json()
    assert [f["id"] for f in body["results"]] == [f2["id"]]
    body = api.get("/v0/face/meta/Sam%20Berry").json()
    assert [f["id"] for f in body["results"]] == [f3["id"], f1["id"]]
    assert api.get("/v0/face/meta/sam%20berry").json()["results"] == []  # case-sensitive
    body = api.get("/v0/meta").json()
    assert {(m["meta"], m["count"]) for m in body["results"]} == {("Sam Berry", 2),
                                                                  ("sample", 1)}
    assert all(set(m) == {"meta", "count", "face"} for m in body["results"])
    # 9.1.3 custom-gallery variants
    assert [m["meta"] for m in api.get("/v1/meta/gallery/testgal").json()["results"]] == [
        "sample"]
    assert [f["id"] for f in api.get("/v1/face/gallery/testgal/meta/sample").json()[
        "results"]] == [f2["id"]]
    assert api.get("/v1/face/gallery/testgal/meta/Sam%20Berry").json()["results"] == []
    r = api.post("/v1/faces/gallery/testgal/identify", files={"photo": person_photo("A")},
                 data={"threshold": "none", "n": 5})
    assert [m["face"]["id"] for m in next(iter(r.json()["results"].values()))] == [f2["id"]]
    error_of(api.get("/v1/faces/gallery/nosuch"), 404, "NOT_FOUND")


def test_face_id_get_put_delete(api: Api):
    api.post("/v0/galleries/gall")
    api.post("/v0/galleries/nicepl")
    face = api.add_face(person_photo("A"), meta="Sam Berry")
    fid = face["id"]
    assert api.get(f"/v0/face/id/{fid}/").json() == face
    r = api.put(f"/v0/face/id/{fid}/", json={"meta": "Sam Berry #2"})
    assert r.status_code == 200 and r.json()["meta"] == "Sam Berry #2"
    r = api.put(f"/v0/face/id/{fid}", json={"galleries": {"add": ["gall", "nicepl"]}})
    assert r.json()["galleries"] == ["default", "gall", "nicepl"]
    r = api.put(f"/v0/face/id/{fid}", json={"galleries": {"del": ["gall"]}})
    assert r.json()["galleries"] == ["default", "nicepl"]
    r = api.put(f"/v0/face/id/{fid}", json={"galleries": {"set": ["gall"]}})
    assert r.json()["galleries"] == ["default", "gall"]
    error_of(api.put(f"/v0/face/id/{fid}", json={"galleries": {"del": ["default"]}}), 400,
             "BAD_PARAM")
    error_of(api.put(f"/v0/face/id/{fid}", json={"galleries": {"add": ["nosuch"]}}), 400,
             "BAD_PARAM")
    # Multipart works for PUT too (the galleries op as a JSON string).
    r = api.put(f"/v0/face/id/{fid}", data={"meta": "form", "galleries": '{"set": []}'})
    assert r.json()["meta"] == "form" and r.json()["galleries"] == ["default"]
    r = api.delete(f"/v0/face/id/{fid}/")
    assert r.status_code == 204 and r.content == b""
    error_of(api.get(f"/v0/face/id/{fid}"), 404, "NOT_FOUND")
    error_of(api.delete(f"/v0/face/id/{fid}"), 404, "NOT_FOUND")
    assert requests.get(face["thumbnail"], timeout=10).status_code == 404


def test_delete_gallery_deletes_its_faces(api: Api):
    api.post("/v1/galleries/tmp")
    keep = api.add_face(person_photo("A"))
    gone = api.add_face(person_photo("B"), galleries="tmp")
    assert api.delete("/v1/galleries/tmp").status_code == 204
    assert [f["id"] for f in api.get("/v1/faces").json()["results"]] == [keep["id"]]
    error_of(api.get(f"/v1/face/id/{gone['id']}"), 404, "NOT_FOUND")
    assert api.get("/v1/galleries").json() == {"results": ["default"]}
    error_of(api.delete("/v1/galleries/default"), 400, "BAD_PARAM")
    error_of(api.delete("/v1/galleries/nosuch"), 404, "NOT_FOUND")


def test_json_body_with_galleries_list(api: Api):
    """9.1 "Parameters Format": a JSON body; galleries as a JSON list in a form field."""
    api.post("/v1/galleries/gall")
    face = api.add_face(person_photo("A"), galleries='["gall"]', meta="x")
    assert face["galleries"] == ["default", "gall"]
    r = api.post("/v1/history/search", json={"limit": 2})
    assert r.status_code == 200 and r.json()["results"] == []


def test_users_do_not_see_each_others_data(server, api: Api):
    other = Api(server.url, server.create_token(short=True))
    face = api.add_face(person_photo("A"), meta="mine")
    assert other.get("/v1/faces").json()["results"] == []
    error_of(other.get(f"/v1/face/id/{face['id']}"), 404, "NOT_FOUND")
    r = other.post("/v1/identify", files={"photo": person_photo("A")},
                   data={"threshold": "none"})
    assert list(r.json()["results"].values()) == [[]]


def test_docs_without_token(server):
    r = requests.get(server.url + "/v1/docs", timeout=10)
    assert r.status_code == 200 and "swagger" in r.text.lower()
    spec = requests.get(server.url + "/v1/openapi.json", timeout=10).json()
    assert "/v1/face" in spec["paths"] and "/v1/camera" in spec["paths"]
    assert requests.get(server.url + "/docs", timeout=10).json()["versions"] == ["v0", "v1"]
