"""Realtime latency: how long after a face's frame its post leaves ``fkvideo_detector -r 1``.

Run from the project root (about 40 s):

    python bench/bench_latency.py [--seconds 24] [--clip PATH] [--detector-args "--rt-perm 1"]

A fake RTSP camera (``tests/detector/video/rtsp_camera.py``, H.264 over RTP at 25 fps)
plays the clip (default: the synthetic 1280x720 indoor clip of bench_detector.py, faces
walking in every 8 s) to a real ``fkvideo_detector --source rtsp://... -r 1`` process that
posts to a local HTTP receiver answering 200. A live source's snapshot carries the wall-clock
time its frame was read by the daemon (``timestamp``: no ``--start-ts``, so it is
``Frame.wall_time``); the receiver notes the wall-clock time each post arrives. Both clocks
are this machine's, so

    latency = arrival time - timestamp

covers everything after the frame was read: the reader's queue, the pipeline (motion,
detection, tracking, quality, snapshot encoding), the spool write, the poster's queue and the
HTTP request. With the default ``--rt-perm 0`` the first post of a track is the first
postable face of that track, posted at once (SDK 5.1.2: the quality threshold starts at
``min-score``), so the latency of **first posts** (sequence 0 of each track) is the
"face became postable -> first post" figure; **all posts** adds the later posts of
increasing quality (a post waits for ``rt-delay`` after the previous one by design, so its
latency counts from the frame it shows, which may be held until then: that part is the mode's
semantics). Frames the tracker needs to confirm a new face come before "postable" and are not
counted.

Printed: posts, tracks, p50 / p95 / max latency of first posts and of all posts, frames the
daemon processed, and the load average (on a shared machine the figures are floors).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import _env  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)
import numpy as np
from _env import ROOT
from bench_detector import format_table, indoor_clip, machine_line

from tests.detector.video.rtsp_camera import RtspCamera
from videodetector.detector.video.source import open_video

FPS = 25
STREAM_GAP = 2.0  # the daemon posts a silent live stream's tracks after this (camera.py)
TIMESTAMP = re.compile(rb'name="timestamp"\r\n\r\n([^\r\n]+)\r\n')


class _Record(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        arrived = time.time()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        found = TIMESTAMP.search(body)
        key = self.headers.get("Idempotency-Key", "")
        if found:
            self.server.posts.append((arrived, key, found.group(1).decode()))  # type: ignore
        reply = b'{"results": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


class RecordingReceiver:
    """A local HTTP server answering 200 and recording (arrival, key, timestamp) per post."""

    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Record)
        self.httpd.daemon_threads = True
        self.httpd.posts = []  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def posts(self) -> list[tuple[float, str, str]]:
        return list(self.httpd.posts)  # type: ignore[attr-defined]

    def __enter__(self) -> RecordingReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def frames_of(clip: Path) -> Iterator[np.ndarray]:
    """The clip's frames in a loop, decoded as the camera sends them."""
    while True:
        with open_video(str(clip)) as video:
            for frame in video:
                yield frame.image


def post_latencies(posts: Sequence[tuple[float, str, str]]) -> tuple[list[float], list[float],
                                                                      int]:
    """(latency of every post, of every track's first post, tracks) in seconds.

    ``key`` is the idempotency key ``cam:run:position:track:seq``; ``timestamp`` ISO 8601."""
    every, first, tracks = [], [], set()
    for arrived, key, stamp in posts:
        latency = arrived - datetime.fromisoformat(stamp).timestamp()
        every.append(latency)
        track, seq = key.rsplit(":", 2)[-2:]
        tracks.add(track)
        if seq == "0":
            first.append(latency)
    return every, first, len(tracks)


def pct(values: Sequence[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3) if values else float("nan")


def run(clip: Path, seconds: float, detector_args: Sequence[str], work: Path,
        verbose: bool = False) -> dict:
    frames = int(seconds * FPS)
    source = frames_of(clip)
    with RecordingReceiver() as receiver, RtspCamera(
            [("serve", frames), ("stall", 0)], fps=FPS, frames=lambda i: next(source)) as camera:
        program = os.environ.get("BENCH_LATENCY_DAEMON")  # a wrapper script, for profiling
        launch = [program] if program else ["-m", "videodetector.detector.cli"]
        cmd = [sys.executable, *launch, "--source", camera.url,
               "--camid", "latency", "-r", "1", "--api-url", receiver.url,
               "--api-token", "bench", "--spool-dir", str(work / "spool"),
               "--log-level", "INFO", *detector_args]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        log = (work / "daemon.log").open("w+")
        daemon = subprocess.Popen(cmd, stderr=log, stdout=log, env=env)
        try:
            deadline = time.monotonic() + seconds * 4 + 60
            # the first connection has sent every frame once the daemon opens a second one
            while camera.connections < 2 and time.monotonic() < deadline:
                if daemon.poll() is not None:
                    raise RuntimeError(f"fkvideo_detector exited {daemon.returncode}: "
                                       f"{(work / 'daemon.log').read_text()[-800:]}")
                time.sleep(0.2)
            time.sleep(STREAM_GAP + 1.5)  # the tracks of the silent stream are posted
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
            log.close()
        posts = receiver.posts
    text = (work / "daemon.log").read_text()
    processed = re.search(r"(?:stopped|ended) \((\d+) frames processed", text)
    every, first, tracks = post_latencies(posts)
    if verbose:
        for (arrived, key, stamp), latency in zip(posts, every, strict=True):
            print(f"  {arrived:.3f} {key} {stamp} {latency:.3f} s", flush=True)
        print(text[-3000:], flush=True)
    return {
        "frames_sent": frames, "processed": int(processed.group(1)) if processed else -1,
        "posts": len(every), "tracks": tracks,
        "first_p50_s": pct(first, 50), "first_p95_s": pct(first, 95),
        "first_max_s": round(max(first), 3) if first else float("nan"),
        "all_p50_s": pct(every, 50), "all_p95_s": pct(every, 95),
        "all_max_s": round(max(every), 3) if every else float("nan"),
        "load": round(os.getloadavg()[0], 2), "settings": " ".join(["-r 1", *detector_args]),
    }


COLUMNS = (
    ("settings", "settings", "<"), ("frames_sent", "frames sent", ">"),
    ("processed", "processed", ">"), ("posts", "posts", ">"), ("tracks", "tracks", ">"),
    ("first_p50_s", "first post p50 s", ">"), ("first_p95_s", "p95 s", ">"),
    ("first_max_s", "max s", ">"), ("all_p50_s", "all posts p50 s", ">"),
    ("all_p95_s", "p95 s", ">"), ("all_max_s", "max s", ">"), ("load", "load", ">"),
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=24.0, help="seconds of video sent (24)")
    p.add_argument("--clip", type=Path, help="clip to play (default: synthetic indoor 720p)")
    p.add_argument("--detector-args", default="", help="more fkvideo_detector options")
    p.add_argument("--verbose", action="store_true",
                   help="print every post: arrival, key, frame timestamp, latency")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run once; print and return the row (with the table)."""
    args = parse_args(argv)
    clip = args.clip or indoor_clip(max(args.seconds, 8.0))
    print(f"# bench_latency: {machine_line()}; clip {clip.name}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        row = run(clip, args.seconds, shlex.split(args.detector_args), Path(tmp), args.verbose)
    table = format_table([row], COLUMNS)
    print()
    print(table, flush=True)
    return {**row, "table": table, "machine": machine_line()}


if __name__ == "__main__":
    main()
