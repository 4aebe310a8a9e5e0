"""A tiny RTSP camera on 127.0.0.1 for live-source tests: H.264 over RTP, interleaved in the
RTSP TCP connection (what the detector asks for: ``rtsp_transport=tcp``).

It answers OPTIONS, DESCRIBE (an SDP with one H.264 track), SETUP (TCP interleaved only) and
PLAY, then sends frames from ``frames(i)`` at ``fps``, encoded with libx264 and packetized
per RFC 6184 (single NAL unit packets and FU-A fragments). Connections follow ``plan`` (see
tests/detector/video/fake_camera.py).
"""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Callable, Iterator
from fractions import Fraction

import av
import numpy as np

from tests.detector.video.fake_camera import FakeCamera
from tests.detector.video.media import synthetic_frame

PAYLOAD_TYPE = 96
MAX_PAYLOAD = 1400
SDP = """v=0\r
o=- 0 0 IN IP4 127.0.0.1\r
s=test camera\r
c=IN IP4 0.0.0.0\r
t=0 0\r
m=video 0 RTP/AVP 96\r
a=rtpmap:96 H264/90000\r
a=fmtp:96 packetization-mode=1\r
a=control:track0\r
"""


def nal_units(annex_b: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte stream (start codes removed)."""
    parts = re.split(b"\x00\x00\x01", annex_b)
    return [p.rstrip(b"\x00") for p in parts if p.rstrip(b"\x00")]


def rtp_payloads(nal: bytes) -> Iterator[bytes]:
    """RFC 6184 payloads for one NAL unit: itself, or FU-A fragments when it is large."""
    if len(nal) <= MAX_PAYLOAD:
        yield nal
        return
    indicator = (nal[0] & 0xE0) | 28
    kind = nal[0] & 0x1F
    body = nal[1:]
    chunks = [body[i : i + MAX_PAYLOAD] for i in range(0, len(body), MAX_PAYLOAD)]
    for i, chunk in enumerate(chunks):
        start = 0x80 if i == 0 else 0
        end = 0x40 if i == len(chunks) - 1 else 0
        yield bytes([indicator, start | end | kind]) + chunk


class RtspCamera(FakeCamera):
    def __init__(
        self,
        plan: list[tuple[str, int]],
        fps: float = 25.0,
        frames: Callable[[int], np.ndarray] = synthetic_frame,
    ) -> None:
        super().__init__(plan, fps)
        self.frames = frames

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    # -- RTSP ------------------------------------------------------------------

    def _serve(self, conn: socket.socket, count: int) -> bool:
        if not self._negotiate(conn):
            return False
        self._stream(conn, count)
        return True

    def _negotiate(self, conn: socket.socket) -> bool:
        """Answer requests until PLAY (True) or the client leaves (False)."""
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = conn.recv(4096)
                if not data:
                    return False
                buffer += data
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method = lines[0].split(" ", 1)[0]
            headers = {k.strip().lower(): v.strip()
                       for k, _, v in (line.partition(":") for line in lines[1:])}
            conn.sendall(self._answer(method, headers))
            if method == "PLAY":
                return True

    def _answer(self, method: str, headers: dict[str, str]) -> bytes:
        out = [f"CSeq: {headers.get('cseq', '0')}"]
        body = b""
        if method == "OPTIONS":
            out.append("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN")
        elif method == "DESCRIBE":
            body = SDP.encode()
            out += [f"Content-Base: {self.url}/", "Content-Type: application/sdp"]
        elif method == "SETUP":
            if "interleaved" not in headers.get("transport", ""):
                return f"RTSP/1.0 461 Unsupported Transport\r\n{out[0]}\r\n\r\n".encode()
            out += ["Transport: RTP/AVP/TCP;unicast;interleaved=0-1", "Session: 1234;timeout=60"]
        elif method == "PLAY":
            out.append("Session: 1234")
        out.append(f"Content-Length: {len(body)}")
        return ("RTSP/1.0 200 OK\r\n" + "\r\n".join(out) + "\r\n\r\n").encode() + body

    # -- RTP ---------------------------------------------------------------------

    def _stream(self, conn: socket.socket, count: int) -> None:
        first = self.frames(0)
        encoder = av.CodecContext.create("libx264", "w")
        encoder.width, encoder.height = first.shape[1], first.shape[0]
        encoder.pix_fmt = "yuv420p"
        encoder.time_base = Fraction(1, 90000)
        encoder.framerate = Fraction(self.fps).limit_denominator(1001)
        encoder.options = {"preset": "ultrafast", "tune": "zerolatency", "g": "25"}
        seq = 0
        step = 90000 / self.fps
        start = time.monotonic()
        for i in range(count):
            if self._stop.is_set():
                return
            frame = av.VideoFrame.from_ndarray(self.frames(i), format="bgr24")
            frame.pts = round(i * step)
            for packet in encoder.encode(frame):
                nals = nal_units(bytes(packet))
                payloads = [p for nal in nals for p in rtp_payloads(nal)]
                for j, payload in enumerate(payloads):
                    marker = 0x80 if j == len(payloads) - 1 else 0
                    rtp = struct.pack("!BBHII", 0x80, marker | PAYLOAD_TYPE, seq & 0xFFFF,
                                      int(packet.pts or 0) & 0xFFFFFFFF, 0x1234ABCD) + payload
                    conn.sendall(b"$\x00" + struct.pack("!H", len(rtp)) + rtp)
                    seq += 1
            # frame i+1 is due at start + (i+1)/fps: the encoding time is not added to the
            # period (the stream keeps its nominal rate while the host keeps up)
            time.sleep(max(0.0, start + (i + 1) / self.fps - time.monotonic()))
