"""Camera methods (9.1.4) and the per-detector list fkvideo_detector polls (5.1.4, 5.2.1)."""

from __future__ import annotations

import re

import pytest

from tests.backend.conftest import Api, error_of

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def test_create_as_in_5_2_1_and_9_1_4(api: Api):
    # 5.2.1: curl -F detector=detec1 -F url=... -F meta=test
    r = api.post("/v1/camera", data={"detector": "detec1", "meta": "test",
                                     "url": "rtsp://user:pass@192.168.1.1:554/Streaming/1"})
    assert r.status_code == 201, r.text
    cam = r.json()
    assert UUID_RE.match(cam["id"])
    assert {k: cam[k] for k in ("detector", "meta", "url")} == {
        "detector": "detec1", "meta": "test", "url": "rtsp://user:pass@192.168.1.1:554/Streaming/1"}
    assert cam["enabled"] is True and cam["roi"] is None and cam["rot"] is None
    # 9.1.4: JSON body
    r = api.post("/v1/camera/", json={"meta": "meta", "enabled": True,
                                      "url": "http://test.com:1234/stream.flv",
                                      "detector": "detec1"})
    assert r.status_code == 201
    assert r.json()["url"] == "http://test.com:1234/stream.flv"


def test_list_get_put_delete(api: Api):
    c1 = api.post("/v1/camera", json={"detector": "detec1", "url": "rtsp://a"}).json()
    c2 = api.post("/v0/camera", json={"detector": "detec2", "url": "rtsp://b",
                                      "enabled": False}).json()
    c3 = api.post("/v1/camera", json={"detector": "detec1", "url": "rtsp://c",
                                      "roi": "123x122+159+220", "rot": [100, 100, 800, 800]}
                  ).json()
    listed = api.get("/v1/camera").json()
    assert isinstance(listed, list) and [c["id"] for c in listed] == [c1["id"], c2["id"],
                                                                       c3["id"]]
    mine = api.get("/v1/camera", params={"detector": "detec1"}).json()
    assert [c["id"] for c in mine] == [c1["id"], c3["id"]]
    assert mine[1]["roi"] == "123x122+159+220" and mine[1]["rot"] == [100, 100, 800, 800]
    assert api.get("/v0/camera?detector=detec2").json()[0]["enabled"] is False
    assert api.get("/v1/camera?detector=nobody").json() == []
    assert api.get(f"/v1/camera/{c1['id']}").json() == c1
    r = api.put(f"/v1/camera/{c1['id']}", json={"meta": "newinfo",
                                               "url": "http://zzzz.com:1234/stream.flv"})
    assert r.status_code == 200
    assert r.json()["meta"] == "newinfo" and r.json()["url"] == "http://zzzz.com:1234/stream.flv"
    assert r.json()["detector"] == "detec1"  # untouched
    r = api.put(f"/v1/camera/{c1['id']}", json={"rot": [120, 120, 35, 50],
                                               "roi": [100, 100, 40, 50], "enabled": "false"})
    assert r.json()["rot"] == [120, 120, 35, 50] and r.json()["enabled"] is False
    r = api.put(f"/v1/camera/{c1['id']}", data={"roi": ""})  # clear
    assert r.json()["roi"] is None
    assert api.delete(f"/v1/camera/{c1['id']}").status_code == 204
    error_of(api.get(f"/v1/camera/{c1['id']}"), 404, "NOT_FOUND")
    error_of(api.delete(f"/v1/camera/{c1['id']}"), 404, "NOT_FOUND")
    assert [c["id"] for c in api.get("/v1/camera").json()] == [c2["id"], c3["id"]]


@pytest.mark.parametrize("field,value", [
    ("roi", "abc"), ("roi", "0x10+1+1"), ("rot", "10x10-1+1"), ("rot", [1, 2, 3]),
    ("roi", [10, 10, -1, 0]), ("enabled", "maybe"),
])
def test_bad_geometry_is_bad_param(api: Api, field, value):
    body = error_of(api.post("/v1/camera", json={"detector": "d", field: value}), 400,
                    "BAD_PARAM")
    assert body["param"] == field
    assert api.get("/v1/camera").json() == []


def test_cameras_belong_to_their_token(server, api: Api):
    cam = api.post("/v1/camera", json={"detector": "detec1"}).json()
    other = Api(server.url, server.create_token())
    assert other.get("/v1/camera?detector=detec1").json() == []
    error_of(other.get(f"/v1/camera/{cam['id']}"), 404, "NOT_FOUND")
    error_of(other.delete(f"/v1/camera/{cam['id']}"), 404, "NOT_FOUND")
