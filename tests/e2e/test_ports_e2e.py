"""The e2e backend binds port 0 and the test reads its port back; a restart comes back on that
port, held meanwhile (tests.ports)."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from tests.e2e.conftest import HOST, Api, Procs


def test_the_backend_binds_port_0_and_comes_back_on_its_port(procs: Procs,
                                                             tmp_path: Path) -> None:
    """The port is the one the backend logged (no port picked before the start: another
    process could take it during the seconds a start takes); a restart asked for that port
    gets it, and the same data answers there."""
    token = procs.token(tmp_path / "data")
    backend = procs.backend(tmp_path / "data")
    assert backend.argv[backend.argv.index("--port") + 1] == "0"
    assert backend.port > 0 and backend.url == f"http://{HOST}:{backend.port}"
    assert Api(backend.url, token).call("GET", "/v1/galleries") is not None
    assert backend.terminate() in (0, -signal.SIGTERM), backend.tail()

    again = procs.backend(tmp_path / "data", port=backend.port, tag="2")
    assert again.url == backend.url
    assert Api(again.url, token).call("GET", "/v1/galleries") is not None
    with socket.socket() as other, pytest.raises(OSError, match="in use"):
        other.bind((HOST, backend.port))
