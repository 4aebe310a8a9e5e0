"""A tiny multipart-MJPEG HTTP server on 127.0.0.1 for live-source tests (``plan``: see
tests/detector/video/fake_camera.py)."""

from __future__ import annotations

import socket
import time

import cv2

from tests.detector.video.fake_camera import FakeCamera
from tests.detector.video.media import synthetic_frame

BOUNDARY = b"frame"


class MjpegServer(FakeCamera):
    def __init__(self, plan: list[tuple[str, int]], fps: float = 50.0) -> None:
        super().__init__(plan, fps)
        self._sent = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def _serve(self, conn: socket.socket, count: int) -> bool:
        conn.recv(4096)
        conn.sendall(
            b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary="
            + BOUNDARY
            + b"\r\n\r\n"
        )
        for _ in range(count):
            conn.sendall(self._part())
            time.sleep(1 / self.fps)
        return True

    def _part(self) -> bytes:
        jpeg = cv2.imencode(".jpg", synthetic_frame(self._sent % 256))[1].tobytes()
        self._sent += 1
        head = b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
        return head % (BOUNDARY, len(jpeg)) + jpeg + b"\r\n"
