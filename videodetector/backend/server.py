"""Run the backend with uvicorn: in the foreground (``serve``) or in a thread (``BackendServer``).

    with BackendServer(Settings(data_dir=tmp)) as server:
        token = server.create_token()
        requests.get(server.url + "/v1/galleries",
                     headers={"Authorization": f"Token {token}"})
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import uvicorn

from videodetector.backend import events
from videodetector.backend.app import create_app
from videodetector.backend.auth import create_token
from videodetector.backend.service import Backend
from videodetector.backend.settings import Settings

log = logging.getLogger(__name__)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (``port`` 0 = any free port).

    Created with ``proto=IPPROTO_TCP`` explicitly: asyncio turns Nagle's algorithm off
    (TCP_NODELAY) only on accepted sockets whose ``proto`` says TCP, and an accepted socket
    inherits the listener's. With ``proto=0`` every response on a kept-alive connection
    (headers and body are two writes) waited ~40 ms for the client's delayed ACK."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


# s an idle keep-alive connection stays open: longer than the detector's intervals (health
# reports every 5 s, camera list every 15 s). uvicorn's default, 5 s, closed the connection
# the moment the next health report went out on it (an ERROR in the detector's log); 75 s is
# nginx's default.
KEEP_ALIVE = 75


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(app, log_level=settings.log_level, access_log=False,
                          timeout_graceful_shutdown=10, server_header=False,
                          timeout_keep_alive=KEEP_ALIVE)


class Server(uvicorn.Server):
    """uvicorn that ends the live event streams when shutdown begins (else it waits its
    graceful timeout for them)."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        events.shutting_down(self.config.app)
        super().handle_exit(sig, frame)


def serve(settings: Settings) -> None:
    """Serve in the foreground until SIGINT/SIGTERM."""
    app = create_app(settings)
    sock = bind_socket(settings.host, settings.port)
    log.info("listening on http://%s:%d", settings.host, sock.getsockname()[1])
    Server(uvicorn_config(app, settings)).run(sockets=[sock])


class BackendServer:
    """The backend on ``host`` and a free port (unless ``settings.port`` is set nonzero and
    ``port`` is None) in a background thread. ``url`` is ``http://host:port``."""

    def __init__(self, settings: Settings | None = None, port: int | None = 0,
                 **changes: Any) -> None:
        settings = settings or Settings()
        if changes:
            settings = settings.with_changes(**changes)
        self.settings = settings
        self.port = settings.port if port is None else port
        self.backend: Backend | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self, timeout: float = 60.0) -> BackendServer:
        if self._thread is not None:
            raise RuntimeError("server already started")
        self.backend = Backend(self.settings)
        app = create_app(self.settings, self.backend)
        sock = bind_socket(self.settings.host, self.port)
        host, port = sock.getsockname()[:2]
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        self._server = Server(uvicorn_config(app, self.settings))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"backend-{port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the backend failed to start (see the log)")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the backend did not start within {timeout} s")
            time.sleep(0.02)
        return self

    def create_token(self, short: bool = False) -> str:
        """A new token (a new user) on this server's data directory."""
        if self.backend is None:
            raise RuntimeError("start the server first")
        return create_token(self.backend.db, short)

    def stop(self, timeout: float = 15.0) -> None:
        if self._server is not None:
            events.shutting_down(self._server.config.app)
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("backend thread did not stop within %s s", timeout)
        self._server = self._thread = None

    def __enter__(self) -> BackendServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
