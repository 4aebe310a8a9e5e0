"""Annotated output video (``--sink-url``, ``--sink-res``, ``--draw-track``).

``--sink-url`` forms:

* a file path -- container by extension (``.mp4``, ``.mkv``, ``.avi``, ``.ts``, ``.flv``, ...);
* ``rtmp://host/app/stream`` -- FLV over RTMP (nginx-rtmp and friends);
* ``udp://host:port``, ``srt://``, ``tcp://`` -- MPEG-TS;
* ``rtsp://host/path`` -- RTSP publishing (ANNOUNCE/RECORD, TCP) to a server that accepts it;
* a bare ``host:port`` (fkvideo_detector's "nginx video server address") -- taken as
  ``rtmp://host:port/live/<stream_name>``.

Video is H.264 (libx264, ultrafast/zerolatency) when FFmpeg has it, else MPEG-4 part 2. A sink
never stops face detection: encoding runs in its own thread and a stream drops frames rather
than wait. When a stream's server goes away (or is not up yet) the sink logs it once, with the
camera id, drops frames meanwhile and reconnects with a backoff (1 s doubling to 60 s) until the
server is back; ``error`` holds the last failure, ``reconnects`` counts the attempts. A file
that cannot be written is logged once and the sink turns itself off (``enabled`` False).

Known limit: PyAV (18) connects an output URL and writes its header while holding the GIL and
without any timeout. A probe with a timeout runs first (TCP connect, then the RTMP handshake or
an RTSP OPTIONS), so a dead, refused, unreachable, silent or wrong server only makes the sink
retry later; a server that answers the probe and then hangs would still block the process.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import socket
import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlsplit

import av
import cv2
import numpy as np

from videodetector.core.backoff import Backoff
from videodetector.detector.video.queues import put_while

log = logging.getLogger(__name__)

_STREAM_FORMATS = {
    "rtmp": "flv",
    "rtmps": "flv",
    "udp": "mpegts",
    "srt": "mpegts",
    "tcp": "mpegts",
    "rtp": "rtp_mpegts",
    "rtsp": "rtsp",
}
_BARE_HOST_RE = re.compile(r"^[A-Za-z0-9.-]+:\d{1,5}$")
_NETWORK_TIMEOUT = 5.0  # seconds to connect to a stream server
RETRY = (1.0, 60.0)  # first and longest wait before reopening a stream that failed, s
_DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443, "rtsp": 554, "tcp": None}


def annotate(
    image: np.ndarray,
    boxes: Sequence[Sequence[float]] | np.ndarray,
    track_ids: Sequence[int],
    tracks: Sequence[Sequence[tuple[float, float]]] | None = None,
    draw_track: bool = False,
) -> np.ndarray:
    """A copy of ``image`` (BGR) with each xyxy box and its track id drawn; with ``draw_track``
    also each track's centre history (``tracks[i]`` is a sequence of (x, y)) as a polyline."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if len(track_ids) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(track_ids)} track ids")
    if draw_track and tracks is not None and len(tracks) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(tracks)} tracks")
    out = image.copy()
    thickness = max(1, round(max(out.shape[:2]) / 400))
    for i, (box, track_id) in enumerate(zip(boxes, track_ids, strict=True)):
        color = track_color(int(track_id))
        if draw_track and tracks is not None and len(tracks[i]) > 1:
            points = np.round(np.asarray(tracks[i], np.float32)).astype(np.int32)
            cv2.polylines(out, [points.reshape(-1, 1, 2)], False, color, thickness, cv2.LINE_AA)
        _draw_box(out, box, str(track_id), color, thickness)
    return out


def track_color(track_id: int) -> tuple[int, int, int]:
    """A stable, saturated BGR colour per track id."""
    hue = (track_id * 47) % 180
    hsv = np.array([[[hue, 220, 255]]], np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def _draw_box(
    image: np.ndarray, box: np.ndarray, label: str, color: tuple[int, int, int], thickness: int
) -> None:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), color, thickness)
    scale = 0.4 * thickness
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    ty = y1 - base - 2 if y1 - th - base - 2 >= 0 else y1 + th + 2  # above, or inside at the top
    cv2.putText(
        image, label, (x1 + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA
    )


def sink_target(url: str, stream_name: str = "stream") -> tuple[str, str | None]:
    """(URL for FFmpeg, container format or None to guess from the file extension)."""
    url = url.strip()
    if not url:
        raise ValueError("--sink-url is empty")
    if _BARE_HOST_RE.match(url):
        return f"rtmp://{url}/live/{stream_name}", "flv"
    if "://" in url:
        scheme = url.split("://", 1)[0].lower()
        if scheme == "file":
            return url[len("file://") :], None
        if scheme not in _STREAM_FORMATS:
            raise ValueError(f"--sink-url has an unsupported scheme {scheme!r}: {url!r}")
        return url, _STREAM_FORMATS[scheme]
    if not Path(url).suffix:
        raise ValueError(f"--sink-url file needs an extension (.mp4, .mkv, .avi): {url!r}")
    return url, None


class VideoSink:
    """Encode BGR frames to a file or a stream in a background thread (module docs: URLs).

    resolution: (width, height) of the output (``--sink-res``); None keeps the first frame's
        size. Frames of another size are resized; odd sizes are rounded down to even.
    fps: nominal frame rate. Files are timed by frame count; streams by the wall clock at
        ``write`` (a stream stays in real time when frames are skipped), unless ``write`` gets
        a ``pts``.

    ``write`` hands the image to the encoder thread and returns at once (the sink keeps a
    reference: do not modify the image afterwards). For a stream, a full queue drops the frame
    (``dropped``), so a slow or stalled server never holds up detection; a file gets every
    frame. The container opens on the first frame; ``timeout`` bounds the TCP connection check
    made before opening a stream (see :func:`_preflight`). One writer thread at a time.
    """

    def __init__(
        self,
        url: str,
        resolution: tuple[int, int] | None = None,
        fps: float = 25.0,
        *,
        cam_id: str = "",
        queue_size: int = 16,
        timeout: float = _NETWORK_TIMEOUT,
        retry: tuple[float, float] = RETRY,
    ) -> None:
        if not fps or not 0 < float(fps) <= 1000:
            raise ValueError(f"sink fps must be in (0, 1000], got {fps!r}")
        self.url, self._format = sink_target(url, cam_id or "stream")
        self.size = _even_size(resolution) if resolution is not None else None
        self.fps = float(fps)
        self.cam_id = cam_id
        self.enabled = True
        self.error: str | None = None
        self.frames_written = 0
        self.dropped = 0
        self.reconnects = 0  # attempts to reopen a stream after a failure
        self._backoff = Backoff(*retry)
        self._retry_at: float | None = None  # while a stream is down: when to try again
        self._is_stream = self._format is not None
        self._timeout = timeout
        self._rate = Fraction(self.fps).limit_denominator(1001)
        self._tick = Fraction(1, 1000) if self._is_stream else 1 / self._rate  # frame pts unit
        self._queue: queue.Queue[tuple[np.ndarray, float | None] | None] = queue.Queue(
            maxsize=max(1, queue_size)
        )
        self._thread: threading.Thread | None = None
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._t0: float | None = None
        self._last_pts = -1
        self._log = logging.LoggerAdapter(log, {"cam_id": cam_id})

    def __enter__(self) -> VideoSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, image: np.ndarray, pts: float | None = None) -> bool:
        """Queue one frame (``pts`` in seconds, optional); False if the sink is off or the
        frame was dropped."""
        if not self.enabled:
            return False
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"sink-{self.cam_id or 'video'}", daemon=True
            )
            self._thread.start()
        if pts is None and self._is_stream:
            now = time.monotonic()
            self._t0 = now if self._t0 is None else self._t0
            pts = now - self._t0
        if self._is_stream:
            return self._put_or_drop((image, pts))
        return self._put_waiting((image, pts))

    def close(self, timeout: float = 10.0) -> None:
        """Encode what is queued, flush and close (errors are logged, never raised)."""
        thread = self._thread
        if thread is None:
            return
        if self.enabled and not self._put_waiting(None, timeout):
            self._log.warning("sink %s: close timed out", self.url)
        thread.join(timeout)

    # ------------------------------------------------------------------ caller side

    def _put_or_drop(self, item: tuple[np.ndarray, float | None]) -> bool:
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def _put_waiting(
        self, item: tuple[np.ndarray, float | None] | None, limit: float | None = None
    ) -> bool:
        return put_while(self._queue, item, lambda: self.enabled, limit)

    # ------------------------------------------------------------------ encoder thread

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                self._write_or_retry(*item)
            self._finish()
        except Exception as exc:  # never let the sink stop detection
            self._fail(exc)

    def _write_or_retry(self, image: np.ndarray, pts: float | None) -> None:
        """A file fails for good (``_run`` turns it off); a stream waits out its backoff,
        dropping frames, then reopens on the next frame."""
        if not self._is_stream:
            self._write_now(image, pts)
            return
        if self._retry_at is not None:
            if time.monotonic() < self._retry_at:
                self.dropped += 1
                return
            self.reconnects += 1
        try:
            self._write_now(image, pts)
        except Exception as exc:
            self._stream_down(exc)
            return
        if self._retry_at is not None:
            self._log.info("sink %s is back after %d attempt(s)", self.url,
                           self.reconnects)
            self._retry_at = None
            self._backoff.reset()

    def _stream_down(self, exc: Exception) -> None:
        first = self._retry_at is None
        self.error = f"{type(exc).__name__}: {exc}"
        self._close_container()
        delay = self._backoff.next()
        self._retry_at = time.monotonic() + delay
        self._log.log(
            logging.ERROR if first else logging.DEBUG,
            "sink %s unavailable (face detection continues; retrying, next in %g s): %s",
            self.url, delay, self.error,
        )

    def _write_now(self, image: np.ndarray, pts: float | None) -> None:
        if self._container is None:
            self._open(image)
        frame = av.VideoFrame.from_ndarray(self._fit(image), format="bgr24")
        frame.pts = self._next_pts(pts)
        frame.time_base = self._tick
        self._container.mux(self._stream.encode(frame))  # type: ignore[union-attr]
        self.frames_written += 1

    def _finish(self) -> None:
        container, self._container = self._container, None
        if container is None:
            return
        try:
            container.mux(self._stream.encode())  # type: ignore[union-attr]
        finally:
            container.close()

    def _open(self, image: np.ndarray) -> None:
        if self.size is None:
            self.size = _even_size((image.shape[1], image.shape[0]))
        if self._is_stream:
            _preflight(self.url, self._timeout)
        options = {"rtsp_transport": "tcp"} if self._format == "rtsp" else {}
        container = av.open(self.url, "w", format=self._format, options=options)
        try:
            self._stream = self._add_video_stream(container)
        except Exception:
            container.close()
            raise
        self._container = container
        self._log.info(
            "sink %s: %s %dx%d @ %g fps", self.url,
            self._stream.codec_context.name,
            *self.size,
            self.fps,
        )

    def _add_video_stream(self, container: av.container.OutputContainer) -> av.VideoStream:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=self._rate)
        stream.width, stream.height = self.size
        stream.pix_fmt = "yuv420p"
        stream.time_base = self._tick
        # The encoder counts in the same tick. Left at 1/fps, a stream's millisecond pts
        # would be rounded to whole frames, and two frames closer than 1/fps (a camera
        # faster than --sink fps, a burst after a stall) would get one dts: the muxer
        # refuses that (EINVAL) and the sink turned itself off.
        stream.codec_context.time_base = self._tick
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "23"}
            if self._is_stream:
                stream.options |= {"tune": "zerolatency"}
        else:
            stream.bit_rate = 2_000_000
        if self._is_stream:
            stream.codec_context.gop_size = max(1, round(self.fps * 2))
        return stream

    def _fit(self, image: np.ndarray) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"sink needs HxWx3 uint8 BGR, got {image.shape} {image.dtype}")
        width, height = self.size  # type: ignore[misc]
        if (image.shape[1], image.shape[0]) != (width, height):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        return image

    def _next_pts(self, seconds: float | None) -> int:
        """Strictly increasing pts in units of ``_tick``."""
        ticks = self._last_pts + 1 if seconds is None else int(round(seconds / float(self._tick)))
        self._last_pts = max(ticks, self._last_pts + 1)
        return self._last_pts

    def _fail(self, exc: Exception) -> None:
        self.enabled = False
        self.error = f"{type(exc).__name__}: {exc}"
        self._log.error(
            "sink %s disabled (face detection continues): %s", self.url,
            self.error,
        )
        self._close_container()

    def _close_container(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except Exception:
                pass


def _preflight(url: str, timeout: float) -> None:
    """Check a TCP-based stream server first, with a timeout; OSError says what is wrong.

    PyAV (18) connects an output URL and writes its header holding the GIL, with no timeout
    and no way to interrupt it: a server that never answers would freeze the whole process.
    So the server must first accept a connection and answer the protocol's opening move
    within ``timeout``: the RTMP handshake (C0+C1 -> S0+S1) or an RTSP ``OPTIONS``. The probe
    connection is then dropped; a server that answers it and hangs later is not caught.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or _DEFAULT_PORTS.get(scheme)
    if scheme not in _DEFAULT_PORTS or not parts.hostname or port is None:
        return  # connectionless (udp, rtp, srt) or no port to check
    with socket.create_connection((parts.hostname, port), timeout=timeout) as conn:
        conn.settimeout(timeout)
        if scheme in ("rtmp", "rtsp"):
            _probe(conn, scheme, url, timeout)


def _probe(conn: socket.socket, scheme: str, url: str, timeout: float) -> None:
    if scheme == "rtmp":
        conn.sendall(b"\x03" + bytes(8) + os.urandom(1528))  # C0 (version 3) + C1
        expect, kind, what = b"\x03", "RTMP", "handshake"
    else:
        conn.sendall(f"OPTIONS {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
        expect, kind, what = b"RTSP/1.0", "RTSP", "answer to OPTIONS"
    try:
        reply = _read_at_least(conn, len(expect))
    except TimeoutError:
        raise TimeoutError(f"no {kind} {what} within {timeout:g} s") from None
    if not reply.startswith(expect):
        raise ConnectionError(f"not an {kind} server: it answered {reply[:16]!r}")


def _read_at_least(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _even_size(resolution: tuple[int, int]) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in resolution)
    except (TypeError, ValueError):
        raise ValueError(f"--sink-res must be (width, height), got {resolution!r}") from None
    if width < 2 or height < 2:
        raise ValueError(f"--sink-res must be at least 2x2, got {resolution!r}")
    return width - width % 2, height - height % 2
