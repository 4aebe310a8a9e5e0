"""``GET /v1/persons`` gives each person what a grid shows (best face, first / last seen,
sightings, cameras, friend or foe) in one query per page, documented in OpenAPI; and an
operator's "not this person" keeps similar faces from rejoining the person.

The module's server runs with person_identify=True, friend_count=3, friend_interval=7 days.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests

from tests.backend.conftest import Api, person_photo
from videodetector.backend import person_store
from videodetector.backend.server import BackendServer
from videodetector.backend.settings import Settings

SUMMARY_KEYS = {"id", "meta", "face_count", "timestamp", "best_face", "sightings",
                "first_seen", "last_seen", "cam_ids", "friend"}


def post(api: Api, who: str, cam: str | None, when: str, score: float | None = None,
         **data: object) -> dict:
    if cam is not None:
        data["cam_id"] = cam
    if score is not None:
        data["detectorParams"] = json.dumps({"score": score})
    return api.add_face(person_photo(who), timestamp=when, **data)


def persons(api: Api, **params: object) -> dict[int, dict]:
    r = api.get("/v1/persons", params=params)
    assert r.status_code == 200, r.text
    return {p["id"]: p for p in r.json()["results"]}


def test_each_listed_person_carries_its_summary(api: Api):
    # out of order in time: first/last seen follow the capture time, not the face id
    a_mid = post(api, "A", "door", "2024-03-02T12:00:00", score=-0.5)  # the best face
    pid = a_mid["person_id"]
    a_early = post(api, "A", "door", "2024-03-01T08:00:00", score=-6.0)
    a_late = post(api, "A", "door", "2024-03-04T09:30:00", score=-6.0)  # 3rd day: friend
    assert a_early["person_id"] == a_late["person_id"] == pid and a_late["friend"] is True
    uploaded = post(api, "A", None, "2024-02-01T00:00:00", score=-6.0)  # a face, no sighting
    assert api.put(f"/v1/face/id/{uploaded['id']}", json={"person_id": pid}).status_code == 200
    b = post(api, "B", "yard", "2024-03-03T10:00:00")
    b2 = post(api, "B", "yard", "2024-03-03T10:05:00")
    assert b2["person_id"] == b["person_id"] != pid

    listed = persons(api)
    a, bee = listed[pid], listed[b["person_id"]]
    assert set(a) == SUMMARY_KEYS
    assert a["face_count"] == 4 and a["sightings"] == 3
    assert a["first_seen"] == "2024-03-01T08:00:00.000000"
    assert a["last_seen"] == "2024-03-04T09:30:00.000000"
    assert a["cam_ids"] == ["door"] and bee["cam_ids"] == ["yard"]
    assert a["friend"] is False  # as of the newest face (the uploaded one)
    assert bee["friend"] is False and bee["sightings"] == bee["face_count"] == 2
    best = api.get(f"/v1/face/id/{a_mid['id']}").json()
    assert a["best_face"] == {"id": a_mid["id"], "thumbnail": best["thumbnail"],
                              "normalized": best["normalized"]}
    assert requests.get(a["best_face"]["normalized"], timeout=10).status_code == 200
    # the same numbers as the person itself, which also has them per camera
    person = api.get(f"/v1/person/id/{pid}").json()
    assert {k: person[k] for k in SUMMARY_KEYS} == a
    assert person["representative_face"] == a_mid["id"]
    assert person["cameras"] == [{"cam_id": "door", "sightings": 3,
                                  "first_seen": "2024-03-01T08:00:00.000000",
                                  "last_seen": "2024-03-04T09:30:00.000000"}]
    # the friend flag follows the newest face
    api.delete(f"/v1/face/id/{uploaded['id']}")
    assert persons(api)[pid]["friend"] is True


def test_a_person_without_faces_and_paging(api: Api):
    a = post(api, "A", "door", "2024-03-01T08:00:00", meta="Ann")
    c = post(api, "C", "door", "2024-03-01T09:00:00")
    # the only face moves to a new person: Ann's person is left without faces (named: kept)
    moved = api.put(f"/v1/face/id/{a['id']}", json={"person_id": "new"}).json()
    empty = persons(api)[a["person_id"]]
    assert empty == {"id": a["person_id"], "meta": "Ann", "face_count": 0,
                     "timestamp": empty["timestamp"], "best_face": None, "sightings": 0,
                     "first_seen": None, "last_seen": None, "cam_ids": [], "friend": False}
    # one per page: each page's person has its own summary, pages cover all persons
    seen: list[dict] = []
    url: str | None = "/v1/persons?limit=1"
    while url:
        page = api.get(url).json()
        seen += page["results"]
        url = page["next_page"]
    assert [p["id"] for p in seen] == sorted(
        [a["person_id"], c["person_id"], moved["person_id"]], reverse=True)
    assert next(p for p in seen if p["id"] == c["person_id"])["best_face"]["id"] == c["id"]


@contextmanager
def statements(server: BackendServer) -> Iterator[list[str]]:
    """The SQL statements the backend's connection runs meanwhile."""
    assert server.backend is not None
    conn = server.backend.db.conn
    seen: list[str] = []
    lock = threading.Lock()

    def trace(sql: str) -> None:
        with lock:
            seen.append(sql)

    conn.set_trace_callback(trace)
    try:
        yield seen
    finally:
        conn.set_trace_callback(None)


@pytest.mark.sqlite_only("counts the statements with sqlite3's trace callback")
def test_a_page_of_2_or_of_12_persons_costs_the_same_queries(server: BackendServer, api: Api):
    who = ["A", "B", "C", "D"]
    for i in range(13):  # 13 persons: one camera each keeps the same photo apart
        post(api, who[i % 4], f"cam{i}", f"2024-03-01T{8 + i:02d}:00:00")

    def count(limit: int) -> tuple[int, int]:
        with statements(server) as seen:
            r = api.get("/v1/persons", params={"limit": limit})
        assert r.status_code == 200 and len(r.json()["results"]) == limit
        assert all(p["best_face"] for p in r.json()["results"])
        # (auth and session statements come and go with caches: only these are counted)
        return (len([s for s in seen if "faces" in s]),
                len([s for s in seen if "faces" in s or "persons" in s]))

    few, many = count(2), count(12)
    assert few == many and many[0] == 1, (few, many)


def test_summary_is_documented_in_openapi(server: BackendServer):
    spec = requests.get(server.url + "/v1/openapi.json", timeout=10).json()
    answer = spec["paths"]["/v1/persons"]["get"]["responses"]["200"]["content"]
    ref = answer["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    page = spec["components"]["schemas"][ref]
    item = page["properties"]["results"]["items"]["$ref"].rsplit("/", 1)[-1]
    props = spec["components"]["schemas"][item]["properties"]
    assert SUMMARY_KEYS <= set(props)
    assert "capture time" in props["first_seen"]["description"]


@pytest.fixture(scope="module")
def loose(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendServer]:
    """A server whose person threshold is so low that two different people are joined."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("loose"), person_identify=True,
                        person_identify_threshold=0.0, person_merge=False,
                        log_level="warning")
    with BackendServer(settings) as srv:
        yield srv


def test_not_this_person_keeps_the_rejected_face_s_look_alikes_away(loose: BackendServer):
    api = Api(loose.url, loose.create_token())
    a = post(api, "A", "door", "2024-03-01T08:00:00")
    b = post(api, "B", "door", "2024-03-01T08:01:00")
    pid = a["person_id"]
    assert b["person_id"] == pid  # the loose threshold joined B to A's person
    r = api.post(f"/v1/person/id/{pid}/not_this_person", json={"face_ids": [b["id"]]})
    assert r.status_code == 200 and r.json()["faces"] == [a["id"]], r.text
    # B again (no track to go by): closer to the rejected face than to the person
    again = post(api, "B", "door", "2024-03-01T08:02:00")
    assert again["person_id"] not in (None, pid)
    # A is still A
    assert post(api, "A", "door", "2024-03-01T08:03:00")["person_id"] == pid
    # and A's person is never merged with a person that holds the rejected face
    assert loose.backend is not None
    api.put(f"/v1/face/id/{b['id']}", json={"person_id": again["person_id"]})
    with loose.backend.db.lock:
        conn = loose.backend.db.conn
        user = conn.execute("SELECT user_id FROM faces WHERE id = ?", (a["id"],)).fetchone()[0]
        assert person_store.holds_rejected_face(conn, user, pid, again["person_id"])
        assert person_store.holds_rejected_face(conn, user, again["person_id"], pid)
        assert not person_store.holds_rejected_face(conn, user, pid, pid + 1000)


def test_moving_a_rejected_face_back_lifts_the_rejection(loose: BackendServer):
    """The console's "undo" of "not this person" puts the face back (PUT /face/id): then
    it and its look-alikes belong to the person again."""
    api = Api(loose.url, loose.create_token())
    a = post(api, "A", "door", "2024-03-01T08:00:00")
    b = post(api, "B", "door", "2024-03-01T08:01:00")
    pid = a["person_id"]
    api.post(f"/v1/person/id/{pid}/not_this_person", json={"face_ids": [b["id"]]})
    r = api.put(f"/v1/face/id/{b['id']}", json={"person_id": pid})
    assert r.status_code == 200 and r.json()["person_id"] == pid
    assert post(api, "B", "door", "2024-03-01T08:02:00")["person_id"] == pid
    kinds = [e["kind"] for e in api.get(f"/v1/person/id/{pid}/events").json()["results"]]
    assert kinds == ["not_this_person"]
