from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import cv2
import numpy as np
import requests

from tests.detector.post.receiver import JPEG, PNG, Receiver, make_snapshot
from videodetector.detector.config import DetectorConfig
from videodetector.detector.post.request import build_request, post_url


def cfg(**changes: object) -> DetectorConfig:
    base: dict[str, object] = dict(
        api_url="http://127.0.0.1:8000", api_token="ntech", request_url="/v1/face/",
        headers=(("X-Site", "north"), ("xxx", "yyy")),
        body=(("gender", "true"), ("galleries", "testgal1,testgal2"), ("meta", "User Meta")),
    )
    base.update(changes)
    return DetectorConfig(**base)  # type: ignore[arg-type]


def test_post_url_joins_slashes() -> None:
    assert post_url("http://h:1", "/v1/face/") == "http://h:1/v1/face/"
    assert post_url("http://h:1/api/", "v1/identify") == "http://h:1/api/v1/identify"


def test_build_request_fields() -> None:
    snap = make_snapshot(seq=3)
    req = build_request(snap, cfg())
    assert req.url == "http://127.0.0.1:8000/v1/face/"
    assert req.headers["Authorization"] == "Token ntech"
    assert req.headers["Idempotency-Key"] == snap.idempotency_key
    assert req.headers["X-Site"] == "north" and req.headers["xxx"] == "yyy"
    data = dict(req.data)
    assert [n for n, _ in req.data][:3] == ["gender", "galleries", "meta"]
    assert data["galleries"] == "testgal1,testgal2"
    assert data["cam_id"] == "cam-1"
    assert data["timestamp"] == "2017-08-25T13:09:54.123000"
    assert data["bbox"] == "[[62,38,138,114]]"
    assert json.loads(data["detectorParams"]) == {
        "score": -0.000911839, "direction_score": -0.568228, "track_id": 7, "run_id": "run1",
    }
    files = dict(req.files)
    assert files["photo"] == ("cam-1_7_3.jpeg", JPEG, "image/jpeg")
    assert files["face0"] == ("cam-1_7_3_norm.png", PNG, "image/png")


def test_build_request_options() -> None:
    snap = make_snapshot(label="realtime")
    req = build_request(snap, cfg(send_track=True, realtime1844=True, img_arg="picture",
                                  api_token="", body=()))
    assert "Authorization" not in req.headers
    params = json.loads(dict(req.data)["detectorParams"])
    assert params["track"] == [[100.0, 76.0], [101.5, 77.0]]
    assert params["label"] == "realtime"
    assert [f for f, _ in req.files] == ["picture", "face0"]
    no_run = json.loads(dict(build_request(make_snapshot(run_id=""), cfg()).data)
                        ["detectorParams"])
    assert "run_id" not in no_run
    assert [f for f, _ in build_request(snap, cfg(only_norm=True)).files] == ["face0"]
    assert [f for f, _ in build_request(make_snapshot(frame_jpeg=None), cfg()).files] == ["face0"]


def test_request_on_the_wire() -> None:
    """Every field of the 5.4 format, as a real server receives it."""
    rx = Receiver().start()
    try:
        tz = timezone(timedelta(hours=3))
        snap = make_snapshot(seq=1, label="offline", timestamp=datetime(2024, 5, 1, 8, 0, 1,
                                                                        tzinfo=tz))
        req = build_request(snap, cfg(api_url=rx.url, send_track=True, realtime1844=True))
        resp = requests.post(req.url, headers=dict(req.headers), data=list(req.data),
                             files=list(req.files), timeout=5)
        assert resp.status_code == 200
        (got,) = rx.received
    finally:
        rx.stop()
    assert got.path == "/v1/face/"
    assert got.headers["Authorization"] == "Token ntech"
    assert got.headers["X-Site"] == "north" and got.headers["xxx"] == "yyy"
    assert got.key == "cam-1:run1:7:1:offline"
    assert got.headers.get_content_type() == "multipart/form-data"
    assert got.names() == ["gender", "galleries", "meta", "cam_id", "timestamp", "bbox",
                           "detectorParams", "photo", "face0"]
    assert got.part("gender").text == "true"
    assert got.part("galleries").text == "testgal1,testgal2"
    assert got.part("meta").text == "User Meta"
    assert got.part("cam_id").text == "cam-1"
    assert datetime.fromisoformat(got.part("timestamp").text) == snap.timestamp
    assert json.loads(got.part("bbox").text) == [[62, 38, 138, 114]]
    params = json.loads(got.part("detectorParams").text)
    assert params == {"score": -0.000911839, "direction_score": -0.568228, "track_id": 7,
                      "run_id": "run1", "track": [[100.0, 76.0], [101.5, 77.0]],
                      "label": "offline"}
    photo, face = got.part("photo"), got.part("face0")
    assert photo.filename and photo.filename.endswith(".jpeg")
    assert photo.content_type == "image/jpeg"
    img = cv2.imdecode(np.frombuffer(photo.data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape == (120, 160, 3)
    assert face.content_type == "image/png" and face.data[:8] == b"\x89PNG\r\n\x1a\n"
    norm = cv2.imdecode(np.frombuffer(face.data, np.uint8), cv2.IMREAD_COLOR)
    assert norm is not None and norm.shape == (112, 112, 3)


def test_only_norm_on_the_wire() -> None:
    rx = Receiver().start()
    try:
        req = build_request(make_snapshot(), cfg(api_url=rx.url, only_norm=True))
        requests.post(req.url, headers=dict(req.headers), data=list(req.data),
                      files=list(req.files), timeout=5)
        (got,) = rx.received
    finally:
        rx.stop()
    assert "photo" not in got.names()
    assert got.part("face0").data == PNG
