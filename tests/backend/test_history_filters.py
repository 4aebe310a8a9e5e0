"""History filters computed by the server (issue 8, Events): camera, time range, person,
friend / foe, matched / unmatched, watch-list match, and the alert count of a filter.

Real backend over HTTP (real models, real SQLite). One set of events is posted once; random
filter combinations (hypothesis) are then asked of ``/v1/history/search`` (paged) and
``/v1/history/counts`` and compared with a reference filter written in Python over the
unfiltered history and the watch-list matches of ``/v1/watchlists/matches``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.backend.conftest import Api, error_of, person_photo
from tests.backend.test_idempotency import detector_post

# who, camera, day of March 2024 (friend_count=3 days in 7: A's 3rd and 4th day on cam 0)
EVENTS = [("A", 0, 1), ("B", 0, 1), ("A", 1, 1), ("A", 0, 2), ("B", 0, 2), ("D", 2, 2),
          ("A", 1, 2), ("A", 0, 3), ("C", 1, 3), ("A", 0, 4), ("D", 2, 4), ("C", 2, 5)]


class World:
    """The posted events and what the reference filter needs to know about them."""

    def __init__(self, api: Api, events: list[dict[str, Any]], cams: list[str],
                 matched: dict[int, Any], unknown_cams: set[str]) -> None:
        self.api = api
        self.events = events
        self.cams = cams
        self.matches = matched
        self.unknown_cams = unknown_cams


@pytest.fixture(scope="module")
def world(server: Any) -> World:
    api = Api(server.url, server.create_token())
    assert api.post("/v1/galleries/wanted").status_code == 201
    api.add_face(person_photo("A"), galleries="wanted", meta="suspect A")
    assert api.put("/v1/galleries/wanted/watchlist", json={"threshold": "strict"}).ok
    cams = [api.post("/v1/camera", json={"meta": f"Cam {i}"}).json()["id"] for i in range(3)]
    assert api.put(f"/v1/watchlists/cameras/{cams[2]}", json={"unknown": True}).ok
    faces = {who: detector_post(person_photo(who)) for who in "ABCD"}
    events = []
    for who, cam, day in EVENTS:
        bbox, png = faces[who]
        r = api.post("/v1/face", files={"face0": ("n.png", png, "image/png")},
                     data={"cam_id": cams[cam], "timestamp": f"2024-03-{day:02d}T12:00:00",
                           "bbox": f"[{bbox}]"})
        assert r.status_code == 200, r.text
        events.append(r.json()["results"][0])
    # two unknown persons: the operator cleared their person
    for ev in (events[5], events[11]):
        r = api.put(f"/v1/face/id/{ev['id']}", json={"person_id": ""})
        assert r.status_code == 200, r.text
    everything = api.post("/v1/history/search", json={}).json()["results"]
    ids = [e["id"] for e in everything]
    found = api.post("/v1/watchlists/matches", json={"ids": ids}).json()["results"]
    matched = {m["id"]: m["match"] for m in found}
    assert sum(m is not None for m in matched.values()) >= 3  # A's events
    assert any(e["person_id"] is None for e in everything)
    assert any(e["friend"] for e in everything)
    return World(api, everything, cams, matched, {cams[2]})


def event_time(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).replace(tzinfo=UTC).timestamp()


def passes(w: World, e: dict[str, Any], f: dict[str, Any]) -> bool:
    """The reference filter."""
    checks = [
        f.get("person_id") in (None, e["person_id"]),
        f.get("cam_ids") is None or e["cam_id"] in f["cam_ids"],
        f.get("start") is None or event_time(e) >= f["start"],
        f.get("end") is None or event_time(e) <= f["end"],
        f.get("friend") is None or e["friend"] == f["friend"],
        f.get("matched") is None or (e["person_id"] is not None) == f["matched"],
        f.get("watchlist") is None or (w.matches[e["id"]] is not None) == f["watchlist"],
    ]
    return all(checks)


def page_through(api: Api, body: dict[str, Any]) -> list[int]:
    r = api.post("/v1/history/search", json=body)
    assert r.status_code == 200, r.text
    page = r.json()
    ids = [e["id"] for e in page["results"]]
    while page["next_page"]:
        page = api.get(page["next_page"]).json()
        ids += [e["id"] for e in page["results"]]
        assert len(ids) <= len(EVENTS)
    return ids


DAY = 86400.0
MARCH_1 = datetime(2024, 3, 1, tzinfo=UTC).timestamp()


@st.composite
def filters(draw: st.DrawFn) -> dict[str, Any]:
    f: dict[str, Any] = {}
    flags = st.sampled_from([None, True, False])
    for name in ("friend", "matched", "watchlist"):
        value = draw(flags)
        if value is not None:
            f[name] = value
    if draw(st.booleans()):
        f["cam_ids"] = draw(st.lists(st.integers(0, 2), max_size=3, unique=True))
    if draw(st.booleans()):
        f["start"] = MARCH_1 + draw(st.integers(0, 5)) * DAY
    if draw(st.booleans()):
        f["end"] = MARCH_1 + draw(st.integers(0, 5)) * DAY + 12 * 3600
    if draw(st.integers(0, 3)) == 0:
        f["person_index"] = draw(st.integers(0, len(EVENTS) - 1))
    return f


def concrete(w: World, f: dict[str, Any]) -> dict[str, Any]:
    """Camera indexes -> ids, an event index -> its person id."""
    out = {k: v for k, v in f.items() if k not in ("cam_ids", "person_index")}
    if "cam_ids" in f:
        out["cam_ids"] = [w.cams[i] for i in f["cam_ids"]]
    if "person_index" in f:
        person = w.events[f["person_index"]]["person_id"]
        out["person_id"] = person if person is not None else 999999
    return out


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(f=filters(), limit=st.sampled_from([0, 2, 5]))
def test_every_filter_combination_matches_the_reference(world: World, f: dict[str, Any],
                                                        limit: int) -> None:
    body = concrete(world, f)
    want = [e["id"] for e in world.events if passes(world, e, body)]
    assert page_through(world.api, {**body, "limit": limit}) == want, body
    counts = world.api.post("/v1/history/counts", json=body)
    assert counts.status_code == 200, counts.text
    chosen = [e for e in world.events if e["id"] in set(want)]
    watch = sum(world.matches[e["id"]] is not None for e in chosen)
    unknown = sum(world.matches[e["id"]] is None and e["cam_id"] in world.unknown_cams
                  for e in chosen)
    assert counts.json() == {"events": len(want), "alerts": watch + unknown,
                             "watchlist": watch, "unknown": unknown}, body


def test_each_filter_alone(world: World) -> None:
    """Every filter on its own selects a proper, non-empty part of the history."""
    a = world.events[-1]  # the first event: A on cam 0, March 1
    for body in ({"matched": True}, {"matched": False}, {"watchlist": True},
                 {"watchlist": False}, {"friend": True}, {"friend": False},
                 {"cam_ids": [world.cams[2]]}, {"person_id": a["person_id"]},
                 {"start": MARCH_1 + 3 * DAY}, {"end": MARCH_1 + DAY}):
        want = [e["id"] for e in world.events if passes(world, e, body)]
        assert 0 < len(want) < len(world.events), body
        assert page_through(world.api, {**body, "limit": 3}) == want, body


def test_watch_list_filter_follows_list_changes(server: Any) -> None:
    """The stored matches start over when a watch list's faces or settings change."""
    api = Api(server.url, server.create_token())
    api.post("/v1/galleries/wanted")
    cam = api.post("/v1/camera", json={"meta": "Gate"}).json()["id"]
    bbox, png = detector_post(person_photo("B"))
    ev = api.post("/v1/face", files={"face0": ("n.png", png, "image/png")},
                  data={"cam_id": cam, "bbox": f"[{bbox}]"}).json()["results"][0]["id"]
    api.put("/v1/galleries/wanted/watchlist", json={"threshold": "strict"})
    assert page_through(api, {"watchlist": True}) == []
    assert api.post("/v1/history/counts", json={}).json()["alerts"] == 0
    api.add_face(person_photo("B"), galleries="wanted", meta="B")  # B joins the list
    assert page_through(api, {"watchlist": True}) == [ev]
    assert api.post("/v1/history/counts", json={}).json()["watchlist"] == 1
    api.put("/v1/galleries/wanted/watchlist", json={"watchlist": False})
    assert page_through(api, {"watchlist": True}) == []
    assert page_through(api, {"watchlist": False}) == [ev]


def test_bad_filter_values_are_rejected(world: World) -> None:
    for body, param in (({"matched": "maybe"}, "matched"),
                        ({"watchlist": "sometimes"}, "watchlist"),
                        ({"start": "yesterday"}, "start"), ({"cam_ids": [True]}, "cam_ids")):
        for path in ("/v1/history/search", "/v1/history/counts"):
            assert error_of(world.api.post(path, json=body), 400, "BAD_PARAM")["param"] == param
