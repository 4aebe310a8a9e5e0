from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from videodetector.core.geometry import Rect
from videodetector.detector.config import (
    ConfigError,
    DetectorConfig,
    format_config,
    parse_body,
    parse_config,
    parse_header,
    parse_size,
    split_escaped,
)

ROOT = Path(__file__).resolve().parents[2]

# SDK 2.6 manual, 5.2.1, first example (one camera in the file).
EXAMPLE_ONE_CAMERA = """\
[General]
; Host settings
api-host=127.0.0.1
; Put your token here
api-token=RczGgVEMizRlnjHHQegNH_g9mwGl6-A1
api-port=8000

; Camera params
; If params doesn't set detector ask cameras list from server by key
; Key for receiving cameras list
;detector-name=detec1
; Camera ID
camid=local
; Stream path
; Example: rtsp:// - network stream; /dev/video0 - webcam; file@FPS:PATH - file
; with configurable FPS
source=rtsp://admin:qwert1234@192.168.104.199:554/Streaming/Channels/1
; Maximum cameras
detectors-max=20

; Motion detector scale coefficient for best performance
scale=0.3

; In realtime mode detector posts many frames wih increasing quality
; Else it sends only best frame
realtime=1

; URL that will receive frames
request-url=/v1/face/
; You can add custom head and body params to HTML POST request
head=
body-mf_selector=all,meta=User Meta
;

; Address of ntls server
license-ntls-server=127.0.0.1:3133
"""

# SDK 2.6 manual, 5.2.1, second example (cameras from the server).
EXAMPLE_REMOTE_CAMERAS = """\
[General]
; Host settings
api-host=127.0.0.1
; Put your token here
api-token=RczGgVEMizRlnjHHQegNH_g9mwGl6-A1
api-port=8000

; Camera params
; If params doesn't set detector ask cameras list from server by key
; Key for receiving cameras list
detector-name=detec1
; Camera ID
; camid=
; Stream path
; Example: rtsp:// - network stream; /dev/video0 - webcam; file@FPS:PATH - file
; source=
; Maximum cameras
detectors-max=20

; Motion detector scale coefficient for best performance
scale=0.3

; In realtime mode detector posts many frames wih increasing quality
; Else it sends only best frame
realtime=1

; URL that will receive frames
request-url=/v1/face/
; You can add custom head and body params to HTML POST request
head=
body-mf_selector=all,,meta=UserMeta
;
; Address of ntls server
license-ntls-server=127.0.0.1:3133
"""

# SDK 2.6 manual, 5.3.2 (the "| " margin removed, a dummy stream added).
EXAMPLE_FORMAT = """\
[General]
api-url=127.0.0.1:8000
api-token=1MDkdLnO6FF-PLfwmMuypTsM
license-ntls-server=192.168.10.1:3133
source-params=rtsp_transport=tcp,rtsp_flags=prefer,timeout=-1
body=galleries=testgall\\,testgal2,gender=true,age=true,emotions=true,meta=video.mp4
start-ts = 2013-01-22 12:34:56
source=file@25:/videos/in.mp4
camid=cam1
"""

MINIMAL = ["--api-url", "127.0.0.1:8000", "--api-token", "tok", "-S", "in.mp4", "--camid", "c1"]


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "fk.ini"
    path.write_text(text)
    return str(path)


def test_example_one_camera(tmp_path: Path) -> None:
    cfg = parse_config(["-c", write(tmp_path, EXAMPLE_ONE_CAMERA)])
    assert cfg.api_url == "http://127.0.0.1:8000"
    assert cfg.api_token == "RczGgVEMizRlnjHHQegNH_g9mwGl6-A1"
    assert cfg.camid == "local"
    assert cfg.source == "rtsp://admin:qwert1234@192.168.104.199:554/Streaming/Channels/1"
    assert cfg.remote_config is False  # a stream is given
    assert cfg.detectors_max == 20
    assert cfg.scale == 0.3
    assert cfg.realtime is True
    assert cfg.request_url == "/v1/face/"
    assert cfg.headers == ()
    assert cfg.body == (("mf_selector", "all"), ("meta", "User Meta"))
    assert cfg.license_ntls_server == "127.0.0.1:3133"


def test_example_remote_cameras(tmp_path: Path) -> None:
    cfg = parse_config(["-c", write(tmp_path, EXAMPLE_REMOTE_CAMERAS)])
    assert cfg.detector_name == "detec1"
    assert cfg.source == "" and cfg.camid == ""
    assert cfg.remote_config is True
    assert cfg.body == (("mf_selector", "all"), ("meta", "UserMeta"))
    assert cfg.detectors_max == 20


def test_example_file_format(tmp_path: Path) -> None:
    cfg = parse_config(["-c", write(tmp_path, EXAMPLE_FORMAT)])
    assert cfg.api_url == "http://127.0.0.1:8000"
    assert cfg.source_params == (
        ("rtsp_transport", "tcp"),
        ("rtsp_flags", "prefer"),
        ("timeout", "-1"),
    )
    assert cfg.body == (
        ("galleries", "testgall,testgal2"),
        ("gender", "true"),
        ("age", "true"),
        ("emotions", "true"),
        ("meta", "video.mp4"),
    )
    assert cfg.start_ts == datetime(2013, 1, 22, 12, 34, 56)


def test_shipped_example_parses_with_defaults() -> None:
    cfg = parse_config(["-c", str(ROOT / "configs" / "fkvideo.ini")])
    defaults = DetectorConfig()
    assert cfg.api_url == "http://127.0.0.1:8000"
    assert cfg.api_token == "CHANGE-ME"
    assert cfg.remote_config is True
    for name in ("md_threshold", "scale", "min_score", "min_dir_score", "detectors_max",
                 "reload_timeout", "camera_url", "req_timeout", "img_arg", "request_url",
                 "bbox_scale", "realtime", "rt_delay", "status_port", "post_queue"):
        assert getattr(cfg, name) == getattr(defaults, name), name


def test_shipped_example_documents_every_option() -> None:
    text = (ROOT / "configs" / "fkvideo.ini").read_text()
    for name in DetectorConfig.__dataclass_fields__:
        if name in ("config", "check_config", "requeue_rejected"):  # commands, not settings
            continue
        assert f"{name.replace('_', '-')}=" in text, name


def test_reference_defaults() -> None:
    cfg = parse_config(MINIMAL)
    assert cfg.md_threshold == 0.002
    assert cfg.min_score == -7
    assert cfg.min_dir_score == -1000
    assert cfg.detectors_max == 5
    assert cfg.reload_timeout == 15
    assert cfg.camera_url == "/v0/camera"
    assert cfg.req_timeout == 3
    assert cfg.img_arg == "photo"
    assert cfg.request_url == "/v1/face/"
    assert cfg.bbox_scale == 1
    assert cfg.realtime is False
    assert cfg.to_verify_cert is True
    assert cfg.detector_name  # host name
    assert cfg.spool_dir.endswith("spool-c1")


def test_command_line_wins_over_file(tmp_path: Path) -> None:
    ini = write(tmp_path, EXAMPLE_ONE_CAMERA)
    cfg = parse_config(["-c", ini, "--scale", "0.5", "-r", "0", "--body", "meta=cli"])
    assert cfg.scale == 0.5
    assert cfg.realtime is False
    assert cfg.body == (("meta", "cli"),)  # a list given on the command line replaces the file's
    assert cfg.detectors_max == 20  # untouched options still come from the file


def test_unknown_option_in_file_is_named(tmp_path: Path) -> None:
    ini = write(tmp_path, "[General]\napi-url=h:1\napi-token=t\nfrobnicate=3\n")
    with pytest.raises(ConfigError, match="frobnicate"):
        parse_config(["-c", ini])


def test_unknown_option_on_command_line_is_named() -> None:
    with pytest.raises(ConfigError, match="--frobnicate"):
        parse_config([*MINIMAL, "--frobnicate", "1"])


def test_abbreviations_are_not_accepted() -> None:
    with pytest.raises(ConfigError, match="--md-thr"):
        parse_config([*MINIMAL, "--md-thr", "0.1"])


def test_bad_geometry_names_roi(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--roi"):
        parse_config([*MINIMAL, "--roi", "12x34"])
    ini = write(tmp_path, "[General]\napi-url=h:1\napi-token=t\nroi=oops\n")
    with pytest.raises(ConfigError, match="--roi"):
        parse_config(["-c", ini])


def test_geometry_and_resolution_options() -> None:
    cfg = parse_config([*MINIMAL, "--rot", "150x123+300+155", "--roi", "123x122+159+220",
                        "--sink-url", "rtmp://x/live", "--sink-res", "1280x720"])
    assert cfg.rot == Rect(300, 155, 150, 123)
    assert cfg.roi == Rect(159, 220, 123, 122)
    assert cfg.sink_res == (1280, 720)


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--scale", "-1"], "--scale"),
        (["--min-score", "0.5"], "--min-score"),
        (["--min-dir-score", "1"], "--min-dir-score"),
        (["--rt-delay", "-5"], "--rt-delay"),
        (["--md-threshold", "-0.1"], "--md-threshold"),
        (["--bbox-scale", "0"], "--bbox-scale"),
        (["--detectors-max", "0"], "--detectors-max"),
        (["--rotate", "400"], "--rotate"),
        (["--max-persons", "2", "--tracker-threads", "3"], "--tracker-threads"),
        (["--min-face-size", "100", "--max-face-size", "50"], "--min-face-size"),
        (["--scale", "abc"], "--scale"),
        (["--start-ts", "yesterday"], "--start-ts"),
        (["--spool-max-bytes", "lots"], "--spool-max-bytes"),
        (["--status-port", "70000"], "--status-port"),
        (["--log-level", "chatty"], "--log-level"),
        (["--img-arg", "face0"], "--img-arg"),
        (["--body", "bbox=1"], "--body"),
        (["--headers", "Authorization: Token x"], "--headers"),
        (["--api-url", "ftp://x:1"], "--api-url"),
        # found by fuzzing the options: accepted before, then broke at run time
        (["--req-timeout", "inf"], "--req-timeout"),  # every post failed (socket overflow)
        (["--retry-max-delay", "1e20"], "--retry-max-delay"),  # the back-off wait overflowed
        (["--scale", "nan"], "--scale"),
        (["--scale", "1e6"], "--scale"),  # motion frames scaled UP a million times
        (["--rescale-height", "100000"], "--rescale-height"),
        (["--bbox-scale", "inf"], "--bbox-scale"),
        (["--min-score", "-inf"], "--min-score"),
        (["--api-token", "  "], "--api-token"),
    ],
)
def test_invalid_values_are_named(args: list[str], option: str) -> None:
    with pytest.raises(ConfigError, match=option):
        parse_config([*MINIMAL, *args])


def test_api_port_must_be_a_port() -> None:
    base = ["--api-token", "t", "-S", "x", "--camid", "c", "--api-host", "h"]
    for bad in ("0", "-1", "65536", "99999999999999999999"):
        with pytest.raises(ConfigError, match="--api-port"):
            parse_config([*base, "--api-port", bad])
    assert parse_config([*base, "--api-port", "8000"]).api_url == "http://h:8000"


def test_mandatory_and_combinations() -> None:
    with pytest.raises(ConfigError, match="--api-url"):
        parse_config(["--api-token", "t"])
    with pytest.raises(ConfigError, match="--api-token"):
        parse_config(["--api-url", "h:1"])
    base = ["--api-url", "h:1", "--api-token", "t"]
    # --source alone is fine: the camera id is derived from it (documented in the README).
    assert parse_config([*base, "-S", "/videos/x.mp4"]).camid == "x"
    with pytest.raises(ConfigError, match="--camid: needs --source"):
        parse_config([*base, "--camid", "c"])
    with pytest.raises(ConfigError, match="--remote-config"):
        parse_config([*base, "--remote-config", "0"])
    with pytest.raises(ConfigError, match="--sink-url"):
        parse_config([*base, "--sink-url", "rtmp://x"])
    cfg = parse_config([*base, "-n", "detec1"])
    assert cfg.remote_config is True and cfg.detector_name == "detec1"
    assert cfg.spool_dir.endswith("spool-detec1")


@pytest.mark.parametrize(
    ("args", "expected"),
    [([], False), (["-r"], True), (["-r", "1"], True), (["-r", "0"], False),
     (["--realtime"], True), (["--realtime=true"], True), (["--realtime", "false"], False),
     (["-r", "yes"], True), (["-r", "off"], False)],
)
def test_boolean_flags_on_command_line(args: list[str], expected: bool) -> None:
    assert parse_config([*MINIMAL, *args]).realtime is expected


def test_all_boolean_flags_accept_bare_form() -> None:
    flags = ["--realtime1844", "--disable-drops", "--draw-track", "--send-track",
             "--single-pass", "--rt-perm", "--post-uniq", "--only-norm"]
    cfg = parse_config([*MINIMAL, *flags])
    for flag in flags:
        assert getattr(cfg, flag[2:].replace("-", "_")) is True, flag
    cfg = parse_config([*MINIMAL, "--to-verify-cert", "0", "--remote-config"])
    assert cfg.to_verify_cert is False
    assert cfg.remote_config is False  # forced off by --source


@pytest.mark.parametrize("value", ["1", "true", "True", "yes", "on"])
def test_boolean_in_file(tmp_path: Path, value: str) -> None:
    ini = write(tmp_path, f"[General]\nsend-track={value}\ndisable-drops = 0\n")
    cfg = parse_config(["-c", ini, *MINIMAL])
    assert cfg.send_track is True and cfg.disable_drops is False


def test_bad_boolean_in_file_is_named(tmp_path: Path) -> None:
    ini = write(tmp_path, "[General]\nsend-track=maybe\n")
    with pytest.raises(ConfigError, match="--send-track"):
        parse_config(["-c", ini, *MINIMAL])


def test_api_host_and_port(tmp_path: Path) -> None:
    base = ["--api-token", "t", "-S", "x", "--camid", "c"]
    assert parse_config([*base, "--api-host", "10.0.0.1", "--api-port", "8000"]).api_url == (
        "http://10.0.0.1:8000"
    )
    assert parse_config([*base, "--api-host", "https://srv"]).api_url == "https://srv"
    assert parse_config([*base, "--api-host", "https://srv", "--api-port", "9"]).api_url == (
        "https://srv:9"
    )
    assert parse_config([*base, "--api-url", "https://srv:8443/api/"]).api_url == (
        "https://srv:8443/api"
    )
    # api-url wins over api-host/api-port
    cfg = parse_config([*base, "--api-url", "a:1", "--api-host", "b", "--api-port", "2"])
    assert cfg.api_url == "http://a:1"
    with pytest.raises(ConfigError, match="--api-url"):
        parse_config([*base, "--api-url", "host:notaport"])


def test_body_escaping_and_multi_values() -> None:
    assert split_escaped(r"a\,b,c\\,d") == ["a,b", "c\\", "d"]
    assert parse_body([r"galleries=testgal1\,testgal2,gender=true"]) == (
        ("galleries", "testgal1,testgal2"),
        ("gender", "true"),
    )
    # on the command line the shell removes quotes: --body galleries='testgal1,testgal2'
    assert parse_body(["galleries=testgal1,testgal2", "meta=video.mp4"]) == (
        ("galleries", "testgal1,testgal2"),
        ("meta", "video.mp4"),
    )
    assert parse_body(["url=http://x/?a=b"]) == (("url", "http://x/?a=b"),)
    with pytest.raises(ValueError, match="name=value"):
        parse_body(["novalue"])


def test_body_prefixed_keys_on_command_line() -> None:
    cfg = parse_config([*MINIMAL, "--body-mf_selector=all", "--body-meta", "User Meta",
                        "--body", "age=true"])
    assert cfg.body == (("mf_selector", "all"), ("meta", "User Meta"), ("age", "true"))


def test_headers_forms(tmp_path: Path) -> None:
    assert parse_header("xxx = yyy") == ("xxx", "yyy")
    assert parse_header("X-Url: http://a/?b=c") == ("X-Url", "http://a/?b=c")
    cfg = parse_config([*MINIMAL, "--headers", "xxx", "=", "yyy", "--headers", "kkk:ppp"])
    assert cfg.headers == (("xxx", "yyy"), ("kkk", "ppp"))
    ini = write(tmp_path, "[General]\nhead=X-A: 1\nheaders = X-B=2\nhead-X-C=3\nhead=\n")
    assert parse_config(["-c", ini, *MINIMAL]).headers == (("X-A", "1"), ("X-B", "2"),
                                                           ("X-C", "3"))
    with pytest.raises(ConfigError, match="--headers"):
        parse_config([*MINIMAL, "--headers", "no separator"])


def test_file_syntax_details(tmp_path: Path) -> None:
    ini = write(tmp_path, (
        "# hash comment\n"
        "[General]\n"
        "scale = 0.5   ; inline comment\n"
        "camid = \"quoted id\"\n"
        "source=rtsp://u:p#w@h/1\n"
        "[WebUI]\n"
        "something-else=1\n"
    ))
    cfg = parse_config(["-c", ini, "--api-url", "h:1", "--api-token", "t"])
    assert cfg.scale == 0.5
    assert cfg.camid == "quoted id"
    assert cfg.source == "rtsp://u:p#w@h/1"  # '#' without whitespace before is not a comment


def test_file_line_without_equals_is_an_error(tmp_path: Path) -> None:
    ini = write(tmp_path, "[General]\njust-a-word\n")
    with pytest.raises(ConfigError, match="line 2"):
        parse_config(["-c", ini, *MINIMAL])


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="nonexistent.ini"):
        parse_config(["-c", "/nonexistent.ini", *MINIMAL])


def test_sizes_and_misc_values() -> None:
    assert parse_size("1048576") == 1 << 20
    assert parse_size("64K") == 64 << 10
    assert parse_size("500M") == 500 << 20
    assert parse_size("2GiB") == 2 << 30
    cfg = parse_config([*MINIMAL, "--spool-max-bytes", "10M", "--log-level", "debug",
                        "--request-url", "v1/identify", "--start-ts", "2016-01-20T12:34:56",
                        "--spool-dir", "/tmp/sp", "--license-ntls-server", "1.2.3.4:3133"])
    assert cfg.spool_max_bytes == 10 << 20
    assert cfg.log_level == "DEBUG"
    assert cfg.request_url == "/v1/identify"
    assert cfg.start_ts == datetime(2016, 1, 20, 12, 34, 56)
    assert cfg.spool_dir == "/tmp/sp"


def test_format_config_masks_token_and_reparses(tmp_path: Path) -> None:
    cfg = parse_config([*MINIMAL, "--api-token", "s3cret-token", "--body", "galleries=a,b",
                        "--roi", "10x10+1+1"])
    text = format_config(cfg)
    assert "s3cret" not in text and "api-token=***" in text
    assert "roi=10x10+1+1" in text
    assert "body=galleries=a\\,b" in text
