"""The Persons pages in a real browser (Chromium + Playwright) against the real backend: the
grid needs one request per page of persons; on a person's page an operator merges two
persons, splits a face off, moves a face to another person, marks "not this person" (the
next post of that track stays apart) and undoes changes -- each checked through the API.
Screenshots: docs/screenshots/person.png and person-actions.png."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.backend.conftest import Api, person_photo
from tests.browser.conftest import PHONE, Site

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def owner(site: Site) -> dict[str, Any]:
    token = site.token()
    api = Api(site.url, token)
    cams = {name: api.post("/v1/camera", json={"meta": name}).json()["id"]
            for name in ("Entrance", "Loading dock", "Gate")}
    return {"token": token, "api": api, "cams": cams}


def post(api: Api, who: str, cam: str, track: int | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"cam_id": cam,
                            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")}
    if track is not None:  # as fkvideo_detector posts the faces of one track
        data["detectorParams"] = json.dumps({"run_id": "run1", "track_id": track})
    return api.add_face(person_photo(who), **data)


def person(api: Api, pid: int) -> dict[str, Any]:
    r = api.get(f"/v1/person/id/{pid}")
    assert r.status_code == 200, r.text
    return r.json()


def face_person(api: Api, face: dict[str, Any]) -> int | None:
    return api.get(f"/v1/face/id/{face['id']}").json()["person_id"]


def open_person(site: Site, page: Any, pid: int) -> None:
    page.goto(f"{site.url}/#/person/{pid}")
    page.wait_for_selector("#person-history .history-list, #person-history .empty")
    page.wait_for_selector("#sightings .event")


def test_the_grid_needs_one_request_per_page(site: Site, browser: Any, owner: Any) -> None:
    api, cams = owner["api"], owner["cams"]
    first = [post(api, who, cams["Entrance"]) for who in ("A", "A", "B", "C")]
    api.put(f"/v1/person/id/{first[0]['person_id']}", json={"meta": "Alice"})
    page = site.page(browser)
    before = len(site.urls)
    page.goto(site.url + "/#/persons")  # log in straight into the grid (no Events page)
    page.fill("#token", owner["token"])
    page.click("#login button[type=submit]")
    card = page.locator(f"#persons .person[data-id='{first[0]['person_id']}']")
    expect(card).to_contain_text("Alice")
    expect(page.locator("#persons img.portrait")).to_have_count(3)
    page.wait_for_selector("#live.is-live")
    asked = [u.split(site.url, 1)[-1] for u in site.urls[before:]]
    assert len([u for u in asked if u.startswith("/v1/persons")]) == 1, asked
    assert not [u for u in asked if u.startswith(("/v1/person/", "/v1/face/"))], asked
    text = card.inner_text()
    assert "2 sightings" in text and "Entrance" in text and "Last seen" in text, text
    best = api.get("/v1/persons").json()["results"][-1]["best_face"]
    assert card.locator("img.portrait").get_attribute("src") == best["normalized"]
    # a live event updates the card from the event itself: still no request per card
    post(api, "A", cams["Entrance"])
    expect(card).to_contain_text("3 sightings")
    asked = [u.split(site.url, 1)[-1] for u in site.urls[before:]]
    assert not [u for u in asked if u.startswith(("/v1/person/", "/v1/face/"))], asked
    page.fill("#person-find", "alice")
    expect(page.locator("#persons .person:visible")).to_have_count(1)
    page.close()


def test_merge_two_persons_then_undo(site: Site, browser: Any, owner: Any, shot: Any) -> None:
    api, cams = owner["api"], owner["cams"]
    # one woman seen by two cameras: two persons (person_identify_global is off)
    door = [post(api, "D", cams["Entrance"]) for _ in range(2)]
    dock = [post(api, "D", cams["Loading dock"]) for _ in range(2)]
    keep, other = door[0]["person_id"], dock[0]["person_id"]
    assert keep != other and {f["person_id"] for f in dock} == {other}
    api.put(f"/v1/person/id/{keep}", json={"meta": "Dana"})
    api.put(f"/v1/person/id/{other}", json={"meta": "Dana at the dock"})
    page = site.page(browser)
    site.login(page, owner["token"])
    open_person(site, page, keep)
    expect(page.locator("#sightings .event")).to_have_count(2)
    expect(page.locator("#timeline .lane")).to_have_count(1)
    page.wait_for_selector("#person-history .empty:has-text('No changes yet')")
    # an unknown id is refused in words
    page.fill("#merge .picker-search", "999999")
    page.click("#merge [data-pick='999999']")
    page.wait_for_selector(".banner.error:has-text('person 999999 not found')")
    page.fill("#merge .picker-search", "dock")
    expect(page.locator("#merge .pick")).to_have_count(1)
    page.click(f"#merge [data-pick='{other}']")
    page.wait_for_selector(".banner.ok:has-text('is merged into Dana')")
    assert any("Merge Dana at the dock" in d for d in site.dialogs)
    merged = person(api, keep)
    assert set(merged["faces"]) == {f["id"] for f in door + dock}
    assert person(api, other)["merged_into"] == keep
    expect(page.locator("#sightings .event")).to_have_count(4)
    expect(page.locator("#timeline .lane")).to_have_count(2)
    expect(page.locator("#timeline .lane-dot")).to_have_count(4)
    entry = page.locator("#person-history .history-item.kind-merge")
    expect(entry).to_contain_text(f"Merged person {other} into this person (2 faces)")
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "person")
    # the merged person's page says where it went; the grid no longer lists it
    page.goto(f"{site.url}/#/person/{other}")
    page.wait_for_selector(f".merged-note a[href='#/person/{keep}']")
    page.goto(f"{site.url}/#/person/{keep}")
    page.click("#person-history .kind-merge .undo")
    page.wait_for_selector(".banner.ok:has-text('The merge is undone')")
    assert set(person(api, keep)["faces"]) == {f["id"] for f in door}
    assert set(person(api, other)["faces"]) == {f["id"] for f in dock}
    assert person(api, other)["merged_into"] is None
    expect(page.locator("#sightings .event")).to_have_count(2)
    expect(page.locator("#person-history .kind-merge")).to_contain_text("undone")
    page.close()


def test_split_a_face_off_and_move_one_to_another_person(site: Site, browser: Any,
                                                         owner: Any, shot: Any) -> None:
    api, cams = owner["api"], owner["cams"]
    faces = [post(api, "B", cams["Loading dock"]) for _ in range(3)]
    pid = faces[0]["person_id"]
    assert {f["person_id"] for f in faces} == {pid}
    c = post(api, "C", cams["Loading dock"])
    api.put(f"/v1/person/id/{c['person_id']}", json={"meta": "Carol"})
    page = site.page(browser)
    site.login(page, owner["token"])
    open_person(site, page, pid)
    expect(page.locator("#sightings .event")).to_have_count(3)
    # split: the newest face to a new person
    card = page.locator(f"#sightings .event[data-id='{faces[2]['id']}']")
    card.locator(".move-face").click()
    card.locator("[data-pick='new']").click()
    page.wait_for_selector(".banner.ok:has-text('moved to person')")
    split = face_person(api, faces[2])
    assert split not in (None, pid)
    assert set(person(api, pid)["faces"]) == {faces[0]["id"], faces[1]["id"]}
    assert person(api, split)["faces"] == [faces[2]["id"]]
    expect(page.locator("#sightings .event")).to_have_count(2)
    # move: another face to Carol, found by her name
    card = page.locator(f"#sightings .event[data-id='{faces[1]['id']}']")
    card.locator(".move-face").click()
    card.locator(".picker-search").fill("caro")
    expect(card.locator(".pick")).to_have_count(2)  # "A new person" and Carol
    card.locator(f"[data-pick='{c['person_id']}']").click()
    page.wait_for_selector(f".banner.ok:has-text('moved to person {c['person_id']}')")
    assert face_person(api, faces[1]) == c["person_id"]
    expect(page.locator("#person-history .kind-move")).to_have_count(2)
    expect(page.locator("#person-history .kind-move").first).to_contain_text(
        f"Moved 1 face to person {c['person_id']}")
    page.locator("#sightings .event .move-face").first.click()  # an open panel for the shot
    page.fill("#sightings .move-panel .picker-search", "car")
    page.evaluate("window.scrollBy(0, document.querySelector('.move-panel')"
                  ".getBoundingClientRect().bottom - window.innerHeight + 16)")
    shot(page, "person-actions")
    page.close()


def test_not_this_person_keeps_the_track_apart_and_undo_puts_it_back(
        site: Site, browser: Any, owner: Any) -> None:
    api, gate = owner["api"], owner["cams"]["Gate"]
    faces = [post(api, "A", gate, track=7) for _ in range(3)]
    pid = faces[0]["person_id"]
    assert {f["person_id"] for f in faces} == {pid}
    page = site.page(browser)
    site.login(page, owner["token"])
    open_person(site, page, pid)
    expect(page.locator("#sightings .event")).to_have_count(3)
    page.locator(f"#sightings .event[data-id='{faces[2]['id']}'] .not-this").click()
    page.wait_for_selector(".banner.ok:has-text('is no longer')")
    assert face_person(api, faces[2]) is None
    expect(page.locator("#sightings .event")).to_have_count(2)
    expect(page.locator("#person-history .kind-not_this_person")).to_contain_text(
        "Marked 1 face as not this person")
    # the next post of the same track (the same face, too) does not rejoin the person
    page.wait_for_timeout(500)
    later = post(api, "A", gate, track=7)
    assert later["person_id"] not in (None, pid)
    page.wait_for_timeout(1500)
    expect(page.locator("#sightings .event")).to_have_count(2)  # not shown here
    assert set(person(api, pid)["faces"]) == {faces[0]["id"], faces[1]["id"]}
    # undo: the face is put back
    page.click("#person-history .kind-not_this_person .undo")
    page.wait_for_selector(".banner.ok:has-text('1 face back')")
    assert face_person(api, faces[2]) == pid
    expect(page.locator("#sightings .event")).to_have_count(3)
    expect(page.locator("#person-history .kind-not_this_person .undo")).to_have_count(0)
    page.close()


def test_person_page_on_a_phone(site: Site, browser: Any, owner: Any) -> None:
    api = owner["api"]
    pid = api.get("/v1/persons").json()["results"][0]["id"]
    page = site.page(browser, viewport=PHONE)
    site.login(page, owner["token"])
    open_person(site, page, pid)
    page.locator("#sightings .event .move-face").first.click()
    page.wait_for_selector("#sightings .move-panel .pick")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the person page scrolls sideways on a phone ({width} px)"
    page.goto(f"{site.url}/#/persons")
    page.wait_for_selector("#persons .person")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the persons grid scrolls sideways on a phone ({width} px)"
    page.goto(f"{site.url}/#/person/99999999")
    page.wait_for_selector(".empty:has-text('Person not available')")
    assert "person 99999999 not found" in page.inner_text(".empty")
    page.close()
