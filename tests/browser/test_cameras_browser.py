"""The Cameras page in a real browser: each camera's live health as its detector reports it
("No detector" when none does), and ROI / ROT drawn with the mouse on the camera's current
picture, stored through the API."""

from __future__ import annotations

import re
import time
from typing import Any

import cv2
import numpy as np
import pytest

from tests.backend.conftest import Api
from tests.browser.conftest import PHONE, Site

pytestmark = pytest.mark.timeout(180)

FRAME = (1920, 1080)


def picture() -> bytes:
    """A 640x360 preview of a 1920x1080 frame: a door-like scene with a grid."""
    img = np.full((360, 640, 3), (70, 80, 90), np.uint8)
    cv2.rectangle(img, (0, 250), (640, 360), (60, 110, 80), -1)
    cv2.rectangle(img, (250, 60), (390, 300), (40, 60, 140), -1)
    for x in range(0, 640, 80):
        cv2.line(img, (x, 0), (x, 360), (95, 105, 115), 1)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return buf.tobytes()


def report(api: Api, cam: str, **change: Any) -> dict[str, Any]:
    body = {"detector": "gate-1", "version": "0.1.0", "state": "running", "interval": 5,
            "fps_in": 25.0, "fps_processed": 12.5, "frames_in": 900, "frames_processed": 450,
            "frames_dropped": 7, "reconnects": 2, "last_frame_time": time.time(),
            "last_frame_age": 0.2, "frame_width": FRAME[0], "frame_height": FRAME[1], **change}
    r = api.post(f"/v1/camera/{cam}/health", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def parse(text: str) -> tuple[int, int, int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)\+(\d+)\+(\d+)", text)
    assert m, text
    return tuple(int(v) for v in m.groups())  # type: ignore[return-value]


def drag(page: Any, box: dict[str, float], start: tuple[float, float],
         end: tuple[float, float]) -> None:
    """Press the mouse at ``start`` and release it at ``end`` (fractions of the picture)."""
    page.mouse.move(box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"],
                    steps=6)
    page.mouse.up()


def near(got: tuple[int, ...], want: tuple[float, ...], tol: float) -> bool:
    return all(abs(g - w) <= tol for g, w in zip(got, want, strict=True))


def test_add_a_camera_and_draw_its_roi_on_the_picture(site: Site, browser: Any,
                                                      shot: Any) -> None:
    token = site.token()
    api = Api(site.url, token)
    page = site.page(browser)
    site.login(page, token)
    page.click("#nav a[data-route=cameras]")
    form = "#camera-form"
    page.fill(f"{form} input[name=meta]", "Gate")
    page.fill(f"{form} input[name=url]", "rtsp://10.0.0.5/gate")
    page.fill(f"{form} input[name=detector]", "gate-1")
    page.click(f"{form} button[type=submit]")
    page.wait_for_selector("#cameras .camera >> text=Gate")
    cam = api.get("/v1/camera").json()[0]
    card = f"#cameras .camera[data-id='{cam['id']}']"
    page.wait_for_selector(f"{card} .health-badge:text('No detector')")
    text = page.inner_text(f"{card} .health")
    assert "No detector reports this camera" in text and "fkvideo_detector -n gate-1" in text

    # the detector reports: the open page shows it without a reload
    assert report(api, cam["id"]) == {"preview_wanted": True}
    r = api.put(f"/v1/camera/{cam['id']}/preview", data=picture(),
                params={"frame_width": FRAME[0], "frame_height": FRAME[1]},
                headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 204, r.text
    page.wait_for_selector(f"{card} .health-badge:text('Running')", timeout=10000)
    health = page.inner_text(f"{card} .health")
    assert "gate-1 (v0.1.0)" in health and "25.0 in · 12.5 processed" in health
    assert "7 frames" in health and re.search(r"Last frame\s+\d+ s ago", health)
    assert re.search(r"Reconnects\s+2", health)
    page.wait_for_selector(f"{card} img.thumb")
    shot(page, "cameras-health")

    # open the region editor: it asks the detector for a fresh picture
    page.click(f"{card} a:text('Edit region')")
    page.wait_for_selector("#region-stage:not([hidden])")
    assert report(api, cam["id"]) == {"preview_wanted": True}  # the console asked for one
    img = page.locator("#region-stage .stage-img")
    box = img.bounding_box()
    scale = FRAME[0] / box["width"]
    drag(page, box, (0.25, 0.2), (0.75, 0.8))
    roi = parse(page.input_value("#region-form input[name=roi]"))
    assert near(roi, (960, 648, 480, 216), 2 * scale), roi
    assert page.is_visible("#region-stage .region-roi")

    # the ROT: chosen, drawn; then the ROI moved by its middle and resized by a corner
    page.click("#region-form .picker-rot")
    drag(page, box, (0.05, 0.1), (0.95, 0.9))
    rot = parse(page.input_value("#region-form input[name=rot]"))
    assert near(rot, (1728, 864, 96, 108), 2 * scale), rot
    # dragging inside the ROI while the ROT is chosen draws a new ROT (inside the old one)
    drag(page, box, (0.5, 0.5), (0.6, 0.6))
    inner = parse(page.input_value("#region-form input[name=rot]"))
    assert near(inner, (192, 108, 960, 540), 2 * scale), inner
    assert parse(page.input_value("#region-form input[name=roi]")) == roi
    drag(page, box, (0.05, 0.1), (0.95, 0.9))
    page.click("#region-form .picker-roi")
    drag(page, box, (0.5, 0.5), (0.55, 0.5))  # the chosen ROI, by its middle: moved
    moved = parse(page.input_value("#region-form input[name=roi]"))
    assert near(moved, (roi[0], roi[1], roi[2] + 96, roi[3]), 2 * scale), moved
    se = page.locator("#region-stage .region-roi .handle-se").bounding_box()
    page.mouse.move(se["x"] + se["width"] / 2, se["y"] + se["height"] / 2)
    page.mouse.down()
    page.mouse.move(se["x"] + se["width"] / 2 - 0.1 * box["width"], se["y"] + se["height"] / 2,
                    steps=4)
    page.mouse.up()
    resized = parse(page.input_value("#region-form input[name=roi]"))
    assert near(resized, (moved[0] - 192, moved[1], moved[2], moved[3]), 2 * scale), resized
    shot(page, "camera-region")
    page.click("#region-form button[type=submit]")
    page.wait_for_selector("#banner.ok:has-text('Region saved')")
    stored = api.get(f"/v1/camera/{cam['id']}").json()
    assert stored["roi"] == page.input_value("#region-form input[name=roi]")
    assert parse(stored["roi"]) == resized and parse(stored["rot"]) == rot

    # a region the API refuses: its words are shown, nothing is stored
    page.fill("#region-form input[name=rot]", "0x10+5+5")
    page.click("#region-form button[type=submit]")
    page.wait_for_selector("#region-error:has-text('rot')")
    assert parse(api.get(f"/v1/camera/{cam['id']}").json()["rot"]) == rot
    # cleared regions are stored as none (whole frame)
    page.click("#region-form label:has(input[name=rot]) button:text('Whole frame')")
    page.click("#region-form label:has(input[name=roi]) button:text('Whole frame')")
    page.click("#region-form button[type=submit]")
    assert page.input_value("#region-form input[name=roi]") == ""
    assert page.is_hidden("#region-stage .region-roi")
    for _ in range(50):
        stored = api.get(f"/v1/camera/{cam['id']}").json()
        if stored["rot"] is None:
            break
        page.wait_for_timeout(100)
    assert stored["roi"] is None and stored["rot"] is None
    page.close()


def test_no_detector_shown_when_none_reports_or_the_reports_stop(site: Site,
                                                                  browser: Any) -> None:
    token = site.token()
    api = Api(site.url, token)
    quiet = api.post("/v1/camera", json={"meta": "Quiet", "url": "rtsp://10.0.0.8/q",
                                         "detector": "gate-9"}).json()["id"]
    busy = api.post("/v1/camera", json={"meta": "Busy", "url": "rtsp://10.0.0.9/b",
                                        "detector": "gate-1"}).json()["id"]
    report(api, busy, interval=1, state="reconnecting")
    page = site.page(browser)
    site.login(page, token)
    page.click("#nav a[data-route=cameras]")
    page.wait_for_selector(f"#cameras .camera[data-id='{busy}'] .health-badge:text('Reconnecting')")
    assert page.inner_text(f"#cameras .camera[data-id='{quiet}'] .health-badge") == "No detector"
    # the detector stops reporting: after 3 of its intervals the page says so by itself
    page.wait_for_selector(f"#cameras .camera[data-id='{busy}'] .health-badge:text('No detector')",
                           timeout=10000)
    text = page.inner_text(f"#cameras .camera[data-id='{busy}'] .health")
    assert "the last report (from gate-1) came" in text
    # the region editor of a camera without a picture says where the picture comes from
    page.goto(f"{site.url}/#/camera/{quiet}/region")
    page.wait_for_selector("text=No picture of this camera yet")
    assert "gate-9" in page.inner_text("main")
    assert page.is_hidden("#region-stage")
    page.close()


def test_the_region_editor_says_why_a_running_camera_has_no_picture(site: Site,
                                                                     browser: Any) -> None:
    """A detector runs the camera but its stream never gave a frame: the page says that, and
    why, rather than "start fkvideo_detector" (found in a long run with a dead camera URL)."""
    token = site.token()
    api = Api(site.url, token)
    down = api.post("/v1/camera", json={"meta": "Down", "url": "rtsp://10.0.0.7/d",
                                        "detector": "gate-1"}).json()["id"]
    report(api, down, state="source_down", last_frame_time=None, last_frame_age=None,
           frames_in=0, error="cannot open rtsp://10.0.0.7/d: Connection refused")
    page = site.page(browser)
    site.login(page, token)
    page.goto(f"{site.url}/#/camera/{down}/region")
    page.wait_for_selector("text=has had no frame from its stream yet")
    text = page.inner_text("main")
    assert "gate-1 runs this camera" in text and "Source down: cannot open" in text, text
    assert "Start fkvideo_detector" not in text, text
    page.close()


def test_region_drawn_by_touch_on_a_phone(site: Site, browser: Any, shot: Any) -> None:
    token = site.token()
    api = Api(site.url, token)
    cam = api.post("/v1/camera", json={"meta": "Lobby", "url": "rtsp://10.0.0.6/l",
                                       "detector": "gate-1"}).json()["id"]
    report(api, cam)
    api.put(f"/v1/camera/{cam}/preview", data=picture(),
            params={"frame_width": FRAME[0], "frame_height": FRAME[1]},
            headers={"Content-Type": "image/jpeg"})
    context = browser.new_context(viewport=PHONE, has_touch=True, is_mobile=True,
                                  timezone_id="Europe/Berlin", locale="en-US")
    page = context.new_page()
    page.set_default_timeout(15000)
    site.login(page, token)
    page.goto(f"{site.url}/#/camera/{cam}/region")
    page.wait_for_selector("#region-stage:not([hidden])")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    box = page.locator("#region-stage .stage-img").bounding_box()
    scale = FRAME[0] / box["width"]
    cdp = context.new_cdp_session(page)

    def touch(kind: str, fx: float, fy: float) -> None:
        points = [] if kind == "touchEnd" else [
            {"x": box["x"] + fx * box["width"], "y": box["y"] + fy * box["height"]}]
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})

    touch("touchStart", 0.1, 0.1)
    for i in range(1, 6):
        touch("touchMove", 0.1 + 0.1 * i, 0.1 + 0.12 * i)
    touch("touchEnd", 0.6, 0.7)
    roi = parse(page.input_value("#region-form input[name=roi]"))
    assert near(roi, (960, 648, 192, 108), 3 * scale), roi
    shot(page, "camera-region-phone")
    page.click("#region-form button[type=submit]")
    page.wait_for_selector("#banner.ok:has-text('Region saved')")
    assert parse(api.get(f"/v1/camera/{cam}").json()["roi"]) == roi
    context.close()


def test_the_detectors_health_and_picture_reach_the_open_cameras_page(site: Site,
                                                                       browser: Any) -> None:
    """fkvideo_detector (camera-list mode) on a paced 4 s clip: its health and its picture
    appear in the open Cameras page and the region editor, without a reload."""
    from videodetector.democlip import write_clip

    clip = write_clip(site.data_dir.parent / "health-clip.mp4", [], seconds=4.0)  # 640x480
    token = site.token()
    api = Api(site.url, token)
    cam = api.post("/v1/camera", json={"meta": "Yard", "detector": "health-e2e",
                                       "url": f"file@25:{clip}"}).json()["id"]
    page = site.page(browser)
    site.login(page, token)
    page.click("#nav a[data-route=cameras]")
    card = f"#cameras .camera[data-id='{cam}']"
    page.wait_for_selector(f"{card} .health-badge:text('No detector')")
    det = site.procs.detector("--detector-name", "health-e2e", "--camera-url", "/v1/camera",
                              "-t", "1", "--single-pass", "--health-interval", "1",
                              "--api-url", site.url, f"--api-token={token}", "--spool-dir",
                              str(site.data_dir.parent / "spool-health"), status=False,
                              tag="-health")
    page.wait_for_selector(f"{card} img.thumb", timeout=60000)
    assert "health-e2e" in page.inner_text(f"{card} .health")
    assert det.wait(120) == 0, det.tail()
    page.click(f"{card} a:text('Edit region')")
    page.wait_for_selector("#region-stage:not([hidden])")
    size = page.evaluate("[document.querySelector('#region-stage .stage-img').naturalWidth, "
                         "document.querySelector('#region-stage .stage-img').naturalHeight]")
    assert size == [640, 480]
    assert "frame 640x480" in page.inner_text("#picture-status")
    page.close()
