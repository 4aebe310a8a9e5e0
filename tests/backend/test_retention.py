"""History retention (history_max_age): old camera events go, with their images; enrolled faces,
watch-list faces, recent events and named persons stay."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from tests.backend.conftest import Api, person_photo
from videodetector.backend.server import BackendServer
from videodetector.backend.settings import Settings, SettingsError

DAY = 86400


def stamp(days_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days_ago)).isoformat()


def test_old_camera_events_are_deleted_and_the_rest_kept(db_url, tmp_path):
    settings = Settings(data_dir=tmp_path, db=db_url, person_identify=True, friend_interval=DAY,
                        history_max_age=2 * DAY, history_cleanup_interval=0.2,
                        log_level="warning")
    with BackendServer(settings) as srv:
        api = Api(srv.url, srv.create_token())
        assert api.post("/v1/galleries/watch").status_code == 201
        old = api.add_face(person_photo("A"), cam_id="door", timestamp=stamp(5))
        recent = api.add_face(person_photo("B"), cam_id="door", timestamp=stamp(0.1))
        watched = api.add_face(person_photo("C"), cam_id="door", timestamp=stamp(5),
                               galleries="watch")
        enrolled = api.add_face(person_photo("D"), timestamp=stamp(30))  # no cam_id
        # a person named by an operator (the new person takes the face's meta at once)
        named = api.add_face(person_photo("A"), cam_id="yard", timestamp=stamp(5),
                             meta="Jack Smith")

        deadline = time.monotonic() + 60
        while any(api.get(f"/v1/face/id/{f['id']}").status_code != 404 for f in (old, named)):
            assert time.monotonic() < deadline, "retention did not run"
            time.sleep(0.1)
        time.sleep(0.5)  # more rounds: nothing else goes
        for face in (recent, watched, enrolled):
            assert api.get(f"/v1/face/id/{face['id']}").status_code == 200
        for key in ("photo", "thumbnail", "normalized"):  # the images went too
            assert requests.get(old[key], timeout=10).status_code == 404
            assert requests.get(recent[key], timeout=10).status_code == 200
        persons = {p["id"]: p for p in api.get("/v1/persons").json()["results"]}
        assert old["person_id"] not in persons  # made by person creation, now faceless
        named_person = persons[named["person_id"]]  # named by an operator: kept
        assert named_person["meta"] == "Jack Smith" and named_person["face_count"] == 0
        assert {recent["person_id"], watched["person_id"]} <= set(persons)
        history = api.post("/v1/history/search", json={}).json()["results"]
        assert sorted(e["face_id"] for e in history) == sorted([recent["id"], watched["id"]])


def test_retention_is_off_by_default_and_must_cover_the_friend_interval():
    assert Settings().history_max_age == 0
    with pytest.raises(SettingsError, match="history_max_age"):
        Settings(friend_interval=7 * DAY, history_max_age=DAY)
    Settings(friend_interval=7 * DAY, history_max_age=30 * DAY)
