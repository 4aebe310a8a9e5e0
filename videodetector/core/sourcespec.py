"""``--source`` values parsed into a :class:`SourceSpec` (shared: the detector opens them, the
backend validates a camera's URL with the same rules). Pure parsing, no video library.

Forms: ``rtsp://`` ``rtsps://`` ``rtmp://`` ``http(s)://`` ``udp://`` ``rtp://`` ``srt://``
``tcp://`` (a live network stream), ``/dev/videoN`` (a webcam), ``file@FPS:PATH`` (a file played
at FPS in realtime mode), anything else a file path (``file://`` prefix allowed).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "rtp", "srt", "tcp")
_FILE_FPS_RE = re.compile(r"^file@([^:]*):(.+)$", re.DOTALL)
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_WEBCAM_RE = re.compile(r"^/dev/video\d+$")
_CREDENTIALS_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*):[^@/]*@")


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
