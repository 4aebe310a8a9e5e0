"""Soak: one live camera through the real daemon into the real backend for a while; does memory
stay flat?

Run from the project root (default 10 minutes):

    python bench/soak.py [--minutes 10] [--interval 30]

A fake RTSP camera (``tests/detector/video/rtsp_camera.py``: H.264 over RTP in the RTSP connection)
plays the synthetic 1280x720 indoor clip of bench_detector.py in a loop at 25 fps (three faces
walk past every 8 s). ``fkvideo_backend serve`` (dynamic person creation on) and
``fkvideo_detector --source rtsp://... -r 0`` run as separate processes, exactly as on a site.
Every ``--interval`` seconds it prints the resident memory (RSS) of both processes and the
daemon's and backend's counters from their ``/metrics``. At the end: each process's RSS change
over the second half of the run: the range and the least-squares trend in MB per hour (the
first half is warm-up: model arenas, caches, the backend's index growing by design).
"""

from __future__ import annotations

import argparse
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import _env  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)
import _proc
import numpy as np
import requests
from bench_detector import indoor_clip, machine_line

from tests.detector.video.rtsp_camera import RtspCamera
from videodetector.detector.video.source import open_video

BIN = Path(sys.executable).parent
_METRIC_RE = re.compile(r'^([a-z_]+)(?:\{cam_id="([^"]*)"\})? ([0-9.eE+-]+)$')


def looped_frames(clip: Path) -> Iterator[np.ndarray]:
    """The clip's frames for ever (decoded as needed, not held in memory)."""
    while True:
        with open_video(str(clip)) as video:
            for frame in video:
                yield frame.image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident MB of the watched process; ProcessLookupError when it died (bench/_proc.py)."""
    return _proc.rss_mb(pid, gone=None)


METRICS_TOKEN = secrets.token_hex(16)  # the backend's /metrics needs a token


def metrics(url: str) -> dict[str, float]:
    try:
        text = requests.get(url, timeout=5,
                            headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    except requests.RequestException:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = _METRIC_RE.match(line.strip())
        if match:
            out[match[1]] = float(match[3])
    return out


def start(argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not come up within {timeout:g} s")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="how long to run (10)")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between samples (30)")
    return p.parse_args(argv)


Row = tuple[float, float, float, dict[str, float], dict[str, float]]  # min, RSS x2, metrics x2


def main(argv: Sequence[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    clip = indoor_clip()
    work = Path(tempfile.mkdtemp(prefix="videodetector-soak-"))
    frames = looped_frames(clip)
    backend_port, status_port = free_port(), free_port()
    token = subprocess.run([BIN / "fkvideo_backend", "token", "--data-dir", work / "backend"],
                           check=True, capture_output=True, text=True).stdout.split()[-1]
    procs: list[subprocess.Popen[bytes]] = []
    rows: list[Row] = []
    print(f"soak: {args.minutes:g} min, {machine_line()}; logs in {work}", flush=True)
    with RtspCamera([("serve", 10**9)], fps=25, frames=lambda i: next(frames)) as camera:
        try:
            backend = start([BIN / "fkvideo_backend", "serve", "--port", str(backend_port),
                             "--data-dir", work / "backend", "--person-identify", "1",
                             "--metrics-token", METRICS_TOKEN, "--log-level", "warning"],
                            work / "backend.log")
            procs.append(backend)
            wait_http(f"http://127.0.0.1:{backend_port}/metrics")
            daemon = start([BIN / "fkvideo_detector", "--source", camera.url, "--camid", "soak",
                            "-r", "0", "--api-url", f"http://127.0.0.1:{backend_port}",
                            f"--api-token={token}", "--spool-dir", work / "spool",
                            "--status-port", str(status_port), "--log-level", "WARNING"],
                           work / "daemon.log")
            procs.append(daemon)
            t0 = time.monotonic()
            print(f"{'min':>5} {'daemon MB':>10} {'backend MB':>11} {'frames':>8} {'dropped':>8} "
                  f"{'snapshots':>9} {'posted':>7} {'faces':>6}", flush=True)
            while (elapsed := time.monotonic() - t0) < args.minutes * 60:
                time.sleep(min(args.interval, args.minutes * 60 - elapsed))
                for p in procs:
                    if p.poll() is not None:
                        raise SystemExit(f"a process ended early (exit {p.returncode}); "
                                         f"see {work}")
                d = metrics(f"http://127.0.0.1:{status_port}/metrics")
                b = metrics(f"http://127.0.0.1:{backend_port}/metrics")
                row = ((time.monotonic() - t0) / 60, rss_mb(daemon.pid), rss_mb(backend.pid), d, b)
                rows.append(row)
                print(f"{row[0]:5.1f} {row[1]:10.1f} {row[2]:11.1f} "
                      f"{d.get('fkvideo_frames_processed_total', 0):8.0f} "
                      f"{d.get('fkvideo_frames_dropped_total', 0):8.0f} "
                      f"{d.get('fkvideo_snapshots_total', 0):9.0f} "
                      f"{d.get('fkvideo_posts_ok_total', 0):7.0f} "
                      f"{b.get('backend_faces', 0):6.0f}", flush=True)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)
    summarize(rows)
    return rows


def summarize(rows: list[Row]) -> None:
    """RSS trend over the second half: least-squares slope (MB/hour) and the range seen."""
    half = [r for r in rows if r[0] >= rows[-1][0] / 2]
    if len(half) < 3:
        print("too short a run for a trend")
        return
    hours = np.array([r[0] / 60 for r in half])
    for name, col in (("daemon", 1), ("backend", 2)):
        mb = np.array([r[col] for r in half])
        slope = np.polyfit(hours, mb, 1)[0]
        print(f"{name}: RSS {mb.min():.1f}-{mb.max():.1f} MB over the second half "
              f"({len(half)} samples), trend {slope:+.1f} MB/hour")


if __name__ == "__main__":
    main()
