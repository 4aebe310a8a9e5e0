"""Camera health and preview pictures sent by the detector (POST .../health, PUT .../preview),
read by the console (GET .../health, /v1/cameras/health, .../preview.jpg)."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from tests.backend.conftest import Api, error_of
from videodetector.backend import camhealth
from videodetector.backend.server import BackendServer

REPORT = {"detector": "door-box", "version": "0.1.0", "state": "running", "interval": 5,
          "fps_in": 25.0, "fps_processed": 12.5, "frames_in": 1000, "frames_processed": 500,
          "frames_dropped": 7, "reconnects": 2, "crashes": 0, "last_frame_time": time.time(),
          "frame_width": 1920, "frame_height": 1080}


def jpeg(w: int, h: int, quality: int = 80, noise: bool = False) -> bytes:
    rng = np.random.default_rng(1)
    image = (rng.integers(0, 255, (h, w, 3), dtype=np.uint8) if noise
             else np.full((h, w, 3), 90, np.uint8))
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


@pytest.fixture
def cam(api: Api) -> str:
    r = api.post("/v1/camera", json={"meta": "door", "url": "rtsp://cam/1", "detector": "door-box"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_no_report_means_no_detector(api: Api, cam: str):
    h = api.get(f"/v1/camera/{cam}/health").json()
    assert h == {"cam_id": cam, "status": "none", "report": None, "received": None, "age": None,
                 "preview": None}
    assert api.get("/v1/cameras/health").json() == [h]
    error_of(api.get(f"/v1/camera/{cam}/preview.jpg"), 404, "NOT_FOUND")


def test_report_then_preview_on_request(api: Api, cam: str):
    r = api.post(f"/v1/camera/{cam}/health", json=REPORT)
    assert r.status_code == 200, r.text
    assert r.json() == {"preview_wanted": True}  # none yet
    h = api.get(f"/v1/camera/{cam}/health").json()
    assert h["status"] == "ok" and h["age"] < 5 and h["preview"] is None
    assert h["report"]["frames_dropped"] == 7 and h["report"]["detector"] == "door-box"
    picture = jpeg(1280, 720)
    r = api.put(f"/v1/camera/{cam}/preview", data=picture,
                params={"frame_width": 1920, "frame_height": 1080},
                headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 204, r.text
    got = api.get(f"/v1/camera/{cam}/preview.jpg")
    assert got.status_code == 200 and got.content == picture
    assert got.headers["content-type"] == "image/jpeg"
    h = api.get(f"/v1/camera/{cam}/health").json()
    assert {k: h["preview"][k] for k in ("width", "height", "frame_width", "frame_height")} == {
        "width": 1280, "height": 720, "frame_width": 1920, "frame_height": 1080}
    # a fresh picture exists: not wanted, until the console asks for one
    assert api.post(f"/v1/camera/{cam}/health", json=REPORT).json() == {"preview_wanted": False}
    assert api.post(f"/v1/camera/{cam}/preview/request").status_code == 202
    assert api.post(f"/v1/camera/{cam}/health", json=REPORT).json() == {"preview_wanted": True}
    # deleting the camera forgets its health and picture
    assert api.delete(f"/v1/camera/{cam}").status_code == 204
    error_of(api.get(f"/v1/camera/{cam}/preview.jpg"), 404, "NOT_FOUND")


def test_an_old_report_is_stale(api: Api, cam: str, server: BackendServer):
    api.post(f"/v1/camera/{cam}/health", json={**REPORT, "interval": 1})
    # the stored time is moved back instead of waiting 3 intervals
    db = server.backend.db
    with db.transaction() as conn:
        conn.execute("UPDATE camera_health SET received = received - 10 WHERE cam_id = ?",
                     (cam,))
    h = api.get(f"/v1/camera/{cam}/health").json()
    assert h["status"] == "stale" and h["age"] >= 10 and h["report"]["detector"] == "door-box"


def test_only_the_cameras_token_may_report_or_read(api: Api, cam: str, server: BackendServer):
    other = Api(server.url, server.create_token())
    error_of(other.post(f"/v1/camera/{cam}/health", json=REPORT), 404, "NOT_FOUND")
    error_of(other.get(f"/v1/camera/{cam}/health"), 404, "NOT_FOUND")
    error_of(other.get(f"/v1/camera/{cam}/preview.jpg"), 404, "NOT_FOUND")
    error_of(other.put(f"/v1/camera/{cam}/preview", data=jpeg(64, 48),
                       headers={"Content-Type": "image/jpeg"}), 404, "NOT_FOUND")
    assert other.get("/v1/cameras/health").json() == []
    anon = Api(server.url, None)
    error_of(anon.post(f"/v1/camera/{cam}/health", json=REPORT), 401, "AUTH_FAILED")
    error_of(anon.get(f"/v1/camera/{cam}/preview.jpg"), 401, "AUTH_FAILED")


@pytest.mark.parametrize("change, param", [
    ({"detector": ""}, "detector"), ({"fps_in": -1}, "fps_in"), ({"interval": 0}, "interval"),
    ({"state": "exploded"}, "state"), ({"frames_dropped": "many"}, "frames_dropped"),
    ({"frame_width": 20000}, "frame_width"), ({"version": "v" * 65}, "version"),
])
def test_bad_reports_are_refused_naming_the_field(api: Api, cam: str, change, param):
    body = error_of(api.post(f"/v1/camera/{cam}/health", json={**REPORT, **change}), 400,
                    "BAD_PARAM")
    assert body["param"] == param


def test_report_and_preview_size_limits(api: Api, cam: str):
    big = {**REPORT, "error": None, "padding": "x" * camhealth.MAX_HEALTH_BYTES}
    error_of(api.post(f"/v1/camera/{cam}/health", json=big), 413, "BAD_PARAM")
    error_of(api.post(f"/v1/camera/{cam}/health", data=b"{not json",
                      headers={"Content-Type": "application/json"}), 400, "MALFORMED_JSON")
    put = lambda data, **params: api.put(f"/v1/camera/{cam}/preview", data=data,  # noqa: E731
                                         params=params, headers={"Content-Type": "image/jpeg"})
    noisy = jpeg(1280, 960, quality=100, noise=True)
    assert len(noisy) > camhealth.MAX_PREVIEW_BYTES
    error_of(put(noisy), 413, "BAD_PARAM")
    assert error_of(put(jpeg(1281, 200)), 400, "BAD_PARAM")["param"] == "preview"
    error_of(put(b"\x89PNG\r\n\x1a\n" + b"0" * 100), 400, "BAD_PARAM")
    error_of(put(b"\xff\xd8\xff\xe0" + b"\x00" * 100), 400, "BAD_PARAM")
    # a header that claims 60000x60000 px is refused before any decoding
    bomb = bytearray(jpeg(100, 100))
    sof = bomb.index(b"\xff\xc0")
    bomb[sof + 5:sof + 9] = (60000).to_bytes(2, "big") * 2
    error_of(put(bytes(bomb)), 400, "BAD_PARAM")
    # a 4:3 picture is not a scaled 16:9 frame
    assert error_of(put(jpeg(640, 480), frame_width=1920, frame_height=1080), 400,
                    "BAD_PARAM")["param"] == "frame_width"
    assert error_of(put(jpeg(640, 360), frame_width=0, frame_height=1080), 400,
                    "BAD_PARAM")["param"] == "frame_width"
    assert put(jpeg(640, 360), frame_width=1920, frame_height=1080).status_code == 204


def test_a_connection_idle_for_a_health_interval_is_still_open(api: Api, cam: str):
    """Found in a long run: the detector's health reports (every 5 s on one keep-alive
    connection) now and then failed with "Remote end closed connection without response",
    an ERROR in its log: uvicorn closed connections idle for 5 s, its default, the moment
    the next report was sent on it. The backend keeps idle connections longer than the
    detector's intervals (health 5 s, camera list 15 s)."""
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(api.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    headers = {"Authorization": f"Token {api.token}"}
    try:
        conn.request("GET", f"/v1/camera/{cam}/health", headers=headers)
        first = conn.getresponse()
        first.read()
        assert first.status == 200
        sock = conn.sock
        time.sleep(6.0)  # a health interval and a bit
        conn.request("GET", f"/v1/camera/{cam}/health", headers=headers)
        again = conn.getresponse()  # RemoteDisconnected when the server closed it
        again.read()
        assert again.status == 200 and conn.sock is sock  # the same connection
    finally:
        conn.close()
