"""fkvideo_backend: token, settings from flags and a facenapi-style config file, serve."""

from __future__ import annotations

import time

import pytest
import requests

from tests.backend.backend_proc import listening_url, spawn_backend
from tests.backend.conftest import Api
from videodetector.backend.auth import new_token_text
from videodetector.backend.cli import build_parser, main, settings_from_args
from videodetector.backend.server import BackendServer
from videodetector.backend.settings import Settings, SettingsError


def test_token_prints_token_as_last_word(tmp_path, capsys):
    assert main(["token", "--data-dir", str(tmp_path)]) == 0
    long_token = capsys.readouterr().out.split()[-1]
    assert len(long_token) == 32
    assert main(["token", "--short", "--data-dir", str(tmp_path)]) == 0
    short = capsys.readouterr().out.split()[-1]
    assert len(short) == 9 and short[4] == "-" and short.replace("-", "").isalnum()
    with BackendServer(Settings(data_dir=tmp_path, log_level="warning")) as srv:
        for token in (long_token, short):
            assert Api(srv.url, token).get("/v1/galleries").status_code == 200


def test_long_tokens_are_letters_and_digits_so_they_pass_as_command_line_values():
    # A token starting with "-" made `fkvideo_detector --api-token <token>` fail
    # (argparse read it as an option): 1 in 64 tokens did before this.
    tokens = [new_token_text() for _ in range(2000)]
    assert all(len(t) == 32 and t.isascii() and t.isalnum() for t in tokens)
    assert len(set(tokens)) == len(tokens)


def test_config_file_and_flags(tmp_path):
    cfg = tmp_path / "findface-facenapi.ini"
    cfg.write_text("# facenapi settings are Python\n"
                   "person_identify = True\n"
                   "friend_interval = (3600*24*7)\n"
                   "friend_count = 5\n"
                   "ffupload_url = 'http://192.168.113.88:3333'\n"
                   "mongo_host = 'localhost'  # not ours: ignored with a warning\n")
    args = build_parser().parse_args(["serve", "-c", str(cfg), "--friend-count", "2",
                                      "--person-identify-global", "--data-dir", "d"])
    s = settings_from_args(args)
    assert s.person_identify and s.person_identify_global
    assert s.friend_interval == 604800 and s.friend_count == 2  # the flag wins
    assert s.upload_url == "http://192.168.113.88:3333"
    assert str(s.data_dir) == "d" and not s.fetch_urls and s.port == 8000
    assert s.embed_max_batch == Settings().embed_max_batch
    args = build_parser().parse_args(["serve", "--embed-max-batch", "4"])
    assert settings_from_args(args).embed_max_batch == 4


@pytest.mark.parametrize("text,name", [
    ("friend_count = 'many'\n", "friend_count"),
    ("person_identify_threshold = 1.5\n", "person_identify_threshold"),
    ("gae = 'perhaps'\n", "gae"),
    ("upload_url = 'ftp://x'\n", "upload_url"),
    # timers that would overflow (the retention thread's wait, a URL fetch's socket)
    ("history_cleanup_interval = 1e20\n", "history_cleanup_interval"),
    ("fetch_timeout = 1e20\n", "fetch_timeout"),
    ("history_max_age = 1e999\n", "history_max_age"),  # inf
    ("idempotency_ttl = 1e999\n", "idempotency_ttl"),
    ("embed_max_batch = 0\n", "embed_max_batch"),
    ("embed_max_batch = 65\n", "embed_max_batch"),
])
def test_bad_settings_name_the_option(tmp_path, text, name, capsys):
    cfg = tmp_path / "bad.ini"
    cfg.write_text(text)
    with pytest.raises(SettingsError, match=name):
        settings_from_args(build_parser().parse_args(["serve", "-c", str(cfg)]))
    assert main(["serve", "-c", str(cfg)]) == 2
    assert name in capsys.readouterr().err


def test_serve_as_a_process(tmp_path):
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = spawn_backend(["--data-dir", str(tmp_path / "data"), "--preload-models", "false",
                              "--metrics-token", "prometheus-scrape-secret"], log)
    try:
        deadline = time.monotonic() + 60
        url = listening_url(proc, log_path, deadline)  # it binds port 0 and says which
        while True:
            try:
                r = requests.get(url + "/v1/galleries", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "fkvideo_backend serve did not start"
                time.sleep(0.2)
        assert r.status_code == 401 and r.json()["code"] == "AUTH_FAILED"
        assert requests.get(url + "/metrics", timeout=5).status_code == 401
        metrics = requests.get(url + "/metrics", timeout=5, headers={
            "Authorization": "Bearer prometheus-scrape-secret"}).text
        assert 'backend_requests_total{method="GET",route="/v1/galleries",status="401"} 1' \
            in metrics
        assert "backend_faces 0" in metrics
    finally:
        proc.terminate()
        proc.wait(30)
    err = log_path.read_text()
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught
    assert proc.returncode in (0, -15), err
    assert "Traceback" not in err, err


def test_shipped_example_config_parses():
    from pathlib import Path

    from videodetector.backend.settings import Settings, read_config_file

    path = Path(__file__).resolve().parents[2] / "configs" / "backend.ini"
    settings = Settings.from_mapping(read_config_file(path))
    assert settings.person_identify and settings.friend_interval == 604800
    assert settings.max_photo_bytes == 10 * 1024 * 1024


def test_faiss_does_not_tell_an_operator_which_cpu_build_it_loaded(tmp_path):
    """Every start logged four faiss.loader INFO lines, one of them "Could not load library
    with AVX2 support due to: ModuleNotFoundError(...)": a failure-looking line nobody can act
    on (faiss falls back to its generic build). They are kept for log_level debug. (A child
    process: faiss logs once, at its first import, under the logging main() set up.)"""
    import subprocess
    import sys

    code = ("import sys; from videodetector.backend.cli import main; "
            "main(sys.argv[1:]); import faiss")
    args = ["token", "--data-dir", str(tmp_path)]
    quiet = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                           text=True, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert "faiss.loader" not in quiet.stderr, quiet.stderr
    cfg = tmp_path / "debug.ini"
    cfg.write_text("log_level = 'debug'\n")
    debug = subprocess.run([sys.executable, "-c", code, *args, "-c", str(cfg)],
                           capture_output=True, text=True, timeout=120)
    assert debug.returncode == 0, debug.stderr
    assert "faiss.loader" in debug.stderr, debug.stderr
