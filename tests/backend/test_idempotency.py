"""POST /face as the video detector sends it (photo + normalized face0 + bbox + timestamp +
detectorParams), and idempotent retries (Idempotency-Key header or idempotency_key field)."""

from __future__ import annotations

import functools
import io
import json
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import requests
from PIL import Image

from tests.backend.conftest import Api, error_of, person_photo
from videodetector.core.models import YuNetDetector, align_face


@functools.cache
def detector() -> YuNetDetector:
    return YuNetDetector()


def detector_post(photo: bytes) -> tuple[list[int], bytes]:
    """What the daemon would post for ``photo``: its face box and the aligned face PNG."""
    image = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)
    dets = detector().detect(image)
    aligned = align_face(image, dets.landmarks[0])
    ok, png = cv2.imencode(".png", aligned)
    assert ok
    return [int(v) for v in dets.xyxy[0]], png.tobytes()


def daemon_fields(bbox: list[int], ts: str = "2024-05-01T10:00:00.250000+00:00") -> dict:
    return {"cam_id": "cam-7", "timestamp": ts, "bbox": json.dumps([bbox]),
            "detectorParams": json.dumps({"score": -0.5, "direction_score": -0.1,
                                          "track_id": 12, "track": [[1.0, 2.0], [3.0, 4.0]]}),
            "galleries": "g1,g2", "label": "realtime"}


def test_daemon_style_post(api: Api):
    api.post("/v1/galleries/g1")
    api.post("/v1/galleries/g2")
    frame = person_photo("A")
    bbox, face_png = detector_post(frame)
    files = [("photo", ("cam-7_12_0.jpeg", frame, "image/jpeg")),
             ("face0", ("cam-7_12_0_norm.png", face_png, "image/png"))]
    r = api.post("/v1/face/", data=daemon_fields(bbox), files=files,
                 headers={"Idempotency-Key": "cam-7:run1:12:0"})
    assert r.status_code == 200, r.text
    (face,) = r.json()["results"]
    assert [face[k] for k in ("x1", "y1", "x2", "y2")] == bbox  # the detector's box, kept
    assert face["cam_id"] == "cam-7" and face["timestamp"] == "2024-05-01T10:00:00.250000"
    assert face["galleries"] == ["default", "g1", "g2"]
    assert face["detectorParams"]["track_id"] == 12
    assert requests.get(face["photo"], timeout=10).content == frame
    # face0 is embedded as posted: identify with the full photo finds it with high confidence
    r = api.post("/v1/identify", files={"photo": frame})
    (match,) = next(iter(r.json()["results"].values()))
    assert match["face"]["id"] == face["id"] and match["confidence"] > 0.9
    # the normalized face stored is the posted one (112x112)
    norm = Image.open(io.BytesIO(requests.get(face["normalized"], timeout=10).content))
    assert norm.size == (112, 112)
    # /identify also accepts the detector's format (--request-url /v1/identify)
    r = api.post("/v1/identify", files=[("face0", ("n.png", face_png, "image/png"))],
                 data={"bbox": json.dumps([bbox])})
    (key, (match,)), = r.json()["results"].items()
    assert json.loads(key) == bbox and match["face"]["id"] == face["id"]


def test_only_normalized_face(api: Api):
    """--only-norm: no full frame; the normalized face stands for the photo."""
    _, face_png = detector_post(person_photo("B"))
    r = api.post("/v1/face", files={"face0": ("n.png", face_png, "image/png")},
                 data={"cam_id": "c", "bbox": "[[10,20,110,140]]"})
    assert r.status_code == 200, r.text
    face = r.json()["results"][0]
    assert (face["x1"], face["y1"], face["x2"], face["y2"]) == (10, 20, 110, 140)
    assert requests.get(face["photo"], timeout=10).status_code == 200
    body = error_of(api.post("/v1/face", files={"face0": ("n.png", face_png, "image/png")},
                             data={"bbox": "[[1,2,3,4],[5,6,7,8]]"}), 400, "BAD_PARAM")
    assert body["param"] == "bbox"
    body = error_of(api.post("/v1/face", files={"face0": ("n.png", b"junk", "image/png")}),
                    400, "BAD_PARAM")
    assert body["param"] == "face0"


def test_retry_with_same_key_stores_once(api: Api):
    frame = person_photo("A")
    bbox, face_png = detector_post(frame)

    def send(key_header: bool = True) -> requests.Response:
        files = [("photo", ("f.jpeg", frame, "image/jpeg")),
                 ("face0", ("n.png", face_png, "image/png"))]
        data = daemon_fields(bbox)
        data.pop("galleries")
        headers = {}
        if key_header:
            headers["Idempotency-Key"] = "cam-7:run1:12:0"
        else:
            data["idempotency_key"] = "form-key-1"
        return api.post("/v1/face", data=data, files=files, headers=headers)

    first, again = send(), send()
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert len(api.get("/v1/faces").json()["results"]) == 1
    # the form-field variant
    a, b = send(key_header=False), send(key_header=False)
    assert a.json() == b.json() and a.json() != first.json()
    assert len(api.get("/v1/faces").json()["results"]) == 2
    # concurrent retries of one snapshot still store it once
    with ThreadPoolExecutor(4) as pool:
        def concurrent(_: int) -> requests.Response:
            return api.post("/v1/face", files={"photo": frame},
                            headers={"Idempotency-Key": "concurrent-1"})
        responses = list(pool.map(concurrent, range(4)))
    assert all(r.status_code == 200 for r in responses)
    assert len({r.json()["results"][0]["id"] for r in responses}) == 1
    assert len(api.get("/v1/faces").json()["results"]) == 3


def test_key_is_per_user(server, api: Api):
    other = Api(server.url, server.create_token())
    headers = {"Idempotency-Key": "same-key"}
    r1 = api.post("/v1/face", files={"photo": person_photo("A")}, headers=headers)
    r2 = other.post("/v1/face", files={"photo": person_photo("A")}, headers=headers)
    assert r1.status_code == r2.status_code == 200
    assert r1.json()["results"][0]["id"] != r2.json()["results"][0]["id"]
    assert len(other.get("/v1/faces").json()["results"]) == 1


def test_failed_request_is_not_remembered(api: Api):
    headers = {"Idempotency-Key": "k-fail"}
    error_of(api.post("/v1/face", files={"photo": b"junk"}, headers=headers), 400, "BAD_PARAM")
    r = api.post("/v1/face", files={"photo": person_photo("A")}, headers=headers)
    assert r.status_code == 200 and len(r.json()["results"]) == 1
