"""Issue 12 end to end: the real daemon posting real clips to the real backend with
``--person-identify 1``; a track's posts are one person, in realtime and offline mode.

One detector per mode reads its cameras from the backend (``--single-pass``), so the clips run
side by side and the test stays short.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from tests.conftest import shared_file
from tests.e2e.conftest import Api, Procs
from tests.e2e.test_daemon_e2e import post_args


def _run(procs: Procs, port: int, token: str, tmp: Path, name: str, realtime: bool) -> None:
    # --disable-drops: realtime posting rules, but no frame is dropped when the machine is busy
    # (dropped frames split tracks, and this test is about tracks -> persons, not about load)
    det = procs.detector("--detector-name", name, "--camera-url", "/v1/camera", "-t", "1",
                         "--single-pass", "-r", "1" if realtime else "0", "--disable-drops",
                         *post_args(port, token, tmp / f"spool-{name}"), tag=name,
                         status=False)
    assert det.wait(180) == 0, det.tail()


def _tracks(events: list[dict[str, Any]]) -> dict[tuple[Any, Any], set[Any]]:
    """(run_id, track_id) -> the persons of its assigned posts."""
    out: dict[tuple[Any, Any], set[Any]] = defaultdict(set)
    for e in events:
        face = e["face"]
        key = (face["detectorParams"]["run_id"], face["detectorParams"]["track_id"])
        out[key].update([face["person_id"]] if face["person_id"] is not None else [])
    return out


def _events(api: Api, cam: str) -> list[dict[str, Any]]:
    """The camera's events with their faces (for detectorParams)."""
    return [{**e, "face": api.call("GET", f"/v1/face/id/{e['face_id']}")}
            for e in api.history(cam)]


def test_realtime_and_offline_tracks_make_persons(procs: Procs, tmp_path: Path) -> None:
    marathon = shared_file("clips_smallfaces/mpf_five-second-marathon-clip.mkv")
    five = shared_file("clips_faces/mpf_video_01.mp4")
    grid = shared_file("clips_faces/grid_bbaf2n.mpg")
    token = procs.token(tmp_path / "backend")
    backend = procs.backend(tmp_path / "backend", "--person-identify", "1")
    api, port = Api(backend.url, token), backend.port
    cams = {
        "marathon-rt": api.add_camera(detector="rt", url=f"file@25:{marathon}"),
        "five-rt": api.add_camera(detector="rt", url=f"file@25:{five}"),
        "grid-rt": api.add_camera(detector="rt", url=f"file@25:{grid}"),
        "five-off": api.add_camera(detector="off", url=str(five)),
    }
    _run(procs, port, token, tmp_path, "rt", realtime=True)
    _run(procs, port, token, tmp_path, "off", realtime=False)
    summary = {}
    for name, cam in cams.items():
        events = _events(api, cam)
        tracks = _tracks(events)
        persons = {e["person_id"] for e in events} - {None}
        summary[name] = (len(events), len(tracks), len(persons))
        print(name, {k[1]: [(e["face"]["detectorParams"]["score"], e["person_id"])
                            for e in events if e["face"]["detectorParams"]["track_id"] == k[1]]
                     for k in tracks})
        switches = sum(e["kind"] == "identity_switch" for p in persons
                       for e in api.call("GET", f"/v1/person/id/{p}/events")["results"])
        # one track, one person (unless the tracker switched identities, which is logged)
        assert sum(len(p) > 1 for p in tracks.values()) <= switches, (name, dict(tracks))
        assert len(persons) <= len(tracks), (name, summary[name])
    print("posts, tracks, persons:", summary)
    assert summary["five-rt"][2] == 5 and summary["five-off"][2] == 5, summary
    assert summary["grid-rt"][2] == 1, summary
    assert summary["marathon-rt"][0] > summary["marathon-rt"][1]  # several posts per track
