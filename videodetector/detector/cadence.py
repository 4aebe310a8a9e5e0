"""When the face detector may skip a frame that has motion: while every face is tracked.

With ``--detect-period N`` (N > 1) the detector runs on every N-th frame only while every
face in view is tracked steadily (each live track is confirmed and was matched by the last
detection) and every motion box belongs to one of those faces: it touches the face's box
grown by a margin and is at most MAX_BLOB_RATIO times as large. The Kalman filters carry
the boxes in between, as norfair's ``period`` does. A motion box is a connected blob of
change, so a walking person's body and the trail the running-average background leaves
behind a moving face belong to that face's blob. Any other blob (one that touches no
tracked face, or motion all over the frame) may hold a new face: then the detector runs on
that very frame (unless it already searched that motion, below), so such faces are found
as fast as with N = 1. A new face inside the blob
of a tracked one (someone walking in touching a tracked person) waits at most N - 1 frames.
Without the motion gate (``--md-threshold 0``) the detector runs on every frame.

With ``--search-period M`` (M > 1) the same holds, every M-th frame, for motion the tracker
cannot account for -- motion off the steadily tracked faces, or any motion while a face is
not tracked steadily (nobody tracked, a track the last run missed): a bird, trees, a screen,
a person facing away -- once the detector has searched it: it ran on an earlier frame of
that same spell and found no new face (no tentative track, nobody refused for
--max-persons). The first such frame after a quiet frame or after a frame whose motion was
all on steadily tracked faces is detected at once (a face walking into a quiet scene is
found as fast as with M = 1), and so is the frame after a run that found a new face (its
tentative track needs the next detection to be confirmed). A face that appears during a
spell already searched waits at most M - 1 frames. The tracker still advances on the frames
skipped (``update(None)``); a missed track counts a miss per detector run, so with M = 2 it
lives up to twice as many frames before it ends.

FACES_ONLY: on a hand-held camera the background moves in every frame, so that motion is
"off the faces" and, once searched, is searched every M-th frame with the whole frame (the
motion is everywhere, so ``--detect-regions`` cannot crop it). While every face is tracked
steadily, such a run may look at the tracked faces only (:func:`faces_only`): their crops
(regions.py) when the motion's own crops would cover too much of the frame; the motion is
searched again, with the whole frame, every max(M, N, S)-th frame (S: ``--full-search-period``,
default 8). The detector still runs on the same frames as before, so every tracked face gets
its detections (quality, best frame) on the same frames; only a new face appearing in motion
all over the frame during a spell already searched waits longer: at most max(M, N, S) - 1
frames instead of M - 1. On a hand-held camera the whole-frame searches are most of the
detector's cost (mpf_video_01: ~10 ms against ~4.5 ms for the faces' crops), so S = 8
halves them (24 -> 13 of 46 runs) for a wait of at most 7 frames (0.28 s at 25 fps).
"""

from __future__ import annotations

import numpy as np

from videodetector.detector.regions import grow_boxes

GROW = 0.5  # a tracked face's box grows by this fraction of its longer side on each side ...
PAD = 16.0  # ... plus this many pixels before motion counts as "on" that face
# A blob smaller than this on both sides (pixels) is noise, not a new face: the motion mask
# is dilated by 4 px, so it is at most an 8 px change, below what the detector can find.
MIN_BLOB = 16.0
# A blob larger than this many times the grown face box is not that face's (a camera that
# shakes, a light switched on, a crowd): it counts as new motion.
MAX_BLOB_RATIO = 4.0


def motion_off_faces(motion: np.ndarray, faces: np.ndarray, grow: float = GROW,
                     pad: float = PAD, min_blob: float = MIN_BLOB,
                     max_ratio: float = MAX_BLOB_RATIO) -> bool:
    """True when some ``motion`` box of ``min_blob`` pixels or more on a side touches none
    of the ``faces`` boxes grown by ``grow`` x its longer side + ``pad``, or only ones whose
    area is less than 1 / ``max_ratio`` of its own (xyxy, one image)."""
    motion = np.asarray(motion, np.float64).reshape(-1, 4)
    sides = motion[:, 2:] - motion[:, :2]
    motion = motion[np.any(sides >= min_blob, axis=1)]
    if not len(motion):
        return False
    zones = grow_boxes(faces, grow, pad)
    if not len(zones):
        return True
    m, z = motion[:, None, :], zones[None, :, :]
    touch = np.all(m[..., :2] < z[..., 2:], axis=2) & np.all(z[..., :2] < m[..., 2:], axis=2)
    m_area = np.prod(m[..., 2:] - m[..., :2], axis=2)
    z_area = np.prod(z[..., 2:] - z[..., :2], axis=2)
    owned = touch & (m_area <= max_ratio * z_area)
    return not bool(owned.any(axis=1).all())


def may_skip_detection(frames_since_detection: int, period: int, steady: bool,
                       new_motion: bool, search_period: int = 1,
                       searched: bool = False) -> bool:
    """Whether the detector may skip this moving frame (``frames_since_detection`` counts
    the frames it skipped since its last run).

    Motion all on faces tracked steadily (``new_motion`` False): only while ``steady`` and
    the detector ran fewer than ``period`` frames ago. Motion the tracker cannot account for
    (``new_motion``: off those faces, or some face not tracked steadily): only while that
    spell was already ``searched`` (see :func:`searched_after`) and the detector ran fewer
    than ``search_period`` frames ago."""
    for name, value in (("period", period), ("search_period", search_period)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value!r}")
    if frames_since_detection < 0:
        raise ValueError(f"frames_since_detection must be >= 0, got {frames_since_detection!r}")
    if new_motion:
        return searched and frames_since_detection + 1 < search_period
    return steady and frames_since_detection + 1 < period


def searched_after(searched: bool, new_motion: bool, detected: bool, found_new: bool) -> bool:
    """Whether the motion the tracker cannot account for counts as searched for the next
    frame, after this one: ``new_motion`` (this frame had such motion, see
    :func:`may_skip_detection`), ``detected`` (the detector ran on it) and ``found_new``
    (that run started a tentative track or refused one for --max-persons).

    A frame without such motion (quiet, or all on steadily tracked faces) ends the spell, so
    the next such motion is detected at once; a detector run on it that found no new face
    starts (or renews) the spell; a skipped frame keeps it as it was."""
    if not new_motion:
        return False
    if detected:
        return not found_new
    return searched


def faces_only(frames_since_search: int, period: int, search_period: int, steady: bool,
               new_motion: bool, searched: bool, full_search_period: int = 1) -> bool:
    """Whether a detector run on this moving frame (one :func:`may_skip_detection` did not
    skip) may look only at the faces tracked steadily and leave the motion off them unsearched
    (see FACES_ONLY in the module docstring): only for motion the tracker cannot account for
    (``new_motion``) in a spell already ``searched``, while every face is tracked ``steady``,
    with ``search_period`` > 1 (M = 1 searches every such frame, as before) and only while
    this run and the up to M - 1 frames :func:`may_skip_detection` may skip after it stay
    fewer than max(``search_period``, ``period``, ``full_search_period``) frames after the
    last search (``frames_since_search`` counts the frames since then that were skipped or
    looked at the faces only), so the motion is searched at least every max(M, N, S)-th
    frame."""
    for name, value in (("period", period), ("search_period", search_period),
                        ("full_search_period", full_search_period)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value!r}")
    if frames_since_search < 0:
        raise ValueError(f"frames_since_search must be >= 0, got {frames_since_search!r}")
    if not (new_motion and searched and steady and search_period > 1):
        return False
    return frames_since_search + search_period < max(search_period, period, full_search_period)
