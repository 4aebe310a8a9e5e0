"""Photo processing and Webhooks pages in a real browser against the real backend (with --gae
and --fetch-allow 127.0.0.0/8): detect with boxes drawn on the photo and gender/age, verify
two photos, identify in a gallery; add a webhook, see it deliver and fail."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.backend.conftest import Api, person_photo, side_by_side
from tests.backend.test_webhooks import Receiver, wait_for
from tests.browser.conftest import Site
from tests.e2e.conftest import Procs

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("photos")
    procs = Procs(tmp)
    try:
        (tmp / "data").mkdir()
        yield Site(procs, tmp / "data", "--gae", "1", "--fetch-allow", "127.0.0.0/8")
    finally:
        procs.cleanup()


def canvas_pixel(page: Any, x: int, y: int) -> list[int]:
    return page.evaluate(
        "([x, y]) => Array.from(document.getElementById('detect-canvas')"
        ".getContext('2d').getImageData(x, y, 1, 1).data)", [x, y])


def test_detect_verify_identify_from_files(site: Site, browser: Any, shot: Any,
                                           tmp_path: Path) -> None:
    token = site.token()
    api = Api(site.url, token)
    assert api.post("/v1/galleries/staff").status_code == 201
    api.add_face(person_photo("A"), galleries="staff", meta="Alice")
    api.add_face(person_photo("B"), galleries="staff", meta="Beth")
    two = tmp_path / "two.jpg"
    two.write_bytes(side_by_side(person_photo("A"), person_photo("C")))
    photo_a, photo_b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    photo_a.write_bytes(person_photo("A"))
    photo_b.write_bytes(person_photo("B"))
    expected = api.post("/v1/detect", files={"photo": two.read_bytes()}).json()["faces"]
    assert len(expected) == 2

    page = site.page(browser)
    site.login(page, token)
    page.click("#nav a[data-route=photos]")
    page.set_input_files("#detect-photo", str(two))
    page.check("#detect-gae")
    page.click("#detect-form button[type=submit]")
    page.wait_for_selector("#detect-result:has-text('2 faces found')")
    items = page.locator("#detect-result li").all_inner_texts()
    assert len(items) == 2 and all("age " in t and ("male" in t) for t in items), items
    f = expected[0]
    assert f"box {f['x1']},{f['y1']} – {f['x2']},{f['y2']}" in items[0]
    size = Image.open(io.BytesIO(two.read_bytes())).size
    assert page.evaluate("[document.getElementById('detect-canvas').width,"
                         " document.getElementById('detect-canvas').height]") == list(size)
    # the box is drawn: the left edge of the first box is the box colour
    mid = (f["y1"] + f["y2"]) // 2
    assert canvas_pixel(page, f["x1"], mid)[:3] == [34, 197, 94]

    page.set_input_files("#verify-photo1", str(photo_a))
    page.set_input_files("#verify-photo2", str(photo_a))
    page.click("#verify-form button[type=submit]")
    page.wait_for_selector("#verify-result .verdict.same:has-text('The same person')")
    page.set_input_files("#verify-photo2", str(photo_b))
    page.click("#verify-form button[type=submit]")
    page.wait_for_selector("#verify-result .verdict.different")

    page.set_input_files("#identify-photo", str(photo_b))
    page.select_option("#identify-gallery", "staff")
    page.click("#identify-form button[type=submit]")
    page.wait_for_selector("#identify-result .hit")
    assert page.locator("#identify-result .hit .person-name").first.inner_text() == "Beth"
    blank = tmp_path / "blank.jpg"
    Image.new("RGB", (200, 200), (90, 90, 90)).save(blank)
    page.set_input_files("#detect-photo", str(blank))
    page.click("#detect-form button[type=submit]")
    page.wait_for_selector("#detect-result:has-text('0 faces found')")
    page.set_input_files("#detect-photo", str(two))
    page.click("#detect-form button[type=submit]")
    page.wait_for_selector("#detect-result:has-text('2 faces found')")
    shot(page, "photos")


def test_webhooks_page_adds_and_shows_delivery(site: Site, browser: Any, shot: Any) -> None:
    token = site.token()
    api = Api(site.url, token)
    gate = api.post("/v1/camera", json={"meta": "Gate"}).json()["id"]
    api.post("/v1/camera", json={"meta": "Door"})
    receiver = Receiver()
    receiver.start()
    try:
        page = site.page(browser)
        site.login(page, token)
        page.click("#nav a[data-route=webhooks]")
        page.wait_for_selector("#webhooks .empty:has-text('No webhooks yet')")
        page.fill("#hook-url", "http://10.9.8.7/hook")
        page.click("#hook-form button[type=submit]")
        page.wait_for_selector("#hook-form .form-error:has-text('non-public address')")
        page.fill("#hook-url", receiver.url)
        page.fill("#hook-secret", "s3cret")
        page.select_option("#hook-cams", label="Gate")
        page.click("#hook-form button[type=submit]")
        page.wait_for_selector("#webhooks .camera .badge.on:has-text('Delivering')")
        hooks = api.get("/v1/webhooks").json()["results"]
        assert [(h["url"], h["cam_ids"], h["has_secret"]) for h in hooks] == \
            [(receiver.url, [gate], True)]
        event = api.add_face(person_photo("A"), cam_id=gate)["id"]
        wait_for(lambda: receiver.ids() == {event})
        assert receiver.got[0][2]  # signed with the secret typed into the page
        page.wait_for_selector(f"#webhooks .camera:has-text('1 (up to event {event})')",
                               timeout=15000)
        receiver.kill()
        api.add_face(person_photo("B"), cam_id=gate)
        page.wait_for_selector("#webhooks .camera .badge.foe:has-text('Failing')",
                               timeout=20000)
        assert "Connect" in page.inner_text("#webhooks .camera")
        shot(page, "webhooks")
        page.click("#webhooks .camera button.danger")
        page.wait_for_selector("#webhooks .empty")
        assert api.get("/v1/webhooks").json()["results"] == []
    finally:
        if receiver.server is not None:
            receiver.kill()
