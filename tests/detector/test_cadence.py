"""--detect-period: the detector skips moving frames only while every face is tracked and all
motion is on those faces; a new face elsewhere is detected on the frame it appears.
--search-period: motion the tracker cannot account for, once searched without finding a new
face, is searched on every M-th frame; its first frame after a quiet or steady one at once."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.conftest import shared_file
from videodetector.core.models import YuNetDetector
from videodetector.democlip import Walker, pick_sprites, write_clip
from videodetector.detector.cadence import (
    faces_only,
    may_skip_detection,
    motion_off_faces,
    searched_after,
)
from videodetector.detector.config import ConfigError, parse_config
from videodetector.detector.pipeline import CameraSpec, FacePipeline
from videodetector.detector.regions import grow_boxes
from videodetector.detector.video.source import open_video, parse_source

box = st.tuples(st.floats(0, 1200), st.floats(0, 700), st.floats(1, 300), st.floats(1, 300)).map(
    lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]])


@settings(max_examples=150, deadline=None)
@given(motion=st.lists(box, max_size=5), faces=st.lists(box, max_size=3))
def test_motion_is_new_exactly_when_a_real_blob_touches_no_grown_face(motion, faces):
    m = np.array(motion, np.float64).reshape(-1, 4)
    f = np.array(faces, np.float64).reshape(-1, 4)
    zones = grow_boxes(f, 0.5, 16.0)

    def owned(b: np.ndarray) -> bool:
        size = (b[2] - b[0]) * (b[3] - b[1])
        return any(b[0] < z[2] and z[0] < b[2] and b[1] < z[3] and z[1] < b[3]
                   and size <= 4 * (z[2] - z[0]) * (z[3] - z[1]) for z in zones)

    real = [b for b in m if max(b[2] - b[0], b[3] - b[1]) >= 16]
    assert motion_off_faces(m, f) == any(not owned(b) for b in real)


def test_motion_off_faces_cases():
    face = np.array([[100, 100, 160, 180]], np.float32)
    trail = np.array([[20, 110, 170, 190]], np.float32)  # the face's blob with its trail
    assert not motion_off_faces(trail, face)
    elsewhere = np.array([[800, 300, 860, 380]], np.float32)
    assert motion_off_faces(np.vstack([trail, elsewhere]), face)
    speck = np.array([[800, 300, 810, 310]], np.float32)  # noise, too small for a face
    assert not motion_off_faces(speck, face)
    assert motion_off_faces(elsewhere, np.zeros((0, 4)))  # nobody tracked: all motion is new
    assert not motion_off_faces(np.zeros((0, 4)), face)
    everywhere = np.array([[0, 0, 1280, 720]], np.float32)  # shake, lights: not the face's
    assert motion_off_faces(everywhere, face)


@settings(max_examples=150, deadline=None)
@given(since=st.integers(0, 30), period=st.integers(1, 25), steady=st.booleans(),
       new=st.booleans(), search=st.integers(1, 25), searched=st.booleans())
def test_may_skip_only_within_the_period_of_its_kind(since, period, steady, new, search,
                                                      searched):
    skip = may_skip_detection(since, period, steady, new, search, searched)
    if new:  # motion the tracker cannot account for: only a spell already searched
        assert skip == (searched and since + 1 < search)
    else:  # all on steadily tracked faces: --detect-period as before
        assert skip == (steady and since + 1 < period)
    if (period == 1 or not steady) and (search == 1 or not searched):
        assert not skip  # both periods 1: the detector runs on every moving frame
    assert may_skip_detection(since, period, steady, new) == (not new and steady
                                                              and since + 1 < period)


# one frame: "quiet" (no motion), "steady" (all motion on steadily tracked faces) or
# "new" (motion the tracker cannot account for); and whether a run on it finds a new face
frame_kind = st.tuples(st.sampled_from(["quiet", "steady", "new"]), st.booleans())


def drive(frames: list[tuple[str, bool]], period: int, search: int) -> list[bool]:
    """Which of ``frames`` the detector runs on, with the pipeline's use of cadence.py:
    quiet frames are skipped, a frame with motion asks may_skip_detection, and the state
    goes through searched_after after every frame."""
    since, searched, ran = 0, False, []
    for kind, finds_new in frames:
        new = kind == "new"
        detect = kind != "quiet" and not may_skip_detection(since, period, kind == "steady",
                                                             new, search, searched)
        searched = searched_after(searched, new, detect, detect and finds_new)
        since = 0 if detect else since + 1
        ran.append(detect)
    return ran


@settings(max_examples=200, deadline=None)
@given(frames=st.lists(frame_kind, max_size=60), period=st.integers(1, 6),
       search=st.integers(1, 6))
def test_search_period_properties(frames, period, search):
    ran = drive(frames, period, search)
    in_a_row = 0
    for i, ((kind, _), detect) in enumerate(zip(frames, ran, strict=True)):
        before = frames[i - 1] if i else ("quiet", False)
        if kind != "new":
            in_a_row = 0
            continue
        if before[0] != "new":
            assert detect, "the first frame of new motion after a quiet/steady one is detected"
        if i and before[0] == "new" and ran[i - 1] and before[1]:
            assert detect, "the frame after a run that found a new face is detected"
        in_a_row = 0 if detect else in_a_row + 1
        assert in_a_row <= search - 1, "never more than M - 1 new-motion frames skipped"
    if search == 1:  # today's behaviour: every frame of new motion is detected
        assert all(d for (kind, _), d in zip(frames, ran, strict=True) if kind == "new")


def test_a_lasting_spell_without_faces_is_searched_every_m_th_frame():
    frames = [("quiet", False)] * 3 + [("new", False)] * 9
    assert drive(frames, 4, 1) == [False] * 3 + [True] * 9
    assert drive(frames, 4, 2) == [False] * 3 + [True, False] * 4 + [True]
    assert drive(frames, 4, 3) == [False] * 3 + [True, False, False] * 3
    # a run that finds a new face: the next frame is detected (its track needs a 2nd hit)
    found = [("new", False)] * 3 + [("new", True), ("new", False), ("new", False)]
    assert drive(found, 4, 3) == [True, False, False, True, True, False]
    # a steady frame ends the spell: the next new motion is detected at once
    mixed = [("new", False), ("new", False), ("steady", False), ("new", False)]
    assert drive(mixed, 4, 3) == [True, False, False, True]


# FACES_ONLY: "new_steady" is motion off the faces while every face is tracked steadily (a
# hand-held camera), "new" the same while some face is not (nobody tracked, a missed track)
scoped_kind = st.tuples(st.sampled_from(["quiet", "steady", "new", "new_steady"]), st.booleans())


def drive_scopes(frames: list[tuple[str, bool]], period: int, search: int,
                 full: int = 1) -> list[str]:
    """Per frame "skip", "faces" (the detector looks at the tracked faces only) or "search"
    (it looks at all the motion), with the pipeline's use of cadence.py (``full``:
    --full-search-period)."""
    since, since_search, searched, out = 0, 0, False, []
    for kind, finds_new in frames:
        new, steady = kind.startswith("new"), kind in ("steady", "new_steady")
        detect = kind != "quiet" and not may_skip_detection(since, period, steady, new,
                                                             search, searched)
        faces = detect and faces_only(since_search, period, search, steady, new, searched,
                                      full)
        searched = searched_after(searched, new, detect, detect and finds_new)
        since = 0 if detect else since + 1
        since_search = 0 if detect and not faces else since_search + 1
        out.append("faces" if faces else "search" if detect else "skip")
    return out


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(scoped_kind, max_size=60), period=st.integers(1, 6),
       search=st.integers(1, 6), full=st.integers(1, 10))
# found by hypothesis in a merge run: a faces-only run restarted may_skip_detection's count,
# so the M - 1 skips after it left the motion unsearched for max(M, N) frames
@example(frames=[("new", False)] * 4 + [("new_steady", False), ("new", False)], period=5,
         search=4, full=1)
def test_faces_only_runs_keep_the_runs_and_bound_the_searches(frames, period, search, full):
    scopes = drive_scopes(frames, period, search, full)
    old = [(kind.replace("new_steady", "new"), f) for kind, f in frames]
    # the detector runs on exactly the frames it ran on before: every tracked face gets its
    # detections (quality, best frame) on the same frames
    assert [s != "skip" for s in scopes] == drive(old, period, search)
    every = max(period, search, full)
    unsearched = 0
    for i, ((kind, _), scope) in enumerate(zip(frames, scopes, strict=True)):
        before = frames[i - 1] if i else ("quiet", False)
        if scope == "faces":  # only on a hand-held spell already searched, M > 1
            assert kind == "new_steady" and search > 1 and before[0].startswith("new")
        if kind.startswith("new") and not before[0].startswith("new"):
            assert scope == "search", "new motion after a quiet/steady frame: searched at once"
        if (kind.startswith("new") and before[0].startswith("new") and before[1]
                and scopes[i - 1] != "skip"):
            assert scope == "search", "the frame after a run that found a new face"
        unsearched = unsearched + 1 if kind.startswith("new") and scope != "search" else 0
        assert unsearched <= every - 1, "the motion is searched every max(M, N, S)-th frame"
        if kind == "new" or search == 1:
            assert scope != "faces"


def test_a_hand_held_spell_is_searched_every_max_m_n_th_frame_and_faces_in_between():
    hand_held = [("new_steady", False)] * 9
    assert drive_scopes(hand_held, 4, 2) == ["search", "skip", "faces", "skip"] * 2 + [
        "search"]
    assert drive_scopes(hand_held, 4, 1) == ["search"] * 9  # M = 1: every frame searched
    assert drive_scopes(hand_held, 2, 2) == ["search", "skip"] * 4 + ["search"]  # N <= M
    # a run on the faces that finds a new face: the next frame is searched
    found = [("new_steady", False)] * 2 + [("new_steady", True)] + [("new_steady", False)] * 2
    assert drive_scopes(found, 4, 2) == ["search", "skip", "faces", "search", "skip"]
    # somebody no longer tracked steadily: every M-th frame searched, as before
    assert drive_scopes([("new", False)] * 5, 4, 2) == ["search", "skip"] * 2 + ["search"]


def test_full_search_period_spaces_the_whole_frame_searches_and_keeps_the_runs():
    """--full-search-period S: a hand-held spell is searched every max(M, N, S)-th frame,
    the detector's other runs look at the faces; the run frames are those of S = 1."""
    hand_held = [("new_steady", False)] * 17
    assert drive_scopes(hand_held, 4, 2, 8) == (
        ["search", "skip"] + ["faces", "skip"] * 3) * 2 + ["search"]
    assert drive_scopes(hand_held, 4, 2, 3) == drive_scopes(hand_held, 4, 2)  # S <= max(M, N)
    for full in (1, 5, 8, 25):
        assert [s != "skip" for s in drive_scopes(hand_held, 4, 2, full)] == [
            s != "skip" for s in drive_scopes(hand_held, 4, 2)]
    # a run on the faces that finds a new face: the next frame is searched, whatever S is
    found = [("new_steady", False)] * 4 + [("new_steady", True)] + [("new_steady", False)] * 2
    assert drive_scopes(found, 4, 2, 8) == ["search", "skip", "faces", "skip", "faces",
                                            "search", "skip"]


def test_faces_only_rejects_bad_values():
    with pytest.raises(ValueError, match="search_period"):
        faces_only(0, 4, 0, True, True, True)
    with pytest.raises(ValueError, match="frames_since_search"):
        faces_only(-1, 4, 2, True, True, True)
    with pytest.raises(ValueError, match="full_search_period"):
        faces_only(0, 4, 2, True, True, True, 0)


def test_may_skip_detection_rejects_bad_values():
    with pytest.raises(ValueError, match="period"):
        may_skip_detection(0, 0, True, False)
    with pytest.raises(ValueError, match="frames_since_detection"):
        may_skip_detection(-1, 2, True, False)
    with pytest.raises(ValueError, match="search_period"):
        may_skip_detection(0, 2, True, True, 0, True)


@pytest.mark.parametrize("value", ["0", "26", "two"])
@pytest.mark.parametrize("option", ["--search-period", "--full-search-period"])
def test_search_period_out_of_range_is_named(option, value):
    with pytest.raises(ConfigError, match=option):
        parse_config(["--source", "x.mp4", "--api-url", "127.0.0.1:9", "--api-token", "t",
                      option, value])


@pytest.mark.parametrize(("option", "default", "other"),
                         [("search-period", 2, 3), ("full-search-period", 8, 4)])
def test_search_periods_default_and_config_file_key(tmp_path, option, default, other):
    base = ["--source", "x.mp4", "--api-url", "127.0.0.1:9", "--api-token", "t"]
    field = option.replace("-", "_")
    assert getattr(parse_config(base), field) == default
    ini = tmp_path / "c.ini"
    ini.write_text(f"[General]\n{option}={other}\n")
    assert getattr(parse_config([*base, "-c", str(ini)]), field) == other
    ini.write_text(f"[General]\n{option}=0\n")
    with pytest.raises(ConfigError, match=f"--{option}"):
        parse_config([*base, "-c", str(ini)])


@pytest.fixture(scope="module")
def second_face_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """1280x720: one person walks across from the start; another enters at 1.2 s, far away."""
    a, b = pick_sprites(2)
    path = tmp_path_factory.mktemp("cadence") / "second.mp4"
    return str(write_clip(path, [Walker(a, 0.0, 3.0, 60), Walker(b, 1.2, 3.0, 450)],
                          seconds=3.0, size=(1280, 720)))


def first_frames_with_tracks(path: str, period: int, search: int = 1
                             ) -> tuple[dict[int, int], FacePipeline, int]:
    """{track count: first frame index with that many confirmed tracks}, the pipeline, posts."""
    cfg = parse_config(["--source", path, "--camid", "c1", "--api-url", "127.0.0.1:9",
                        "--api-token", "t", "--detect-period", str(period),
                        "--search-period", str(search)])
    pipe = FacePipeline(cfg, CameraSpec("c1", path), YuNetDetector(), live=False)
    first: dict[int, int] = {}
    posts = 0
    with open_video(parse_source(path)) as stream:
        for frame in stream:
            posts += len(pipe.process(frame))
            first.setdefault(len(pipe.active_tracks), frame.index)
    return first, pipe, posts + len(pipe.finish())


def test_a_new_face_is_tracked_as_soon_as_with_the_detector_on_every_frame(second_face_clip):
    every, pipe1, posts1 = first_frames_with_tracks(second_face_clip, 1)
    skipping, pipe2, posts2 = first_frames_with_tracks(second_face_clip, 2)
    assert pipe1.stats.tracked_skips == 0
    assert pipe2.stats.tracked_skips > 10  # frames with one steady face were skipped
    assert pipe2.stats.detector_runs < pipe1.stats.detector_runs
    assert 2 in every and skipping[1] == every[1] and skipping[2] == every[2]
    assert posts1 == posts2 == 2


def run_frames(path: str, search: int, max_frames: int = 0
               ) -> tuple[list[tuple[bool, bool, bool, int]], FacePipeline, int]:
    """Per frame (moving, detector ran, search skip, confirmed tracks), the pipeline, posts."""
    cfg = parse_config(["--source", path, "--camid", "c1", "--api-url", "127.0.0.1:9",
                        "--api-token", "t", "--search-period", str(search)])
    pipe = FacePipeline(cfg, CameraSpec("c1", path), YuNetDetector(), live=False)
    rows, posts = [], 0
    with open_video(parse_source(path)) as stream:
        for frame in stream:
            runs, skips, moving = pipe.stats.detector_runs, pipe.stats.search_skips, \
                pipe.stats.motion_frames
            posts += len(pipe.process(frame))
            rows.append((pipe.stats.motion_frames > moving, pipe.stats.detector_runs > runs,
                         pipe.stats.search_skips > skips, len(pipe.active_tracks)))
            if len(rows) == max_frames:
                break
    return rows, pipe, posts + len(pipe.finish())


def longest_run(flags: list[bool]) -> int:
    best = now = 0
    for f in flags:
        now = now + 1 if f else 0
        best = max(best, now)
    return best


@pytest.mark.media
def test_lasting_motion_without_faces_is_searched_every_m_th_frame():
    """The cockatoo (motion all over every frame, no face): YuNet ran on every frame; now on
    the first and then every M-th, and it still posts nothing."""
    path = str(shared_file("clips_noface/imageio_cockatoo.mp4"))
    every, _, _ = run_frames(path, 1, 60)
    assert all(moving and ran for moving, ran, _, _ in every)
    for search in (2, 3):
        rows, pipe, posts = run_frames(path, search, 60)
        ran = [r[1] for r in rows]
        assert ran == [i % search == 0 for i in range(60)]
        assert pipe.stats.search_skips == 60 - sum(ran)
        assert posts == 0


@pytest.fixture(scope="module")
def face_into_lasting_motion_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """640x480: a faceless textured block crosses the room the whole time (a tree, a
    screen); a person walks in at 1.0 s, far from it."""
    rng = np.random.default_rng(3)
    block = rng.integers(0, 256, (13, 13, 3)).astype(np.uint8).repeat(10, 0).repeat(10, 1)
    (a,) = pick_sprites(1, start=2)
    path = tmp_path_factory.mktemp("cadence") / "lasting.mp4"
    return str(write_clip(path, [Walker(block, 0.0, 3.0, 320), Walker(a, 1.0, 3.0, 40)],
                          seconds=3.0))


def test_a_face_walking_into_searched_motion_waits_at_most_m_minus_1_frames(
        face_into_lasting_motion_clip):
    every, pipe1, posts1 = run_frames(face_into_lasting_motion_clip, 1)
    rows, pipe3, posts3 = run_frames(face_into_lasting_motion_clip, 3)
    first1 = next(i for i, r in enumerate(every) if r[3])
    first3 = next(i for i, r in enumerate(rows) if r[3])
    assert 25 <= first1 <= 30  # the person enters at frame 25
    assert first1 <= first3 <= first1 + 2
    assert longest_run([r[2] for r in rows]) == 2  # never more than M - 1 in a row
    assert rows[0][1]  # the first frame of motion was detected
    assert pipe3.stats.search_skips > 20  # the faceless block alone: 2 frames in 3 skipped
    assert pipe3.stats.detector_runs < 0.75 * pipe1.stats.detector_runs
    assert posts1 == posts3 == 1


@pytest.fixture(scope="module")
def face_into_quiet_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """640x480: an empty room for 0.6 s, then one person walks in."""
    (a,) = pick_sprites(1, start=3)
    path = tmp_path_factory.mktemp("cadence") / "quiet.mp4"
    return str(write_clip(path, [Walker(a, 0.6, 2.4, 120)], seconds=2.4))


def test_a_face_walking_into_a_quiet_scene_is_found_as_fast_as_with_m_1(face_into_quiet_clip):
    every, _, posts1 = run_frames(face_into_quiet_clip, 1)
    rows, _, posts3 = run_frames(face_into_quiet_clip, 3)
    first_motion = next(i for i, r in enumerate(rows) if r[0])
    assert rows[first_motion][1]  # the first frame of new motion is detected at once
    assert (next(i for i, r in enumerate(rows) if r[3])
            == next(i for i, r in enumerate(every) if r[3]))
    assert posts1 == posts3 == 1


def detections_per_frame(path: str, *extra: str) -> tuple[list[tuple[bool, frozenset]],
                                                           FacePipeline, list]:
    """Per frame (the detector ran, ids of the tracks it gave a detection), the pipeline and
    the posted snapshots, with the default options plus ``extra``."""
    cfg = parse_config(["--source", path, "--camid", "c1", "--api-url", "127.0.0.1:9",
                        "--api-token", "t", *extra])
    pipe = FacePipeline(cfg, CameraSpec("c1", path), YuNetDetector(), live=False)
    rows, snaps = [], []
    with open_video(parse_source(path)) as stream:
        for frame in stream:
            runs = pipe.stats.detector_runs
            snaps += pipe.process(frame)
            rows.append((pipe.stats.detector_runs > runs,
                         frozenset(t.id for t in pipe.active_tracks if t.det_index >= 0)))
    return rows, pipe, snaps + pipe.finish()


@pytest.mark.media
@pytest.mark.parametrize(("full", "face_runs", "searches"), [("1", 20, 26), ("8", 30, 16)])
def test_hand_held_clip_searches_the_whole_frame_every_few_frames_and_faces_in_between(
        full, face_runs, searches):
    """mpf_video_01 (hand-held, 5 people tracked steadily, the background moving in every
    frame, so its crops would be the whole frame): YuNet ran on the whole frame on 46 of 90
    frames. Now most of those runs look at the tracked faces' crops only (about half with
    --full-search-period 1: the whole frame every 4th frame; 2/3 with the default 8); the
    detector runs on the same frames and every track gets its detections on the same frames
    as with whole frames (--detect-regions 0 keeps the old behaviour), and the same best
    frames are posted for the same 5 tracks."""
    path = str(shared_file("clips_faces/mpf_video_01.mp4"))
    old_rows, old, old_snaps = detections_per_frame(path, "--detect-regions", "0")
    rows, pipe, snaps = detections_per_frame(path, "--full-search-period", full)
    assert old.stats.detector_runs == 46 and old.stats.face_runs == 0
    assert rows == old_rows
    assert pipe.stats.face_runs >= face_runs
    assert pipe.stats.detector_runs - pipe.stats.face_runs <= searches  # whole-frame searches
    assert pipe.stats.tracks_started == 5
    assert sorted((s.track_id, s.position) for s in snaps) == sorted(
        (s.track_id, s.position) for s in old_snaps)
    for new, before in zip(sorted(snaps, key=lambda s: s.track_id),
                           sorted(old_snaps, key=lambda s: s.track_id), strict=True):
        assert new.score >= before.score - 0.05  # grid-aligned crops: nearly the same quality


@pytest.fixture(scope="module")
def hand_held_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """640x480, 3 s: a textured scene shaking by a few pixels in every frame (a hand-held
    camera: motion all over the frame), one person in view from the start, a second one
    appearing at frame 40 on the other side of the frame."""
    import av

    rng = np.random.default_rng(5)
    scene = rng.integers(0, 256, (26, 34, 3)).astype(np.uint8).repeat(20, 0).repeat(20, 1)
    a, b = pick_sprites(2, size=120, start=1)
    path = tmp_path_factory.mktemp("cadence") / "hand_held.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "20"}
        for i in range(75):
            dx, dy = int(20 + 6 * np.sin(i * 0.9)), int(20 + 5 * np.cos(i * 1.3))
            img = scene[dy:dy + 480, dx:dx + 640].copy()
            img[150 - dy:270 - dy, 80 - dx:200 - dx] = a
            if i >= 40:
                img[170 - dy:290 - dy, 460 - dx:580 - dx] = b
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return str(path)


@pytest.mark.parametrize("full", [1, 8])
def test_a_face_appearing_on_a_hand_held_camera_waits_at_most_max_m_n_s_minus_1_frames(
        hand_held_clip, full):
    """Motion all over the frame while the first person is tracked steadily: the runs
    between whole-frame searches look at that person's crop only, so the second person is
    found at most max(M, N, S) - M frames later (2 with --full-search-period 1, 6 with 8)
    than with whole frames on every run (--detect-regions 0), and both are posted."""
    old_rows, old, old_snaps = detections_per_frame(hand_held_clip, "--detect-regions", "0")
    rows, pipe, snaps = detections_per_frame(hand_held_clip, "--full-search-period", str(full))
    assert pipe.stats.face_runs > 5 and old.stats.face_runs == 0
    old_first = next(i for i, (_, ids) in enumerate(old_rows) if len(ids) >= 2)
    first = next(i for i, (_, ids) in enumerate(rows) if len(ids) >= 2)
    assert 40 <= old_first <= 42
    assert old_first <= first <= old_first + max(4, full) - 2
    assert len(snaps) == len(old_snaps) == 2
