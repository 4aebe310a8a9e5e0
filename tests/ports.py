"""A port held for a server that cannot bind port 0 and report the port it got, or that must
come back on the same port (a restart the client under test was told about).

Servers that can bind port 0 do so and the test reads the port back (the backend's
"listening on" line, ``BackendServer.url``, a fake camera's ``port``). For the others the
port is *held*: a socket bound to it with SO_REUSEADDR that never listens. Meanwhile a
connection to it is refused (as to a server that is down), no other process's bind to port 0
or outgoing connection gets it, and a server that sets SO_REUSEADDR too (uvicorn through
``bind_socket``, ``http.server``, PostgreSQL, FFmpeg's listeners) binds and listens on it.
A port picked and freed before a start was free for anyone during the start instead."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

HOST = "127.0.0.1"


def hold_port(port: int = 0) -> socket.socket:
    """The holding socket (close it to release the port); ``port`` 0: any free one."""
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
    except OSError:
        sock.close()
        raise
    return sock


@contextmanager
def held_port(port: int = 0) -> Iterator[int]:
    """The held port number for as long as the block runs."""
    with hold_port(port) as sock:
        yield int(sock.getsockname()[1])
