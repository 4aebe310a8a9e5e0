"""GET /v1/history/report.html: the filtered history as one self-contained, escaped HTML file
(chapter 7 "Save demo report"). Real backend over HTTP, real models."""

from __future__ import annotations

import re
from typing import Any

from tests.backend.conftest import Api, error_of, person_photo

HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


def setup_history(api: Api) -> dict[str, Any]:
    assert api.post("/v1/galleries/wanted").status_code == 201
    api.add_face(person_photo("A"), galleries="wanted", meta="suspect " + HOSTILE)
    assert api.put("/v1/galleries/wanted/watchlist", json={"threshold": "strict"}).ok
    gate = api.post("/v1/camera", json={"meta": "Gate " + HOSTILE}).json()["id"]
    dock = api.post("/v1/camera", json={"meta": "Dock"}).json()["id"]
    a = api.add_face(person_photo("A"), cam_id=gate, meta=HOSTILE,
                     timestamp="2024-03-01T11:00:00")
    b = api.add_face(person_photo("B"), cam_id=gate, timestamp="2024-03-01T12:00:00")
    c = api.add_face(person_photo("C"), cam_id=dock, timestamp="2024-03-02T12:00:00")
    api.put(f"/v1/person/id/{b['person_id']}", json={"meta": "Bob " + HOSTILE})
    return {"gate": gate, "dock": dock, "a": a, "b": b, "c": c}


def rows_of(text: str) -> list[str]:
    body = text.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr[^>]*>.*?</tr>", body, re.S)


def event_ids(text: str) -> list[int]:
    return [int(re.findall(r"<td>(\d+)</td>", row)[0]) for row in rows_of(text)]


def test_report_holds_the_filtered_events_escaped_and_self_contained(api: Api) -> None:
    h = setup_history(api)
    r = api.get("/v1/history/report.html", params={"cam_ids": h["gate"], "tz": "Asia/Tokyo"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["content-disposition"].startswith('attachment; filename="events-report-')
    text = r.text
    assert event_ids(text) == [h["b"]["id"], h["a"]["id"]]  # newest first, the Gate only
    # every text from the database is escaped: no markup of ours is ever theirs
    assert "<script" not in text.lower()
    tags = re.findall(r"<img[^>]*>", text)
    assert len(tags) == 2 and all(t.startswith('<img alt="face" src="data:') for t in tags)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img src=x" in text
    assert "Bob &lt;script&gt;" in text and "Gate &lt;script&gt;" in text
    assert "wanted: suspect &lt;script&gt;" in text  # a's watch-list match, with its meta
    # nothing from elsewhere: images inline, a CSP that forbids anything else
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", text, re.I)
    assert "url(" not in text and "@import" not in text
    assert len(re.findall(r'src="data:image/(png|jpeg);base64,', text)) == 2
    assert "default-src 'none'; img-src data:" in text
    # times in the asked zone, with the zone; the header counts the filtered history
    assert "2024-03-01 21:00:00 JST (UTC+09:00)" in text
    assert re.search(r"<b>2</b>events", text) and re.search(r"<b>1</b>alerts", text)
    assert "All 2 events" in text


def test_report_rows_are_limited_and_follow_every_filter(api: Api) -> None:
    h = setup_history(api)
    r = api.get("/v1/history/report.html", params={"limit": 1})
    assert r.status_code == 200 and r.headers["x-report-rows"] == "1"
    assert event_ids(r.text) == [h["c"]["id"]]
    assert "The newest 1 of 3 events" in r.text and "at most 1 row," in r.text
    r = api.get("/v1/history/report.html", params={"watchlist": "true"})
    assert event_ids(r.text) == [h["a"]["id"]]
    r = api.get("/v1/history/report.html", params={"watchlist": "false",
                                                   "end": "2024-03-01T23:00:00"})
    assert event_ids(r.text) == [h["b"]["id"]]
    r = api.get("/v1/history/report.html", params={"person_id": h["c"]["person_id"]})
    assert event_ids(r.text) == [h["c"]["id"]]
    for params, param in (({"limit": 1001}, "limit"), ({"limit": 0}, "limit"),
                          ({"tz": "Mars/Olympus"}, "tz"), ({"tz": "../../etc/passwd"}, "tz"),
                          ({"start": "soon"}, "start")):
        assert error_of(api.get("/v1/history/report.html", params=params), 400,
                        "BAD_PARAM")["param"] == param


def test_report_is_per_token_and_documented(api: Api, server: Any) -> None:
    setup_history(api)
    other = Api(server.url, server.create_token())
    r = other.get("/v1/history/report.html")
    assert r.status_code == 200 and event_ids(r.text) == []
    assert Api(server.url, None).get("/v1/history/report.html").status_code == 401
    spec = api.get("/v1/openapi.json").json()
    op = spec["paths"]["/v1/history/report.html"]["get"]
    assert "text/html" in op["responses"]["200"]["content"]
    assert "/v1/history/counts" in spec["paths"]
