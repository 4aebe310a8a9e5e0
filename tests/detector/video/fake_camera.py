"""FakeCamera: the connection handling shared by the test cameras (MJPEG over HTTP, RTSP).

A TCP server on 127.0.0.1. Each accepted connection follows ``plan[n]`` (the last entry
repeats): ``("serve", k)`` sends k frames then closes the connection, ``("stall", k)`` sends
k frames then holds the connection open, silent, until the camera stops. A subclass says how
to talk to the client and send frames (``_serve``) and what its ``url`` is.
"""

from __future__ import annotations

import socket
import threading
from typing import Self


class FakeCamera:
    def __init__(self, plan: list[tuple[str, int]], fps: float) -> None:
        self.plan = plan
        self.fps = fps
        self.connections = 0
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _serve(self, conn: socket.socket, count: int) -> bool:
        """Talk to one client and send ``count`` frames; False if the client left first."""
        raise NotImplementedError

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            mode, count = self.plan[min(self.connections, len(self.plan) - 1)]
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn, mode, count), daemon=True).start()

    def _handle(self, conn: socket.socket, mode: str, count: int) -> None:
        with conn:
            try:
                if self._serve(conn, count) and mode == "stall":
                    self._stop.wait()
            except OSError:
                pass
