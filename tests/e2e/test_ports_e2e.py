"""The e2e helpers' ports: the backend binds port 0 and the test reads its port back; a port
for "nothing listens there" stays bound (refusing) for as long as it is used."""

from __future__ import annotations

import http.server
import socket
import threading
from pathlib import Path

import pytest

from tests.e2e import conftest
from tests.e2e.conftest import HOST, Api, Procs, refusing_port


def test_the_started_backend_is_the_one_answering(procs: Procs, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A stranger listening on the port the old helper would have picked (``free_port`` before
    the start) is neither the backend's port nor taken for the backend."""
    stranger = http.server.ThreadingHTTPServer((HOST, 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=stranger.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(conftest, "free_port", lambda: stranger.server_address[1])
        token = procs.token(tmp_path / "data")
        backend = procs.backend(tmp_path / "data")
        assert backend.port not in (0, stranger.server_address[1])
        assert backend.url == f"http://{HOST}:{backend.port}"
        assert Api(backend.url, token).call("GET", "/v1/galleries") is not None
    finally:
        stranger.shutdown()
        stranger.server_close()


def test_a_refusing_port_refuses_while_held() -> None:
    """Connections are refused (as by a stopped backend) and no other server can take it."""
    with refusing_port() as port:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((HOST, port), timeout=5).close()
        with socket.socket() as other, pytest.raises(OSError, match="in use"):
            other.bind((HOST, port))
