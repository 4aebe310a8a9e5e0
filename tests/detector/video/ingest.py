"""IngestServer: a stand-in for a media server (nginx-rtmp, mediamtx) that takes one published
RTMP or RTSP stream and decodes it, for testing ``--sink-url``.

FFmpeg itself can receive a published stream (``listen=1`` for RTMP, ``rtsp_flags=listen``
for RTSP), but only one connection, and the sink's TCP reachability check is a connection of
its own. So a small TCP front accepts any number of connections and hands each to a fresh
one-shot FFmpeg listener on an internal port; the first one that carries a stream is decoded.

It runs as its own process (``python -m tests.detector.video.ingest rtmp|rtsp [port]``): PyAV
holds the GIL while a sink connects, so a server in the sink's process could never answer it.
The process prints its URL, then one line per stream that ended:
``stream <frames> <width>x<height>``.
"""

from __future__ import annotations

import socket
import sys
import threading
import time

import av

from tests.ports import hold_port

LISTEN_SECONDS = 15


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class IngestServer:
    def __init__(self, scheme: str, path: str = "live/cam", port: int = 0) -> None:
        if scheme not in ("rtmp", "rtsp"):
            raise ValueError(f"scheme must be rtmp or rtsp, got {scheme!r}")
        self.scheme = scheme
        self.path = path
        self._front = socket.create_server(("127.0.0.1", port))
        self.url = f"{scheme}://127.0.0.1:{self._front.getsockname()[1]}/{path}"
        self._stop = threading.Event()

    def start(self) -> IngestServer:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._front.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._front.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        # FFmpeg cannot bind port 0 and say which it got: the port is held until it listens
        with hold_port() as held:
            port = held.getsockname()[1]
            threading.Thread(target=self._decode, args=(port,), daemon=True).start()
            deadline = time.monotonic() + 5
            while True:  # wait until the FFmpeg listener is up
                try:
                    upstream = socket.create_connection(("127.0.0.1", port), timeout=1)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        client.close()
                        return
                    time.sleep(0.05)
        upstream.settimeout(None)
        threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
        _pipe(upstream, client)

    def _decode(self, port: int) -> None:
        url = f"{self.scheme}://127.0.0.1:{port}/{self.path}"
        options = ({"listen": "1", "timeout": str(LISTEN_SECONDS)} if self.scheme == "rtmp"
                   else {"rtsp_flags": "listen", "listen_timeout": str(LISTEN_SECONDS)})
        frames: list[tuple[int, int]] = []
        try:
            with av.open(url, mode="r", options=options) as container:
                for frame in container.decode(video=0):
                    frames.append((frame.width, frame.height))
        except (av.FFmpegError, OSError):
            pass  # a reachability check, or the publisher went away
        if frames:
            width, height = frames[0]
            print(f"stream {len(frames)} {width}x{height}", flush=True)


def main() -> None:
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    server = IngestServer(sys.argv[1], port=port).start()
    print(server.url, flush=True)
    sys.stdin.read()  # until the test closes our stdin
    server.stop()


if __name__ == "__main__":
    main()
