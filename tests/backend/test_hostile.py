"""Issue 7: ordinary footage and one hostile client must not stop the backend.

One test (or more) per item of the issue's backend edge: memory amplification by images (4),
server errors on crafted input (7), redirect loops (8), camera regions out of bounds (9, API
side), exposure (11: /metrics, Host header, --fetch-urls to private addresses, camera urls
naming local files, unbounded meta / Idempotency-Key). All against a real server.
"""

from __future__ import annotations

import http.server
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from tests.backend.conftest import SERVER_SETTINGS, Api, error_of, person_photo, png_bytes
from videodetector.backend.server import BackendServer
from videodetector.backend.settings import Settings

METRICS_TOKEN = "metrics-secret-0123456789"
VIDEO_ROOT = "/srv/videos"


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory, store: str | None
                   ) -> Iterator[BackendServer]:
    """A server with the settings the exposure items are about."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("hostile"), db=store, **SERVER_SETTINGS,
                        metrics_token=METRICS_TOKEN, camera_file_roots=(Path(VIDEO_ROOT),),
                        fetch_urls=True, fetch_timeout=5)
    with BackendServer(settings) as srv:
        yield srv


@pytest.fixture
def hapi(hostile_server: BackendServer) -> Api:
    return Api(hostile_server.url, hostile_server.create_token())


def blank_png(width: int, height: int) -> bytes:
    """A PNG that compresses to almost nothing whatever its pixel size (a small file that
    claims many pixels)."""
    buf = io.BytesIO()
    Image.new("L", (width, height)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def face_png() -> bytes:
    return png_bytes(np.full((112, 112, 3), 128, np.uint8))


# -- 4: memory amplification ----------------------------------------------------

def test_large_normalized_faces_are_refused_before_decoding(api: Api):
    # Was: 32 x 6000x6000 PNGs (140 KB each) as face0..face31 took +3.5 GB and 27 s of CPU.
    big = blank_png(6000, 6000)
    assert len(big) < 200_000
    files = [(f"face{i}", (f"f{i}.png", big, "image/png")) for i in range(32)]
    t0 = time.monotonic()
    r = api.post("/v1/identify", files=files)
    elapsed = time.monotonic() - t0
    body = error_of(r, 400, "BAD_PARAM")
    assert body["param"] == "face0" and "max_normalized_size" in body["reason"]
    assert elapsed < 5, f"refusing took {elapsed:.1f} s: the pixels were decoded"


def test_pixels_per_request_are_bounded(db_url, tmp_path):
    settings = Settings(data_dir=tmp_path, db=db_url, log_level="warning", max_size=1000,
                        max_normalized_size=1000, max_request_pixels=1_000_000)
    face = blank_png(600, 600)  # 360,000 pixels each: the third one exceeds the budget
    with BackendServer(settings) as srv:
        api = Api(srv.url, srv.create_token())
        files = [(f"face{i}", (f"f{i}.png", face, "image/png")) for i in range(3)]
        body = error_of(api.post("/v1/identify", files=files), 413, "BAD_PARAM")
        assert body["param"] == "face2" and "max_request_pixels" in body["reason"]
        # /verify: photo1 and photo2 share one budget
        photo = blank_png(800, 800)
        r = api.post("/v1/verify", files={"photo1": ("a.png", photo, "image/png"),
                                          "photo2": ("b.png", photo, "image/png")})
        assert error_of(r, 413, "BAD_PARAM")["param"] == "photo2"
        # within the budget the request goes through
        files = [(f"face{i}", (f"f{i}.png", face_png(), "image/png")) for i in range(3)]
        assert api.post("/v1/identify", files=files).status_code == 200


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (its pixel data is a stub)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("path", ["/v1/detect", "/v1/face"])
def test_a_header_claiming_billions_of_pixels_is_called_too_large(api: Api, path):
    """Found by hand against a running backend: a 60000x60000 header was refused with
    "photo is not a valid JPEG, PNG or WebP image: Image size (3600000000 pixels) exceeds
    limit ... could be decompression bomb DOS attack": it is a valid image, too large."""
    r = api.post(path, files={"photo": ("p.png", huge_png_header(60000, 60000), "image/png")})
    body = error_of(r, 400, "BAD_PARAM")
    assert body["param"] == "photo"
    assert "not a valid" not in body["reason"] and "too large" in body["reason"], body
    assert "max_size" in body["reason"], body


def test_at_most_64_normalized_faces(api: Api):
    files = [(f"face{i}", (f"f{i}.png", face_png(), "image/png")) for i in range(65)]
    assert error_of(api.post("/v1/identify", files=files), 400, "BAD_PARAM")["param"] == "face64"
    # a photo with 64 normalized faces is within the limits
    files = [("photo", ("p.jpg", person_photo("A"), "image/jpeg")), *files[:64]]
    r = api.post("/v1/face", files=files, data={"bbox": json.dumps([[0, 0, 50, 50]] * 64)})
    assert r.status_code == 200 and len(r.json()["results"]) == 64, r.text


def test_new_settings_from_flags_name_the_option():
    from videodetector.backend.cli import build_parser, settings_from_args
    from videodetector.backend.settings import SettingsError

    args = build_parser().parse_args([
        "serve", "--fetch-allow", "10.0.0.0/8, 192.168.1.0/24", "--camera-file-roots",
        "/srv/a,/srv/b", "--metrics-token", METRICS_TOKEN, "--max-normalized-size", "512"])
    s = settings_from_args(args)
    assert s.fetch_allow == ("10.0.0.0/8", "192.168.1.0/24")
    assert s.camera_file_roots == (Path("/srv/a"), Path("/srv/b"))
    assert s.metrics_token == METRICS_TOKEN and s.max_normalized_size == 512
    for flags, name in ((["--fetch-allow", "not-a-net"], "fetch_allow"),
                        (["--camera-file-roots", "relative/dir"], "camera_file_roots"),
                        (["--metrics-token", "short"], "metrics_token"),
                        (["--max-request-pixels", "1000"], "max_request_pixels")):
        with pytest.raises(SettingsError, match=name):
            settings_from_args(build_parser().parse_args(["serve", *flags]))


# -- 7: crafted input was a 500 -------------------------------------------------

def test_deeply_nested_json_body_is_malformed_json(api: Api):
    deep = '{"a":' * 100_000 + "1" + "}" * 100_000  # was a RecursionError (500)
    r = api.post("/v1/history/search", data=deep, headers={"Content-Type": "application/json"})
    error_of(r, 400, "MALFORMED_JSON")
    nested = '{"a":' * 20 + "1" + "}" * 20  # parses, but deeper than the limit
    r = api.post("/v1/history/search", data=nested,
                 headers={"Content-Type": "application/json"})
    assert "16" in error_of(r, 400, "MALFORMED_JSON")["reason"]


@pytest.mark.parametrize("body", [
    '{"n": ' + "1" * 5000 + "}",  # int() refuses more than 4300 digits (ValueError, was 500)
    '{"threshold": NaN}', '{"threshold": 1e999}', '{"x": Infinity}',
])
def test_json_numbers_python_cannot_handle_are_malformed_json(api: Api, body):
    r = api.post("/v1/identify", data=body, headers={"Content-Type": "application/json"})
    error_of(r, 400, "MALFORMED_JSON")


def test_deeply_nested_detector_params_is_bad_param(api: Api):
    files = [("face0", ("f.png", face_png(), "image/png"))]
    for deep in ("[" * 100_000 + "]" * 100_000, "[" * 20 + "]" * 20):
        r = api.post("/v1/face", files=files, data={"detectorParams": deep})
        assert error_of(r, 400, "BAD_PARAM")["param"] == "detectorParams"
    r = api.post("/v1/face", files=files, data={"detectorParams": json.dumps(["x" * 70000])})
    assert error_of(r, 400, "BAD_PARAM")["param"] == "detectorParams"


def test_detector_params_with_a_full_track_are_kept(api: Api):
    # what fkvideo_detector --send-track posts: up to 500 centres at full float precision
    params = {"score": 0.9, "direction_score": 0.5, "track_id": 7,
              "track": [[1234.5678901234567, 567.8901234567891]] * 500}
    r = api.post("/v1/face", files=[("face0", ("f.png", face_png(), "image/png"))],
                 data={"detectorParams": json.dumps(params), "bbox": "[[10, 20, 122, 132]]"})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["detectorParams"] == params


@pytest.mark.parametrize("bbox", [
    "[[NaN, 0, 10, 10]]",  # was ValueError (500) rendering the error body
    "[[0, 0, 1e308, 1e308]]",  # was OverflowError (500) cropping
    "[[0, 0, 1e999, 10]]", "[[0, 0, " + "9" * 400 + ", 10]]",
    "[[-100000, 0, 10, 10]]", json.dumps([[0, 0, 10, 10]] * 300),
])
def test_bad_box_coordinates_are_bad_param(api: Api, bbox):
    r = api.post("/v1/identify", files={"photo": person_photo("A")}, data={"bbox": bbox})
    assert error_of(r, 400, "BAD_PARAM")["param"] == "bbox"


def test_bad_box_in_a_json_body_is_refused(api: Api):
    r = api.post("/v1/identify", json={"photo": "http://x", "bbox": [[0, 0, 1e308, 1e308]]})
    assert error_of(r, 400, "BAD_PARAM")["param"] in ("bbox", "photo")
    r = api.post("/v1/face", json={"bbox": [[0, 0, 1e308, 1e308]], "meta": "x"})
    assert error_of(r, 400, "BAD_PARAM")["param"] == "bbox"


@pytest.mark.parametrize("ts", [1e20, -1e13, "0001-01-01T00:00:00+01:00",
                                "9999-12-31T23:59:59-01:00", "2016-13-45", "x" * 100])
def test_out_of_range_timestamps_are_bad_param(api: Api, ts):
    r = api.post("/v1/face", json={"timestamp": ts, "meta": "m"})
    assert error_of(r, 400, "BAD_PARAM")["param"] == "timestamp"


@pytest.mark.parametrize("path", ["/uploads/%00", "/uploads/a%00b.png", "/uploads/" + "a" * 5000,
                                  "/uploads/..%2fbackend.sqlite3", "/uploads/%2e%2e/x"])
def test_impossible_upload_names_are_404(server, path):
    r = requests.get(server.url + path, timeout=10, allow_redirects=False)
    error_of(r, 404, "NOT_FOUND")


# -- 8: redirect loops ------------------------------------------------------------

@pytest.mark.parametrize("path", ["/uploads/", "/uploads", "/v1/face/meta/", "/v1/face/meta",
                                  "/v0/face/meta/", "/metrics/", "/v1/faces/gallery/"])
def test_no_redirect_to_itself(api: Api, path):
    # Was: 307 to the same path, with the client's Host header in Location.
    r = api.get(path, allow_redirects=False, headers={"Host": "evil.example"})
    assert not 300 <= r.status_code < 400, (r.status_code, r.headers.get("location"))
    assert r.status_code in (200, 404), r.text
    if r.status_code == 404:
        error_of(r, 404, "NOT_FOUND")


def test_docs_redirect_is_relative(server):
    r = requests.get(server.url + "/docs/v0", headers={"Host": "evil.example"}, timeout=10,
                     allow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/v1/docs"


# -- 9: camera regions (API side) -------------------------------------------------

@pytest.mark.parametrize("field,value", [
    ("rot", "1x1+5000+" + "9" * 20), ("roi", "1x1+" + "1" * 20 + "+0"),
    ("rot", [1, 1, 10**20, 0]), ("roi", [16385, 10, 0, 0]), ("roi", [10, 10, 16380, 0]),
    ("rot", [0, 10, 0, 0]), ("rot", "0x10+0+0"), ("roi", "1x1+5000+5000" + " " * 100),
])
def test_camera_region_out_of_bounds_is_bad_param(api: Api, field, value):
    r = api.post("/v1/camera", json={"detector": "d", "url": "rtsp://cam", field: value})
    assert error_of(r, 400, "BAD_PARAM")["param"] == field
    cam = api.post("/v1/camera", json={"detector": "d", "url": "rtsp://cam"}).json()
    r = api.put(f"/v1/camera/{cam['id']}", json={field: value})
    assert error_of(r, 400, "BAD_PARAM")["param"] == field


def test_camera_region_within_bounds_is_kept(api: Api):
    r = api.post("/v1/camera", json={"detector": "d", "rot": "16384x16384+0+0",
                                     "roi": [100, 50, 16284, 0]})
    assert r.status_code == 201, r.text
    assert r.json()["rot"] == "16384x16384+0+0" and r.json()["roi"] == [100, 50, 16284, 0]


# -- 11: exposure ------------------------------------------------------------------

def test_metrics_need_a_token_and_show_only_the_callers_counts(hostile_server, hapi: Api):
    url = hostile_server.url + "/metrics"
    error_of(requests.get(url, timeout=10), 401, "AUTH_FAILED")
    error_of(requests.get(url, timeout=10, headers={"Authorization": "Bearer wrong"}),
             401, "AUTH_FAILED")
    other = Api(hostile_server.url, hostile_server.create_token())
    other.post("/v1/camera", json={"detector": "d"})
    other.post("/v1/camera", json={"detector": "d"})
    mine = hapi.get("/metrics")
    assert mine.status_code == 200
    assert "backend_cameras 0" in mine.text  # not the other tenant's two
    assert "backend_users" not in mine.text and "backend_requests_total" not in mine.text
    full = requests.get(url, timeout=10, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert full.status_code == 200
    assert "backend_requests_total" in full.text and "backend_users " in full.text
    cameras = float(full.text.split("\nbackend_cameras ")[1].split()[0])
    assert cameras >= 2


def test_image_urls_never_use_the_client_host_header(server, api: Api):
    r = api.post("/v1/face", files={"photo": ("p.jpg", person_photo("A"), "image/jpeg")},
                 headers={"Host": "evil.example:666"})
    assert r.status_code == 200, r.text
    face = r.json()["results"][0]
    for key in ("photo", "thumbnail", "normalized"):
        assert face[key].startswith(server.url + "/uploads/"), face[key]
    got = api.get(f"/v1/face/id/{face['id']}", headers={"Host": "evil.example"}).json()
    assert "evil" not in json.dumps(got)


class _Handler(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []
    body = b""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        _Handler.hits.append(self.path)
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(_Handler.body)))
        self.end_headers()
        self.wfile.write(_Handler.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def local_http() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving a face photo (what a fetch must not reach)."""
    _Handler.hits = []
    _Handler.body = person_photo("A")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "10.1.2.3", "169.254.169.254",
                                  "224.0.0.1", "0.0.0.0", "[::ffff:127.0.0.1]", "100.64.0.1"])
def test_fetch_urls_refuses_non_public_addresses(hapi: Api, local_http, host):
    port = local_http.rsplit(":", 1)[1]
    r = hapi.post("/v1/detect", json={"photo": f"http://{host}:{port}/face.jpg"})
    body = error_of(r, 400, "BAD_PARAM")
    assert body["param"] == "photo"
    assert _Handler.hits == []


def test_fetch_allow_lets_an_operator_reach_a_private_network(db_url, tmp_path, local_http):
    settings = Settings(data_dir=tmp_path, db=db_url, log_level="warning", fetch_urls=True,
                        fetch_allow=("127.0.0.0/8",))
    with BackendServer(settings) as srv:
        api = Api(srv.url, srv.create_token())
        r = api.post("/v1/detect", json={"photo": local_http + "/face.jpg"})
        assert r.status_code == 200 and len(r.json()["faces"]) == 1, r.text
        # a redirect is not followed (here to the cloud metadata address)
        r = api.post("/v1/detect", json={"photo": local_http + "/redirect"})
        assert "302" in error_of(r, 400, "BAD_PARAM")["reason"]
    assert _Handler.hits == ["/face.jpg", "/redirect"]


@pytest.mark.parametrize("url", [
    "/etc/passwd", "file:///etc/passwd", "file@25:/etc/passwd", "/dev/video0",
    f"{VIDEO_ROOT}/../../etc/passwd", f"{VIDEO_ROOT}-other/a.mp4", "relative/clip.mp4",
    "concat:/etc/passwd|/etc/shadow", "/etc/passwd\x00.mp4",
])
def test_camera_url_naming_a_local_file_outside_the_roots_is_refused(hapi: Api, url):
    r = hapi.post("/v1/camera", json={"detector": "d", "url": url})
    assert error_of(r, 400, "BAD_PARAM")["param"] == "url"


@pytest.mark.parametrize("url", [f"{VIDEO_ROOT}/a.mp4", f"file@25:{VIDEO_ROOT}/b/c.mp4",
                                 f"file://{VIDEO_ROOT}/d.mkv", "rtsp://10.0.0.5/stream"])
def test_camera_url_under_a_root_or_on_the_network_is_accepted(hapi: Api, url):
    r = hapi.post("/v1/camera", json={"detector": "d", "url": url})
    assert r.status_code == 201, r.text


def test_without_roots_no_local_camera_file_is_accepted(api: Api):
    r = api.post("/v1/camera", json={"detector": "d", "url": "/srv/videos/a.mp4"})
    assert "camera_file_roots" in error_of(r, 400, "BAD_PARAM")["reason"]


@pytest.mark.parametrize("method,path,field", [
    ("POST", "/v1/camera", "meta"), ("POST", "/v1/camera", "url"),
    ("POST", "/v1/camera", "detector"), ("PUT", "/v1/face/id/1", "meta"),
    ("POST", "/v1/face", "meta"), ("POST", "/v1/face", "cam_id"),
    ("POST", "/v1/face", "idempotency_key"),
])
def test_text_fields_have_length_limits(api: Api, method, path, field):
    r = api.request(method, path, json={field: "m" * 1_000_000})
    assert error_of(r, 400, "BAD_PARAM")["param"] == field


def test_meta_up_to_the_limit_is_kept(api: Api):
    r = api.post("/v1/camera", json={"meta": "m" * 4096})
    assert r.status_code == 201 and r.json()["meta"] == "m" * 4096


@pytest.mark.parametrize("key", ["k" * 129, "with space", "caf\u00e9", "tab\there"])
def test_idempotency_key_must_be_short_printable_ascii(api: Api, key):
    files = {"photo": ("p.jpg", person_photo("A"), "image/jpeg")}
    headers = {"Idempotency-Key": key.encode("utf-8")}
    r = api.post("/v1/face", files=files, headers=headers)
    assert error_of(r, 400, "BAD_PARAM")["param"] == "Idempotency-Key"
    r = api.post("/v1/face", files=files, data={"idempotency_key": key})
    assert error_of(r, 400, "BAD_PARAM")["param"] == "idempotency_key"


def test_idempotency_key_of_128_characters_works(api: Api):
    files = {"photo": ("p.jpg", person_photo("A"), "image/jpeg")}
    key = "K" * 127 + "~"
    first = api.post("/v1/face", files=files, headers={"Idempotency-Key": key})
    again = api.post("/v1/face", files=files, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 200
    assert first.json()["results"][0]["id"] == again.json()["results"][0]["id"]


def test_extra_fields_of_a_face_are_bounded(api: Api):
    data = {f"extra{i}": "v" * 1000 for i in range(40)}
    r = api.post("/v1/face", files={"photo": ("p.jpg", person_photo("A"), "image/jpeg")},
                 data=data)
    assert error_of(r, 400, "BAD_PARAM")["param"] == "body"
