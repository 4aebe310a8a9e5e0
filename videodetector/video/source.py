"""Video sources: parse ``--source`` / ``--source-params`` and decode frames with PyAV.

``--source`` forms (fkvideo_detector's):

* ``rtsp://``, ``rtsps://``, ``rtmp://``, ``http(s)://`` (MJPEG, HLS, ...), ``udp://``, ``rtp://``,
  ``srt://``, ``tcp://`` -- a *live* network stream (reconnected when it drops);
* ``/dev/videoN`` -- a webcam (v4l2, live);
* ``file@FPS:PATH`` -- a file played at FPS frames per second in realtime mode (as fast as
  possible in offline mode);
* anything else -- a file path (``file://`` prefix allowed), played at its own frame rate in
  realtime mode and as fast as possible in offline mode.

``--source-params`` is a comma-separated list of FFmpeg options (``rtsp_transport=tcp,
timeout=-1``) handed to ``av.open(options=...)``. The pseudo-option ``f=`` / ``format=`` picks the
demuxer (FFmpeg's ``-f``), e.g. ``format=mjpeg``.

Decoding (:class:`VideoStream`, from :func:`open_video`) reads only the first video stream,
applies the file's rotation metadata and ``--rotate``, skips packets the decoder rejects
(counting them in ``decode_errors``), and yields :class:`Frame` objects with BGR images.

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
import enum
import logging
import queue
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final

import av
import cv2
import numpy as np

log = logging.getLogger(__name__)

LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "rtp", "srt", "tcp")
DEFAULT_LIVE_TIMEOUT = 10.0  # seconds without data before a live read gives up
_FILE_FPS_RE = re.compile(r"^file@([^:]*):(.+)$", re.DOTALL)
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_WEBCAM_RE = re.compile(r"^/dev/video\d+$")
_CREDENTIALS_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*):[^@/]*@")
_MAX_DEMUX_RESTARTS = 3  # consecutive demuxer errors tolerated in a file before giving up


class SourceError(RuntimeError):
    """A source cannot be opened or read (the message names the source and the reason)."""


class StreamStalled(SourceError):
    """A live source delivered no frame for longer than its timeout."""


class SourceKind(enum.Enum):
    FILE = "file"
    LIVE = "live"  # network stream
    WEBCAM = "webcam"


@dataclass(frozen=True)
class SourceSpec:
    """A parsed ``--source`` value.

    ``url`` is what is handed to FFmpeg (a path or URL); ``fps`` is set only by ``file@FPS:PATH``.
    """

    kind: SourceKind
    url: str
    fps: float | None = None

    @property
    def live(self) -> bool:
        """True for network streams and webcams: they never end, they reconnect."""
        return self.kind is not SourceKind.FILE

    @property
    def display(self) -> str:
        """The URL with any password hidden, for logs and error messages."""
        return redact_url(self.url)


def redact_url(url: str) -> str:
    """``rtsp://user:secret@host/...`` -> ``rtsp://user:***@host/...``."""
    return _CREDENTIALS_RE.sub(r"\1:***@", url)


def parse_source(text: str) -> SourceSpec:
    """Parse a ``--source`` value; raises ValueError naming the bad value."""
    value = text.strip() if isinstance(text, str) else ""
    if not value:
        raise ValueError(f"--source must be a URL, /dev/videoN, file@FPS:PATH or a path: {text!r}")
    match = _FILE_FPS_RE.match(value)
    if match:
        return SourceSpec(SourceKind.FILE, _strip_file_scheme(match.group(2)), _parse_fps(match))
    if _WEBCAM_RE.match(value):
        return SourceSpec(SourceKind.WEBCAM, value)
    scheme = _SCHEME_RE.match(value)
    if scheme is None:
        return SourceSpec(SourceKind.FILE, value)
    name = scheme.group(1).lower()
    if name == "file":
        return SourceSpec(SourceKind.FILE, _strip_file_scheme(value))
    if name in LIVE_SCHEMES:
        return SourceSpec(SourceKind.LIVE, value)
    raise ValueError(f"--source has an unsupported scheme {name!r}: {redact_url(value)!r}")


def _parse_fps(match: re.Match[str]) -> float:
    raw = match.group(1)
    try:
        fps = float(raw)
    except ValueError:
        fps = float("nan")
    if not fps > 0 or fps == float("inf"):
        raise ValueError(f"--source file@FPS:PATH needs a positive FPS, got {raw!r}")
    return fps


def _strip_file_scheme(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


def parse_source_params(text: str | None) -> dict[str, str]:
    """``"rtsp_transport=tcp, rtsp_flags=prefer,timeout=-1"`` -> ``{"rtsp_transport": "tcp", ...}``.

    Empty items are ignored; an item without ``=`` or with an empty key raises ValueError.
    """
    params: dict[str, str] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--source-params item must be key=value, got {item!r}")
        params[key.strip()] = value.strip()
    return params


def default_params(
    spec: SourceSpec, timeout: float | None = DEFAULT_LIVE_TIMEOUT
) -> dict[str, str]:
    """FFmpeg options used unless ``--source-params`` overrides them.

    RTSP goes over TCP (no UDP packet loss / NAT trouble) with a socket timeout so a dead camera
    cannot hang a read; UDP input survives buffer overruns; webcams use the v4l2 demuxer.
    """
    if spec.kind is SourceKind.WEBCAM:
        return {"format": "v4l2"}
    scheme = spec.url.split("://", 1)[0].lower() if spec.kind is SourceKind.LIVE else ""
    if scheme in ("rtsp", "rtsps"):
        params = {"rtsp_transport": "tcp"}
        if timeout:
            params["timeout"] = str(int(timeout * 1_000_000))  # microseconds
        return params
    if scheme == "udp":
        return {"overrun_nonfatal": "1", "fifo_size": "1000000"}
    return {}


# --------------------------------------------------------------------------- rotation


def normalize_rotation(degrees: int | float | str) -> int:
    """A clockwise ``--rotate`` angle reduced to 0/90/180/270; other angles raise ValueError."""
    try:
        value = float(degrees)
    except (TypeError, ValueError):
        raise ValueError(f"--rotate must be a multiple of 90 degrees, got {degrees!r}") from None
    if not value.is_integer() or int(value) % 90:
        raise ValueError(f"--rotate must be a multiple of 90 degrees, got {degrees!r}")
    return int(value) % 360


def display_rotation_to_clockwise(rotation: float | None) -> int:
    """Clockwise angle that displays a frame whose display matrix rotates it ``rotation``
    degrees counter-clockwise (PyAV's ``VideoFrame.rotation``; FFmpeg's
    ``av_display_rotation_get``), rounded to a multiple of 90.

    A phone's portrait video tagged ``rotate=90`` (legacy metadata) has ``rotation == -90``
    and needs a 90 degree clockwise turn.
    """
    if not rotation:
        return 0
    return int(round(-float(rotation) / 90.0)) * 90 % 360


_CV2_ROTATE = {
    90: cv2.ROTATE_90_CLOCKWISE,
    180: cv2.ROTATE_180,
    270: cv2.ROTATE_90_COUNTERCLOCKWISE,
}


def rotate_image(image: np.ndarray, clockwise: int) -> np.ndarray:
    """Rotate by a multiple of 90 degrees clockwise (0 returns the same array)."""
    angle = normalize_rotation(clockwise)
    return image if angle == 0 else cv2.rotate(image, _CV2_ROTATE[angle])


# --------------------------------------------------------------------------- decoding


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame.

    image: HxWx3 uint8 BGR, after file rotation metadata and ``--rotate``.
    index: 0-based decode order (a :class:`FrameReader` keeps counting across reconnects,
        so dropped frames leave gaps).
    pts: seconds from the start of the stream, from the frame's pts and time base, or
        ``index / fps`` when the frame has no pts. A :class:`FrameReader` keeps it
        non-decreasing across reconnects (the outage counts in wall-clock time).
    wall_time: ``time.time()`` when the frame was decoded.
    """

    image: np.ndarray
    index: int
    pts: float
    wall_time: float


class VideoStream:
    """One open connection to a source: iterate it for :class:`Frame` objects, then close it.

    Use :func:`open_video` to create one. Also a context manager. Attributes: ``spec``,
    ``width``/``height`` (the coded size, before any rotation), ``fps`` (the ``file@FPS`` rate,
    else the stream's average rate, else 25), ``decode_errors`` (decoder and demuxer errors
    skipped so far).
    """

    def __init__(
        self,
        container: av.container.InputContainer,
        spec: SourceSpec,
        *,
        rotate: int = 0,
        realtime: bool = False,
        timeout: float | None = None,
        interrupt: threading.Event | None = None,
        cam_id: str = "",
    ) -> None:
        self.spec = spec
        self._container = container
        self._stream = container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._rotate = normalize_rotation(rotate)
        self._paced = realtime and spec.kind is SourceKind.FILE
        self._timeout = timeout if spec.live else None
        self._interrupt = interrupt or threading.Event()
        self._log = logging.LoggerAdapter(log, {"cam_id": cam_id})
        self._cam = cam_id or spec.display
        self.width = self._stream.codec_context.width
        self.height = self._stream.codec_context.height
        self.fps = spec.fps or _stream_fps(self._stream)
        self.decode_errors = 0
        self._origin: float | None = _stream_start(self._stream)

    def __enter__(self) -> VideoStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._container.close()
        except Exception:  # closing a broken stream must not mask the original error
            self._log.debug("[%s] error closing container", self._cam, exc_info=True)

    def __iter__(self) -> Iterator[Frame]:
        clock = _Pacer(self.fps, self._interrupt) if self._paced else None
        for index, av_frame in enumerate(self._av_frames()):
            frame = self._to_frame(av_frame, index)
            if clock is not None and not clock.wait(index):
                return
            yield frame
            if self._interrupt.is_set():
                return

    def _to_frame(self, av_frame: av.VideoFrame, index: int) -> Frame:
        image = av_frame.to_ndarray(format="bgr24")
        angle = (self._rotate + display_rotation_to_clockwise(av_frame.rotation)) % 360
        image = rotate_image(image, angle)
        return Frame(image, index, self._frame_seconds(av_frame, index), time.time())

    def _frame_seconds(self, av_frame: av.VideoFrame, index: int) -> float:
        seconds = av_frame.time
        if seconds is None:
            return index / self.fps
        if self._origin is None:
            self._origin = seconds
        return seconds - self._origin

    def _av_frames(self) -> Iterator[av.VideoFrame]:
        """Decoded frames; decoder errors are skipped, demuxer errors end or raise (live)."""
        restarts = 0
        last_frame = time.monotonic()
        video = self._stream.index
        while True:
            try:
                for packet in self._packets():
                    if packet.stream_index == video:
                        for av_frame in self._decode(packet):
                            restarts = 0
                            yield av_frame
                            last_frame = time.monotonic()
                    self._check_stall(last_frame)
                return
            except av.error.EOFError:
                return
            except av.error.ExitError as exc:  # PyAV's read timeout fired
                raise StreamStalled(f"{self.spec.display}: no data for {self._timeout}s") from exc
            except av.FFmpegError as exc:
                if self.spec.live:
                    raise SourceError(f"{self.spec.display}: read failed: {exc}") from exc
                self._count_error(exc, "demuxer")
                restarts += 1
                if restarts > _MAX_DEMUX_RESTARTS:  # a broken file ends here, quietly
                    return

    def _packets(self) -> Iterator[av.Packet]:
        """Video packets; for live sources all packets, so that a stream where only audio
        still flows is caught by the frame-gap check."""
        return self._container.demux() if self.spec.live else self._container.demux(self._stream)

    def _decode(self, packet: av.Packet) -> list[av.VideoFrame]:
        try:
            return packet.decode()
        except av.FFmpegError as exc:
            self._count_error(exc, "decoder")
            return []

    def _count_error(self, exc: Exception, where: str) -> None:
        self.decode_errors += 1
        if self.decode_errors == 1 or self.decode_errors % 100 == 0:
            self._log.warning(
                "[%s] %s error #%d in %s, skipped: %s",
                self._cam,
                where,
                self.decode_errors,
                self.spec.display,
                exc,
            )

    def _check_stall(self, last_frame: float) -> None:
        """Packets keep coming but no frame decodes (e.g. only audio flows)."""
        if self._timeout and time.monotonic() - last_frame > self._timeout:
            raise StreamStalled(f"{self.spec.display}: no video frame for {self._timeout}s")


class _Pacer:
    """Releases frame ``i`` at ``start + i / fps``; restarts the clock after a long stall."""

    def __init__(self, fps: float, interrupt: threading.Event) -> None:
        self._period = 1.0 / fps
        self._interrupt = interrupt
        self._start: float | None = None

    def wait(self, index: int) -> bool:
        """False when interrupted."""
        now = time.monotonic()
        if self._start is None:
            self._start = now - index * self._period
        delay = self._start + index * self._period - now
        if delay < -0.5:  # consumer blocked us: play on at FPS rather than burst to catch up
            self._start = now - index * self._period
        elif delay > 0:
            return not self._interrupt.wait(delay)
        return not self._interrupt.is_set()


def _stream_fps(stream: av.video.stream.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < float(rate) < 1000:
            return float(rate)
    return 25.0


def _stream_start(stream: av.video.stream.VideoStream) -> float | None:
    if stream.start_time is None or stream.time_base is None:
        return None
    return float(stream.start_time * stream.time_base)


def open_video(
    spec: SourceSpec | str,
    params: Mapping[str, str] | None = None,
    rotate: int = 0,
    *,
    realtime: bool = False,
    timeout: float | None = None,
    interrupt: threading.Event | None = None,
    cam_id: str = "",
) -> VideoStream:
    """Open a source for decoding; raises :class:`SourceError` (path/URL + reason).

    params: FFmpeg options from ``--source-params`` (override :func:`default_params`).
    rotate: extra clockwise rotation (multiple of 90, else ValueError), applied after the
        file's own rotation metadata.
    realtime: pace files at ``file@FPS`` (or their own rate); offline mode decodes as fast as
        possible.
    timeout: live sources only: seconds an open or a read may block, and the longest gap
        between frames, before :class:`StreamStalled` (default 10 s). Ignored for files.
    interrupt: an Event that ends iteration (and pacing sleeps) when set.
    """
    spec = parse_source(spec) if isinstance(spec, str) else spec
    rotate = normalize_rotation(rotate)
    if spec.live and timeout is None:
        timeout = DEFAULT_LIVE_TIMEOUT
    options = {**default_params(spec, timeout), **dict(params or {})}
    container_format = options.pop("format", None) or options.pop("f", None)
    container = _open_container(spec, container_format, options, timeout if spec.live else None)
    try:
        if not container.streams.video:
            raise SourceError(f"{spec.display}: no video stream (not a video file?)")
        return VideoStream(
            container,
            spec,
            rotate=rotate,
            realtime=realtime,
            timeout=timeout,
            interrupt=interrupt,
            cam_id=cam_id,
        )
    except BaseException:
        container.close()
        raise


def _open_container(
    spec: SourceSpec, container_format: str | None, options: dict[str, str], timeout: float | None
) -> av.container.InputContainer:
    try:
        return av.open(
            spec.url, mode="r", format=container_format, options=options, timeout=timeout
        )
    except av.error.ExitError as exc:
        raise StreamStalled(f"cannot open {spec.display}: no answer within {timeout}s") from exc
    except (av.FFmpegError, OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise SourceError(f"cannot open {spec.display}: {reason}") from exc


# --------------------------------------------------------------------------- reader


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


class _Backoff:
    """Exponential reconnect delay: initial, doubling, capped; reset when frames flow."""

    def __init__(self, initial: float, cap: float) -> None:
        self.initial, self.cap = initial, cap
        self.delay = initial

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.delay = self.initial


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
        self._backoff = _Backoff(backoff_initial, backoff_max)
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
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

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
