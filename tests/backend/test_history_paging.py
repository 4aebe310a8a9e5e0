"""/history/search paging keeps the search's filters (issue 7, item 12a).

The filters of a POST body used to be dropped from ``next_page``: after a ``person_id`` query,
the next page held other persons' events. Each filter is paged through here, following the
links the three ways a client may (GET, POST without a body, POST with the first body again),
forwards and back; no page may hold an event outside the filter and together the pages hold
exactly the unpaged result.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.backend.conftest import Api, person_photo
from tests.backend.test_idempotency import detector_post

# who, camera, day of March 2024; person_identify is on (one person per face and camera),
# friend_count=3 days in 7: A's third and fourth day on c1 are friend events.
EVENTS = [("A", "c1", 1), ("B", "c1", 1), ("A", "c2", 1), ("A", "c1", 2), ("B", "c1", 2),
          ("D", "c3", 2), ("A", "c2", 2), ("A", "c1", 3), ("C", "c2", 3), ("A", "c1", 4)]


@pytest.fixture
def events(api: Api) -> list[dict[str, Any]]:
    faces = {who: detector_post(person_photo(who)) for who in "ABCD"}
    out = []
    for who, cam, day in EVENTS:
        bbox, png = faces[who]
        r = api.post("/v1/face", files={"face0": ("n.png", png, "image/png")},
                     data={"cam_id": cam, "timestamp": f"2024-03-{day:02d}T12:00:00",
                           "bbox": f"[{bbox}]"})
        assert r.status_code == 200, r.text
        out.append(r.json()["results"][0])
    return out


def event_time(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).replace(tzinfo=UTC).timestamp()


def matches(event: dict[str, Any], f: dict[str, Any]) -> bool:
    cams = f.get("cam_ids")
    if isinstance(cams, str):
        cams = cams.split(",")
    start, end = (f.get(k) for k in ("start", "end"))
    return ((f.get("person_id") in (None, event["person_id"]))
            and (cams is None or event["cam_id"] in cams)
            and (start is None or event_time(event) >= _secs(start))
            and (end is None or event_time(event) <= _secs(end))
            and (f.get("friend") is None or event["friend"] == f["friend"]))


def _secs(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()


def walk(api: Api, path: str, body: dict[str, Any], form: bool, follow: str
         ) -> tuple[list[list[int]], str | None]:
    """Page through a search; returns the pages' event ids and the last page's prev_page."""
    send = {"data": body} if form else {"json": body}
    page = api.post(path, **send).json()
    pages = [page]
    while page["next_page"]:
        url = page["next_page"]
        if follow == "get":
            r = api.get(url)
        elif follow == "post-empty":
            r = api.post(url)
        else:  # the client posts the first request's body again to the link
            r = api.post(url, **send)
        assert r.status_code == 200, r.text
        page = r.json()
        pages.append(page)
        assert len(pages) < 50, "paging does not end"
    return [[e["id"] for e in p["results"]] for p in pages], pages[-1]["prev_page"]


# (page size, how the client follows the links)
WAYS = [(limit, follow) for follow in ("get", "post-empty", "post-body") for limit in (1, 2)]


def check_filter(api: Api, path: str, body: dict[str, Any], expect_filter: dict[str, Any],
                 ways: list[tuple[int, str]], form: bool = False) -> None:
    everything = api.post(path, json={}).json()["results"]
    full = api.post(path, **({"data": body} if form else {"json": body})).json()["results"]
    wanted = [e["id"] for e in everything if matches(e, expect_filter)]
    assert [e["id"] for e in full] == wanted and len(wanted) >= 2, (body, wanted)
    by_id = {e["id"]: e for e in everything}
    for limit, follow in ways:
        pages, prev = walk(api, path, {**body, "limit": limit}, form, follow)
        outside = [i for p in pages for i in p if not matches(by_id[i], expect_filter)]
        assert not outside, f"{body} limit={limit} {follow}: events {outside} are outside"
        assert [i for p in pages for i in p] == wanted, (body, limit, follow)
        assert all(len(p) == limit for p in pages[:-1])
        if prev:  # and back from the last page
            back = api.get(prev).json()
            assert [e["id"] for e in back["results"]] == pages[-2], (body, limit)


def test_history_pages_keep_each_filter(api: Api, events: list[dict[str, Any]]):
    a_c1 = events[0]["person_id"]
    assert {e["person_id"] for e in events if e["cam_id"] == "c1"} >= {a_c1}
    path = "/v1/history/search"
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"person_id": a_c1}, {"person_id": a_c1}),
        ({"cam_ids": ["c2", "c3"]}, {"cam_ids": ["c2", "c3"]}),
        ({"start": "2024-03-02T00:00:00"}, {"start": "2024-03-02T00:00:00"}),
        ({"end": "2024-03-02T23:00:00"}, {"end": "2024-03-02T23:00:00"}),
        ({"start": 1709337600}, {"start": 1709337600}),  # epoch seconds: 2024-03-02
        ({"friend": True}, {"friend": True}),
        ({"friend": False}, {"friend": False}),
        ({"person_id": a_c1, "start": "2024-03-02T00:00:00", "friend": True},
         {"person_id": a_c1, "start": "2024-03-02T00:00:00", "friend": True}),
    ]
    # every way for the first filter; to stay fast, the others take turns
    for i, (body, expect) in enumerate(cases):
        check_filter(api, path, body, expect, WAYS if i == 0 else [WAYS[i % len(WAYS)]])
    # form-encoded bodies: comma-separated cameras, text flags
    check_filter(api, path, {"cam_ids": "c1,c3", "friend": "false"},
                 {"cam_ids": ["c1", "c3"], "friend": False}, [WAYS[2], WAYS[5]], form=True)
    check_filter(api, path, {"person_id": str(a_c1)}, {"person_id": a_c1}, [WAYS[3]],
                 form=True)
    # a person's history (person in the path), filters in the body
    check_filter(api, f"/v1/person/history/id/{a_c1}", {"start": "2024-03-02T00:00:00"},
                 {"person_id": a_c1, "start": "2024-03-02T00:00:00"}, [WAYS[4], WAYS[1]])


def test_next_page_keeps_findface_shape(api: Api, events: list[dict[str, Any]]):
    """A body without filters: ``/v0/history/search?max_id=N`` (+ limit), as in 9.1."""
    page = api.post("/v0/history/search", json={"limit": 3}).json()
    ids = [e["id"] for e in page["results"]]
    assert page["next_page"] == f"/v0/history/search?max_id={ids[-1]}&limit=3"
    assert page["prev_page"] is None
    # a first body with its own cursor, re-posted to next_page: the link's cursor wins
    body = {"limit": 3, "max_id": ids[0] + 1}
    first = api.post("/v1/history/search", json=body).json()
    second = api.post(first["next_page"], json=body).json()
    assert [e["id"] for e in first["results"]] == ids
    assert second["results"] and max(e["id"] for e in second["results"]) < min(ids)
