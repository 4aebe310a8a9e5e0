"""Gender, age and emotions (8.1) with --gae."""

from __future__ import annotations

import base64

import pytest

from tests.backend.conftest import Api, person_photo
from tests.backend.test_idempotency import detector_post
from videodetector.backend import emotions
from videodetector.backend.server import BackendServer
from videodetector.backend.settings import Settings
from videodetector.backend.storage import SCHEMA_VERSION, Database


@pytest.fixture(scope="module")
def gae_api(tmp_path_factory, store) -> Api:
    settings = Settings(data_dir=tmp_path_factory.mktemp("gae"), db=store, gae=True,
                        log_level="warning")
    with BackendServer(settings) as srv:
        yield Api(srv.url, srv.create_token())


def test_detect_with_gender_and_age(gae_api: Api):
    r = gae_api.post("/v1/detect", files={"photo": person_photo("A")},
                     data={"gender": "true", "age": "true"})
    assert r.status_code == 200, r.text
    (face,) = r.json()["faces"]
    assert face["gender"] in ("male", "female") and 0.5 <= face["gender_confidence"] <= 1
    assert isinstance(face["age"], int) and 0 < face["age"] < 100
    r = gae_api.post("/v1/detect", files={"photo": person_photo("A")}, data={"age": "1"})
    assert "gender" not in r.json()["faces"][0] and "age" in r.json()["faces"][0]
    # the manual's request (gender, age and emotions): all answered, emotions as 8.1.2's
    # ["neutral", "sad"] -- the two most likely names, most likely first
    r = gae_api.post("/v1/detect", files={"photo": person_photo("A")},
                     data={"gender": "true", "age": "true", "emotions": "true"})
    assert r.status_code == 200, r.text
    (face,) = r.json()["faces"]
    assert face["gender"] in ("male", "female") and isinstance(face["age"], int)
    assert "unavailable" not in r.json()
    assert len(face["emotions"]) == 2 and set(face["emotions"]) <= set(emotions.LABELS)
    assert face["emotions"][0] != face["emotions"][1]
    r = gae_api.post("/v1/detect", files={"photo": person_photo("A")}, data={"emotions": "1"})
    assert set(r.json()["faces"][0]) == {"x1", "y1", "x2", "y2", "emotions"}


def test_face_with_emotions_stores_them(gae_api: Api, tmp_path):
    """8.1.2 request #2: /v1/face with emotions answers and keeps them with the face."""
    r = gae_api.post("/v1/face", files={"photo": person_photo("B")},
                     data={"emotions": "true", "age": "true"})
    assert r.status_code == 200, r.text
    (face,) = r.json()["results"]
    assert "age" in face and "unavailable" not in r.json()
    assert len(face["emotions"]) == 2 and set(face["emotions"]) <= set(emotions.LABELS)
    assert gae_api.get(f"/v1/face/id/{face['id']}").json()["emotions"] == face["emotions"]
    # the video detector's normalized face: the whole image is the face
    bbox, png = detector_post(person_photo("B"))
    r = gae_api.post("/v1/face", files={"face0": ("n.png", png, "image/png")},
                     data={"emotions": "true", "bbox": f"[{bbox}]"})
    assert len(r.json()["results"][0]["emotions"]) == 2
    assert "emotions" not in gae_api.add_face(person_photo("C"))


def test_batch_with_emotions_stores_them(gae_api: Api):
    r = gae_api.post("/v1/faces/batch", json={"emotions": True, "items": [
        {"photo": base64.b64encode(person_photo("A")).decode()}]})
    assert r.status_code == 200, r.text
    assert r.json()["success"] == [0] and "unavailable" not in r.json()
    (result,) = r.json()["results"]
    face = gae_api.get(f"/v1/face/id/{result['face_ids'][0]}").json()
    assert len(face["emotions"]) == 2


def test_a_database_before_the_emotions_column_is_migrated(tmp_path):
    db = Database(tmp_path / "backend.sqlite3")
    with db.transaction() as conn:
        conn.execute("INSERT INTO faces (user_id, timestamp, ts, day, x1, y1, x2, y2, photo, "
                     "photo_hash, thumbnail, normalized, embedding) VALUES (1, '', 0, '', 0, 0, "
                     "1, 1, 'p', 'h', 't', 'n', x'00')")
        conn.execute("ALTER TABLE faces DROP COLUMN emotions")  # as schema version 3 had it
        conn.execute("PRAGMA user_version = 3")
        conn.execute("DROP TABLE alembic_version")  # made before Alembic
    db.close()
    db = Database(tmp_path / "backend.sqlite3")
    assert db.scalar("PRAGMA user_version") == SCHEMA_VERSION == 4
    assert db.scalar("SELECT COUNT(*) FROM faces WHERE emotions IS NULL") == 1
    db.close()


def test_face_with_gender_and_age_is_stored(gae_api: Api):
    face = gae_api.add_face(person_photo("B"), gender="true", age="true", meta="Jane Berry")
    assert face["gender"] in ("male", "female") and isinstance(face["age"], int)
    assert gae_api.get(f"/v1/face/id/{face['id']}").json()["age"] == face["age"]
    plain = gae_api.add_face(person_photo("C"))
    assert "gender" not in plain and "age" not in plain
    # the video detector's normalized face works too (--body gender=true --body age=true)
    bbox, png = detector_post(person_photo("B"))
    r = gae_api.post("/v1/face", files={"face0": ("n.png", png, "image/png")},
                     data={"gender": "true", "age": "true", "bbox": f"[{bbox}]"})
    assert r.json()["results"][0]["gender"] == face["gender"]
