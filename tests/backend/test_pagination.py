"""Pagination (9.1): next_page / prev_page are path+query of the neighbouring pages."""

from __future__ import annotations

from tests.backend.conftest import Api, person_photo
from tests.backend.test_idempotency import detector_post


def add_faces(api: Api, n: int, **data) -> list[int]:
    """n faces, quickly: the normalized face is posted, so nothing is detected."""
    bbox, png = detector_post(person_photo("A"))
    ids = []
    for i in range(n):
        r = api.post("/v1/face", files={"face0": ("n.png", png, "image/png")},
                     data={"meta": f"m{i % 2}", **data})
        assert r.status_code == 200, r.text
        ids.append(r.json()["results"][0]["id"])
    return ids


def walk(api: Api, first: str) -> tuple[list[list[int]], list[dict]]:
    pages, bodies, url = [], [], first
    while url:
        body = api.get(url).json()
        bodies.append(body)
        pages.append([f["id"] if "id" in f else f["face"]["id"] for f in body["results"]])
        url = body["next_page"]
    return pages, bodies


def test_faces_pages_forward_and_back(api: Api):
    ids = add_faces(api, 5)
    newest_first = list(reversed(ids))
    pages, bodies = walk(api, "/v0/faces?limit=2")
    assert pages == [newest_first[:2], newest_first[2:4], newest_first[4:]]
    assert bodies[0]["prev_page"] is None
    assert bodies[1]["next_page"] == f"/v0/faces?limit=2&max_id={newest_first[3]}"
    # back from the last page
    back = api.get(bodies[2]["prev_page"]).json()
    assert [f["id"] for f in back["results"]] == newest_first[2:4]
    back = api.get(back["prev_page"]).json()
    assert [f["id"] for f in back["results"]] == newest_first[:2]
    assert back["prev_page"] is None
    # the default page holds them all
    body = api.get("/v0/faces").json()
    assert [f["id"] for f in body["results"]] == newest_first and body["next_page"] is None


def test_gallery_meta_and_persons_pages(api: Api):
    api.post("/v1/galleries/pg")
    ids = add_faces(api, 3, galleries="pg")
    pages, _ = walk(api, "/v1/faces/gallery/pg?limit=2")
    assert pages == [[ids[2], ids[1]], [ids[0]]]
    pages, _ = walk(api, "/v1/face/meta/m0?limit=1")
    assert pages == [[ids[2]], [ids[0]]]
    pages, bodies = walk(api, "/v1/meta?limit=1")
    assert [b["results"][0]["meta"] for b in bodies] == ["m1", "m0"]
    for cam in ("c1", "c2", "c3"):  # person_identify is on: one person per camera
        add_faces(api, 1, cam_id=cam)
    pages, _ = walk(api, "/v1/persons?limit=2")
    assert [len(p) for p in pages] == [2, 2]  # the 3 above + 1 person for the faces w/o camera
