"""``fkvideo_backend serve`` in a subprocess for the tests that need a real process (kill -9,
two processes on one database): on a port it picks itself and ready when it answers.

A port picked by the test before the start (bind to 0, close, pass it on) stays free for
anyone during the start, which took 25 s to the bind and 31 s to ready with ~14 busy
processes on the 2 cores (imports, OpenVINO, the models' compile): another server that took
it answered the readiness wait and got the test's requests. Here the server binds port 0 and
the test reads the port back from its "listening on" line."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, NoReturn

import requests

LISTENING = re.compile(rb"listening on http://127\.0\.0\.1:(\d+)")
# a bound on a hung start only (see above); the wait ends as soon as the server answers
START_TIMEOUT = 120.0


def start_backend(args: list[str], log: IO[bytes], log_path: Path, token: str | None = None,
                  timeout: float = START_TIMEOUT) -> tuple[subprocess.Popen[bytes], str]:
    """``serve`` with ``args`` (not --port, --host nor --log-level), its output to ``log``
    (opened on ``log_path``); returns (process, url) once it answers (``wait_ready``)."""
    proc = spawn_backend(args, log)
    return proc, wait_ready(proc, log_path, token, time.monotonic() + timeout)


def spawn_backend(args: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "videodetector.backend.cli", "serve", *args,
         "--host", "127.0.0.1", "--port", "0", "--log-level", "info"],
        stdout=log, stderr=subprocess.STDOUT)


def wait_ready(proc: subprocess.Popen[bytes], log_path: Path, token: str | None,
               deadline: float) -> str:
    """The url of ``proc`` (its port read from its log) once it answers: with 200 for
    ``token`` when given (this data, not only this process), any HTTP answer otherwise."""
    url = listening_url(proc, log_path, deadline)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the backend exited at start: " + log_path.read_text())
        if _answers(url, token):
            return url
        time.sleep(0.1)
    _give_up(proc, log_path)


def listening_url(proc: subprocess.Popen[bytes], log_path: Path, deadline: float) -> str:
    """``http://127.0.0.1:<port>`` from the "listening on" line ``proc`` logs (at info) once
    its socket is bound: ``serve`` and ``extraction-api`` with ``--port 0``."""
    while time.monotonic() < deadline:
        found = LISTENING.search(log_path.read_bytes())
        if found:
            return f"http://127.0.0.1:{int(found[1])}"
        if proc.poll() is not None:
            raise RuntimeError("the backend exited at start: " + log_path.read_text())
        time.sleep(0.05)
    _give_up(proc, log_path)


def _give_up(proc: subprocess.Popen[bytes], log_path: Path) -> NoReturn:
    proc.kill()
    proc.wait(10)
    raise TimeoutError("the backend did not start in time: " + log_path.read_text())


def _answers(url: str, token: str | None) -> bool:
    headers = {"Authorization": f"Token {token}"} if token else {}
    try:  # the socket listens while the models load (startup): a read timeout until then
        r = requests.get(url + "/v1/galleries", timeout=2, headers=headers)
    except (requests.ConnectionError, requests.Timeout):
        return False
    if token is not None and r.status_code != 200:
        raise RuntimeError(f"{url} answered {r.status_code} {r.text[:200]} to the token")
    return True
