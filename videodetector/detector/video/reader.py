"""FrameReader: one thread per camera decoding into a bounded queue.

:class:`FrameReader` runs that in a thread per camera, feeding a bounded queue::

    reader = FrameReader(parse_source(args.source), params=..., rotate=args.rotate,
                         realtime=args.realtime, disable_drops=args.disable_drops, cam_id=camid)
    reader.start()
    while True:
        item = reader.get(timeout=1.0)
        if item is END:          # a file ended (or stop() was called); see reader.error
            break
        if item is None:         # nothing decoded within the timeout; loop to stay responsive
            continue
        process(item)            # a Frame
    reader.stop()

Drop policy. Sources that run on a clock -- live streams, webcams and files paced in realtime
mode -- never wait for the consumer, unless ``disable_drops=True`` (then the reader waits and
every frame is delivered). When the queue is full:

* a **live** source drops the *oldest* queued frame to make room for the new one: a consumer
  that fell behind gets the freshest frames, and a frame waits at most ``queue_size`` frame
  intervals of the camera in the queue, whatever the load. (Dropping the newest kept frames
  that had waited ``queue_size`` *processing* times -- over a second on a loaded host -- and
  delayed realtime posts by as much.)
* a **file paced in realtime** (``file@FPS:PATH``) drops the *newest* frame: the queue keeps
  runs of consecutive frames (the first ``queue_size`` of the clip among them), which the
  tracker needs to confirm faces on short test clips; latency is not at stake for a file.

Both are counted in ``stats().dropped``. A file in offline mode is never dropped from: the
reader waits.

Live sources reconnect when they end or fail, after 0.5 s doubling up to 30 s (reset once
frames flow again). One WARNING line per outage (its first failed attempt), one more after
PERMANENT_AFTER failed attempts in a row saying the source looks permanently unusable (a
wrong URL, a closed port, a page that is not a video, a missing device) -- the reader still
retries, for ever -- and one INFO line when frames flow again; the attempts in between are
logged at DEBUG. ``stats().consecutive_failures`` is the current outage's attempt count.

A file that ends before its header said it would (a truncated or damaged file), or whose
demuxer gave up, is reported once with a WARNING naming the file and the frames decoded vs
expected, and counted in ``stats().incomplete``. ``start_index`` resumes a file there (the
frames before are decoded but not delivered; a restarted pipeline goes on where the
crashed one stopped). The watchdog is PyAV's I/O timeout plus a
frame-gap check (see :func:`~videodetector.detector.video.source.open_video`): a stream that
delivers no frame for ``watchdog_timeout`` seconds is closed and reopened, counted in ``stalls``.
``stop()`` returns within ``join_timeout`` even while a read is blocked in FFmpeg; the daemon
thread then exits by itself when that read times out.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from videodetector.core.backoff import Backoff
from videodetector.detector.timing import CameraTimers, ewma_interval
from videodetector.detector.video.queues import put_while
from videodetector.detector.video.source import (
    Frame,
    SourceError,
    SourceSpec,
    StreamStalled,
    VideoStream,
    normalize_rotation,
    open_video,
)

log = logging.getLogger(__name__)

RECONNECT_BACKOFF = (0.5, 30.0)  # first and longest wait between attempts on a live source, s
PERMANENT_AFTER = 5  # failed attempts in a row after which a live source "looks permanent"
# A file is incomplete when it decodes fewer than this share of its expected frames (minus
# a couple): a count from duration * fps is approximate (variable frame rates, audio that
# outlasts the video), so only a clear shortfall counts.
COMPLETE_SHARE = 0.95
COMPLETE_SLACK = 2


def file_incomplete(decoded: int, expected: int | None, gave_up: bool) -> bool:
    """A file that stopped early: its demuxer gave up, or it decoded clearly fewer frames
    than its header (or duration) announced."""
    if gave_up:
        return True
    return expected is not None and decoded < expected * COMPLETE_SHARE - COMPLETE_SLACK


class _EndOfStream:
    """Type of :data:`END`."""

    _instance: _EndOfStream | None = None

    def __new__(cls) -> _EndOfStream:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "END"


END: Final = _EndOfStream()
"""Sentinel returned by :meth:`FrameReader.get` after the last frame."""


@dataclass(frozen=True)
class ReaderStats:
    """A snapshot of a reader's counters.

    frames_in: frames decoded (delivered + dropped). dropped: frames discarded because the
    queue was full. reconnects: reopen attempts of a live source. stalls: how many of those
    were triggered by the watchdog. decode_errors: packets the decoder/demuxer rejected.
    last_frame_time: ``time.time()`` of the last decoded frame (0 if none). fps_in: decode
    rate, exponentially weighted. queued: frames waiting in the queue.
    consecutive_failures: failed attempts of the current outage of a live source (0 while
    frames flow). looks_permanent: 1 once they reached PERMANENT_AFTER. incomplete: 1 when
    a file ended early; frames_expected: what its header announced (0 if unknown).
    problem: why a live source is down now (the last failure of the current outage), or that
    a file ended early; "" otherwise (the health report's ``error``, seen in the console).
    """

    frames_in: int = 0
    dropped: int = 0
    reconnects: int = 0
    stalls: int = 0
    decode_errors: int = 0
    last_frame_time: float = 0.0
    fps_in: float = 0.0
    queued: int = 0
    consecutive_failures: int = 0
    looks_permanent: int = 0
    incomplete: int = 0
    frames_expected: int = 0
    problem: str = ""


class FrameReader:
    """Decode one source in a background thread into a bounded queue (see module docs)."""

    def __init__(
        self,
        spec: SourceSpec,
        *,
        params: Mapping[str, str] | None = None,
        rotate: int = 0,
        realtime: bool = True,
        disable_drops: bool = False,
        queue_size: int = 8,
        watchdog_timeout: float = 10.0,
        cam_id: str = "",
        backoff_initial: float | None = None,
        backoff_max: float | None = None,
        join_timeout: float = 2.0,
        start_index: int = 0,
        timers: CameraTimers | None = None,
        decoder_threads: int = 0,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size!r}")
        if not watchdog_timeout > 0:
            raise ValueError(f"watchdog_timeout must be > 0, got {watchdog_timeout!r}")
        if start_index < 0:
            raise ValueError(f"start_index must be >= 0, got {start_index!r}")
        self.spec = spec
        self.cam_id = cam_id
        self.start_index = 0 if spec.live else start_index
        self.error: SourceError | None = None  # why a file ended early (open/read failure)
        self._params = dict(params or {})
        self._rotate = normalize_rotation(rotate)
        self._realtime = realtime
        self._watchdog_timeout = watchdog_timeout
        self._may_drop = not disable_drops and (spec.live or realtime)
        self._queue: queue.Queue[Frame | _EndOfStream] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._backoff = Backoff(backoff_initial or RECONNECT_BACKOFF[0],
                                backoff_max or RECONNECT_BACKOFF[1])
        self._join_timeout = join_timeout
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stats = ReaderStats()
        self._stream_errors = 0  # decode errors of the current connection
        self._next_index = self.start_index
        self._outage_started = 0.0  # time.monotonic() of the current outage's first failure
        self._last_frame: Frame | None = None
        self._pts_offset = 0.0
        self._ewma_dt: float | None = None  # smoothed seconds between decoded frames
        self._ended = False
        self._name = cam_id or spec.display
        # its lines' prefix (logprefix.py): the camera, or the source when used alone
        self._log = logging.LoggerAdapter(log, {"cam_id": self._name})
        self._timers = timers if timers is not None else CameraTimers.null()
        self._decoder_threads = decoder_threads  # 0: auto (see source.decoder_threads)

    # ---------------------------------------------------------------- consumer API

    def start(self) -> FrameReader:
        if self._thread is not None:
            raise RuntimeError(f"FrameReader for {self._name} already started")
        self._thread = threading.Thread(target=self._run, name=f"reader-{self._name}", daemon=True)
        self._thread.start()
        return self

    def get(self, timeout: float | None = None) -> Frame | _EndOfStream | None:
        """The next Frame; None if none arrived within ``timeout``; END after the last one."""
        if self._ended:
            return END
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is END:
            self._ended = True
        return item

    def stop(self) -> bool:
        """Stop decoding; True if the thread ended within ``join_timeout``."""
        self._stop.set()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(self._join_timeout)
        return not thread.is_alive()

    @property
    def frames_in(self) -> int:
        """Frames decoded so far (shortcut for ``stats().frames_in``)."""
        return self._stats.frames_in

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> ReaderStats:
        with self._lock:
            return dataclasses.replace(
                self._stats,
                decode_errors=self._stats.decode_errors + self._stream_errors,
                queued=self._queue.qsize(),
            )

    def __enter__(self) -> FrameReader:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- thread

    def _run(self) -> None:
        try:
            if self.spec.live:
                self._run_live()
            else:
                self._run_file()
        except Exception:  # a bug must not kill the thread silently
            self._log.exception("reader crashed")
        finally:
            self._put_end()

    def _run_file(self) -> None:
        try:
            stream = self._play_once()
        except SourceError as exc:
            self.error = exc
            # A file that cannot be opened at all is reported by its owner (``error``);
            # one that fails part-way is logged here, since playback just ends.
            if self._stats.frames_in:
                self._log.error("%s", exc)
            return
        if not self._stop.is_set():
            self._check_complete(stream)

    def _check_complete(self, stream: VideoStream) -> None:
        """One WARNING (and stats().incomplete) for a file that ended before its end."""
        expected = stream.expected_frames
        with self._lock:
            self._stats = dataclasses.replace(self._stats, frames_expected=expected or 0)
        if not file_incomplete(stream.frames_decoded, expected, stream.gave_up):
            return
        self._bump(incomplete=1)
        problem = (f"file {self.spec.display} ended early: {stream.frames_decoded} of "
                   f"{expected if expected is not None else 'an unknown number of'} frames "
                   f"decoded ({stream.decode_errors} decode error(s)); it is truncated or damaged")
        with self._lock:
            self._stats = dataclasses.replace(self._stats, problem=problem)
        self._log.warning("%s", problem)

    def _run_live(self) -> None:
        while not self._stop.is_set():
            try:
                self._play_once()
                reason = "end of stream"
            except SourceError as exc:
                reason = str(exc)
                if isinstance(exc, StreamStalled):
                    self._bump(stalls=1)
            except Exception as exc:  # unexpected (PyAV, numpy): log it, keep the camera alive
                self._log.exception("decoding failed")
                reason = f"{type(exc).__name__}: {exc}"
            if self._stop.is_set():
                return
            delay = self._backoff.next()
            self._bump(reconnects=1, consecutive_failures=1)
            with self._lock:
                self._stats = dataclasses.replace(self._stats, problem=reason)
            self._report_failure(reason, delay)
            self._stop.wait(delay)

    def _report_failure(self, reason: str, delay: float) -> None:
        """One line per outage, one when it looks permanent; the other attempts at DEBUG."""
        failures = self._stats.consecutive_failures
        if failures == 1:
            self._outage_started = time.monotonic()
            self._log.warning("stream lost (%s); reconnect #%d in %.1fs (retrying with "
                              "backoff up to %.0fs)", reason,
                              self._stats.reconnects, delay, self._backoff.cap)
        elif failures == PERMANENT_AFTER:
            self._bump(looks_permanent=1)
            self._log.warning(
                "%s failed %d times in a row (last: %s): this looks permanent (wrong "
                "URL, closed port, not a video, missing device?); still retrying every %.0fs "
                "at most", self.spec.display, failures, reason, self._backoff.cap)
        else:
            self._log.debug("reconnect #%d failed (%s); next in %.1fs", self._stats.reconnects,
                            reason, delay)

    def _recovered(self) -> None:
        """Frames flow again after an outage."""
        failures = self._stats.consecutive_failures
        with self._lock:
            self._stats = dataclasses.replace(self._stats, consecutive_failures=0,
                                              looks_permanent=0, problem="")
        self._log.info("stream back after %d failed attempt(s) (%.0fs without frames)",
                       failures, time.monotonic() - self._outage_started)

    def _play_once(self) -> VideoStream:
        """Open the source and publish its frames until it ends, fails or stop() is called."""
        stream = open_video(
            self.spec,
            self._params,
            self._rotate,
            realtime=self._realtime,
            timeout=self._watchdog_timeout,
            interrupt=self._stop,
            cam_id=self.cam_id,
            start_index=self.start_index,
            threads=self._decoder_threads,
        )
        with stream:
            try:
                for frame in stream:
                    self._timers.decode.observe(stream.decode_seconds)
                    self._stream_errors = stream.decode_errors
                    self._backoff.reset()
                    if self._stats.consecutive_failures:
                        self._recovered()
                    self._publish(frame, first_of_connection=frame.index == self.start_index)
                    if self._stop.is_set():
                        return stream
            finally:
                with self._lock:
                    self._stream_errors = 0
                    self._stats = dataclasses.replace(
                        self._stats,
                        decode_errors=self._stats.decode_errors + stream.decode_errors,
                    )
        return stream

    def _publish(self, frame: Frame, first_of_connection: bool) -> None:
        frame = self._renumber(frame, first_of_connection)
        self._count_frame(frame.wall_time)
        if self._may_drop and self.spec.live:
            self._put_latest(frame)
        elif self._may_drop:
            try:
                self._queue.put_nowait(frame)
            except queue.Full:
                self._bump(dropped=1)
        else:
            self._put_blocking(frame)

    def _put_latest(self, frame: Frame) -> None:
        """Queue ``frame`` without waiting; when the queue is full its oldest frame is dropped
        (and counted) instead. Only this thread puts, so room made here stays free."""
        while True:
            try:
                self._queue.put_nowait(frame)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                except queue.Empty:  # the consumer took one meanwhile: there is room now
                    continue
                self._bump(dropped=1)

    def _renumber(self, frame: Frame, first_of_connection: bool) -> Frame:
        """Reader-wide index, and pts that never go back after a reconnect."""
        last = self._last_frame
        if first_of_connection and last is not None:
            gap = max(frame.wall_time - last.wall_time, 1e-3)
            self._pts_offset = last.pts + gap - frame.pts
        frame = frame.replace(index=self._next_index, pts=frame.pts + self._pts_offset)
        self._next_index += 1
        self._last_frame = frame
        return frame

    def _put_blocking(self, item: Frame | _EndOfStream) -> bool:
        return put_while(self._queue, item, lambda: not self._stop.is_set())

    def _put_end(self) -> None:
        if not self._put_blocking(END):  # stopped: make room so a waiting get() still ends
            try:
                self._queue.put_nowait(END)
            except queue.Full:
                self._drain_one()
                self._queue.put_nowait(END)

    def _drain_one(self) -> None:
        try:
            self._queue.get_nowait()
        except queue.Empty:
            pass

    def _count_frame(self, now: float) -> None:
        with self._lock:
            s = self._stats
            if s.last_frame_time and now > s.last_frame_time:
                dt = now - s.last_frame_time
                self._ewma_dt = ewma_interval(self._ewma_dt, dt)
            fps = 1.0 / self._ewma_dt if self._ewma_dt else 0.0
            self._stats = dataclasses.replace(
                s, frames_in=s.frames_in + 1, last_frame_time=now, fps_in=fps
            )

    def _bump(self, **deltas: int) -> None:
        with self._lock:
            changes = {k: getattr(self._stats, k) + v for k, v in deltas.items()}
            self._stats = dataclasses.replace(self._stats, **changes)
