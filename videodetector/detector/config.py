"""fkvideo_detector options: command line + ``[General]`` ini file -> :class:`DetectorConfig`.

The option names and meanings follow the FindFace Server SDK 2.6 manual, section 5.3.1;
the file format follows 5.3.2 / 5.2.1. Every option can be given on the command line
(``--md-threshold 0.003``) or in the file given by ``-c`` (``md-threshold=0.003``); the
command line wins. A list option (``--body``, ``--headers``) given on the command line
replaces the file's list as a whole.

Config file format (``-c FILE``; no file is read by default)::

    [General]                 ; keys of other sections are ignored (FindFace Web UI
                              ; may keep its own sections in the same file)
    api-url = 127.0.0.1:8000  ; key=value, whitespace around '=' is ignored
    # a comment               ; full-line comments start with ';' or '#'
    realtime=1                ; inline comments need whitespace before ';' or '#'
    body=galleries=a\\,b,gender=true   ; several body fields; '\\,' is a literal comma
    body-meta=User Meta       ; body-<field>=value is the same as body=<field>=value
    head=X-Foo: bar           ; extra header; also 'headers=', 'head-X-Foo=bar'

Booleans accept ``1/0/true/false/yes/no/on/off``; on the command line a bare flag
(``-r``, ``--send-track``) means 1. ``api-host`` + ``api-port`` combine into ``api-url``
when ``api-url`` is not given. ``license-ntls-server`` is accepted and ignored (this
clone needs no licence server).

``--body`` values: a value is split at unescaped commas; a piece ``name=value`` starts a
new field, a piece without ``=`` (or whose left side is not a field name) is one more
value of the previous field. So ``body-mf_selector=all,meta=User Meta`` (5.2.1) gives the
fields ``mf_selector=all`` and ``meta=User Meta``; ``--body galleries=g1,g2`` and
``body=galleries=g1\\,g2`` both give ``galleries=g1,g2`` (one field, values joined by a
comma, posted as is). Empty pieces (``all,,meta=x``) are skipped.

Any unknown option or invalid value, in the file or on the command line, raises
:class:`ConfigError` naming the option.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import configargparse

from videodetector.core.geometry import Rect, parse_geometry, parse_resolution
from videodetector.core.naming import path_component

log = logging.getLogger(__name__)

Pairs = tuple[tuple[str, str], ...]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Multipart fields written by the detector itself (see videodetector/detector/post/request.py);
# --body must not silently replace them.
RESERVED_BODY_FIELDS = frozenset({"face0", "bbox", "cam_id", "timestamp", "detectorParams"})
# Headers the poster sets itself.
RESERVED_HEADERS = frozenset({"authorization", "idempotency-key", "content-type", "content-length"})


class ConfigError(ValueError):
    """A bad option, in the config file or on the command line. The message names it."""


@dataclass(frozen=True)
class DetectorConfig:
    """All options of fkvideo_detector. Field names are the long options with '_' for '-'."""

    # --- video streams (5.1.4) ---
    source: str = ""  # -S: rtsp://..., /dev/video0, file@FPS:PATH, or a file path
    camid: str = ""  # camera id of --source
    source_params: Pairs = ()  # FFmpeg options, e.g. (("rtsp_transport", "tcp"),)
    detector_name: str = ""  # -n: key of the camera list on the server (host name by default)
    remote_config: bool = True  # get cameras from the server; forced off when --source is set
    detectors_max: int = 5  # -d: max cameras processed
    # camera list: processes the cameras run in; 1 = in the daemon's own process, N > 1 =
    # N child processes, 0 = auto (one per CAMERAS_PER_PROCESS cameras, at most the cores)
    camera_processes: int = 1
    reload_timeout: float = 15.0  # -t: seconds between camera list updates
    health_interval: float = 5.0  # s between camera health reports to the backend (0: off)
    camera_url: str = "/v0/camera"
    single_pass: bool = False  # fetch the camera list once (files)
    start_ts: datetime | None = None  # time stamp of the first frame; None = now
    rotate: int = 0  # clockwise degrees, 0..360
    realtime_pacing: bool = True  # read file@FPS:PATH sources at FPS (0 = as fast as possible)
    watchdog_timeout: float = 10.0  # s without a frame before a live stream is reopened
    decoder_threads: int = 0  # per stream; 0 = auto (1 for live/paced sources, else FFmpeg's)
    frame_queue: int = 8  # decoded frames a camera's reader holds for its pipeline
    # --- motion detection ---
    md_threshold: float = 0.002  # 0 = motion detector disabled
    scale: float = 1.0  # frame scale for the motion detector
    # run the face detector only on the part of the frame with motion or tracked faces
    detect_regions: bool = True
    # while every face is tracked and nothing moves elsewhere, detect every n-th frame only
    detect_period: int = 4
    # while motion off the tracked faces lasts and the detector found no face in it, search it
    # on every m-th frame only (the first frame of such motion is always searched)
    search_period: int = 2
    # while the detector looks at the tracked faces only (a hand-held camera, every face tracked),
    # search the whole frame every max(search_period, detect_period, this)-th frame
    full_search_period: int = 8
    # --- face tracking ---
    rescale_height: int = 0  # frame height for the tracker; 0 = no rescale
    max_persons: int = 10
    tracker_threads: int = 1
    disable_drops: bool = False
    rot: Rect | None = None  # detect and track only inside this rectangle
    roi: Rect | None = None  # post only faces inside this rectangle
    min_face_size: int = 0  # px, minor side of the bbox; 0 = no limit
    max_face_size: int = 0  # px, major side of the bbox; 0 = no limit
    # --- best face selection ---
    realtime: bool = False  # -r: 1 = real-time, 0 = offline (one best face per track)
    realtime1844: bool = False  # both modes, posted under labels realtime/offline
    rt_delay: int = 1000  # ms
    rt_perm: bool = False
    min_score: float = -7.0  # face quality threshold, <= 0
    min_dir_score: float = -1000.0  # face direction threshold, <= 0
    post_uniq: bool = False
    uc_max_time_diff: float = 1.0  # s
    uc_max_dup: int = 3
    uc_max_avg_shift: float = 10.0  # px
    # --- output video ---
    sink_url: str = ""
    sink_res: tuple[int, int] | None = None
    draw_track: bool = False
    # --- posting (5.4) ---
    api_url: str = ""  # normalised: scheme://host:port[/prefix], no trailing '/'
    api_token: str = ""
    request_url: str = "/v1/face/"
    img_arg: str = "photo"
    headers: Pairs = ()  # extra request headers
    body: Pairs = ()  # extra multipart fields (multi-values joined by ',')
    bbox_scale: float = 1.0
    send_track: bool = False
    only_norm: bool = False
    req_timeout: float = 3.0  # s
    to_verify_cert: bool = True
    post_queue: int = 100  # snapshots held in memory while the spool cannot be written
    spool_dir: str = ""  # on-disk spool of undelivered posts
    spool_max_bytes: int = 1 << 30
    retry_max_delay: float = 30.0  # cap of the exponential retry back-off, s
    # --- service ---
    status_port: int = 0  # HTTP status/metrics endpoint; 0 = off
    status_host: str = "127.0.0.1"
    log_level: str = "INFO"
    check_config: bool = False  # parse, print the configuration and exit
    requeue_rejected: bool = False  # move refused snapshots back into the spools and exit
    license_ntls_server: str = ""  # accepted for compatibility, ignored
    config: str = ""  # the -c file, "" if none


# ---------------------------------------------------------------------------
# value parsers (pure; raise ValueError naming the bad value)
# ---------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_FIELD_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-\[\]]*$")
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected 1/0/true/false, got {text!r}")


def split_escaped(text: str, sep: str = ",") -> list[str]:
    """Split at ``sep`` not preceded by a backslash; ``\\<sep>`` and ``\\\\`` are unescaped."""
    pieces: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            current.append(nxt if nxt in (sep, "\\") else ch + nxt)
        elif ch == sep:
            pieces.append("".join(current))
            current = []
        else:
            current.append(ch)
    pieces.append("".join(current))
    return pieces


def parse_body(items: Iterable[str]) -> Pairs:
    """``--body`` values -> ((name, value), ...); see the module docs for the syntax."""
    fields_: list[list[str]] = []
    for item in items:
        current: list[str] | None = None
        for piece in (p.strip() for p in split_escaped(item)):
            if not piece:
                continue
            name, sep, value = piece.partition("=")
            if sep and _FIELD_NAME_RE.match(name.strip()):
                current = [name.strip(), value.strip()]
                fields_.append(current)
            elif current is None:
                raise ValueError(f"expected name=value, got {piece!r}")
            else:
                current[1] = f"{current[1]},{piece}"
    for name, _ in fields_:
        if name in RESERVED_BODY_FIELDS:
            raise ValueError(f"field {name!r} is set by the detector itself")
    return tuple((n, v) for n, v in fields_)


def parse_header(text: str) -> tuple[str, str]:
    """``"X-Foo: bar"``, ``"X-Foo = bar"`` or ``"X-Foo=bar"`` -> ("X-Foo", "bar")."""
    cut = min((i for i in (text.find(":"), text.find("=")) if i >= 0), default=-1)
    if cut < 0:
        raise ValueError(f"expected 'Name: value' or 'Name=value', got {text!r}")
    name, value = text[:cut].strip(), text[cut + 1 :].strip()
    if not _HEADER_NAME_RE.match(name):
        raise ValueError(f"bad header name {name!r} in {text!r}")
    if name.lower() in RESERVED_HEADERS:
        raise ValueError(f"header {name!r} is set by the detector itself")
    return name, value


def parse_source_params(text: str) -> Pairs:
    """``"rtsp_transport=tcp, timeout=-1"`` -> (("rtsp_transport", "tcp"), ("timeout", "-1"))."""
    pairs = []
    for piece in (p.strip() for p in split_escaped(text)):
        if not piece:
            continue
        name, sep, value = piece.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"expected name=value, got {piece!r}")
        pairs.append((name.strip(), value.strip()))
    return tuple(pairs)


def normalise_api_url(text: str) -> str:
    """``"host:port"`` or ``"http(s)://host:port[/prefix]"`` -> URL with scheme, no '/' at end."""
    url = text.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError:
        raise ValueError(f"bad port in {text!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected host:port or http(s)://host:port, got {text!r}")
    return url


def combine_api_host(host: str, port: int | None) -> str:
    """``api-host`` (+ ``api-port``) -> normalised api-url."""
    parts = urlsplit(normalise_api_url(host))
    if port is None:
        return parts.geturl()
    hostname = parts.hostname or ""
    netloc = f"[{hostname}]:{port}" if ":" in hostname else f"{hostname}:{port}"
    return parts._replace(netloc=netloc).geturl()


def parse_start_ts(text: str) -> datetime:
    """``'2016-01-20 12:34:56'`` (or ISO 8601). A time without offset is local time."""
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"expected 'YYYY-MM-DD HH:MM:SS', got {text!r}") from None


def parse_size(text: str) -> int:
    """Bytes: ``"1048576"``, ``"64K"``, ``"500M"``, ``"1G"``, ``"2GiB"`` (binary units)."""
    match = _SIZE_RE.match(text)
    if match is None:
        raise ValueError(f"expected a size like 500M or 1G, got {text!r}")
    exponent = " kmgt".index(match.group(2).lower() or " ")
    return int(match.group(1)) * 1024**exponent


MAX_CAMERA_PROCESSES = 64
AUTO_PROCESSES = 0  # ``camera-processes=auto``


def parse_camera_processes(text: str) -> int:
    """``"auto"`` -> 0 (:data:`AUTO_PROCESSES`), ``"4"`` -> 4 (the range is checked later)."""
    value = text.strip().lower()
    if value == "auto":
        return AUTO_PROCESSES
    try:
        number = int(value)
    except ValueError:
        number = AUTO_PROCESSES
    if number < 1:  # "0" is not a spelling of auto
        raise ValueError(f"expected 'auto' or a number of processes >= 1, got {text!r}")
    return number


def _url_path(text: str) -> str:
    path = text.strip()
    if not path or "://" in path:
        raise ValueError(f"expected a path like /v1/face/, got {text!r}")
    return path if path.startswith("/") else "/" + path


def default_camid(source: str) -> str:
    """A camera id for a --source given without --camid: the file name or the URL's host/path,
    password-free (``rtsp://u:p@cam7/ch1`` -> ``cam7_ch1``, ``/data/door.mp4`` -> ``door``)."""
    text = source.split(":", 1)[1] if source.startswith("file@") else source
    parts = urlsplit(text)
    text = (parts.hostname or "") + parts.path if parts.scheme and parts.netloc else Path(text).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "camera"


def default_spool_dir(name: str) -> str:
    """``$XDG_STATE_HOME/fkvideo_detector/spool-<name>`` (``~/.local/state`` by default)."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return os.path.join(state, "fkvideo_detector", f"spool-{path_component(name, 'default')}")


# ---------------------------------------------------------------------------
# the [General] ini reader
# ---------------------------------------------------------------------------

LIST_KEYS = ("body", "headers")
_INLINE_COMMENT_RE = re.compile(r"\s[;#].*$")


def _strip_comment(line: str) -> str:
    stripped = line.strip()
    if stripped.startswith((";", "#")):
        return ""
    return _INLINE_COMMENT_RE.sub("", stripped).strip()


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def translate_key(key: str, value: str) -> tuple[str, str]:
    """Map the file-only spellings to options: ``body-F=v`` -> ``body=F=v``, ``head`` -> headers."""
    if key.startswith("body-") and len(key) > 5:
        return "body", f"{key[5:]}={value}"
    if key.startswith("head-") and len(key) > 5:
        return "headers", f"{key[5:]}: {value}"
    if key == "head":
        return "headers", value
    return key, value


class GeneralIniParser(configargparse.ConfigFileParser):
    """Reads the ``[General]`` section of an fkvideo ini file (see the module docs)."""

    def get_syntax_description(self) -> str:
        return (
            "The config file has a [General] section of key=value lines, keys being the long "
            "option names (md-threshold=0.003). ';' and '#' start comments."
        )

    def parse(self, stream: Any) -> OrderedDict[str, Any]:
        items: OrderedDict[str, Any] = OrderedDict()
        source = getattr(stream, "name", "config file")
        section = "general"
        for lineno, raw in enumerate(stream, start=1):
            line = _strip_comment(raw)
            if not line:
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1].strip().lower()
                continue
            if section != "general":
                continue
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                raise configargparse.ConfigFileParserException(
                    f"{source} line {lineno}: expected key=value, got {raw.strip()!r}"
                )
            key, value = translate_key(key.strip(), _unquote(value.strip()))
            if key in LIST_KEYS:
                if value:
                    items.setdefault(key, []).append(value)
            else:
                if key in items:
                    log.warning("%s line %d: %s given again, the last value wins",
                                source, lineno, key)
                items[key] = value
        return items


# ---------------------------------------------------------------------------
# the argument parser
# ---------------------------------------------------------------------------


class _ArgParser(configargparse.ArgParser):
    """Raises ConfigError instead of printing usage and exiting."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        if message.startswith("unrecognized arguments:"):
            message = "unknown option(s):" + message.removeprefix("unrecognized arguments:")
        raise ConfigError(message)

    def get_command_line_key_for_unknown_config_file_setting(self, key: str) -> str:
        raise ConfigError(f"unknown option {key!r} in the config file")


def _arg_type(func: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    """Wrap a parser so argparse reports its ValueError message with the option name."""

    def convert(text: str) -> Any:
        try:
            return func(text)
        except ValueError as exc:
            raise configargparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


_BOOL = _arg_type(parse_bool, "boolean")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {text!r}")
    return value


_FLOAT = _arg_type(_finite, "number")


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise ValueError(f"must be a TCP port (1-65535), got {value}")
    return value


def _flag(parser: Any, *names: str, help: str) -> None:
    """A boolean option: bare flag = 1, or an explicit 0/1/true/false value."""
    parser.add_argument(*names, type=_BOOL, nargs="?", const=True, metavar="0|1", help=help)


def _add_stream_options(p: Any) -> None:
    g = p.add_argument_group("video streams")
    g.add_argument("-S", "--source", help="rtsp://..., /dev/video0, file@FPS:PATH or a file")
    g.add_argument("--camid", help="camera id of --source")
    g.add_argument("--source-params", type=_arg_type(parse_source_params, "source-params"),
                   help="FFmpeg options: rtsp_transport=tcp,timeout=-1")
    g.add_argument("-n", "--detector-name", help="camera list key on the server (host name)")
    _flag(g, "--remote-config", help="get the camera list from the server (default 1)")
    g.add_argument("-d", "--detectors-max", type=int, help="max cameras processed (5)")
    g.add_argument("--camera-processes",
                   type=_arg_type(parse_camera_processes, "processes"),
                   help="camera list only: run the cameras in N child processes (1..64) or "
                        "'auto' (one per 8 cameras, at most one per core); 1 = in the daemon's "
                        "own process (1)")
    g.add_argument("-t", "--reload-timeout", type=_FLOAT, help="s between list updates (15)")
    g.add_argument("--camera-url", type=_arg_type(_url_path, "path"), help="(/v0/camera)")
    g.add_argument("--health-interval", type=_FLOAT,
                   help="s between camera health reports to the backend, 0 = off (5)")
    _flag(g, "--single-pass", help="fetch the camera list once")
    g.add_argument("--start-ts", type=_arg_type(parse_start_ts, "time"),
                   help="time of the first frame, '2016-01-20 12:34:56' (now)")
    g.add_argument("--rotate", type=int, help="rotate input clockwise, degrees (0)")
    _flag(g, "--realtime-pacing", help="read file@FPS:PATH files at FPS (1)")
    g.add_argument("--watchdog-timeout", type=_FLOAT,
                   help="s without a frame before a live stream is reopened (10)")


def _add_face_options(p: Any) -> None:
    g = p.add_argument_group("motion detection and face tracking")
    g.add_argument("--md-threshold", type=_FLOAT, help="motion threshold, 0 = off (0.002)")
    g.add_argument("--scale", type=_FLOAT, help="frame scale for motion detection (1)")
    _flag(g, "--detect-regions",
          help="detect faces only where there is motion or a tracked face (1)")
    g.add_argument("--detect-period", type=int,
                   help="while every face is tracked and nothing else moves, detect every "
                        "n-th frame (4); 1 = every frame with motion")
    g.add_argument("--search-period", type=int,
                   help="while motion away from the tracked faces lasts and the detector found "
                        "no new face in it, detect every m-th such frame (2); its first frame "
                        "is always detected; 1 = every frame with such motion. With "
                        "--detect-regions, while every face is tracked and that motion is all "
                        "over the frame, the whole frame every max(m, detect-period, "
                        "full-search-period)-th such frame, the tracked faces only in between")
    g.add_argument("--full-search-period", type=int,
                   help="with --detect-regions, while every face is tracked and motion is all "
                        "over the frame (a hand-held camera), search the whole frame for new "
                        "faces every max(s, m, detect-period)-th frame and look at the tracked "
                        "faces only on the detector's other frames (8); a new face there waits "
                        "at most that many frames - 1")
    g.add_argument("--rescale-height", type=int, help="frame height for tracking, 0 = as is")
    g.add_argument("--max-persons", type=int, help="max faces tracked at once (10)")
    g.add_argument("--tracker-threads", type=int, help="tracking threads (1)")
    _flag(g, "--disable-drops", help="never drop frames")
    g.add_argument("--frame-queue", type=int,
                   help="decoded frames a camera holds while its pipeline is busy (8); more "
                        "absorbs longer bursts, at 1.4 MB per 720p frame and, for a live "
                        "camera, up to that many frame intervals of latency")
    g.add_argument("--decoder-threads", type=int,
                   help="decoder threads per stream; 0 = auto: 1 for live and paced sources, "
                        "FFmpeg's choice for files read offline (0)")
    g.add_argument("--rot", type=_arg_type(parse_geometry, "geometry"), help="track in WxH+X+Y")
    g.add_argument("--roi", type=_arg_type(parse_geometry, "geometry"), help="post in WxH+X+Y")
    g.add_argument("--min-face-size", type=int, help="px, 0 = no limit")
    g.add_argument("--max-face-size", type=int, help="px, 0 = no limit")
    g = p.add_argument_group("best face")
    _flag(g, "-r", "--realtime", help="1 = real-time, 0 = offline (0)")
    _flag(g, "--realtime1844", help="real-time and offline at once")
    g.add_argument("--rt-delay", type=int, help="ms (1000)")
    _flag(g, "--rt-perm", help="post the best face of each rt-delay period")
    g.add_argument("--min-score", type=_FLOAT, help="min face quality, <= 0 (-7)")
    g.add_argument("--min-dir-score", type=_FLOAT, help="min face direction, <= 0 (-1000)")
    _flag(g, "--post-uniq", help="limit posts of similar faces")
    g.add_argument("--uc-max-time-diff", type=_FLOAT, help="s (1)")
    g.add_argument("--uc-max-dup", type=int, help="(3)")
    g.add_argument("--uc-max-avg-shift", type=_FLOAT, help="px (10)")
    g = p.add_argument_group("output video")
    g.add_argument("--sink-url", help="output video stream (single camera only)")
    g.add_argument("--sink-res", type=_arg_type(parse_resolution, "resolution"),
                   help="output resolution WxH")
    _flag(g, "--draw-track", help="draw face tracks")


def _add_post_options(p: Any) -> None:
    g = p.add_argument_group("posting")
    g.add_argument("--api-url", help="host:port or http(s)://host:port (mandatory)")
    g.add_argument("--api-host", help="host, combined with --api-port into --api-url")
    g.add_argument("--api-port", type=_arg_type(_port, "port"), help="port, see --api-host")
    g.add_argument("--api-token", help="authentication token (mandatory; write "
                   "--api-token=VALUE if a token starts with '-')")
    g.add_argument("--request-url", type=_arg_type(_url_path, "path"), help="(/v1/face/)")
    g.add_argument("--img-arg", help="field name of the full frame (photo)")
    g.add_argument("--headers", "--head", action="append", nargs="+", metavar="'NAME: VALUE'",
                   help="extra header, repeatable: --headers xxx = yyy")
    g.add_argument("--body", action="append", metavar="NAME=VALUE[,...]",
                   help="extra body field(s), repeatable: --body galleries=g1,g2")
    g.add_argument("--bbox-scale", type=_FLOAT, help="bbox scale (1)")
    _flag(g, "--send-track", help="post the track of bbox centres")
    _flag(g, "--only-norm", help="post only normalized faces, no full frames")
    g.add_argument("--req-timeout", type=_FLOAT, help="s (3)")
    _flag(g, "--to-verify-cert", help="verify https certificates (1)")
    g.add_argument("--post-queue", type=int, help="snapshots held in memory while the spool "
                   "cannot be written (disk full); beyond, new ones are dropped and counted (100)")
    g.add_argument("--spool-dir", help="on-disk spool for undelivered posts")
    g.add_argument("--spool-max-bytes", type=_arg_type(parse_size, "size"),
                   help="spool bound, oldest posts dropped beyond (1G)")
    g.add_argument("--retry-max-delay", type=_FLOAT, help="max retry back-off, s (30)")


def _add_service_options(p: Any) -> None:
    g = p.add_argument_group("service")
    g.add_argument("--status-port", type=int, help="HTTP status/metrics port, 0 = off (0)")
    g.add_argument("--status-host", help="status endpoint address (127.0.0.1)")
    g.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, help="(INFO)")
    _flag(g, "--check-config", help="print the configuration and exit")
    _flag(g, "--requeue-rejected", help="move the snapshots the server refused (<spool-dir>/"
          "<camera>/rejected/) back into the spools, to be posted on the next start, and exit")
    g.add_argument("--license-ntls-server", help="accepted for compatibility, ignored")


def build_parser() -> configargparse.ArgParser:
    """The fkvideo_detector argument parser. Unset options parse as None (defaults later)."""
    parser = _ArgParser(
        prog="fkvideo_detector",
        description="Video face detector: finds faces in video and posts them to a server.",
        config_file_parser_class=GeneralIniParser,
        args_for_setting_config_path=["-c", "--config"],
        config_arg_help_message="ini file with a [General] section (see configs/fkvideo.ini)",
        ignore_unknown_config_file_keys=False,
        allow_abbrev=False,
        argument_default=None,
    )
    _add_stream_options(parser)
    _add_face_options(parser)
    _add_post_options(parser)
    _add_service_options(parser)
    return parser


def _expand_prefixed_args(argv: Sequence[str]) -> list[str]:
    """``--body-F=v`` / ``--body-F v`` -> ``--body F=v``; ``--head-N=v`` -> ``--headers N: v``."""
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        for prefix, option, fmt in (("--body-", "--body", "{}={}"),
                                    ("--head-", "--headers", "{}: {}")):
            if arg.startswith(prefix) and len(arg) > len(prefix):
                name, sep, value = arg[len(prefix) :].partition("=")
                out += [option, fmt.format(name, value if sep else next(args, ""))]
                break
        else:
            out.append(arg)
    return out


# ---------------------------------------------------------------------------
# namespace -> DetectorConfig
# ---------------------------------------------------------------------------


def parse_config(argv: Sequence[str] | None = None) -> DetectorConfig:
    """Parse the command line (``sys.argv[1:]`` if None) and the ``-c`` file. Raises ConfigError."""
    parser = build_parser()
    args = _expand_prefixed_args(list(argv) if argv is not None else sys.argv[1:])
    try:
        ns = parser.parse_args(args)
    except OSError as exc:  # the -c file cannot be read
        raise ConfigError(f"-c/--config: {exc}") from None
    values = {k: v for k, v in vars(ns).items() if v is not None}
    cfg = DetectorConfig(**_convert(values))
    cfg = _apply_derived_defaults(cfg)
    validate(cfg)
    return cfg


def _convert(values: dict[str, Any]) -> dict[str, Any]:
    """Namespace values -> DetectorConfig keyword arguments (lists, api-url)."""
    api_host = values.pop("api_host", None)
    api_port = values.pop("api_port", None)
    try:
        if "api_url" in values:
            values["api_url"] = normalise_api_url(values["api_url"])
        elif api_host:
            values["api_url"] = combine_api_host(api_host, api_port)
        elif api_port is not None:
            raise ValueError("--api-port needs --api-host")
    except ValueError as exc:
        raise ConfigError(f"--api-url: {exc}") from None
    try:
        values["body"] = parse_body(values.get("body", ()))
    except ValueError as exc:
        raise ConfigError(f"--body: {exc}") from None
    try:
        header_args = values.get("headers", ())
        texts = [" ".join(words) for words in header_args if " ".join(words).strip()]
        values["headers"] = tuple(parse_header(t) for t in texts)
    except ValueError as exc:
        raise ConfigError(f"--headers: {exc}") from None
    known = {f.name for f in fields(DetectorConfig)}
    return {k: v for k, v in values.items() if k in known}


def _apply_derived_defaults(cfg: DetectorConfig) -> DetectorConfig:
    """Defaults that depend on other options or on the host."""
    changes: dict[str, Any] = {}
    if cfg.source and cfg.remote_config:
        changes["remote_config"] = False  # 5.3.1: --source/--camid have priority
    if cfg.source and not cfg.camid:
        changes["camid"] = default_camid(cfg.source)
    if not cfg.detector_name:
        changes["detector_name"] = socket.gethostname()
    if not cfg.spool_dir:
        name = cfg.camid if cfg.source else (cfg.detector_name or changes["detector_name"])
        changes["spool_dir"] = default_spool_dir(name)
    else:
        changes["spool_dir"] = os.path.expanduser(cfg.spool_dir)
    return replace(cfg, **changes)


# (field, test, requirement) -- checked in this order; the option is --field-with-dashes.
DAY = 86400  # upper bound of the time options, s (timers overflow far beyond it)
_RANGE_CHECKS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("md_threshold", lambda v: v >= 0, ">= 0"),
    ("scale", lambda v: 0 < v <= 1, "in (0, 1] (it scales frames down)"),
    ("rescale_height", lambda v: 0 <= v <= 8192, "between 0 and 8192"),
    ("detect_period", lambda v: 1 <= v <= 25, "between 1 and 25"),
    ("search_period", lambda v: 1 <= v <= 25, "between 1 and 25"),
    ("full_search_period", lambda v: 1 <= v <= 25, "between 1 and 25"),
    ("max_persons", lambda v: v >= 1, ">= 1"),
    ("tracker_threads", lambda v: v >= 1, ">= 1"),
    ("min_face_size", lambda v: v >= 0, ">= 0"),
    ("max_face_size", lambda v: v >= 0, ">= 0"),
    ("rotate", lambda v: 0 <= v <= 360, "between 0 and 360"),
    ("rt_delay", lambda v: v > 0, "> 0 (milliseconds)"),
    ("min_score", lambda v: v <= 0, "<= 0"),
    ("min_dir_score", lambda v: v <= 0, "<= 0"),
    ("uc_max_time_diff", lambda v: 0 < v <= DAY, f"in (0, {DAY}] seconds"),
    ("uc_max_dup", lambda v: v >= 1, ">= 1"),
    ("uc_max_avg_shift", lambda v: v >= 0, ">= 0"),
    ("bbox_scale", lambda v: 0 < v <= 10, "in (0, 10]"),
    ("detectors_max", lambda v: v >= 1, ">= 1"),
    ("camera_processes", lambda v: v == AUTO_PROCESSES or 1 <= v <= MAX_CAMERA_PROCESSES,
     f"'auto' or between 1 and {MAX_CAMERA_PROCESSES}"),
    ("reload_timeout", lambda v: 0 < v <= DAY, f"in (0, {DAY}] seconds"),
    ("health_interval", lambda v: v == 0 or 1 <= v <= 300, "0 (off) or 1..300 seconds"),
    ("req_timeout", lambda v: 0 < v <= DAY, f"in (0, {DAY}] seconds"),
    ("watchdog_timeout", lambda v: 0 < v <= DAY, f"in (0, {DAY}] seconds"),
    ("decoder_threads", lambda v: 0 <= v <= 16, "between 0 and 16"),
    ("frame_queue", lambda v: 1 <= v <= 250, "between 1 and 250"),
    ("post_queue", lambda v: v >= 1, ">= 1"),
    ("spool_max_bytes", lambda v: v > 0, "> 0"),
    ("retry_max_delay", lambda v: 0 < v <= DAY, f"in (0, {DAY}] seconds"),
    ("status_port", lambda v: 0 <= v <= 65535, "between 0 and 65535"),
    ("img_arg", lambda v: bool(_FIELD_NAME_RE.match(v)), "a form field name"),
)


def option_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def validate(cfg: DetectorConfig) -> None:
    """Check ranges and option combinations; raise ConfigError naming the option."""
    for name, test, requirement in _RANGE_CHECKS:
        value = getattr(cfg, name)
        if not test(value):
            raise ConfigError(f"{option_name(name)}: must be {requirement}, got {value!r}")
    for problem in _combination_problems(cfg):
        raise ConfigError(problem)


def _combination_problems(cfg: DetectorConfig) -> list[str]:
    problems = []
    if cfg.tracker_threads > cfg.max_persons:
        problems.append(f"--tracker-threads: must be <= --max-persons ({cfg.max_persons}), "
                        f"got {cfg.tracker_threads}")
    if cfg.min_face_size and cfg.max_face_size and cfg.min_face_size > cfg.max_face_size:
        problems.append(f"--min-face-size: {cfg.min_face_size} is above --max-face-size "
                        f"{cfg.max_face_size}")
    if cfg.img_arg in RESERVED_BODY_FIELDS:
        problems.append(f"--img-arg: {cfg.img_arg!r} is a field the detector sets itself")
    if not cfg.api_url:
        problems.append("--api-url: mandatory (or api-host + api-port)")
    if not cfg.api_token.strip():
        problems.append("--api-token: mandatory")
    if cfg.camid and not cfg.source:
        problems.append("--camid: needs --source too (a single stream is --source + --camid)")
    if not cfg.source and not cfg.remote_config:
        problems.append("--remote-config: 0 needs a stream given by --source and --camid")
    if cfg.source and cfg.camera_processes > 1:
        problems.append(f"--camera-processes: {cfg.camera_processes} needs a camera list (no "
                        "--source): a single camera runs in the daemon's own process")
    if cfg.sink_url and not cfg.source:
        problems.append("--sink-url: only with a single camera (--source and --camid)")
    return problems


def format_config(cfg: DetectorConfig) -> str:
    """``key=value`` lines in the ini format (token masked), for ``--check-config`` and logs."""
    lines = ["[General]"]
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == "api_token" and value:
            value = "***"
        if f.name == "camera_processes" and value == AUTO_PROCESSES:
            value = "auto"
        lines.append(f"{f.name.replace('_', '-')}={_format_value(value)}")
    return "\n".join(lines)


def _format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):
        return ",".join(f"{k}={v.replace(',', chr(92) + ',')}" for k, v in value)
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value)
