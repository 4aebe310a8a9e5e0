"""The Events page's server-side filters, alert count and HTML report, in a real browser
(Chromium + Playwright) against the real backend."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.backend.conftest import Api, person_photo
from tests.browser.conftest import Site

pytestmark = pytest.mark.timeout(180)

HOSTILE = "<script>alert('x')</script>"


def test_filters_counts_and_html_report_download(site: Site, browser: Any, shot: Any,
                                                 tmp_path: Path) -> None:
    token = site.token()
    api = Api(site.url, token)
    assert api.post("/v1/galleries/wanted").status_code == 201
    api.add_face(person_photo("A"), galleries="wanted", meta="suspect A")
    assert api.put("/v1/galleries/wanted/watchlist", json={"threshold": "strict"}).ok
    gate = api.post("/v1/camera", json={"meta": "Gate"}).json()["id"]
    dock = api.post("/v1/camera", json={"meta": HOSTILE}).json()["id"]
    a = api.add_face(person_photo("A"), cam_id=gate, meta=HOSTILE)
    api.add_face(person_photo("B"), cam_id=gate)
    api.add_face(person_photo("C"), cam_id=dock)
    api.put(f"/v1/person/id/{a['person_id']}", json={"meta": "Ann <b>"})

    page = site.page(browser)
    site.login(page, token)
    expect(page.locator("#events .event")).to_have_count(3)
    expect(page.locator("#event-counts")).to_contain_text("3 events match, 1 alert")
    # the watch-list filter is applied by the server (one request, one page)
    page.select_option("#event-filters select[name=watch]", "match")
    page.click("#event-filters button[type=submit]")
    expect(page.locator("#events .event")).to_have_count(1)
    expect(page.locator("#event-counts")).to_contain_text("1 event match, 1 alert")
    assert page.locator("#events .event").get_attribute("data-id") == str(a["id"])
    searches = [u for u in site.urls if "/v1/history/" in u]
    assert all("watchlist" not in u for u in searches)  # filters travel in the body
    page.select_option("#event-filters select[name=watch]", "")
    page.select_option("#event-filters select[name=matched]", "known")
    page.click("#event-filters button[type=submit]")
    expect(page.locator("#events .event")).to_have_count(3)

    # the HTML report of the current filters (the link follows the form)
    page.select_option("#event-filters select[name=matched]", "")
    page.select_option("#event-filters select[name=cam]", gate)
    shot(page, "events-filters")
    with page.expect_download() as download:
        page.click("#export-report")
    assert re.fullmatch(r"events-report-\d{8}T\d{6}Z\.html", download.value.suggested_filename)
    text = Path(download.value.path()).read_text(encoding="utf-8")
    assert text.count("<tr class") + text.count("<tr><td") == 2  # the Gate's two events
    assert f"<td>{a['id']}</td>" in text
    assert "<script" not in text and "&lt;script&gt;" in text and "Ann &lt;b&gt;" in text
    assert not re.search(r'(src|href)\s*=\s*"?https?:', text)
    assert text.count('src="data:image/') == 2
    assert "Europe/Berlin" in text and "suspect A" in text

    # the file shows on its own, with nothing fetched from anywhere
    report = site.page(browser)
    fetched: list[str] = []
    report.on("request", lambda r: fetched.append(r.url))
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    report.goto(saved.as_uri())
    expect(report.locator("tbody tr")).to_have_count(2)
    assert all(u.startswith(("file:", "data:")) for u in fetched), fetched
    shot(report, "events-report")
    report.close()
    page.close()
