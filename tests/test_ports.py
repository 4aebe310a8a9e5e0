"""tests/ports.py: what a held port admits."""

from __future__ import annotations

import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.ports import HOST, held_port


def test_a_held_port_refuses_connections_and_other_binds() -> None:
    with held_port() as port:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((HOST, port), timeout=5).close()
        with socket.socket() as other, pytest.raises(OSError, match="in use"):
            other.bind((HOST, port))


def test_a_server_with_so_reuseaddr_listens_on_a_held_port() -> None:
    """As the detector's status server (http.server), uvicorn's socket, PostgreSQL and FFmpeg
    do; connections then reach that server, and it keeps the port when the hold ends."""
    with held_port() as port:
        server = ThreadingHTTPServer((HOST, port), BaseHTTPRequestHandler)
    try:
        with socket.create_connection((HOST, port), timeout=5):
            server.get_request()[0].close()
    finally:
        server.server_close()
