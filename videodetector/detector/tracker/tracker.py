"""SORT-style multi-face tracker: Kalman prediction + Hungarian matching, nothing else.

One ``update`` per processed frame::

    tracker = Tracker(max_tracks=10)
    for frame in frames:
        dets = detector.detect(frame) if worth_looking else None   # None = detector skipped
        upd = tracker.update(dets, period=frames_since_last_update)
        for track in upd.active:      # confirmed tracks; det_index = -1 if unseen this time
            ...
        for track in upd.ended:       # gone for good: post their best frame
            ...
    for track in tracker.finish():    # end of stream
        ...

Life of a track: a detection that matches no track starts a *tentative* track (no id yet).
After ``min_hits`` matched detections it is *confirmed* and gets the next id (1, 2, ...
per tracker), and from then on appears in ``TrackerUpdate.active``. A tentative track that
misses a detection is dropped silently (one-frame false positives never surface). A
confirmed track that has not been matched for more than ``max_missed`` frames is removed
and reported once in ``TrackerUpdate.ended``.

``period`` is the number of video frames since the previous update (frames the reader
dropped in between included; the pipeline computes it with :func:`frames_elapsed`): the
Kalman filters predict that far ahead and a miss counts as ``period`` missed frames.
``detections=None`` means the detector did not look at this frame (e.g. no motion): filters
still advance, but nobody is counted as missed. A track predicted over a gap (``period`` > 1)
since it was last matched may also be matched by the box where it was last matched
(``associate``'s ``also_xyxy``): the prediction extrapolates a velocity estimated from a few
jittery boxes over the whole gap, which a camera that shakes, a face that stops or a box size
that jitters defeats (see ``_held``). While nothing is dropped only the prediction is
matched, as before.

``Track`` objects handed out are immutable snapshots; the tracker keeps its own state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from videodetector.core.detections import Detections
from videodetector.detector.tracker.distances import associate
from videodetector.detector.tracker.filter import BoxKalmanFilter

log = logging.getLogger(__name__)

MAX_HISTORY = 500  # centres kept per track (the most recent ones)


@dataclass(frozen=True)
class Track:
    """Snapshot of one tracked face after an update."""

    id: int  # first_id, first_id + 1, ... per tracker; 0 while tentative (never handed out)
    xyxy: tuple[float, float, float, float]  # Kalman-filtered box, full-frame pixels
    hits: int  # detections matched so far
    missed: int  # frames since the last matched detection (0 if matched now)
    age: int  # frames since the track started
    history: tuple[tuple[float, float], ...]  # filtered centres at each matched detection
    det_index: int  # index into this update's detections, -1 if not matched now
    confirmed: bool


@dataclass(frozen=True)
class TrackerUpdate:
    """Result of ``Tracker.update``."""

    active: list[Track]  # confirmed live tracks, by id
    ended: list[Track]  # confirmed tracks removed in this update
    not_started: int = 0  # detections refused because max_tracks tracks were live


@dataclass
class _LiveTrack:
    """Mutable per-track state inside the tracker."""

    kf: BoxKalmanFilter
    id: int = 0
    hits: int = 1
    missed: int = 0
    age: int = 0
    det_index: int = -1
    history: list[tuple[float, float]] = field(default_factory=list)
    held: np.ndarray = field(default_factory=lambda: np.zeros(4))  # box when last matched
    gapped: bool = False  # predicted over frames dropped (period > 1) since last matched

    def record_centre(self) -> None:
        x1, y1, x2, y2 = self.kf.xyxy
        self.history.append((float(x1 + x2) / 2, float(y1 + y2) / 2))
        del self.history[:-MAX_HISTORY]

    def snapshot(self) -> Track:
        box = tuple(float(v) for v in self.kf.xyxy)
        return Track(self.id, box, self.hits, self.missed, self.age,  # type: ignore[arg-type]
                     tuple(self.history), self.det_index, self.id > 0)


def frames_elapsed(previous: int | None, index: int, max_period: int) -> int:
    """The ``period`` of a tracker update for the frame at ``index`` (``Frame.index``) after
    the one last processed at ``previous`` (None or < 0: none yet): the frames elapsed
    between them, dropped ones included, so the Kalman filters predict as far as the faces
    moved. At least 1 (a first frame, a repeated index, a source that counts again from 0
    after a restart: as one frame) and at most ``max_period`` (a long gap: the tracks are
    predicted that far and a missed one ends, as after its time to live)."""
    _check_int("max_period", max_period, 1)
    if previous is None or previous < 0 or index <= previous:
        return 1
    return min(index - previous, max_period)


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


class Tracker:
    """Multi-face tracker; see the module docstring for the life of a track."""

    def __init__(
        self,
        max_tracks: int = 10,
        iou_threshold: float = 0.2,
        max_missed: int = 15,
        min_hits: int = 2,
        first_id: int = 1,
    ) -> None:
        _check_int("max_tracks", max_tracks, 1)
        _check_int("first_id", first_id, 1)
        _check_int("max_missed", max_missed, 0)
        _check_int("min_hits", min_hits, 1)
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
        self.max_tracks = int(max_tracks)
        self.iou_threshold = float(iou_threshold)
        self.max_missed = int(max_missed)
        self.min_hits = int(min_hits)
        self.not_started_total = 0  # detections refused by the max_tracks cap, all updates
        self._tracks: list[_LiveTrack] = []
        self._next_id = int(first_id)  # a restarted pipeline continues its camera's ids

    @property
    def next_id(self) -> int:
        """The id the next confirmed track will get."""
        return self._next_id

    @property
    def boxes(self) -> np.ndarray:
        """(N, 4) Kalman boxes of every live track, tentative ones included."""
        return np.array([t.kf.xyxy for t in self._tracks], np.float32).reshape(-1, 4)

    @property
    def steady(self) -> bool:
        """Every live track is confirmed and was matched by the last detections (and there
        is at least one): the faces in view are all known."""
        return bool(self._tracks) and all(t.id > 0 and t.missed == 0 for t in self._tracks)

    def update(self, detections: Detections | None, period: int = 1) -> TrackerUpdate:
        """Advance all tracks by ``period`` frames and match them to ``detections``."""
        _check_int("period", period, 1)
        for t in self._tracks:
            t.kf.predict(period)
            t.age += period
            t.gapped |= period > 1
            t.det_index = -1
        if detections is None:
            return TrackerUpdate(self._active(), [])

        boxes = np.array([t.kf.xyxy for t in self._tracks]).reshape(-1, 4)
        matches, lost, fresh = associate(boxes, detections.xyxy, self.iou_threshold,
                                         also_xyxy=self._held(boxes))
        for ti, di in matches:
            self._hit(self._tracks[ti], detections.xyxy[di], di)
        ended = self._miss([self._tracks[i] for i in lost], period)
        not_started = self._start(detections, fresh)
        return TrackerUpdate(self._active(), ended, not_started)

    def finish(self) -> list[Track]:
        """End every track (end of stream); returns the confirmed ones."""
        ended = [t.snapshot() for t in self._tracks if t.id > 0]
        self._tracks = []
        return ended

    # -- steps of update -------------------------------------------------------------------

    def _held(self, predicted: np.ndarray) -> tuple[np.ndarray, ...]:
        """Other boxes a detection may match besides the ``predicted`` ones, for the tracks
        predicted over frames dropped since they were last matched (``gapped``): there the
        prediction extrapolates a velocity estimated from a few jittery boxes over the whole
        gap. Their box when last matched (a camera that shook back, a face that stopped) and
        that box's size at the predicted centre (a box size that jitters: its extrapolated
        rate shrinks or swells the box). None when no track is gapped (nothing dropped)."""
        gapped = np.array([t.gapped for t in self._tracks], bool)
        if not gapped.any():
            return ()
        held = np.array([t.held for t in self._tracks], np.float64).reshape(-1, 4)
        held[~gapped] = predicted[~gapped]
        half = (held[:, 2:] - held[:, :2]) / 2
        centre = (predicted[:, :2] + predicted[:, 2:]) / 2
        return held, np.hstack([centre - half, centre + half])

    def _active(self) -> list[Track]:
        return sorted((t.snapshot() for t in self._tracks if t.id > 0), key=lambda t: t.id)

    def _hit(self, track: _LiveTrack, xyxy: np.ndarray, det_index: int) -> None:
        track.held = track.kf.update(xyxy)
        track.gapped = False
        track.hits += 1
        track.missed = 0
        track.det_index = det_index
        track.record_centre()
        if track.id == 0 and track.hits >= self.min_hits:
            self._confirm(track)

    def _confirm(self, track: _LiveTrack) -> None:
        track.id = self._next_id
        self._next_id += 1
        log.debug("track %d confirmed at %s", track.id, track.kf.xyxy.round(1).tolist())

    def _miss(self, lost: list[_LiveTrack], period: int) -> list[Track]:
        """Count a miss for unmatched tracks; remove the expired ones, return confirmed ones."""
        ended: list[Track] = []
        for t in lost:
            t.missed += period
            if t.id == 0 or t.missed > self.max_missed:
                self._tracks.remove(t)
                if t.id > 0:
                    ended.append(t.snapshot())
                    log.debug("track %d ended after %d missed frames", t.id, t.missed)
        return ended

    def _start(self, detections: Detections, fresh: list[int]) -> int:
        """Start tentative tracks for unmatched detections, best score first, up to the cap."""
        order = sorted(fresh, key=lambda i: -float(detections.score[i]))
        room = max(self.max_tracks - len(self._tracks), 0)
        for di in order[:room]:
            kf = BoxKalmanFilter(detections.xyxy[di])
            track = _LiveTrack(kf, det_index=di, held=kf.xyxy)
            track.record_centre()
            self._tracks.append(track)
            if self.min_hits <= 1:
                self._confirm(track)
        refused = len(order) - min(room, len(order))
        if refused:
            self.not_started_total += refused
            log.debug("max_tracks=%d reached: %d detections not tracked", self.max_tracks, refused)
        return refused
