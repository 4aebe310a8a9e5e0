"""The HTML report of a filtered camera history (reference chapter 7, "Save demo report").

``GET /v1/history/report.html`` takes the filters of ``/v1/history/search`` as query
parameters, plus ``limit`` (rows, at most ``MAX_ROWS``; the newest first) and ``tz`` (an IANA
time zone such as ``Europe/Berlin``, default UTC; every time is printed with its zone). The
answer is one self-contained HTML file (``Content-Disposition: attachment``): the face crops
are inlined as ``data:`` URIs, there is no script, no stylesheet or image from anywhere else
(a CSP meta tag forbids any), and every text from the database is HTML-escaped. The header
holds the filters, the counts of the whole filtered history (events, alerts, watch-list
matches, unknown-face alerts) and how many rows the file holds.
"""

from __future__ import annotations

import base64
import html
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Request, Response

from videodetector.backend import history, watchlists
from videodetector.backend.deps import BackendDep, UserDep
from videodetector.backend.errors import bad_param
from videodetector.backend.params import Params
from videodetector.backend.service import Backend
from videodetector.backend.storage import PageRequest

MAX_ROWS = 1000
MAX_IMAGE_BYTES = 256 * 1024  # a larger face crop is left out of the report
MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
        ".webp": "image/webp"}

router = APIRouter(tags=["persons and history"])

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#111}
h1{font-size:20px;margin:0 0 8px}
.summary{display:flex;gap:16px;flex-wrap:wrap;margin:12px 0}
.summary div{border:1px solid #ddd;border-radius:6px;padding:8px 12px}
.summary b{display:block;font-size:20px}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #eee;padding:6px;text-align:left;vertical-align:middle}
img{width:64px;height:64px;object-fit:cover;border-radius:4px}
.alert{background:#fff4f4}
.swatch{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:4px}
.muted{color:#666}
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def zone_of(value: str | None) -> tzinfo:
    if value in (None, "", "UTC"):
        return UTC
    try:
        if len(value) > 64:
            raise ValueError(value)
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise bad_param("tz", "tz must be an IANA time zone such as Europe/Berlin",
                        value) from None


def when(ts: float, zone: tzinfo) -> str:
    """A time with its zone: ``2024-03-01 13:00:00 CET (UTC+01:00)``."""
    t = datetime.fromtimestamp(ts, UTC).astimezone(zone)
    offset = t.strftime("%z")
    return f"{t:%Y-%m-%d %H:%M:%S} {t.tzname()} (UTC{offset[:3]}:{offset[3:]})"


def data_uri(path: Path | None) -> str | None:
    """The image at ``path`` as a ``data:`` URI, or None (missing, too large, unknown type)."""
    if path is None:
        return None
    mime = MIME.get(path.suffix.lower())
    try:
        if mime is None or path.stat().st_size > MAX_IMAGE_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


@dataclass(frozen=True)
class ReportData:
    rows: list[sqlite3.Row]
    counts: dict[str, int]
    cameras: dict[str, str]
    persons: dict[int, str]
    matches: dict[int, dict[str, Any]]
    unknown_cams: set[str]


def collect(backend: Backend, user: int, f: history.EventFilter, limit: int) -> ReportData:
    query = history.prepare(backend, user, f)
    ids = backend.history_store.page(query, PageRequest(limit)).ids
    rows = backend.face_rows(user, ids)
    lists = history.refresh_matches(backend, user)
    cams = [*(r["cam_id"] for r in rows), *(f.cam_ids or ())]
    names = backend.report_store
    return ReportData(rows, history.counts(backend, user, f),
                      names.camera_names(user, cams),
                      names.person_names(user, (r["person_id"] for r in rows)),
                      history.stored_matches(backend, user, ids, lists),
                      watchlists.unknown_alert_cameras(backend, user))


def describe_filter(f: history.EventFilter, zone: tzinfo, cameras: dict[str, str]) -> str:
    parts = []
    if f.person_id is not None:
        parts.append(f"person {f.person_id}")
    if f.cam_ids is not None:
        parts.append("cameras " + ", ".join(cameras.get(c) or c for c in f.cam_ids))
    if f.start is not None:
        parts.append("from " + when(f.start, zone))
    if f.end is not None:
        parts.append("to " + when(f.end, zone))
    for flag, yes, no in ((f.friend, "friends", "foes"),
                          (f.matched, "known persons", "unknown persons"),
                          (f.watchlist, "watch-list matches", "no watch-list match")):
        if flag is not None:
            parts.append(yes if flag else no)
    return "; ".join(parts) or "all camera events"


def _row_html(backend: Backend, r: sqlite3.Row, d: ReportData, zone: tzinfo) -> str:
    match = d.matches.get(r["id"])
    alert = match is not None or r["cam_id"] in d.unknown_cams
    src = data_uri(backend.files.path(r["normalized"]))
    face = f'<img alt="face" src="{esc(src)}">' if src else '<span class="muted">no image</span>'
    person = ("unknown person" if r["person_id"] is None else
              d.persons.get(r["person_id"]) or f"person {r['person_id']}")
    if match:
        watch = (f'<span class="swatch" style="background:{esc(match["color"])}"></span>'
                 f'{esc(match["gallery"])}: {esc(match["meta"] or "face " + str(match["face_id"]))}'
                 f' ({match["confidence"]:.3f})')
    else:
        watch = "unknown face (alert)" if alert else '<span class="muted">none</span>'
    cells = [face, esc(r["id"]), esc(when(r["ts"], zone)),
             esc(d.cameras.get(r["cam_id"]) or r["cam_id"]), esc(person),
             "friend" if r["friend"] else "foe", watch, esc(r["meta"])]
    cls = ' class="alert"' if alert else ""
    return f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def render(backend: Backend, d: ReportData, f: history.EventFilter, zone: tzinfo,
           limit: int) -> str:
    c = d.counts
    shown = len(d.rows)
    note = (f"The newest {shown} of {c['events']} events" if shown < c["events"]
            else f"All {shown} events")
    summary = "".join(f"<div><b>{esc(n)}</b>{esc(label)}</div>" for n, label in (
        (c["events"], "events"), (c["alerts"], "alerts"), (c["watchlist"], "watch-list matches"),
        (c["unknown"], "unknown-face alerts"), (shown, "rows in this report")))
    head = ("<tr><th>Face</th><th>Event</th><th>Time</th><th>Camera</th><th>Person</th>"
            "<th>Friend or foe</th><th>Watch list</th><th>Meta</th></tr>")
    body = "\n".join(_row_html(backend, r, d, zone) for r in d.rows)
    generated = when(datetime.now(UTC).timestamp(), zone)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Camera events report</title><style>{STYLE}</style></head>
<body><h1>Camera events report</h1>
<p>Generated {esc(generated)}. Filters: {esc(describe_filter(f, zone, d.cameras))}.</p>
<div class="summary">{summary}</div>
<p class="muted">{esc(note)} (this report holds at most {limit} row{"" if limit == 1 else "s"},
newest first, the server's cap is {MAX_ROWS}; times in {esc(str(zone))}).</p>
<table><thead>{head}</thead><tbody>
{body}
</tbody></table></body></html>
"""


def build(backend: Backend, user: int, p: Params) -> tuple[str, int]:
    f = history.parse_filter(p)
    zone = zone_of(p.raw("tz"))
    limit = p.integer("limit", MAX_ROWS, lo=1, hi=MAX_ROWS)
    data = collect(backend, user, f, limit)
    return render(backend, data, f, zone, limit), len(data.rows)


def _query(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "string"}}


REPORT_DOC = {"parameters": [
    _query("person_id", "person id"), _query("cam_ids", "camera ids: a JSON list or a,b"),
    _query("start", "ISO 8601 or epoch seconds"), _query("end", "ISO 8601 or epoch seconds"),
    _query("friend", "true or false"),
    _query("matched", "true: joined to a person; false: unknown person"),
    _query("watchlist", "true: matches a watch list; false: matches none"),
    _query("limit", f"rows, 1..{MAX_ROWS} (default {MAX_ROWS}), newest first"),
    _query("tz", "IANA time zone of the printed times (default UTC)")]}


@router.get("/history/report.html", response_class=Response, openapi_extra=REPORT_DOC,
            responses={200: {"content": {"text/html": {}},
                             "description": "one self-contained HTML file"}})
def history_report(request: Request, user: UserDep, backend: BackendDep) -> Response:
    """The filtered history as one self-contained HTML file (chapter 7's "Save demo
    report"): the filters of /history/search as query parameters (``person_id``,
    ``cam_ids``, ``start``, ``end``, ``friend``, ``matched``, ``watchlist``), ``limit`` rows
    (1..1000, default 1000, newest first) and ``tz`` (IANA zone of the printed times, default
    UTC). Face crops are inlined as data: URIs; nothing is loaded from elsewhere; every text
    is escaped. The header counts the whole filtered history."""
    p = Params(dict(request.query_params))
    text, rows = build(backend, user, p)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Response(text, media_type="text/html; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="events-report-{stamp}.html"',
        "X-Report-Rows": str(rows), "Cache-Control": "no-store"})
