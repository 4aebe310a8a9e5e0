"""Which person a posted face belongs to (8.2 dynamic person creation, with the detector's tracks).

Rules, in order, for a face posted with ``--person-identify 1``:

1. **One track, one person.** A face whose ``detectorParams`` carry a ``run_id`` and a
   ``track_id`` (and whose post has a ``cam_id``) belongs to the track
   ``(cam_id, run_id, track_id)``. If a face of that track was given a person within the last
   ``person_track_ttl`` seconds (capture time), the new face joins that person -- unless it
   clearly disagrees with the person (its score is below the FAR 1e-1 point, confidence
   0.569): a tracker identity switch, logged, counted (``identity_switch`` person event) and
   then matched like a face without a track. A detector restart starts a new ``run_id``, so
   two runs' track 7s are never linked. Posts without a ``run_id`` are matched by face only.
2. **A person is matched by its faces, weighted by quality.** The candidates are the persons
   of the nearest faces (same camera unless ``person_identify_global``); each is scored by the
   cosine between the new face and the quality-weighted centroid of the person's best
   ``BEST_FACES`` faces (one good face counts more than many poor ones; one stray face does not
   decide alone). The best candidate at or above ``person_identify_threshold`` is joined; the
   new face inherits the meta of the person's representative face (its best-quality face).
3. **Poor faces do not create persons.** A face below ``person_min_quality`` (the detector's
   quality ``score`` from ``detectorParams``, else a score from the face's size) that matches
   no person stays unassigned; when a later face of its track gets a person, the earlier
   faces of the track join it.
4. **Late evidence joins what early evidence split.** A face of at least
   ``person_merge_min_quality`` that matches two persons of its camera at or above the
   threshold (or joins its track's person and matches another) merges them (into the older
   one) if they never appear at the same time (no faces within ``COOCCURRENCE_S`` on one
   camera) and no operator has told them apart.
   Each merge is a ``merge`` person event and can be undone (``POST
   /v1/person/event/{id}/undo``). Set ``person_merge = False`` to never merge automatically.

Operator feedback (moving a face, "not this person", undoing a merge) is stored in
``person_blocks`` and rules 1-4 never undo it: a face taken away from a person never rejoins
it, nor does its track; a new face at least as close to a face taken away from a person as
to the person itself is not matched to it (it is that face's someone else); and two persons
are not merged while one holds a face taken away from the other.
"""

from __future__ import annotations

import logging
import math
import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from videodetector.backend import person_store
from videodetector.backend.index import UserIndex
from videodetector.backend.settings import Settings
from videodetector.core.confidence import CONF_LOW, confidence_from_cosine
from videodetector.core.quality.score import SIZE_TABLE

log = logging.getLogger(__name__)

BEST_FACES = 16  # a person is represented by its best faces (by quality)
CANDIDATE_FACES = 32  # nearest faces searched for candidate persons
MAX_CANDIDATES = 5  # persons scored per face
COOCCURRENCE_S = 1.0  # faces this close in time on one camera: two people seen together
QUALITY_RANGE = (-20.0, 0.0)  # the detector's score scale (0 best)
DEFAULT_QUALITY = -2.0  # faces stored before quality was recorded
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


# -- pure functions ---------------------------------------------------------------------------

def size_quality(box: tuple[float, float, float, float]) -> float:
    """The detector's size penalty for a box (shorter side: >= 100 px -> 0 ... 16 px -> -8)."""
    side = min(box[2] - box[0], box[3] - box[1])
    return float(np.interp(side, *SIZE_TABLE))


def face_quality(detector_params: Any, box: tuple[float, float, float, float]) -> float:
    """The detector's quality ``score`` if it sent a valid one, else the size penalty."""
    score = detector_params.get("score") if isinstance(detector_params, dict) else None
    if isinstance(score, int | float) and not isinstance(score, bool) and math.isfinite(score):
        return float(min(max(score, QUALITY_RANGE[0]), QUALITY_RANGE[1]))
    return size_quality(box)


def track_key(cam_id: str | None, detector_params: Any) -> str | None:
    """``"<run_id>:<track_id>@<cam_id>"`` for a post that names its detector run and track."""
    if cam_id is None or not isinstance(detector_params, dict):
        return None
    run, track = detector_params.get("run_id"), detector_params.get("track_id")
    if not (isinstance(run, str) and _RUN_ID.match(run)):
        return None
    if not isinstance(track, int) or isinstance(track, bool) or not 0 <= track < 2**63:
        return None
    return f"{run}:{track}@{cam_id}"


def track_in_camera(track: str | None) -> str | None:
    """A track key without its ``@<cam_id>`` (``"<run_id>:<track_id>"``), for a line that
    names the camera already."""
    return track.split("@", 1)[0] if track else track  # run ids and track ids have no @


def weighted_centroid(vectors: np.ndarray, qualities: np.ndarray) -> np.ndarray:
    """Unit-length quality-weighted mean of unit embeddings (rows); a face's weight is
    exp(quality / 2): 1 at quality 0, 0.37 at -2, 0.05 at -6."""
    weights = np.exp(np.asarray(qualities, np.float64) / 2.0)
    mean = (weights[:, None] * np.asarray(vectors, np.float64)).sum(axis=0)
    norm = np.linalg.norm(mean)
    return (mean / norm if norm > 0 else mean).astype(np.float32)


# -- assignment -------------------------------------------------------------------------------

@dataclass
class Assignment:
    """The person chosen for a new face, and what to do once the face row exists."""

    person: int | None
    meta: str
    quality: float
    track: str | None
    switched_from: int | None = None  # the track's person this face clearly is not
    also_matched: list[int] = field(default_factory=list)  # other persons >= threshold
    confidence: float | None = None


@dataclass(frozen=True)
class Matcher:
    """Person assignment for one backend (state lives in the database and the index)."""

    settings: Settings

    def prepare(self, conn: sqlite3.Connection, index: UserIndex, user: int,
                embedding: np.ndarray, box: tuple[float, float, float, float], meta: str,
                cam_id: str | None, detector_params: Any, ts: float) -> Assignment:
        """The new face's quality, track and (with person_identify) person and meta."""
        quality = face_quality(detector_params, box)
        track = track_key(cam_id, detector_params)
        if not self.settings.person_identify:
            return Assignment(None, meta, quality, track)
        return self.assign(conn, index, user, embedding, meta, quality, track, cam_id, ts)

    def assign(self, conn: sqlite3.Connection, index: UserIndex, user: int,
               embedding: np.ndarray, meta: str, quality: float, track: str | None,
               cam_id: str | None, ts: float) -> Assignment:
        """Rules 1-3 (module docstring)."""
        a = Assignment(None, meta, quality, track)
        blocked = person_store.persons_blocked_for_track(conn, user, track)
        tracked = self._track_person(conn, user, track, ts, blocked)
        if tracked is not None:
            conf = self._confidence(conn, index, user, tracked, embedding)
            if conf >= CONF_LOW:
                a.person, a.confidence = tracked, conf
                if self._may_merge(a):  # does it also show another person to be this one?
                    a.also_matched = [p for p, _ in self._matches(
                        conn, index, user, embedding, cam_id, blocked | {tracked})]
                return self._with_meta(conn, user, a)
            a.switched_from = tracked
            blocked = blocked | {tracked}
        matches = self._matches(conn, index, user, embedding, cam_id, blocked)
        if matches:
            a.person, a.confidence = matches[0]
            a.also_matched = [p for p, _ in matches[1:]]
            return self._with_meta(conn, user, a)
        if quality >= self.settings.person_min_quality:
            a.person = person_store.create_person(conn, user, meta)
        return a

    def _track_person(self, conn: sqlite3.Connection, user: int, track: str | None, ts: float,
                      blocked: set[int]) -> int | None:
        if track is None:
            return None
        row = conn.execute(
            "SELECT person_id FROM faces WHERE user_id = ? AND track = ? AND ts >= ? AND "
            "person_id IS NOT NULL ORDER BY ts DESC, id DESC LIMIT 1",
            (user, track, ts - self.settings.person_track_ttl)).fetchone()
        if row is None or row[0] in blocked:
            return None
        return int(row[0])

    def _matches(self, conn: sqlite3.Connection, index: UserIndex, user: int,
                 embedding: np.ndarray, cam_id: str | None, blocked: set[int]
                 ) -> list[tuple[int, float]]:
        """Candidate persons at or above the threshold, best first."""
        s = self.settings
        mask = index.mask(cam_id=cam_id, any_cam=s.person_identify_global, with_person=True)
        candidates: list[int] = []
        for face_id, _cos in index.search(embedding, CANDIDATE_FACES, mask):
            person = index.person_of(face_id)
            if person is not None and person not in blocked and person not in candidates:
                candidates.append(person)
                if len(candidates) == MAX_CANDIDATES:
                    break
        scored = [(p, self._confidence(conn, index, user, p, embedding)) for p in candidates]
        scored = [(p, c) for p, c in scored if c >= s.person_identify_threshold
                  and not self._rejected_closer(conn, index, user, p, embedding, c)]
        return sorted(scored, key=lambda pc: -pc[1])

    def _rejected_closer(self, conn: sqlite3.Connection, index: UserIndex, user: int,
                         person: int, embedding: np.ndarray, confidence: float) -> bool:
        """Whether the face is at least as close to a face an operator took away from
        ``person`` as to the person itself: then it is that face's someone else."""
        rejected = [f for f in person_store.rejected_faces(conn, user, person) if f in index]
        if not rejected:
            return False
        vectors = np.stack([index.vector(f) for f in rejected])
        cos = float(np.max(vectors @ np.asarray(embedding, np.float32).reshape(-1)))
        return float(confidence_from_cosine(cos, self.settings.embedding_model)) >= confidence

    def _confidence(self, conn: sqlite3.Connection, index: UserIndex, user: int, person: int,
                    embedding: np.ndarray) -> float:
        """Confidence between a face and the quality-weighted centroid of a person's best
        faces."""
        rows = [r for r in best_faces(conn, user, person) if r[0] in index]
        if not rows:
            return 0.0
        vectors = np.stack([index.vector(r[0]) for r in rows])
        centroid = weighted_centroid(vectors, np.array([r[1] for r in rows]))
        cos = float(centroid @ np.asarray(embedding, np.float32).reshape(-1))
        # the presets of the model that made the vectors (regenerate.py may switch it)
        return float(confidence_from_cosine(cos, self.settings.embedding_model))

    @staticmethod
    def _with_meta(conn: sqlite3.Connection, user: int, a: Assignment) -> Assignment:
        if not a.meta and a.person is not None:
            rows = best_faces(conn, user, a.person, 1)
            if rows:
                a.meta = rows[0][2]
        return a

    # -- after the face row exists --------------------------------------------------------

    def settle(self, conn: sqlite3.Connection, changes: person_store.IndexLog, user: int,
               face_id: int, a: Assignment, cam_id: str | None, ts: float) -> int | None:
        """Rules 1, 3, 4 once the face is stored and indexed: log a switch, give the track's
        unassigned faces the person, merge what this face shows to be one person. Returns
        the face's person (a merge may have changed it)."""
        self._settle(conn, changes, user, face_id, a, cam_id, ts)
        return changes.index.person_of(face_id)

    def _settle(self, conn: sqlite3.Connection, changes: person_store.IndexLog, user: int,
                face_id: int, a: Assignment, cam_id: str | None, ts: float) -> None:
        if a.switched_from is not None:
            log.warning("camera %s: track %s: face %d disagrees with the track's person %d "
                        "(tracker identity switch); now person %s", cam_id,
                        track_in_camera(a.track), face_id, a.switched_from, a.person)
            person_store.record_event(conn, user, "identity_switch", "auto", a.switched_from,
                                      a.person, [face_id], track=a.track)
        if a.person is None:
            return
        if a.track is not None and a.switched_from is None:  # after a switch: ambiguous
            self._claim_track(conn, changes, user, face_id, a, ts)
        if a.also_matched and self._may_merge(a):
            self._merge(conn, changes, user, face_id, a, cam_id)

    def _claim_track(self, conn: sqlite3.Connection, changes: person_store.IndexLog,
                     user: int, face_id: int, a: Assignment, ts: float) -> None:
        rows = conn.execute(
            "SELECT id FROM faces WHERE user_id = ? AND track = ? AND person_id IS NULL AND "
            "id != ? AND ts >= ?", (user, a.track, face_id,
                                    ts - self.settings.person_track_ttl)).fetchall()
        pending = [r[0] for r in rows
                   if not person_store.face_blocked(conn, user, r[0], a.person)]
        if pending:
            person_store.move_faces(conn, changes, user, pending, a.person)

    def _may_merge(self, a: Assignment) -> bool:
        s = self.settings
        return s.person_merge and a.quality >= s.person_merge_min_quality

    def _merge(self, conn: sqlite3.Connection, changes: person_store.IndexLog, user: int,
               face_id: int, a: Assignment, cam_id: str | None) -> None:
        survivor = a.person
        if survivor is None:
            return
        for other in a.also_matched:
            if not self._mergeable(conn, user, survivor, other, cam_id):
                continue
            into, away = min(survivor, other), max(survivor, other)
            person_store.merge_persons(conn, changes, user, into, away, "auto",
                                       face_id=face_id, cam_id=cam_id)
            survivor = into

    @staticmethod
    def _mergeable(conn: sqlite3.Connection, user: int, a: int, b: int,
                   cam_id: str | None) -> bool:
        if a == b or person_store.pair_blocked(conn, user, a, b):
            return False
        if person_store.holds_rejected_face(conn, user, a, b):
            return False  # a face the operator took away from one is now the other's
        if cam_id is not None and conn.execute(
                "SELECT 1 FROM faces WHERE user_id = ? AND person_id = ? AND cam_id = ? LIMIT 1",
                (user, b, cam_id)).fetchone() is None:
            return False  # not a person of this camera
        return not appear_together(conn, user, a, b)


def best_faces(conn: sqlite3.Connection, user: int, person: int, n: int = BEST_FACES
               ) -> list[tuple[int, float, str]]:
    """(face id, quality, meta) of a person's best faces, best first (newest among equals)."""
    rows = conn.execute(
        "SELECT id, COALESCE(quality, ?) AS q, meta FROM faces WHERE user_id = ? AND "
        "person_id = ? ORDER BY q DESC, id DESC LIMIT ?",
        (DEFAULT_QUALITY, user, person, n)).fetchall()
    return [(int(r[0]), float(r[1]), r[2]) for r in rows]


def appear_together(conn: sqlite3.Connection, user: int, a: int, b: int) -> bool:
    """Whether the two persons have faces on one camera within COOCCURRENCE_S seconds."""
    return conn.execute(
        "SELECT 1 FROM faces x JOIN faces y ON y.user_id = x.user_id AND y.person_id = ? "
        "AND y.cam_id = x.cam_id AND y.ts BETWEEN x.ts - ? AND x.ts + ? "
        "WHERE x.user_id = ? AND x.person_id = ? LIMIT 1",
        (b, COOCCURRENCE_S, COOCCURRENCE_S, user, a)).fetchone() is not None
