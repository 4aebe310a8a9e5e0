"""The operator console's server side: pages at /, the login session (cookie + CSRF), and the
live event stream GET /v1/events/stream (Server-Sent Events), against the real server."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.backend.conftest import Api, error_of, person_photo

pytestmark = pytest.mark.timeout(120)


def login(server_url: str, token: str) -> tuple[requests.Session, str]:
    """A browser-like session logged in with ``token``: (session with the cookie, csrf)."""
    s = requests.Session()
    r = s.post(server_url + "/v1/session", json={"token": token}, timeout=10)
    assert r.status_code == 200, r.text
    return s, r.json()["csrf"]


# -- pages ------------------------------------------------------------------------------

def test_console_page_and_static_files_are_served_with_a_strict_policy(server: Any) -> None:
    r = requests.get(server.url + "/", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js"' in r.text
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "http" not in csp.replace(server.url, "")  # nothing from other sites
    for name, ctype in (("app.js", "text/javascript"), ("style.css", "text/css")):
        r = requests.get(f"{server.url}/static/{name}", timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith(ctype)
        assert "https://" not in r.text and "http://" not in r.text
    for bad in ("../app.py", "..%2Fapp.py", "__init__.py", "nope.js"):
        assert requests.get(f"{server.url}/static/{bad}", timeout=10).status_code == 404
    # the API keeps its own 404s
    assert requests.get(server.url + "/v1/nope", timeout=10).json()["code"] == "NOT_FOUND"


def test_console_files_are_package_data() -> None:
    """A wheel must carry the pages: pyproject lists them as package data."""
    import tomllib
    from pathlib import Path

    from videodetector.backend import console
    root = Path(__file__).resolve().parents[2]
    data = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["videodetector.backend.web"]
    for path in console.WEB_DIR.iterdir():
        if path.suffix != ".py":
            assert f"*{path.suffix}" in patterns, path.name
    assert (console.WEB_DIR / "__init__.py").is_file()


# -- session ---------------------------------------------------------------------------

def test_login_sets_an_httponly_strict_cookie_that_is_not_the_token(server: Any) -> None:
    token = server.create_token()
    r = requests.post(server.url + "/v1/session", json={"token": token}, timeout=10)
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("vd_session=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert token not in cookie and token not in r.text
    assert r.json()["csrf"]


def test_login_refuses_unknown_tokens_and_forms(server: Any) -> None:
    error_of(requests.post(server.url + "/v1/session", json={"token": "x" * 32}, timeout=10),
             401, "AUTH_FAILED")
    # a form (which another site could post without a preflight) is refused
    r = requests.post(server.url + "/v1/session", data={"token": server.create_token()},
                      timeout=10)
    assert r.status_code == 415 and "set-cookie" not in r.headers
    error_of(requests.post(server.url + "/v1/session", json={"token": 5}, timeout=10),
             400, "BAD_PARAM")
    error_of(requests.get(server.url + "/v1/session", timeout=10), 401, "AUTH_FAILED")


def test_session_reads_and_csrf_checked_writes(server: Any) -> None:
    token = server.create_token()
    s, csrf = login(server.url, token)
    assert s.get(server.url + "/v1/session", timeout=10).json() == {"csrf": csrf}
    assert s.get(server.url + "/v1/camera", timeout=10).json() == []
    # a write without (or with a wrong) CSRF header is refused and changes nothing
    for headers in ({}, {"X-CSRF-Token": "wrong"}):
        r = s.post(server.url + "/v1/camera", json={"meta": "x"}, headers=headers, timeout=10)
        error_of(r, 403, "CSRF_FAILED")
    assert s.get(server.url + "/v1/camera", timeout=10).json() == []
    r = s.post(server.url + "/v1/camera", json={"meta": "Gate"},
               headers={"X-CSRF-Token": csrf}, timeout=10)
    assert r.status_code == 201, r.text
    # the cookie's data is the token's data
    assert [c["meta"] for c in Api(server.url, token).get("/v1/camera").json()] == ["Gate"]
    # logout needs CSRF too, then the cookie no longer works
    error_of(s.delete(server.url + "/v1/session", timeout=10), 403, "CSRF_FAILED")
    assert s.delete(server.url + "/v1/session", headers={"X-CSRF-Token": csrf},
                    timeout=10).status_code == 204
    old = requests.get(server.url + "/v1/camera", cookies={"vd_session": "nope"}, timeout=10)
    error_of(old, 401, "AUTH_FAILED")
    assert not s.cookies.get("vd_session")


def test_logged_out_session_id_is_dead_even_if_replayed(server: Any) -> None:
    s, csrf = login(server.url, server.create_token())
    sid = s.cookies["vd_session"]
    s.delete(server.url + "/v1/session", headers={"X-CSRF-Token": csrf}, timeout=10)
    r = requests.get(server.url + "/v1/camera", cookies={"vd_session": sid}, timeout=10)
    error_of(r, 401, "AUTH_FAILED")


def test_a_session_sees_only_its_tokens_data(server: Any) -> None:
    first, second = server.create_token(), server.create_token()
    Api(server.url, first).post("/v1/camera", json={"meta": "first's"})
    s, _ = login(server.url, second)
    assert s.get(server.url + "/v1/camera", timeout=10).json() == []


# -- event stream ----------------------------------------------------------------------

class SseReader:
    """Reads ``GET /v1/events/stream`` in a thread; ``events`` collects (id, data).

    Plain http.client so that ``close()`` can shut the socket down at once (a receiver that
    dies), which a blocked requests/urllib3 read does not allow."""

    def __init__(self, url: str, headers: dict[str, str], query: str = "") -> None:
        self.events: list[tuple[int, dict[str, Any]]] = []
        host, port = urlsplit(url).hostname, urlsplit(url).port
        self.conn = http.client.HTTPConnection(host, port, timeout=30)
        self.conn.request("GET", "/v1/events/stream" + query, headers=headers)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = dict(self.resp.getheaders())
        self.thread = threading.Thread(target=self._read, daemon=True)
        if self.status == 200:
            # the stream's first message (retry + comment, no data) is sent once the server
            # counts the stream as open: read it here, so a test needs no sleep to be sure
            while self.resp.readline() not in (b"\n", b"\r\n", b""):
                pass
            self.thread.start()

    def _read(self) -> None:
        event_id, data = None, []
        try:
            while raw := self.resp.readline():
                line = raw.decode("utf-8").rstrip("\r\n")
                if line.startswith("id: "):
                    event_id = int(line[4:])
                elif line.startswith("data: "):
                    data.append(line[6:])
                elif line == "" and data:
                    self.events.append((event_id, json.loads("\n".join(data))))
                    event_id, data = None, []
        except (OSError, ValueError, http.client.HTTPException):
            pass  # closed by close()

    def wait(self, n: int, timeout: float = 20) -> list[tuple[int, dict[str, Any]]]:
        deadline = time.monotonic() + timeout
        while len(self.events) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.events)

    def close(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # (no socket once closed)
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        if self.thread.is_alive():
            self.thread.join(5)
        self.conn.close()


def post_event(api: Api, cam_id: str, meta: str = "") -> int:
    return api.add_face(person_photo("A"), cam_id=cam_id, meta=meta)["id"]


def test_stream_sends_new_events_of_the_token_only(server: Any) -> None:
    api = Api(server.url, server.create_token())
    other = Api(server.url, server.create_token())
    cam = api.post("/v1/camera", json={"meta": "Door <b>1</b>"}).json()["id"]
    post_event(api, cam)  # before the stream: not sent (the stream starts at new events)
    mine = SseReader(server.url, {"Authorization": f"Token {api.token}"})
    theirs = SseReader(server.url, {"Authorization": f"Token {other.token}"})
    try:
        assert mine.status == 200
        assert mine.headers["content-type"].startswith("text/event-stream")
        face = post_event(api, cam, meta="m1")
        api.add_face(person_photo("B"), meta="gallery face, not an event")
        other_cam = other.post("/v1/camera", json={"meta": "theirs"}).json()["id"]
        theirs_face = post_event(other, other_cam)
        got = mine.wait(1)
        assert [i for i, _ in got] == [face]
        data = got[0][1]
        assert data["id"] == face and data["cam_id"] == cam and data["meta"] == "m1"
        assert data["camera_meta"] == "Door <b>1</b>"
        assert data["normalized"].startswith(server.url)
        assert [i for i, _ in theirs.wait(1)] == [theirs_face]
        time.sleep(1.2)  # nothing else arrives
        assert [i for i, _ in mine.events] == [face]
    finally:
        mine.close()
        theirs.close()


def test_stream_resumes_after_last_event_id_without_gaps_or_repeats(server: Any) -> None:
    """Kill the receiver, post while it is away, reconnect with Last-Event-ID: every event
    arrives exactly once, in order."""
    api = Api(server.url, server.create_token())
    cam = api.post("/v1/camera", json={"meta": "Hall"}).json()["id"]
    posted = [post_event(api, cam)]  # before the first connection: ?after=0 replays it
    received: list[int] = []
    for round_ in range(4):
        headers = {"Authorization": f"Token {api.token}"}
        if received:
            headers["Last-Event-ID"] = str(received[-1])
        reader = SseReader(server.url, headers, "" if received else "?after=0")
        try:
            if round_ < 3:
                posted.append(post_event(api, cam))  # while connected
            reader.wait(len(posted) - len(received))
            time.sleep(0.7)  # a repeat would arrive by now
        finally:
            reader.close()
        received += [i for i, _ in reader.events]
        if round_ < 3:
            posted.append(post_event(api, cam))  # while no receiver is connected
    assert received == posted


def test_stream_accepts_the_session_cookie_and_rejects_bad_ids(server: Any) -> None:
    token = server.create_token()
    api = Api(server.url, token)
    cam = api.post("/v1/camera", json={"meta": "C"}).json()["id"]
    first = post_event(api, cam)
    s, _ = login(server.url, token)
    reader = SseReader(server.url, {"Cookie": f"vd_session={s.cookies['vd_session']}"},
                       "?after=0")
    try:
        assert [i for i, _ in reader.wait(1)] == [first]
    finally:
        reader.close()
    error_of(requests.get(server.url + "/v1/events/stream", timeout=10), 401, "AUTH_FAILED")
    for bad in ("-1", "abc", "1.5", str(2**64)):
        r = api.get("/v1/events/stream", headers={"Last-Event-ID": bad})
        error_of(r, 400, "BAD_PARAM")
        error_of(api.get("/v1/events/stream", params={"after": bad}), 400, "BAD_PARAM")


def test_stopping_the_server_ends_open_streams_at_once(db_url, tmp_path: Any) -> None:
    """An open stream must not hold a shutdown for uvicorn's 10 s graceful timeout."""
    from videodetector.backend.server import BackendServer
    from videodetector.backend.settings import Settings

    srv = BackendServer(Settings(data_dir=tmp_path, db=db_url, log_level="warning")).start()
    try:
        reader = SseReader(srv.url, {"Authorization": f"Token {srv.create_token()}"})
        assert reader.status == 200
    finally:
        started = time.monotonic()
        srv.stop()
        took = time.monotonic() - started
    reader.thread.join(2)
    assert not reader.thread.is_alive()  # the server ended the stream
    reader.close()
    assert took < 4, f"stopping took {took:.1f} s with a stream open"


def test_stream_sees_events_written_through_another_connection(db_url, tmp_path: Any) -> None:
    """Two backends on one data directory (as two processes would be): events posted to the
    first stream from the second, in order — the catch-up reads the database, not memory."""
    from videodetector.backend.server import BackendServer
    from videodetector.backend.settings import Settings

    settings = Settings(data_dir=tmp_path, db=db_url, log_level="warning")
    with BackendServer(settings) as writer, BackendServer(settings) as streamer:
        token = writer.create_token()
        api = Api(writer.url, token)
        cam = api.post("/v1/camera", json={"meta": "Yard"}).json()["id"]
        reader = SseReader(streamer.url, {"Authorization": f"Token {token}"})
        try:
            posted = [post_event(api, cam) for _ in range(3)]
            got = reader.wait(3)
        finally:
            reader.close()
        assert [i for i, _ in got] == posted
        assert got[0][1]["camera_meta"] == "Yard"


def test_open_streams_per_token_are_limited(server: Any) -> None:
    from videodetector.backend.events import MAX_STREAMS_PER_USER

    token = server.create_token()
    headers = {"Authorization": f"Token {token}"}
    readers = [SseReader(server.url, headers) for _ in range(MAX_STREAMS_PER_USER)]
    try:
        assert all(r.status == 200 for r in readers)  # each counted (its first message read)
        extra = SseReader(server.url, headers)
        assert extra.status == 429
        assert json.loads(extra.resp.read())["code"] == "TOO_MANY_STREAMS"
        extra.close()
        other = SseReader(server.url, {"Authorization": f"Token {server.create_token()}"})
        assert other.status == 200  # another token is not affected
        other.close()
        readers.pop().close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the server notices the closed stream
            again = SseReader(server.url, headers)
            if again.status == 200:
                break
            again.close()
            time.sleep(0.2)
        readers.append(again)
        assert again.status == 200
    finally:
        for r in readers:
            r.close()
