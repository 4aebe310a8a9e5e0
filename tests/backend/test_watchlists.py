"""Watch lists: gallery settings (flag, colour, threshold preset) and the best watch-list
match of camera events, computed when read (real backend, real models, real SQLite)."""

from __future__ import annotations

from typing import Any

from tests.backend.conftest import Api, error_of, person_photo


def matches(api: Api, ids: list[int]) -> dict[int, Any]:
    r = api.post("/v1/watchlists/matches", json={"ids": ids})
    assert r.status_code == 200, r.text
    return {m["id"]: m["match"] for m in r.json()["results"]}


def test_events_match_watch_list_faces_at_the_lists_threshold(api: Api) -> None:
    assert api.post("/v1/galleries/wanted").status_code == 201
    assert api.post("/v1/galleries/staff").status_code == 201
    wanted = api.add_face(person_photo("A"), galleries="wanted", meta="suspect A")
    api.add_face(person_photo("B"), galleries="staff", meta="employee B")
    cam = api.post("/v1/camera", json={"meta": "Gate"}).json()["id"]
    ev_a = api.add_face(person_photo("A"), cam_id=cam)["id"]
    ev_b = api.add_face(person_photo("B"), cam_id=cam)["id"]
    ev_c = api.add_face(person_photo("C"), cam_id=cam)["id"]
    # no watch list yet: nothing matches
    assert matches(api, [ev_a, ev_b, ev_c]) == {ev_a: None, ev_b: None, ev_c: None}
    assert api.get("/v1/galleries/wanted/watchlist").json()["watchlist"] is False

    r = api.put("/v1/galleries/wanted/watchlist",
                json={"watchlist": True, "color": "#AA0000", "threshold": "strict"})
    assert r.status_code == 200, r.text
    assert r.json() == {"gallery": "wanted", "watchlist": True, "color": "#aa0000",
                        "threshold": "strict", "min_confidence": 0.7834}
    found = matches(api, [ev_a, ev_b, ev_c, 999999])
    assert found[ev_b] is None and found[ev_c] is None and found[999999] is None
    m = found[ev_a]
    assert m["gallery"] == "wanted" and m["face_id"] == wanted["id"]
    assert m["meta"] == "suspect A" and m["color"] == "#aa0000"
    assert m["confidence"] >= 0.7834
    # a second list: B matches it; A still matches wanted
    api.put("/v1/galleries/staff/watchlist", json={"color": "#0000ff"})
    found = matches(api, [ev_a, ev_b, ev_c])
    assert found[ev_a]["gallery"] == "wanted" and found[ev_b]["gallery"] == "staff"
    assert found[ev_b]["threshold"] == "medium" and found[ev_c] is None
    lists = api.get("/v1/watchlists").json()["results"]
    assert [(w["gallery"], w["watchlist"]) for w in lists] == [("staff", True), ("wanted", True)]

    # switched off: no more matches from it; deleted gallery: its settings are gone
    api.put("/v1/galleries/staff/watchlist", json={"watchlist": False})
    assert matches(api, [ev_b])[ev_b] is None
    assert api.delete("/v1/galleries/wanted").status_code == 204
    assert matches(api, [ev_a])[ev_a] is None
    assert api.post("/v1/galleries/wanted").status_code == 201
    assert api.get("/v1/galleries/wanted/watchlist").json()["watchlist"] is False


def test_watch_list_settings_are_checked_and_per_token(api: Api, server: Any) -> None:
    assert api.post("/v1/galleries/vip").status_code == 201
    for body, param in (({"color": "red"}, "color"), ({"threshold": "0.5"}, "threshold"),
                        ({"colour": "#000000"}, "colour")):
        error_of(api.put("/v1/galleries/vip/watchlist", json=body), 400, "BAD_PARAM")
        assert api.put("/v1/galleries/vip/watchlist", json=body).json()["param"] == param
    error_of(api.put("/v1/galleries/default/watchlist", json={}), 400, "BAD_PARAM")
    error_of(api.put("/v1/galleries/nope/watchlist", json={}), 404, "NOT_FOUND")
    for ids in ("1", [True], ["1"], list(range(1001))):
        error_of(api.post("/v1/watchlists/matches", json={"ids": ids}), 400, "BAD_PARAM")
    assert api.put("/v1/galleries/vip/watchlist", json={"threshold": "low"}).status_code == 200
    other = Api(server.url, server.create_token())
    assert other.get("/v1/watchlists").json()["results"] == []
    error_of(other.get("/v1/galleries/vip/watchlist"), 404, "NOT_FOUND")


def test_unknown_face_alerts_per_camera(api: Api, server: Any) -> None:
    assert api.post("/v1/galleries/wanted").status_code == 201
    api.add_face(person_photo("A"), galleries="wanted")
    api.put("/v1/galleries/wanted/watchlist", json={"threshold": "strict"})
    gate = api.post("/v1/camera", json={"meta": "Gate"}).json()["id"]
    door = api.post("/v1/camera", json={"meta": "Door"}).json()["id"]
    a_gate = api.add_face(person_photo("A"), cam_id=gate)["id"]
    b_gate = api.add_face(person_photo("B"), cam_id=gate)["id"]
    b_door = api.add_face(person_photo("B"), cam_id=door)["id"]

    def alerts() -> dict[int, Any]:
        r = api.post("/v1/watchlists/matches", json={"ids": [a_gate, b_gate, b_door]})
        return {m["id"]: m["alert"] for m in r.json()["results"]}

    assert alerts() == {a_gate: "watchlist", b_gate: None, b_door: None}
    r = api.put(f"/v1/watchlists/cameras/{gate}", json={"unknown": True})
    assert r.json() == {"cam_id": gate, "unknown": True}
    assert api.get("/v1/watchlists/cameras").json()["results"] == [gate]
    assert alerts() == {a_gate: "watchlist", b_gate: "unknown", b_door: None}
    api.put(f"/v1/watchlists/cameras/{gate}", json={"unknown": False})
    assert alerts() == {a_gate: "watchlist", b_gate: None, b_door: None}
    other = Api(server.url, server.create_token())
    error_of(other.put(f"/v1/watchlists/cameras/{gate}", json={"unknown": True}), 404,
             "NOT_FOUND")
    error_of(api.put(f"/v1/watchlists/cameras/{gate}", json={"on": True}), 400, "BAD_PARAM")
