"""Identity end to end: the face the daemon posts from a clip is recognised as the enrolled
subject (MEDS-II S029; the clip's face is the still S029-01, enrolled are S029-02/03)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import shared_file
from tests.e2e.conftest import Api, Procs
from tests.e2e.test_daemon_e2e import post_args


def enroll(api: Api, name: str, cam_id: str) -> dict:
    with open(shared_file(f"stills_meds/{name}.jpg"), "rb") as photo:
        body = api.call("POST", "/v1/face", files={"photo": photo},
                        data={"meta": name[:4], "cam_id": cam_id, "mf_selector": "biggest"})
    return body["results"][0]


def test_the_posted_face_joins_the_enrolled_person(procs: Procs, tmp_path: Path) -> None:
    clip = shared_file("clips_faces/mpf_ff-region-face-motion.avi")
    token = procs.token(tmp_path / "backend")
    backend = procs.backend(tmp_path / "backend", "--person-identify", "1")
    api, port = Api(backend.url, token), backend.port
    s029 = [enroll(api, f"S029-0{i}-t10_01", "door") for i in (2, 3)]
    others = [enroll(api, name, "door") for name in ("S008-01-t10_01", "S001-01-t10_01")]
    assert s029[0]["person_id"] == s029[1]["person_id"]
    assert s029[0]["person_id"] not in {f["person_id"] for f in others}

    det = procs.detector("--source", str(clip), "--camid", "door", "-r", "0",
                         *post_args(port, token, tmp_path / "spool"), status=False)
    assert det.wait(120) == 0, det.tail()
    events = [e for e in api.history("door") if e["face_id"] not in
              {f["id"] for f in s029 + others}]
    assert len(events) == 1  # exactly one track on this clip
    assert events[0]["person_id"] == s029[0]["person_id"]


def test_five_grid_speakers_become_five_persons(procs: Procs, tmp_path: Path) -> None:
    clips = sorted(shared_file("clips_faces/grid_bbaf2n.mpg").parent.glob("grid_*.mpg"))
    assert len(clips) == 5
    token = procs.token(tmp_path / "backend")
    backend = procs.backend(tmp_path / "backend", "--person-identify", "1")
    api, port = Api(backend.url, token), backend.port
    for i, clip in enumerate(clips):
        det = procs.detector("--source", str(clip), "--camid", "desk", "-r", "0",
                             *post_args(port, token, tmp_path / "spool"), tag=str(i),
                             status=False)
        assert det.wait(120) == 0, det.tail()
    events = api.history("desk")
    assert len(events) == 5  # one talker per clip, one offline snapshot each
    assert len({e["person_id"] for e in events}) == 5
