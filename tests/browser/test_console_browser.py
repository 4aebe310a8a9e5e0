"""The operator console in a real browser (Chromium + Playwright) against the real backend:
log in, watch events arrive live, browse persons, manage cameras, XSS-safe text, per-token
data, no token in any URL or log. Screenshots of the main pages go to docs/screenshots/."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from tests.backend.conftest import Api, person_photo
from tests.browser.conftest import PHONE, Site
from tests.conftest import shared_file

pytestmark = pytest.mark.timeout(180)

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def owner(site: Site) -> dict[str, Any]:
    """Token A with two cameras (and, after the live test, events and persons)."""
    token = site.token()
    api = Api(site.url, token)
    cams = {name: api.post("/v1/camera", json={"meta": name, "detector": "gate-1",
                                               "url": f"rtsp://10.0.0.{i}/stream"}).json()["id"]
            for i, name in enumerate(("Entrance", "Loading dock"), start=7)}
    return {"token": token, "api": api, "cams": cams}


def post_event(api: Api, who: str, cam: str, when: datetime | None = None) -> dict[str, Any]:
    data = {"cam_id": cam}
    if when is not None:
        data["timestamp"] = when.strftime("%Y-%m-%dT%H:%M:%S")
    return api.add_face(person_photo(who), **data)


def test_login_then_events_arrive_live_without_reload(site: Site, browser: Any, owner: Any,
                                                      shot: Any) -> None:
    page = site.page(browser)
    page.goto(site.url + "/")
    page.wait_for_selector("#login")  # shown once the page has asked for a session
    shot(page, "login")
    page.fill("#token", "wrong-token")
    page.click("#login button[type=submit]")
    page.wait_for_selector("#login .form-error:text('not known')")
    site.login(page, owner["token"])
    page.wait_for_selector("#events .empty:has-text('No camera events yet')")
    assert "Add a camera on the Cameras page and run" in page.inner_text("#events .empty")
    page.wait_for_selector("#live.is-live:text('Live')")
    page.evaluate("window.__marker = 1")  # gone if the page reloads

    api, cams = owner["api"], owner["cams"]
    yesterday = datetime.now(UTC) - timedelta(days=1)
    posted = [post_event(api, "A", cams["Entrance"], yesterday),
              post_event(api, "A", cams["Entrance"]),
              post_event(api, "B", cams["Loading dock"]),
              post_event(api, "C", cams["Entrance"]),
              post_event(api, "D", cams["Loading dock"])]
    cards = page.locator("#events .event")
    expect(page.locator("#events .event")).to_have_count(5)
    assert page.evaluate("window.__marker") == 1
    # newest first, each with the camera's name and the time in the browser's zone
    assert [int(c.get_attribute("data-id")) for c in cards.all()] == \
        [p["id"] for p in reversed(posted)]
    newest = posted[-1]
    stamp = datetime.fromisoformat(newest["timestamp"]).replace(tzinfo=UTC)
    local = stamp.astimezone(ZoneInfo("Europe/Berlin")).strftime("%I:%M:%S")
    first = cards.first.inner_text()
    assert "Loading dock" in first and local in first, first
    assert re.search(r"GMT[+-]\d|CES?T", first), first
    assert "Times in Europe/Berlin" in page.inner_text(".page-head")
    # friend or foe as the backend decided it: A seen on two days is a friend
    a_today = cards.nth(3)
    assert "Friend" in a_today.inner_text() and "Foe" in cards.first.inner_text()

    for name, event in (("Alice", posted[1]), ("Bob", posted[2]), ("Carol", posted[3])):
        api.put(f"/v1/person/id/{event['person_id']}", json={"meta": name})
    page.reload()
    page.wait_for_selector("#events .event >> text=Alice")
    shot(page, "events")
    page.close()


def test_events_filters_search_the_server(site: Site, browser: Any, owner: Any) -> None:
    page = site.page(browser)
    site.login(page, owner["token"])
    page.wait_for_selector("#events .event")
    page.select_option("select[name=cam]", owner["cams"]["Loading dock"])
    page.click("#event-filters button[type=submit]")
    expect(page.locator("#events .event")).to_have_count(2)
    assert all("Loading dock" in t for t in page.locator("#events .event").all_inner_texts())
    page.select_option("select[name=cam]", "")
    page.select_option("select[name=friend]", "friend")
    page.click("#event-filters button[type=submit]")
    expect(page.locator("#events .event")).to_have_count(1)
    assert "Alice" in page.locator("#events .event").inner_text()
    # a new foe event does not match the friend filter; a new friend event does (A was seen
    # by the Entrance on two days)
    post_event(owner["api"], "B", owner["cams"]["Entrance"])
    post_event(owner["api"], "A", owner["cams"]["Entrance"])
    expect(page.locator("#events .event")).to_have_count(2)
    page.wait_for_timeout(1200)
    assert page.locator("#events .event").count() == 2
    # a time range (entered in the browser's zone) searched by the server
    page.click("#event-filters button[type=reset]")
    half_a_day_ago = datetime.now(UTC) - timedelta(hours=12)
    to = half_a_day_ago.astimezone(ZoneInfo("Europe/Berlin")).strftime("%Y-%m-%dT%H:%M:%S")
    page.fill("input[name=to]", to)
    page.click("#event-filters button[type=submit]")
    expect(page.locator("#events .event")).to_have_count(1)
    page.fill("input[name=to]", "")
    page.fill("input[name=from]", to)
    page.click("#event-filters button[type=submit]")
    expect(page.locator("#events .event")).to_have_count(6)
    page.fill("input[name=person]", "999999")
    page.click("#event-filters button[type=submit]")
    page.wait_for_selector("#events .empty:has-text('No events match')")
    page.close()


def test_persons_grid_and_person_page(site: Site, browser: Any, owner: Any,
                                      shot: Any) -> None:
    page = site.page(browser)
    site.login(page, owner["token"])
    page.click("#nav a[data-route=persons]")
    page.wait_for_selector("#persons .person >> text=Alice")
    expect(page.locator("#persons img.portrait").nth(3)).to_be_visible()
    persons = owner["api"].get("/v1/persons").json()["results"]
    assert page.locator("#persons .person").count() == len(persons) >= 4
    shot(page, "persons")
    alice = next(p for p in persons if p["meta"] == "Alice")
    card = page.locator(f"#persons .person[data-id='{alice['id']}']")
    count = alice["face_count"]
    assert f"{count} sightings" in card.inner_text()
    page.evaluate("window.__marker = 1")
    post_event(owner["api"], "A", owner["cams"]["Entrance"])  # live: her count goes up
    expect(card).to_contain_text(f"{count + 1} sightings")
    page.click("#persons .person >> text=Alice")
    page.wait_for_selector("#sightings .event")
    assert page.evaluate("window.__marker") == 1
    assert page.url.endswith(f"#/person/{alice['id']}")
    expect(page.locator("#sightings .event")).to_have_count(count + 1)
    assert "Friend" in page.inner_text(".person-head")
    new = post_event(owner["api"], "A", owner["cams"]["Entrance"])  # live on her page too
    expect(page.locator("#sightings .event")).to_have_count(count + 2)
    assert page.locator("#sightings .event").first.get_attribute("data-id") == str(new["id"])
    page.fill(".person-head input[name=meta]", "Alice Smith")
    page.click(".person-head button[type=submit]")
    page.wait_for_selector("h1:text('Alice Smith')")
    assert owner["api"].get(f"/v1/person/id/{alice['id']}").json()["meta"] == "Alice Smith"
    page.close()


def test_cameras_add_edit_disable_delete(site: Site, browser: Any, owner: Any,
                                         shot: Any) -> None:
    api = owner["api"]
    page = site.page(browser)
    site.login(page, owner["token"])
    page.click("#nav a[data-route=cameras]")
    page.wait_for_selector("#cameras .camera >> text=Entrance")
    form = "#camera-form"
    page.fill(f"{form} input[name=meta]", "Back door")
    page.fill(f"{form} input[name=url]", "rtsp://10.0.0.9/back")
    page.fill(f"{form} input[name=roi]", "not a region")
    page.click(f"{form} button[type=submit]")
    page.wait_for_selector(f"{form} .form-error:has-text('roi')")  # the API's words
    page.fill(f"{form} input[name=roi]", "640x480+10+20")
    page.click(f"{form} button[type=submit]")
    page.wait_for_selector("#cameras .camera >> text=Back door")
    back = next(c for c in api.get("/v1/camera").json() if c["meta"] == "Back door")
    assert back["url"] == "rtsp://10.0.0.9/back" and back["roi"] == "640x480+10+20"
    assert back["enabled"] is True
    shot(page, "cameras")

    card = f"#cameras .camera[data-id='{back['id']}']"
    page.click(f"{card} button:text('Edit')")
    assert page.input_value(f"{form} input[name=roi]") == "640x480+10+20"
    page.fill(f"{form} input[name=meta]", "Back gate")
    page.click(f"{form} button[type=submit]")
    page.wait_for_selector(f"{card} >> text=Back gate")
    page.click(f"{card} button:text('Disable')")
    page.wait_for_selector(f"{card} .badge:text('Disabled')")
    now = api.get(f"/v1/camera/{back['id']}").json()
    assert now["meta"] == "Back gate" and now["enabled"] is False
    assert now["roi"] == "640x480+10+20"
    page.click(f"{card} button:text('Delete')")
    page.wait_for_selector(card, state="detached")
    assert api.get(f"/v1/camera/{back['id']}").status_code == 404
    assert any("Delete the camera" in d for d in site.dialogs)
    page.close()


def test_meta_with_html_is_shown_as_text(site: Site, browser: Any) -> None:
    token = site.token()
    api = Api(site.url, token)
    # the url is a network stream whose path carries the markup (a local path would be refused)
    cam = api.post("/v1/camera", json={"meta": XSS,
                                       "url": "rtsp://192.0.2.1/<img src=x onerror=alert(1)>"}
                   ).json()["id"]
    page = site.page(browser)
    site.login(page, token)
    page.wait_for_selector("#events .empty")
    page.click("#nav a[data-route=persons]")
    page.wait_for_selector("#persons .empty:has-text('No persons yet')")
    page.wait_for_selector("#live.is-live")
    event = post_event(api, "C", cam)  # a new person's card appears without a reload
    page.wait_for_selector(f"#persons .person[data-id='{event['person_id']}']")
    api.put(f"/v1/person/id/{event['person_id']}", json={"meta": XSS})
    page.click("#nav a[data-route=events]")
    page.wait_for_selector("#events .event")
    assert XSS in page.locator("#events .event").inner_text()
    page.click("#nav a[data-route=persons]")
    page.wait_for_selector(f"#persons .person-name:text('{XSS}')")
    page.click("#nav a[data-route=cameras]")
    page.wait_for_selector(f"#cameras h3:text('{XSS}')")
    page.click("#nav a[data-route=events]")
    page.wait_for_selector("#events .event")
    page.wait_for_timeout(500)
    assert page.locator("img[src='x']").count() == 0
    assert not [d for d in site.dialogs if d.startswith("alert")]
    page.close()


def test_export_filtered_history_as_csv(site: Site, browser: Any) -> None:
    token = site.token()
    api = Api(site.url, token)
    formula = '=HYPERLINK("http://example.invalid","x")'
    door = api.post("/v1/camera", json={"meta": formula}).json()["id"]
    hall = api.post("/v1/camera", json={"meta": "Hall, east"}).json()["id"]
    posted = [post_event(api, "A", door), post_event(api, "B", hall),
              post_event(api, "C", door)]
    api.put(f"/v1/person/id/{posted[0]['person_id']}", json={"meta": 'Ann "the boss"'})
    page = site.page(browser)
    site.login(page, token)
    expect(page.locator("#events .event")).to_have_count(3)
    page.select_option("select[name=cam]", door)
    page.click("#event-filters button[type=submit]")
    expect(page.locator("#events .event")).to_have_count(2)
    with page.expect_download() as download:
        page.click("#export-csv")
    text = Path(download.value.path()).read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["event_id"]) for r in rows] == [posted[2]["id"], posted[0]["id"]]
    assert {r["camera"] for r in rows} == {"'" + formula}  # never run as a formula
    assert rows[1]["person"] == 'Ann "the boss"' and rows[1]["friend"] == "foe"
    assert rows[1]["time_utc"].startswith(posted[0]["timestamp"][:19])
    assert rows[1]["face_url"] == posted[0]["normalized"]
    assert "time_Europe/Berlin" in rows[0]
    page.wait_for_selector(".banner.ok:has-text('Exported 2 events')")
    page.close()


def test_a_second_token_sees_none_of_the_first_tokens_data(site: Site, browser: Any,
                                                          owner: Any) -> None:
    page = site.page(browser)
    site.login(page, site.token())
    page.wait_for_selector("#events .empty:has-text('No camera events yet')")
    page.wait_for_timeout(300)
    post_event(owner["api"], "A", owner["cams"]["Entrance"])  # the first token's new event
    page.wait_for_timeout(1500)
    assert page.locator("#events .event").count() == 0
    page.click("#nav a[data-route=persons]")
    page.wait_for_selector("#persons .empty:has-text('No persons yet')")
    page.click("#nav a[data-route=cameras]")
    page.wait_for_selector("#cameras .empty:has-text('No cameras yet')")
    assert "Entrance" not in page.inner_text("#cameras") and "Alice" not in page.content()
    page.close()


def test_phone_layout_and_logout(site: Site, browser: Any, owner: Any, shot: Any) -> None:
    page = site.page(browser, viewport=PHONE)
    site.login(page, owner["token"])
    page.wait_for_selector("#events .event")
    shot(page, "events-phone")
    for route, ready in (("events", "#events .event"), ("persons", "#persons .person"),
                         ("cameras", "#cameras .camera")):
        page.click(f"#nav a[data-route={route}]")
        page.wait_for_selector(ready)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{route} scrolls sideways on a phone ({width} px)"
    page.click("#nav a[data-route=persons]")
    page.click("#persons .person >> nth=0")
    page.wait_for_selector(".person-head")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"a person page scrolls sideways on a phone ({width} px)"
    page.click("#logout")
    page.wait_for_selector("#login")
    assert not [c for c in page.context.cookies() if c["name"] == "vd_session" and c["value"]]
    page.reload()
    page.wait_for_selector("#login")
    status = page.evaluate("fetch('/v1/camera').then((r) => r.status)")
    assert status == 401
    page.close()


def test_detector_events_arrive_in_the_open_events_page(site: Site, browser: Any) -> None:
    """fkvideo_detector (camera-list mode) on a shared clip while the Events page is open."""
    clip = shared_file("clips_faces/mpf_video_01.mp4")  # 5 people, 3 s
    token = site.token()
    api = Api(site.url, token)
    cam = api.post("/v1/camera", json={"meta": "Lobby", "detector": "console-e2e",
                                       "url": str(clip)}).json()["id"]
    page = site.page(browser)
    site.login(page, token)
    page.wait_for_selector("#events .empty")
    page.wait_for_selector("#live.is-live")
    page.evaluate("window.__marker = 1")
    det = site.procs.detector("--detector-name", "console-e2e", "--camera-url", "/v1/camera",
                              "-t", "1", "--single-pass", "-r", "0", "--api-url", site.url,
                              f"--api-token={token}", "--spool-dir",
                              str(site.data_dir.parent / "spool"), status=False)
    assert det.wait(120) == 0, det.tail()
    events = api.post("/v1/history/search", json={"cam_ids": [cam]}).json()["results"]
    assert len(events) >= 5
    expect(page.locator("#events .event")).to_have_count(len(events), timeout=15000)
    assert page.evaluate("window.__marker") == 1  # no reload
    shown = [int(c.get_attribute("data-id")) for c in page.locator("#events .event").all()]
    assert shown == [e["id"] for e in events]  # newest first, each once
    assert all("Lobby" in t for t in page.locator("#events .event").all_inner_texts())
    page.close()


def test_open_events_page_follows_a_backend_restart(site: Site, browser: Any,
                                                    owner: Any) -> None:
    """The backend stops and starts again: the open page reconnects by itself (its session
    is in the database) and shows the next event without a reload."""
    page = site.page(browser)
    site.login(page, owner["token"])
    page.wait_for_selector("#events .event")
    page.wait_for_selector("#live.is-live")
    page.evaluate("window.__marker = 1")
    site.restart()
    new = post_event(owner["api"], "D", owner["cams"]["Loading dock"])
    card = page.locator(f"#events .event[data-id='{new['id']}']")
    expect(card).to_have_count(1, timeout=20000)
    expect(page.locator("#events .event").first).to_have_attribute("data-id", str(new["id"]))
    assert page.evaluate("window.__marker") == 1
    page.wait_for_selector("#live.is-live")
    page.close()


def test_no_token_in_any_url_or_the_server_log(site: Site, owner: Any) -> None:
    """Runs last: every URL the browser requested in this module, and the backend's log."""
    assert site.urls, "the browser tests above did not run"
    for token in site.tokens:
        assert not [u for u in site.urls if token in u]
    for backend in site.backends:
        log = backend.log()
        assert "listening" in log or "ready" in log, log[-2000:]
        for token in site.tokens:
            assert token not in log
