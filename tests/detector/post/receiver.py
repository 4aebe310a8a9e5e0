"""A real local HTTP server that records multipart POSTs, for the poster tests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import Message
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

from videodetector.detector.snapshot import Snapshot


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None
    content_type: str
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode()


@dataclass(frozen=True)
class Received:
    path: str
    headers: Message
    parts: tuple[Part, ...]

    def part(self, name: str) -> Part:
        matches = [p for p in self.parts if p.name == name]
        assert len(matches) == 1, f"expected one part {name!r}, got {len(matches)}"
        return matches[0]

    def names(self) -> list[str]:
        return [p.name for p in self.parts]

    @property
    def key(self) -> str:
        return self.headers["Idempotency-Key"]


def parse_multipart(content_type: str, body: bytes) -> tuple[Part, ...]:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    msg = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    assert msg.is_multipart(), f"not multipart: {content_type}"
    parts = []
    for sub in msg.iter_parts():
        name = sub.get_param("name", header="content-disposition")
        parts.append(Part(name=str(name), filename=sub.get_filename(),
                          content_type=sub.get_content_type(),
                          data=sub.get_payload(decode=True) or b""))
    return tuple(parts)


class Receiver:
    """Records POSTs. ``status(n)`` gives the status of the n-th request (0-based)."""

    def __init__(self, status: Callable[[int], int] = lambda n: 200, delay: float = 0.0):
        self.status = status
        self.delay = delay
        self.retry_after: str | None = None  # sent as Retry-After with 429 and 503 answers
        self.received: list[Received] = []
        self.attempts = 0  # all requests, including answered with errors
        self.last_key = ""
        self.port = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def ok_keys(self) -> list[str]:
        with self._lock:
            return [r.key for r in self.received]

    def _record(self, req: Received) -> int:
        with self._lock:
            n = self.attempts
            self.attempts += 1
            self.last_key = req.key  # lets a status function answer per snapshot
            status = self.status(n)
            if 200 <= status < 300:
                self.received.append(req)
            return status

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                parts = parse_multipart(self.headers["Content-Type"], body)
                status = receiver._record(Received(self.path, self.headers, parts))
                if receiver.delay:
                    time.sleep(receiver.delay)
                payload = json.dumps({"status": status}).encode()
                self.send_response(status)
                if status in (429, 503) and receiver.retry_after is not None:
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        return Handler


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _encode(ext: str, h: int, w: int) -> bytes:
    img = np.zeros((h, w, 3), np.uint8)
    cv2.rectangle(img, (w // 4, h // 4), (3 * w // 4, 3 * h // 4), (40, 180, 220), -1)
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


JPEG = _encode(".jpg", 120, 160)
PNG = _encode(".png", 112, 112)


def make_snapshot(seq: int = 0, **changes: object) -> Snapshot:
    values: dict[str, object] = dict(
        cam_id="cam-1", track_id=7, seq=seq,
        timestamp=datetime(2017, 8, 25, 13, 9, 54, 123000),
        bbox=(62, 38, 138, 114), score=-0.000911839, direction_score=-0.568228,
        frame_jpeg=JPEG, face_png=PNG, track=((100.0, 76.0), (101.5, 77.0)),
        label="", run_id="run1",
    )
    values.update(changes)
    return Snapshot(**values)  # type: ignore[arg-type]
