"""Video sources: decode the frames of a parsed ``--source`` with PyAV.

Parsing is in :mod:`videodetector.core.sourcespec`.

``--source-params`` is a comma-separated list of FFmpeg options (``rtsp_transport=tcp,
timeout=-1``, parsed by :mod:`videodetector.detector.config`) handed to ``av.open(options=...)``.
The pseudo-option ``f=`` / ``format=`` picks the demuxer (FFmpeg's ``-f``), e.g. ``format=mjpeg``.

Decoding (:class:`VideoStream`, from :func:`open_video`) reads only the first video stream,
applies the file's rotation metadata and ``--rotate``, skips packets the decoder rejects
(counting them in ``decode_errors``), and yields :class:`Frame` objects whose BGR image is
converted on first use (see :mod:`videodetector.detector.video.pixels`).

Threaded reading with drop policy, reconnects and a watchdog is in
:mod:`videodetector.detector.video.reader`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping

import av
import numpy as np

from videodetector.core.sourcespec import (  # noqa: F401  (re-used names of this module's API)
    LIVE_SCHEMES,
    SourceKind,
    SourceSpec,
    parse_source,
    redact_url,
)
from videodetector.detector.video.pixels import (
    ArrayPixels,
    DecodedPixels,
    Pixels,
    Scaler,
    rotate,
)

log = logging.getLogger(__name__)

DEFAULT_LIVE_TIMEOUT = 10.0  # seconds without data before a live read gives up
MAX_DECODER_THREADS = 16
_MAX_DEMUX_RESTARTS = 3  # consecutive demuxer errors tolerated in a file before giving up


class SourceError(RuntimeError):
    """A source cannot be opened or read (the message names the source and the reason)."""


class StreamStalled(SourceError):
    """A live source delivered no frame for longer than its timeout."""


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


def rotate_image(image: np.ndarray, clockwise: int) -> np.ndarray:
    """Rotate by a multiple of 90 degrees clockwise (0 returns the same array)."""
    return rotate(image, normalize_rotation(clockwise))


# --------------------------------------------------------------------------- decoding


def decoder_threads(paced: bool, threads: int = 0) -> tuple[str, int]:
    """FFmpeg's (thread_type, thread_count) for a stream's decoder.

    ``threads`` > 0: that many (frame and slice threads). 0 (auto): a source that runs on a
    clock (``paced``: live, or a file paced in realtime) decodes in its reading thread
    alone -- it needs only its frame rate (720p H.264 decodes at several hundred fps per
    core), and FFmpeg's default of cores + 1 frame threads per stream costs ~40 % more CPU
    per frame (hand-offs between threads) and puts 3 decoder threads per camera on a 2-core
    host running 16 cameras; a file read offline gets FFmpeg's own choice (AUTO, count 0)
    to finish sooner.
    """
    if not 0 <= threads <= MAX_DECODER_THREADS:
        raise ValueError(f"decoder threads must be between 0 and {MAX_DECODER_THREADS}, "
                         f"got {threads!r}")
    if threads:
        return "AUTO", threads
    return ("SLICE", 1) if paced else ("AUTO", 0)


class Frame:
    """One decoded frame.

    image: HxWx3 uint8 BGR, after file rotation metadata and ``--rotate``; converted from the
        decoded picture on first use (see :mod:`.pixels`), so a frame that only goes through
        the motion gate is never converted.
    gray: HxW uint8 brightness of the same picture (for a planar YUV source, its luma plane).
    index: 0-based decode order (a :class:`FrameReader` keeps counting across reconnects,
        so dropped frames leave gaps).
    pts: seconds from the start of the stream, from the frame's pts and time base, or
        ``index / fps`` when the frame has no pts. A :class:`FrameReader` keeps it
        non-decreasing across reconnects (the outage counts in wall-clock time).
    wall_time: ``time.time()`` when the frame was decoded.

    ``Frame(image, index, pts, wall_time)`` wraps a BGR array; the decoder passes
    ``pixels=`` instead. Immutable: ``replace`` gives a renumbered copy (same pixels).
    """

    __slots__ = ("pixels", "index", "pts", "wall_time")

    def __init__(self, image: np.ndarray | None = None, index: int = 0, pts: float = 0.0,
                 wall_time: float = 0.0, *, pixels: Pixels | None = None) -> None:
        if (image is None) == (pixels is None):
            raise ValueError("a Frame needs exactly one of image and pixels")
        set_ = object.__setattr__
        set_(self, "pixels", pixels if pixels is not None else ArrayPixels(image))
        set_(self, "index", index)
        set_(self, "pts", pts)
        set_(self, "wall_time", wall_time)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Frame is immutable (use replace): cannot set {name}")

    @property
    def image(self) -> np.ndarray:
        return self.pixels.bgr()

    @property
    def gray(self) -> np.ndarray:
        return self.pixels.gray()

    def replace(self, *, index: int | None = None, pts: float | None = None) -> Frame:
        return Frame(index=self.index if index is None else index,
                     pts=self.pts if pts is None else pts, wall_time=self.wall_time,
                     pixels=self.pixels)

    def __repr__(self) -> str:
        return f"Frame(index={self.index}, pts={self.pts:.3f}, wall_time={self.wall_time:.3f})"


class VideoStream:
    """One open connection to a source: iterate it for :class:`Frame` objects, then close it.

    Use :func:`open_video` to create one. Also a context manager. Attributes: ``spec``,
    ``width``/``height`` (the coded size, before any rotation), ``fps`` (the ``file@FPS`` rate,
    else the stream's average rate, else 25), ``decode_errors`` (decoder and demuxer errors
    skipped so far), ``frames_decoded`` (frames decoded so far, including those skipped
    before ``start_index``), ``expected_frames`` (a file's frame count from its header or
    duration; None if unknown), ``gave_up`` (a file's demuxer failed repeatedly: it ended
    before its real end).

    ``start_index``: a file resumes there: the frames before it are decoded (so indices and
    timestamps are those of a full run) but neither converted, paced nor yielded.
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
        start_index: int = 0,
        threads: int = 0,
    ) -> None:
        if start_index < 0:
            raise ValueError(f"start_index must be >= 0, got {start_index!r}")
        self.spec = spec
        self._container = container
        self._stream = container.streams.video[0]
        thread_type, thread_count = decoder_threads(realtime or spec.live, threads)
        self._stream.thread_type = thread_type
        self._stream.codec_context.thread_count = thread_count
        # the frames' BGR conversions: one swscale context per stream, threads as the decoder
        self.scaler = Scaler(thread_count)
        self._rotate = normalize_rotation(rotate)
        self._paced = realtime and spec.kind is SourceKind.FILE
        self._timeout = timeout if spec.live else None
        self._interrupt = interrupt or threading.Event()
        # its lines' prefix (logprefix.py): the camera, or the source when used alone
        self._log = logging.LoggerAdapter(log, {"cam_id": cam_id or spec.display})
        self.width = self._stream.codec_context.width
        self.height = self._stream.codec_context.height
        self.fps = spec.fps or _stream_fps(self._stream)
        self.decode_errors = 0
        self.frames_decoded = 0
        # seconds the last yielded frame took to decode (for the stage timers; its conversion
        # to BGR happens later, on first use: see Frame.image)
        self.decode_seconds = 0.0
        self._decoding = 0.0  # decoder time since the last yielded frame
        self.gave_up = False
        self.start_index = start_index
        self.expected_frames = None if spec.live else _expected_frames(container, self._stream,
                                                                        self.fps)
        self._origin: float | None = _stream_start(self._stream)

    def __enter__(self) -> VideoStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._container.close()
        except Exception:  # closing a broken stream must not mask the original error
            self._log.debug("error closing container", exc_info=True)

    def __iter__(self) -> Iterator[Frame]:
        clock = _Pacer(self.fps, self._interrupt) if self._paced else None
        for index, av_frame in enumerate(self._av_frames()):
            self.frames_decoded = index + 1
            if index < self.start_index:
                self._decoding = 0.0  # frames decoded only to be skipped are not timed
                if self._origin is None and av_frame.time is not None:
                    self._origin = av_frame.time
                continue
            frame = self._to_frame(av_frame, index)
            self.decode_seconds, self._decoding = self._decoding, 0.0
            if clock is not None and not clock.wait(index):
                return
            yield frame
            if self._interrupt.is_set():
                return

    def _to_frame(self, av_frame: av.VideoFrame, index: int) -> Frame:
        angle = (self._rotate + display_rotation_to_clockwise(av_frame.rotation)) % 360
        pixels = DecodedPixels(av_frame, angle, self.scaler)
        return Frame(index=index, pts=self._frame_seconds(av_frame, index),
                     wall_time=time.time(), pixels=pixels)

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
                if restarts > _MAX_DEMUX_RESTARTS:  # a broken file ends here (see gave_up)
                    self.gave_up = True
                    return

    def _packets(self) -> Iterator[av.Packet]:
        """Video packets; for live sources all packets, so that a stream where only audio
        still flows is caught by the frame-gap check."""
        return self._container.demux() if self.spec.live else self._container.demux(self._stream)

    def _decode(self, packet: av.Packet) -> list[av.VideoFrame]:
        t0 = time.perf_counter()
        try:
            return packet.decode()
        except av.FFmpegError as exc:
            self._count_error(exc, "decoder")
            return []
        finally:
            self._decoding += time.perf_counter() - t0

    def _count_error(self, exc: Exception, where: str) -> None:
        self.decode_errors += 1
        if self.decode_errors == 1 or self.decode_errors % 100 == 0:
            self._log.warning(
                "%s error #%d in %s, skipped: %s", where,
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


def _expected_frames(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, fps: float
) -> int | None:
    """How many frames a file says it has: its header's count, else its video's duration
    (the container's, less the time before the video starts) * fps."""
    if stream.frames and stream.frames > 0:
        return int(stream.frames)
    seconds = None
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / 1_000_000  # AV_TIME_BASE
        start = _stream_start(stream)
        if start is not None and container.start_time is not None:
            seconds -= start - container.start_time / 1_000_000
    if seconds is None or not 0 < seconds < 1e7:
        return None
    return max(1, round(seconds * fps))


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
    start_index: int = 0,
    threads: int = 0,
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
    start_index: files only: skip the frames before this index (a resumed run).
    threads: decoder threads, 0 = auto (see :func:`decoder_threads`).
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
            start_index=0 if spec.live else start_index,
            threads=threads,
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
