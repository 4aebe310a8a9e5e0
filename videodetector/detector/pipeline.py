"""One camera's face pipeline: frame -> motion -> detect -> track -> best frame -> Snapshot.

``FacePipeline.process(frame)`` is called for every frame of one camera the reader
delivers, in order, from one thread. Frames the reader dropped (a gap in ``Frame.index``)
advance the tracker as far as they span (:func:`frames_elapsed`, at most a track's time to
live + 1: a longer gap counts as that long, and a face not found after it ends): the
Kalman filters, a track's age and its missed frames count video frames; the cadence
(RECHECK_FRAMES, FULL_FRAME_EVERY, --detect-period, --search-period) counts the frames
processed, so a host that drops frames never runs the detector on more of those it keeps.
It returns the snapshots to post now; the caller hands them to the poster. Everything here
is synchronous and deterministic for a given input, so offline runs on a file (nothing
dropped) are reproducible.

Coordinates: all boxes are full-frame ``xyxy`` (see ``detections.py``). The
detector sees the ROT crop (``--rot``) scaled to ``--rescale-height``; its
boxes are mapped back before tracking. A :class:`ScalableDetector` (YuNet) gets
that crop at its own input size straight from the decoder (``Pixels.bgr_at``:
one swscale pass), so a frame in which it finds no face is never converted to
BGR at full size; the full-size image is made only for frames with faces.

One bad face never stops the camera: a detection whose box is unusable (not finite, empty,
outside the frame) is dropped, and a face whose quality, alignment, embedding or encoding
fails (e.g. landmarks with the mouth above the eyes) is skipped; both are counted in
``stats.faces_skipped`` by reason (the ``fkvideo_faces_skipped_total`` metric) and logged
once per reason per minute. The face's track goes on, and so do all other tracks.

A ``--rot``/``--roi`` that does not overlap the frame at all raises :class:`RegionError`
(a configuration error of that camera); one that overlaps it only partly is clipped, with
one warning.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from videodetector.core.confidence import COS_FAR_1E3
from videodetector.core.detections import Detections, clean_detections, concat_detections
from videodetector.core.geometry import Rect, box_centre, scale_box
from videodetector.core.images import encode
from videodetector.core.models import SFaceEmbedder, align_face
from videodetector.core.quality.score import face_quality
from videodetector.core.ratelog import RateLimitedLog
from videodetector.detector.bestframe import Candidate, make_selector
from videodetector.detector.cadence import (
    faces_only,
    may_skip_detection,
    motion_off_faces,
    searched_after,
)
from videodetector.detector.config import DetectorConfig
from videodetector.detector.motion.detector import FrameDiffMotion, MotionResult
from videodetector.detector.regions import (
    Region,
    align_region,
    any_in_image,
    detection_regions,
    input_regions,
    merge_regions,
)
from videodetector.detector.snapshot import Snapshot
from videodetector.detector.timing import CameraTimers
from videodetector.detector.tracker.tracker import Track, Tracker, TrackerUpdate, frames_elapsed
from videodetector.detector.uniq import UniqFilter
from videodetector.detector.video.pixels import Pixels
from videodetector.detector.video.source import Frame

log = logging.getLogger(__name__)

# --post-uniq: two posted faces are "similar" (the same person) when the cosine of their SFace
# embeddings reaches the FAR 1e-3 point measured in docs/thresholds.md.
SAME_FACE_COSINE = COS_FAR_1E3

RECHECK_FRAMES = 5  # without motion, tracked faces are re-detected every this many frames
# --detect-regions: while the detector runs on crops, the whole frame is looked at again after
# this many frames (a face that stands still outside the motion is found within a second)
FULL_FRAME_EVERY = 25
# Crops of the tracked faces alone (cadence.faces_only) are aligned to the grid of YuNet's
# coarsest stride: the faces then fall on the same cells as in the whole frame (same boxes,
# landmarks and scores as a whole-frame run would give them, for the best-frame choice)
FACE_CROP_GRID = 32

# Why a face was skipped (the ``reason`` label of fkvideo_faces_skipped_total).
SKIP_BAD_BOX = "bad_box"  # the detector's box is not finite, empty or outside the frame
SKIP_UNSCORABLE = "unscorable"  # quality/direction could not be computed (odd landmarks)
SKIP_SNAPSHOT = "snapshot_failed"  # alignment, embedding or encoding of the chosen face failed
SKIP_REASONS = (SKIP_BAD_BOX, SKIP_UNSCORABLE, SKIP_SNAPSHOT)
NO_BOXES = np.zeros((0, 4), np.float32)


class RegionError(ValueError):
    """A camera's rot or roi does not fit its frames: a configuration error of that camera."""


class FaceDetector(Protocol):
    def detect(self, bgr: np.ndarray) -> Detections: ...


@runtime_checkable
class ScalableDetector(Protocol):
    """A detector that can look at a crop at the scale it would use for the whole image
    (needed for --detect-regions; YuNetDetector is one)."""

    def detect(self, bgr: np.ndarray, scale: float | None = None) -> Detections: ...

    def input_scale(self, height: int, width: int) -> float: ...


@dataclass(frozen=True)
class CameraSpec:
    """One camera as the daemon runs it (from --source/--camid or the backend's list)."""

    cam_id: str
    url: str
    roi: Rect | None = None
    rot: Rect | None = None
    # the operator's name for it (the backend's ``meta``), shown in its log lines
    # (logprefix.py); not compared: a new name alone does not restart the camera
    name: str = field(default="", compare=False)


@dataclass
class PipelineStats:
    frames: int = 0
    motion_frames: int = 0
    detector_runs: int = 0
    region_runs: int = 0  # detector runs on a crop of the frame (--detect-regions)
    face_runs: int = 0  # of those, runs on the tracked faces only (cadence.faces_only)
    # quiet re-checks not run: every tracked face's box lay outside the frame (_faces_gone)
    gone_rechecks: int = 0
    tracked_skips: int = 0  # moving frames left to the tracker (--detect-period)
    search_skips: int = 0  # moving frames already searched for new faces (--search-period)
    faces_detected: int = 0
    tracks_started: int = 0
    snapshots: int = 0
    suppressed_uniq: int = 0
    detect_seconds: float = 0.0
    faces_skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))

    def skip(self, reason: str, n: int = 1) -> None:
        self.faces_skipped[reason] = self.faces_skipped.get(reason, 0) + n


@dataclass(frozen=True)
class FacePayload:
    """What a Candidate carries: enough to build a Snapshot later, and nothing more."""

    image: np.ndarray  # the full frame (a reference; frames are never modified in place)
    xyxy: np.ndarray
    landmarks: np.ndarray
    timestamp: datetime
    index: int  # the frame's position in the source (Frame.index)
    centres: tuple[tuple[float, float], ...] = field(default=())


def region_in_frame(name: str, region: Rect | None, width: int, height: int) -> str | None:
    """Check a camera region against the frame size.

    Raises RegionError when the region does not overlap the ``width`` x ``height`` frame at
    all; returns a warning when it overlaps only partly (it is then clipped), else None.
    """
    if region is None:
        return None
    x2, y2 = region.x + region.w, region.y + region.h
    if region.x >= width or region.y >= height:
        raise RegionError(f"{name} {region} lies outside the {width}x{height} frame")
    if x2 > width or y2 > height:
        return f"{name} {region} extends beyond the {width}x{height} frame; clipped to it"
    return None


def crop_for_detection(image: np.ndarray, rot: Rect | None, rescale_height: int) -> tuple[
    np.ndarray, float, float, float
]:
    """The detector's input: the ROT crop, downscaled to ``rescale_height`` if taller.

    Returns (crop, dx, dy, factor) such that full-frame coords = crop coords * factor + (dx, dy).
    """
    h, w = image.shape[:2]
    dx = dy = 0
    if rot is not None:
        x1, y1, x2, y2 = rot_box(rot, w, h)
        image, dx, dy = image[y1:y2, x1:x2], x1, y1
    factor = 1.0
    if rescale_height and image.shape[0] > rescale_height:
        factor = image.shape[0] / rescale_height
        new_w = max(1, round(image.shape[1] / factor))
        # linear, not area: area resampling at a non-integer ratio costs ~7 ms per 720p frame
        image = cv2.resize(image, (new_w, rescale_height), interpolation=cv2.INTER_LINEAR)
    return image, float(dx), float(dy), factor


def rot_box(rot: Rect | None, width: int, height: int) -> Region:
    """The part of a ``width`` x ``height`` frame the detector looks at: ``--rot`` clipped to
    the frame, or all of it. RegionError when ``rot`` lies outside the frame."""
    if rot is None:
        return 0, 0, width, height
    x1, y1 = max(0, rot.x), max(0, rot.y)
    x2, y2 = min(width, rot.x + rot.w), min(height, rot.y + rot.h)
    if x2 <= x1 or y2 <= y1:
        raise RegionError(f"--rot {rot} lies outside the {width}x{height} frame")
    return x1, y1, x2, y2


def detection_scale(box: Region, rescale_height: int,
                    input_scale: Callable[[int, int], float]) -> float:
    """Detector-input pixels per frame pixel for the crop ``box``: ``--rescale-height``
    shrinks a taller crop to that height (as :func:`crop_for_detection`), then the detector
    resizes it by ``input_scale(height, width)`` (``ScalableDetector.input_scale``)."""
    w, h = box[2] - box[0], box[3] - box[1]
    if w < 1 or h < 1:
        raise ValueError(f"box must not be empty, got {box!r}")
    factor = 1.0
    if rescale_height and h > rescale_height:
        factor = h / rescale_height
        w, h = max(1, round(w / factor)), rescale_height
    scale = input_scale(h, w) / factor
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"detector input scale must be a positive number, got {scale!r}")
    return scale


def scaled_box(box: Region, scale: float, width: int, height: int) -> Region:
    """``box`` (frame pixels) in an image of the frame resized by ``scale`` to ``width`` x
    ``height``: grown to whole pixels, clipped, never empty."""
    x1 = min(width - 1, max(0, math.floor(box[0] * scale)))
    y1 = min(height - 1, max(0, math.floor(box[1] * scale)))
    x2 = max(x1 + 1, min(width, math.ceil(box[2] * scale)))
    y2 = max(y1 + 1, min(height, math.ceil(box[3] * scale)))
    return x1, y1, x2, y2


def same_face(a: object, b: object) -> bool:
    """Two L2-normalised SFace embeddings show the same person (see SAME_FACE_COSINE)."""
    return float(np.dot(a, b)) >= SAME_FACE_COSINE  # type: ignore[arg-type]


def size_ok(xyxy: np.ndarray, min_size: float, max_size: float) -> bool:
    """--min-face-size applies to the box's minor side, --max-face-size to its major side."""
    w, h = float(xyxy[2] - xyxy[0]), float(xyxy[3] - xyxy[1])
    if min_size and min(w, h) < min_size:
        return False
    return not (max_size and max(w, h) > max_size)


def in_roi(xyxy: np.ndarray, roi: Rect | None) -> bool:
    """A face is inside the ROI when its box centre is (documented in the README)."""
    if roi is None:
        return True
    cx, cy = box_centre(xyxy)
    return roi.contains_point(float(cx), float(cy))


class FrameClock:
    """Timestamps of frames: --start-ts + pts for files, wall clock for live streams."""

    def __init__(self, start_ts: datetime | None, live: bool) -> None:
        self.start_ts = start_ts
        self.live = live
        self._first_wall: float | None = None

    def timestamp(self, frame: Frame) -> datetime:
        if self.live:
            if self.start_ts is None:
                return datetime.fromtimestamp(frame.wall_time).astimezone()
            if self._first_wall is None:
                self._first_wall = frame.wall_time
            return self.start_ts + timedelta(seconds=frame.wall_time - self._first_wall)
        base = self.start_ts or datetime.now().astimezone().replace(microsecond=0)
        if self.start_ts is None:
            self.start_ts = base  # a file without --start-ts starts "now", fixed once
        return base + timedelta(seconds=max(0.0, frame.pts))


class FacePipeline:
    """Per-camera processing state. Not thread-safe: one thread drives it."""

    def __init__(
        self,
        cfg: DetectorConfig,
        camera: CameraSpec,
        detector: FaceDetector,
        *,
        live: bool,
        run_id: str = "",
        stats: PipelineStats | None = None,
        first_track_id: int = 1,
        timers: CameraTimers | None = None,
    ) -> None:
        self.cfg = cfg
        self.timers = timers if timers is not None else CameraTimers.null()
        self.camera = camera
        self.detector = detector
        self.run_id = run_id
        self.motion = FrameDiffMotion(threshold=cfg.md_threshold, scale=cfg.scale)
        self.tracker = Tracker(max_tracks=cfg.max_persons, first_id=first_track_id)
        self.selector = make_selector(
            realtime=cfg.realtime, rt_perm=cfg.rt_perm, rt_delay_ms=cfg.rt_delay,
            realtime1844=cfg.realtime1844, min_score=cfg.min_score,
            min_dir_score=cfg.min_dir_score,
        )
        self.uniq = (
            UniqFilter(cfg.uc_max_time_diff, cfg.uc_max_dup, cfg.uc_max_avg_shift,
                       similar=same_face)
            if cfg.post_uniq else None
        )
        self._embedder = SFaceEmbedder() if cfg.post_uniq else None
        self.clock = FrameClock(cfg.start_ts, live)
        self.stats = stats if stats is not None else PipelineStats()  # may continue counting
        self._seq: dict[int, int] = {}
        self._skipped = 0  # frames since the detector last ran
        self._searched = False  # this spell of motion was searched (--search-period)
        self._since_search = 0  # frames skipped or looked at the faces only since a search
        self._faces_only = False  # this frame's run may look at the tracked faces only
        self._scalable = isinstance(detector, ScalableDetector)
        self._use_regions = cfg.detect_regions and self._scalable
        self._motion: MotionResult | None = None  # this frame's (boxes: full-frame pixels)
        self._since_full = FULL_FRAME_EVERY  # frames since the detector saw a whole frame
        self._active: list[Track] = []
        self._faces_seen = False  # the last detector run found faces or kept tracks alive
        self._last_t = 0.0
        self.last_index = -1  # Frame.index of the last frame fully processed
        self._frame_size: tuple[int, int] | None = None
        self.log = logging.LoggerAdapter(log, {"cam_id": camera.cam_id})
        self._ratelog = RateLimitedLog(self.log)

    # -- per frame -------------------------------------------------------
    def process(self, frame: Frame) -> list[Snapshot]:
        """The snapshots to post after this frame. Raises RegionError if the camera's
        rot/roi does not fit the frame; any other exception is a bug (the camera restarts)."""
        self._check_frame_size(frame.pixels.luma()[0])
        snapshots = self._process(frame)
        self.last_index = frame.index
        if frame.pixels.convert_seconds:  # BGR was needed (at full or the detector's size)
            self.timers.convert.observe(frame.pixels.convert_seconds)
        return snapshots

    @property
    def next_track_id(self) -> int:
        """The id the next confirmed track will get (a restarted pipeline continues there)."""
        return self.tracker.next_id

    def _check_frame_size(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        if self._frame_size == (w, h):
            return
        for name, region in (("rot", self.camera.rot), ("roi", self.camera.roi)):
            warning = region_in_frame(name, region, w, h)
            if warning:
                self.log.warning("%s", warning)
        self._frame_size = (w, h)

    def _process(self, frame: Frame) -> list[Snapshot]:
        self.stats.frames += 1
        self._last_t = frame.pts
        self._since_full += 1
        timers = self.timers
        period = frames_elapsed(self.last_index, frame.index, self.tracker.max_missed + 1)
        if not self._should_detect(*frame.pixels.luma()):
            self._since_search += 1
            t0 = time.perf_counter()
            self._active = self.tracker.update(None, period=period).active
            t1 = time.perf_counter()
            ready = self.selector.tick(frame.pts)
            t2 = time.perf_counter()
            timers.track.observe(t1 - t0)
            timers.select.observe(t2 - t1)
            return self._timed_snapshots(ready)
        regions, searching = self._regions(frame.pixels)
        if regions == []:  # nothing to look at: as a run that found no face
            dets = Detections.empty()
            self.stats.gone_rechecks += 1
        else:
            dets = self._detect(frame.pixels, regions, align=not searching)
        if searching or self._since_full == 0:  # (a crop outside --rot: the whole frame)
            self._since_search = 0
        else:
            self._since_search += 1
            self.stats.face_runs += 1
        t0 = time.perf_counter()
        update = self.tracker.update(dets, period=period)
        t1 = time.perf_counter()
        self._active = update.active
        self._faces_seen = len(dets) > 0 or bool(update.active)
        self._after_detection(update)
        ready = []
        for track in update.ended:
            ready += self.selector.end_track(track.id, frame.pts)
        ready += self._observe(frame, update.active, dets)
        ready += self.selector.tick(frame.pts)
        timers.track.observe(t1 - t0)
        timers.select.observe(time.perf_counter() - t1)
        snapshots = self._timed_snapshots(ready)
        for track in update.ended:  # only after their last snapshots took a sequence number
            self._seq.pop(track.id, None)
        return snapshots

    def _should_detect(self, gray: np.ndarray, full_range: bool = True) -> bool:
        """Motion gating. Without motion the detector is skipped, but while faces are tracked
        it still looks every RECHECK_FRAMES frames, so a face that stands still keeps its track
        fresh and one that left without motion (e.g. a cut) ends its track. With motion it
        may still skip while the tracker follows every face (--detect-period)."""
        t0 = time.perf_counter()
        self._faces_only = False
        motion = self.motion.detect(gray, full_range=full_range)
        moving = motion.moving
        self._motion = motion  # its boxes are made only if --detect-regions/-period ask
        self.timers.motion.observe(time.perf_counter() - t0)
        if not moving and not (self._faces_seen and self._skipped + 1 >= RECHECK_FRAMES):
            self._skipped += 1
            self._searched = False  # a quiet frame: the next motion is new
            return False
        self.stats.motion_frames += moving
        if moving and self._may_skip_moving():
            self._skipped += 1
            return False
        self._skipped = 0
        return True

    def _may_skip_moving(self) -> bool:
        """--detect-period / --search-period: this frame's motion is all on faces tracked
        steadily, or the tracker cannot account for it but the detector already searched
        this spell of it, and the detector ran less than that period ago (see cadence.py)."""
        cfg = self.cfg
        steady = cfg.detect_period > 1 and self.tracker.steady
        searched = cfg.search_period > 1 and self._searched
        if cfg.md_threshold <= 0 or not (steady or searched):
            return False  # (without the motion gate nothing tells where the motion is)
        new_motion = self._unaccounted()
        skip = may_skip_detection(self._skipped, cfg.detect_period, steady, new_motion,
                                  cfg.search_period, searched)
        self._searched = searched_after(searched, new_motion, False, False)
        self._faces_only = not skip and self._use_regions and faces_only(
            self._since_search, cfg.detect_period, cfg.search_period, self.tracker.steady,
            new_motion, searched, cfg.full_search_period)
        if skip and new_motion:
            self.stats.search_skips += 1
        elif skip:
            self.stats.tracked_skips += 1
        return skip

    def _after_detection(self, update: TrackerUpdate) -> None:
        """--search-period: after a detector run on motion the tracker cannot account for
        that found no new face (no tentative track, nobody refused), that spell is searched."""
        if self.cfg.search_period <= 1 or self._motion is None or not self._motion.moving:
            self._searched = False
            return
        found_new = update.not_started > 0 or len(self.tracker.boxes) > len(update.active)
        new_motion = not found_new and self._unaccounted()
        self._searched = searched_after(self._searched, new_motion, True, found_new)

    def _unaccounted(self) -> bool:
        """This frame's motion is not all on faces tracked steadily: some lies off them, or
        some face is not tracked steadily (a missed track, or nobody tracked)."""
        tracker = self.tracker
        return not tracker.steady or motion_off_faces(self._motion_boxes, tracker.boxes)

    def _observe(self, frame: Frame, active: list[Track], dets: Detections) -> list[Candidate]:
        """Offer this frame's face of every matched track to the best-frame selector."""
        ready: list[Candidate] = []
        stamp = self.clock.timestamp(frame)
        for track in active:
            if track.det_index < 0:
                continue
            if track.id not in self._seq:
                self._seq[track.id] = 0
                self.stats.tracks_started += 1
            try:
                cand = self._candidate(frame, stamp, track, dets, track.det_index)
                if cand is not None:
                    ready += self.selector.observe(cand)
            except Exception as exc:  # one face that cannot be scored never stops the camera
                self._skip(SKIP_UNSCORABLE, track.id, exc)
        return ready

    def _skip(self, reason: str, track_id: int, exc: BaseException) -> None:
        self.stats.skip(reason)
        self._ratelog.log(
            logging.WARNING, reason, "face of track %d skipped (%s): %s: %s", track_id, reason,
            type(exc).__name__, exc,
            exc_info=None if isinstance(exc, ValueError) else exc,
        )

    def finish(self) -> list[Snapshot]:
        """End of stream, or a live stream that went silent: close every track and flush
        what the selector holds. Processing may go on afterwards (new tracks, new ids)."""
        ready: list[Candidate] = []
        for track in self.tracker.finish():
            ready += self.selector.end_track(track.id, self._last_t)
        ready += self.selector.finish(self._last_t)
        snapshots = self._timed_snapshots(ready)
        self._seq.clear()
        self._active = []
        self._faces_seen = False
        self._searched = False
        self._faces_only = False
        self.motion.reset()  # after a gap the scene may differ: look at the next frame whole
        self._since_full = FULL_FRAME_EVERY
        return snapshots

    @property
    def _motion_boxes(self) -> np.ndarray:
        """This frame's motion boxes (full-frame pixels), traced from the mask on first use."""
        if self._motion is None:
            return np.zeros((0, 4), np.float32)
        return self._motion.boxes

    @property
    def active_tracks(self) -> list[Track]:
        """Confirmed tracks after the last frame (for drawing)."""
        return self._active

    # -- steps -----------------------------------------------------------
    def _regions(self, pixels: Pixels) -> tuple[list[Region] | None, bool]:
        """--detect-regions: the parts of the frame to detect in (None: all of it), from this
        frame's motion and the faces being tracked; the whole frame every FULL_FRAME_EVERY.
        When those would be the whole frame and this run may look at the tracked faces only
        (cadence.faces_only), their crops; none ([]) for a quiet re-check of faces that all
        left the frame (:meth:`_faces_gone`). Also whether the run searches all the motion."""
        if not self._use_regions or self._since_full >= FULL_FRAME_EVERY:
            return None, True
        h, w = pixels.luma()[0].shape[:2]
        if self._faces_gone(w, h):
            return [], True
        regions = detection_regions(self._motion_boxes, self.tracker.boxes, w, h)
        if regions is not None or not self._faces_only:
            return regions, True
        regions = detection_regions(NO_BOXES, self.tracker.boxes, w, h)
        return regions, regions is None

    def _faces_gone(self, width: int, height: int) -> bool:
        """This frame is a quiet re-check (RECHECK_FRAMES) and every tracked face's box, grown
        as for its crop, lies outside the frame: its tracks coast on after their faces walked
        out. The re-check would search the whole frame (no crop left) only to count them a
        miss; it is left out, and they are counted a miss as by a run that found nothing. The
        whole frame is still searched every FULL_FRAME_EVERY frames (see _regions). Without
        any track (faces found that started none) the re-check runs as before."""
        motion, boxes = self._motion, self.tracker.boxes
        return (motion is not None and not motion.moving and len(boxes) > 0
                and not any_in_image(boxes, width, height))

    def _detect(self, pixels: Pixels, regions: list[Region] | None = None,
                align: bool = False) -> Detections:
        start = time.perf_counter()
        dets = self._detect_untimed(pixels, regions, align)
        self.timers.detect.observe(time.perf_counter() - start)
        return dets

    def _detector_input(self, pixels: Pixels
                        ) -> tuple[np.ndarray, float, float, float, float | None]:
        """(image, dx, dy, factor, scale): the detector runs on ``image`` resized by ``scale``
        (None: as it chooses); full-frame coords = ``image`` coords * factor + (dx, dy).

        A ScalableDetector that shrinks the frame gets the ROT crop of ``bgr_at(scale)``, at
        its input size already (scale 1): the full-size image is not made. One that enlarges
        it (a small frame) gets the crop of the full-size image and enlarges it itself."""
        if not self._scalable:
            crop, dx, dy, factor = crop_for_detection(pixels.bgr(), self.camera.rot,
                                                      self.cfg.rescale_height)
            return crop, dx, dy, factor, None
        h, w = pixels.luma()[0].shape[:2]
        box = rot_box(self.camera.rot, w, h)
        scale = detection_scale(box, self.cfg.rescale_height, self.detector.input_scale)
        if scale >= 1.0:
            x1, y1, x2, y2 = box
            return pixels.bgr()[y1:y2, x1:x2], float(x1), float(y1), 1.0, scale
        image = pixels.bgr_at(scale)
        x1, y1, x2, y2 = scaled_box(box, scale, image.shape[1], image.shape[0])
        return image[y1:y2, x1:x2], x1 / scale, y1 / scale, 1.0 / scale, 1.0

    def _run_detector(self, image: np.ndarray, subs: list[Region] | None,
                      scale: float | None) -> tuple[Detections, int]:
        """(faces, unusable boxes dropped) of the detector on ``image``, or on each of its
        regions ``subs``, resized by ``scale`` (None: the detector's choice for ``image``)."""
        if subs is None:
            self._since_full = 0
            raw = (self.detector.detect(image) if scale is None
                   else self.detector.detect(image, scale=scale))  # type: ignore[call-arg]
            return clean_detections(raw, image.shape[1], image.shape[0])
        if scale is None:
            scale = self.detector.input_scale(*image.shape[:2])  # type: ignore[attr-defined]
        found, dropped = [], 0
        for x1, y1, x2, y2 in subs:
            raw = self.detector.detect(image[y1:y2, x1:x2], scale=scale)  # type: ignore[call-arg]
            dets, bad = clean_detections(raw, x2 - x1, y2 - y1)
            found.append(dets.shifted(x1, y1))
            dropped += bad
        self.stats.region_runs += 1
        return concat_detections(found), dropped

    def _aligned(self, subs: list[Region], image: np.ndarray, scale: float | None
                 ) -> list[Region]:
        """Crops of ``image`` grown to the grid of FACE_CROP_GRID detector pixels, merged."""
        h, w = image.shape[:2]
        if scale is None:
            scale = self.detector.input_scale(h, w)  # type: ignore[attr-defined]
        step = FACE_CROP_GRID / scale
        return merge_regions([align_region(r, step, w, h) for r in subs])

    def _detect_untimed(self, pixels: Pixels, regions: list[Region] | None,
                        align: bool = False) -> Detections:
        crop, dx, dy, factor, scale = self._detector_input(pixels)
        subs = None if regions is None else input_regions(
            regions, dx, dy, factor, crop.shape[1], crop.shape[0]) or None
        if align and subs is not None:
            subs = self._aligned(subs, crop, scale)
        t0 = time.perf_counter()
        dets, dropped = self._run_detector(crop, subs, scale)
        seconds = time.perf_counter() - t0
        self.stats.detect_seconds += seconds
        self.timers.detector.observe(seconds)
        self.stats.detector_runs += 1
        if dropped:
            self.stats.skip(SKIP_BAD_BOX, dropped)
            self._ratelog.log(logging.WARNING, SKIP_BAD_BOX,
                              "%d detection(s) with an unusable box dropped", dropped)
        self.stats.faces_detected += len(dets)
        if factor != 1.0:
            dets = dets.scaled(factor)
        if dx or dy:
            dets = dets.shifted(dx, dy)
        return dets

    def _candidate(
        self, frame: Frame, stamp: datetime, track: Track, dets: Detections, i: int
    ) -> Candidate | None:
        xyxy, lm = dets.xyxy[i], dets.landmarks[i]
        if not in_roi(xyxy, self.camera.roi):
            return None
        if not size_ok(xyxy, self.cfg.min_face_size, self.cfg.max_face_size):
            return None
        q = face_quality(frame.image, xyxy, lm, float(dets.score[i]))
        if not (math.isfinite(q.score) and math.isfinite(q.direction_score)):
            raise ValueError(f"quality is not finite: {q}")
        # track.history is already a tuple of (float, float): kept as it is, not copied
        # (up to MAX_HISTORY centres per face per detector run)
        payload = FacePayload(frame.image, xyxy.copy(), lm.copy(), stamp, frame.index,
                              track.history)
        return Candidate(track_id=track.id, t=frame.pts, score=q.score,
                         direction_score=q.direction_score, payload=payload)

    def _timed_snapshots(self, ready: list[Candidate]) -> list[Snapshot]:
        """``_to_snapshots``, timed as the snapshot stage when there is anything to make."""
        if not ready:
            return []
        t0 = time.perf_counter()
        snapshots = self._to_snapshots(ready)
        self.timers.snapshot.observe(time.perf_counter() - t0)
        return snapshots

    def _to_snapshots(self, ready: list[Candidate]) -> list[Snapshot]:
        out = []
        for cand in ready:
            try:
                snap = self._make_snapshot(cand)
            except Exception as exc:  # this face is lost; the others are not
                self._skip(SKIP_SNAPSHOT, cand.track_id, exc)
                continue
            if snap is None:
                self.stats.suppressed_uniq += 1
                continue
            out.append(snap)
        self.stats.snapshots += len(out)
        return out

    def _make_snapshot(self, cand: Candidate) -> Snapshot | None:
        """The snapshot of a chosen candidate; None if --post-uniq suppresses it."""
        p: FacePayload = cand.payload  # type: ignore[assignment]
        aligned = align_face(p.image, p.landmarks)
        if not self._unique(cand.t, p.xyxy, aligned):
            return None
        return self._snapshot(cand, p, aligned)

    def _unique(self, t: float, xyxy: np.ndarray, aligned: np.ndarray) -> bool:
        """--post-uniq: False for a face too similar to too many recent posts nearby."""
        if self.uniq is None or self._embedder is None:
            return True
        cx, cy = box_centre(xyxy)
        return self.uniq.allow(t, (float(cx), float(cy)), self._embedder.embed(aligned))

    def _snapshot(self, cand: Candidate, p: FacePayload, aligned: np.ndarray) -> Snapshot:
        seq = self._seq.get(cand.track_id, 0)
        h, w = p.image.shape[:2]
        box = scale_box(p.xyxy, self.cfg.bbox_scale, w, h)
        frame_jpeg = None if self.cfg.only_norm else encode(p.image)
        face_png = encode(aligned, "png")
        self._seq[cand.track_id] = seq + 1  # only once nothing can fail any more
        return Snapshot(
            cam_id=self.camera.cam_id,
            track_id=cand.track_id,
            seq=seq,
            timestamp=p.timestamp,
            bbox=tuple(int(round(v)) for v in box),  # type: ignore[arg-type]
            score=round(float(cand.score), 6),
            direction_score=round(float(cand.direction_score), 6),
            frame_jpeg=frame_jpeg,
            face_png=face_png,
            track=p.centres if self.cfg.send_track else (),
            label=getattr(cand, "label", ""),
            run_id=self.run_id,
            position=p.index,
        )
