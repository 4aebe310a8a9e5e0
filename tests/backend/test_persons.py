"""Dynamic person creation (8.2), friend or foe (8.3) over simulated days, history filters.

The module's server runs with person_identify=True, friend_count=3, friend_interval=7 days.
"""

from __future__ import annotations

import pytest

from tests.backend.conftest import Api, error_of, person_photo
from tests.conftest import shared_file
from videodetector.backend.server import BackendServer
from videodetector.backend.settings import Settings


def post(api: Api, who: str, cam: str | None, day: int, hour: int = 12, **data) -> dict:
    if cam is not None:
        data["cam_id"] = cam
    return api.add_face(person_photo(who), timestamp=f"2024-03-{day:02d}T{hour:02d}:00:00",
                        **data)


def test_same_face_same_person_per_camera(api: Api):
    a1 = post(api, "A", "cam1", 1, meta="Jack Smith")
    a2 = post(api, "A", "cam1", 1, hour=13)
    b1 = post(api, "B", "cam1", 1)
    a_other_cam = post(api, "A", "cam2", 1)
    assert a1["person_id"] is not None
    assert a2["person_id"] == a1["person_id"]
    assert a2["meta"] == "Jack Smith"  # inherited from the reference face
    assert b1["person_id"] not in (None, a1["person_id"])
    # person_identify_global is off: another camera starts another person
    assert a_other_cam["person_id"] not in (a1["person_id"], b1["person_id"])
    persons = api.get("/v0/persons").json()["results"]
    assert {p["id"] for p in persons} == {a1["person_id"], b1["person_id"],
                                          a_other_cam["person_id"]}
    assert {p["id"]: p["meta"] for p in persons}[a1["person_id"]] == "Jack Smith"
    person = api.get(f"/v0/person/id/{a1['person_id']}").json()
    assert person["id"] == a1["person_id"] and person["faces"] == [a1["id"], a2["id"]]
    assert person["cam_ids"] == ["cam1"]


def test_friend_after_friend_count_days_on_one_camera(api: Api):
    # friend_count=3 distinct days within 7 days, same camera
    flags = [post(api, "A", "door", d)["friend"] for d in (1, 1, 2)]
    assert flags == [False, False, False]  # two distinct days so far
    third = post(api, "A", "door", 4)
    assert third["friend"] is True
    # the same person on another camera is not a friend there (and is another person)
    assert post(api, "A", "yard", 4)["friend"] is False
    # days 1, 2 and 4 fall out of the 7-day window by day 20: not a friend any more
    assert post(api, "A", "door", 20)["friend"] is False
    # a stranger is never a friend
    assert post(api, "B", "door", 5)["friend"] is False
    friend_face = api.get(f"/v1/face/id/{third['id']}").json()
    assert friend_face["friend"] is True
    history = api.post("/v1/history/search", json={"friend": True}).json()["results"]
    assert [e["face_id"] for e in history] == [third["id"]]


def test_history_search_filters_and_shape(api: Api):
    a = [post(api, "A", "c1", d) for d in (1, 2, 3)]
    b = post(api, "B", "c2", 2)
    no_cam = post(api, "C", None, 2)  # not an event
    pid = a[0]["person_id"]
    r = api.post("/v0/history/search", json={"person_id": pid})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [e["id"] for e in results] == [x["id"] for x in reversed(a)]
    event = results[0]
    for key in ("friend", "meta", "photo_hash", "cam_id", "person_id", "timestamp", "photo",
                "id", "x1", "y1", "x2", "y2", "face_id", "screenshot"):
        assert key in event, key
    assert event["cam_id"] == "c1" and event["timestamp"] == "2024-03-03T12:00:00.000000"
    all_ids = {e["id"] for e in api.post("/v0/history/search", json={}).json()["results"]}
    assert all_ids == {x["id"] for x in a} | {b["id"]} and no_cam["id"] not in all_ids
    by_cam = api.post("/v0/history/search", json={"cam_ids": ["c2"]}).json()["results"]
    assert [e["id"] for e in by_cam] == [b["id"]]
    by_cam = api.post("/v0/history/search", data={"cam_ids": "c2,zz"}).json()["results"]
    assert [e["id"] for e in by_cam] == [b["id"]]
    window = api.post("/v0/history/search", json={
        "start": "2024-03-02T00:00:00", "end": "2024-03-02T23:59:59"}).json()["results"]
    assert {e["id"] for e in window} == {a[1]["id"], b["id"]}
    # form-encoded works too
    r = api.post("/v1/history/search", data={"person_id": str(pid), "cam_ids": '["c1"]',
                                              "start": "2024-03-02T00:00:00"})
    assert [e["id"] for e in r.json()["results"]] == [a[2]["id"], a[1]["id"]]
    # pagination with limit: next_page carries max_id; the filters are re-sent
    r = api.post("/v0/history/search", json={"limit": 2})
    page1 = r.json()
    assert len(page1["results"]) == 2 and page1["next_page"].startswith(
        "/v0/history/search?max_id=")
    page2 = api.post(page1["next_page"], json={"limit": 2}).json()
    ids = [e["id"] for e in page1["results"] + page2["results"]]
    assert len(ids) == 4 and len(set(ids)) == 4 and page2["next_page"] is None
    body = error_of(api.post("/v0/history/search", json={"start": "soon"}), 400, "BAD_PARAM")
    assert body["param"] == "start"


def test_person_history(api: Api):
    a = [post(api, "A", cam, d) for cam, d in (("c1", 1), ("c1", 2))]
    pid = a[0]["person_id"]
    results = api.get(f"/v0/person/history/id/{pid}").json()["results"]
    assert [e["face_id"] for e in results] == [a[1]["id"], a[0]["id"]]
    assert all(e["person_id"] == pid and e["screenshot"] for e in results)
    r = api.get(f"/v0/person/history/id/{pid}", params={"start": "2024-03-02T00:00:00"})
    assert [e["face_id"] for e in r.json()["results"]] == [a[1]["id"]]
    error_of(api.get("/v0/person/history/id/999999"), 404, "NOT_FOUND")


def test_put_face_person_id(api: Api):
    a = post(api, "A", "c1", 1)
    b = post(api, "B", "c1", 1)
    r = api.put(f"/v0/face/id/{b['id']}", json={"person_id": str(a["person_id"])})
    assert r.status_code == 200 and r.json()["person_id"] == a["person_id"]
    # the moved face now attracts new faces of B to A's person
    assert post(api, "B", "c1", 2)["person_id"] == a["person_id"]
    body = error_of(api.put(f"/v0/face/id/{b['id']}", json={"person_id": "x"}), 400,
                    "BAD_PARAM")
    assert body["param"] == "person_id"


def test_person_identify_off_and_global(db_url, tmp_path):
    with BackendServer(Settings(data_dir=tmp_path / "off", db=db_url, log_level="warning")) as srv:
        api = Api(srv.url, srv.create_token())
        face = post(api, "A", "c1", 1)
        assert face["person_id"] is None and face["friend"] is False
    settings = Settings(data_dir=tmp_path / "global", db=db_url, person_identify=True,
                        person_identify_global=True, log_level="warning")
    with BackendServer(settings) as srv:
        api = Api(srv.url, srv.create_token())
        first, second = post(api, "A", "c1", 1), post(api, "A", "c2", 1)
        assert second["person_id"] == first["person_id"]
        assert post(api, "B", "c2", 1)["person_id"] != first["person_id"]


@pytest.mark.media
def test_person_creation_with_different_photos_of_one_subject(api: Api):
    """MEDS-II mugshots: three photos of S029 are one person, S001 is another."""
    def add(name: str) -> dict:
        photo = shared_file(f"stills_meds/{name}.jpg").read_bytes()
        return api.add_face(photo, cam_id="c1", meta=name[:4])

    s029 = [add(f"S029-0{i}-t10_01") for i in (1, 2, 3)]
    other = add("S001-01-t10_01")
    assert len({f["person_id"] for f in s029}) == 1
    assert other["person_id"] != s029[0]["person_id"]
    photo = shared_file("stills_meds/S029-02-t10_01.jpg").read_bytes()
    r = api.post("/v1/identify", files={"photo": photo}, data={"n": 4, "threshold": "none"})
    matches = next(iter(r.json()["results"].values()))
    assert [m["face"]["meta"] for m in matches[:3]] == ["S029"] * 3
