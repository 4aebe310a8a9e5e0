"""A tiny multipart-MJPEG HTTP server on 127.0.0.1 for live-source tests.

Each accepted connection is handled according to ``plan[n]`` (the last entry repeats):
``("serve", k)`` sends k frames then closes the connection, ``("stall", k)`` sends k frames then
holds the connection open without sending anything until the server stops.
"""

from __future__ import annotations

import socket
import threading
import time

import cv2

from tests.video.media import synthetic_frame

BOUNDARY = b"frame"


class MjpegServer:
    def __init__(self, plan: list[tuple[str, int]], fps: float = 50.0) -> None:
        self.plan = plan
        self.fps = fps
        self.connections = 0
        self._sent = 0
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}/stream.mjpg"

    def __enter__(self) -> MjpegServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

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
                conn.recv(4096)
                conn.sendall(
                    b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary="
                    + BOUNDARY
                    + b"\r\n\r\n"
                )
                for _ in range(count):
                    conn.sendall(self._part())
                    time.sleep(1 / self.fps)
                if mode == "stall":
                    self._stop.wait()
            except OSError:
                pass

    def _part(self) -> bytes:
        jpeg = cv2.imencode(".jpg", synthetic_frame(self._sent % 256))[1].tobytes()
        self._sent += 1
        head = b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
        return head % (BOUNDARY, len(jpeg)) + jpeg + b"\r\n"
