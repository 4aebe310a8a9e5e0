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
mode -- never wait for the consumer: when the queue is full the *newest* frame is dropped and
counted (``stats().dropped``), unless ``disable_drops=True``, in which case the reader waits
and every frame is delivered. A file in offline mode is never dropped from: the reader waits.

Live sources reconnect when they end or fail, after 0.5 s doubling up to 30 s (reset once
frames flow again), logging one line per attempt. The watchdog is PyAV's I/O timeout plus a
frame-gap check (see :func:`~videodetector.video.source.open_video`): a stream that delivers
no frame for ``watchdog_timeout`` seconds is closed and reopened, counted in ``stalls``.
``stop()`` returns within ``join_timeout`` even while a read is blocked in FFmpeg; the daemon
thread then exits by itself when that read times out.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from videodetector.backoff import Backoff
from videodetector.video.queues import put_while
from videodetector.video.source import (
    Frame,
    SourceError,
    SourceSpec,
    StreamStalled,
    normalize_rotation,
    open_video,
)

log = logging.getLogger(__name__)


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
    """

    frames_in: int = 0
    dropped: int = 0
    reconnects: int = 0
    stalls: int = 0
    decode_errors: int = 0
    last_frame_time: float = 0.0
    fps_in: float = 0.0
    queued: int = 0


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
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        join_timeout: float = 2.0,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size!r}")
        if not watchdog_timeout > 0:
            raise ValueError(f"watchdog_timeout must be > 0, got {watchdog_timeout!r}")
        self.spec = spec
        self.cam_id = cam_id
        self.error: SourceError | None = None  # why a file ended early (open/read failure)
        self._params = dict(params or {})
        self._rotate = normalize_rotation(rotate)
        self._realtime = realtime
        self._watchdog_timeout = watchdog_timeout
        self._may_drop = not disable_drops and (spec.live or realtime)
        self._queue: queue.Queue[Frame | _EndOfStream] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._join_timeout = join_timeout
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stats = ReaderStats()
        self._stream_errors = 0  # decode errors of the current connection
        self._next_index = 0
        self._last_frame: Frame | None = None
        self._pts_offset = 0.0
        self._ewma_dt: float | None = None  # smoothed seconds between decoded frames
        self._ended = False
        self._log = logging.LoggerAdapter(log, {"cam_id": cam_id})
        self._name = cam_id or spec.display

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
            self._log.exception("[%s] reader crashed", self._name)
        finally:
            self._put_end()

    def _run_file(self) -> None:
        try:
            self._play_once()
        except SourceError as exc:
            self.error = exc
            # A file that cannot be opened at all is reported by its owner (``error``);
            # one that fails part-way is logged here, since playback just ends.
            if self._stats.frames_in:
                self._log.error("[%s] %s", self._name, exc)

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
                self._log.exception("[%s] decoding failed", self._name)
                reason = f"{type(exc).__name__}: {exc}"
            if self._stop.is_set():
                return
            delay = self._backoff.next()
            self._bump(reconnects=1)
            self._log.warning(
                "[%s] stream lost (%s); reconnect #%d in %.1fs",
                self._name,
                reason,
                self._stats.reconnects,
                delay,
            )
            self._stop.wait(delay)

    def _play_once(self) -> None:
        """Open the source and publish its frames until it ends, fails or stop() is called."""
        stream = open_video(
            self.spec,
            self._params,
            self._rotate,
            realtime=self._realtime,
            timeout=self._watchdog_timeout,
            interrupt=self._stop,
            cam_id=self.cam_id,
        )
        with stream:
            try:
                for frame in stream:
                    self._stream_errors = stream.decode_errors
                    self._backoff.reset()
                    self._publish(frame, first_of_connection=frame.index == 0)
                    if self._stop.is_set():
                        return
            finally:
                with self._lock:
                    self._stream_errors = 0
                    self._stats = dataclasses.replace(
                        self._stats,
                        decode_errors=self._stats.decode_errors + stream.decode_errors,
                    )

    def _publish(self, frame: Frame, first_of_connection: bool) -> None:
        frame = self._renumber(frame, first_of_connection)
        self._count_frame(frame.wall_time)
        if self._may_drop:
            try:
                self._queue.put_nowait(frame)
            except queue.Full:
                self._bump(dropped=1)
            return
        self._put_blocking(frame)

    def _renumber(self, frame: Frame, first_of_connection: bool) -> Frame:
        """Reader-wide index, and pts that never go back after a reconnect."""
        last = self._last_frame
        if first_of_connection and last is not None:
            gap = max(frame.wall_time - last.wall_time, 1e-3)
            self._pts_offset = last.pts + gap - frame.pts
        frame = dataclasses.replace(frame, index=self._next_index, pts=frame.pts + self._pts_offset)
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
                self._ewma_dt = dt if self._ewma_dt is None else 0.9 * self._ewma_dt + 0.1 * dt
            fps = 1.0 / self._ewma_dt if self._ewma_dt else 0.0
            self._stats = dataclasses.replace(
                s, frames_in=s.frames_in + 1, last_frame_time=now, fps_in=fps
            )

    def _bump(self, **deltas: int) -> None:
        with self._lock:
            changes = {k: getattr(self._stats, k) + v for k, v in deltas.items()}
            self._stats = dataclasses.replace(self._stats, **changes)
