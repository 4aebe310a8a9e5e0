"""Posts, tracks and persons per shared clip: the real daemon posting to the real backend.

    python bench/persons_clips.py                      # every shared clip, both modes
    python bench/persons_clips.py --modes realtime --clips mpf_video_01.mp4

For each clip and mode a fresh ``fkvideo_backend --person-identify 1`` is started, the
``fkvideo_detector`` runs the clip (offline: ``-r 0``; realtime: ``--source file@25:CLIP
-r 1``, paced like a live camera), and the camera's history is read back. Printed per run:
posts (history events), tracks (distinct ``(run_id, track_id)`` in ``detectorParams``),
persons (distinct ``person_id``), unassigned events, and the score of each post with its
person (``--verbose``). Nothing is written into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import _env  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)
import requests

BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
CLIPS = ["clips_smallfaces/mpf_five-second-marathon-clip.mkv", "clips_faces/mpf_video_01.mp4",
         "clips_faces/mpf_ff-region-face-motion.avi", "clips_faces/grid_bbaf2n.mpg",
         "clips_faces/grid_brbk7n.mpg", "clips_faces/grid_id2_vcd_swwp2s.mpg",
         "clips_faces/grid_lbax4n.mpg", "clips_faces/grid_lbbc2a.mpg",
         "clips_noface/imageio_cockatoo.mp4"]


def _listening_port(srv: subprocess.Popen, log_path: Path, timeout: float = 120.0) -> int:
    """The port the backend (started with ``--port 0``) says it listens on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and srv.poll() is None:
        found = re.search(r"listening on http://[\d.]+:(\d+)", log_path.read_text())
        if found:
            return int(found[1])
        time.sleep(0.1)
    raise RuntimeError(f"the backend did not start: {log_path.read_text()[-2000:]}")


def _history(url: str, token: str, cam: str) -> list[dict[str, Any]]:
    s = requests.Session()
    s.headers["Authorization"] = f"Token {token}"
    out: list[dict[str, Any]] = []
    path = "/v1/faces?limit=100"
    while path:
        body = s.get(url + path, timeout=30).json()
        out += [f for f in body["results"] if f.get("cam_id") == cam]
        path = body.get("next_page") or ""
    return sorted(out, key=lambda f: f["id"])


def run(clip: Path, mode: str, backend_args: list[str], tmp: Path) -> dict[str, Any]:
    data = tmp / f"data-{mode}-{clip.stem}"
    backend = [str(BIN / "fkvideo_backend")]
    token = subprocess.run([*backend, "token", "--data-dir", str(data)], check=True,
                           capture_output=True, text=True).stdout.split()[-1]
    log_path = tmp / f"backend-{mode}-{clip.stem}.log"
    log = open(log_path, "wb")  # noqa: SIM115
    srv = subprocess.Popen([*backend, "serve", "--host", HOST, "--port", "0",
                            "--data-dir", str(data), "--person-identify", "1",
                            "--log-level", "info", *backend_args], stdout=log,
                           stderr=subprocess.STDOUT)
    try:
        port = _listening_port(srv, log_path)
        url = f"http://{HOST}:{port}"
        for _ in range(300):
            try:
                requests.get(url + "/v1/camera", timeout=2)
                break
            except requests.RequestException:
                time.sleep(0.2)
        source = f"file@25:{clip}" if mode == "realtime" else str(clip)
        args = [str(BIN / "fkvideo_detector"), "--source", source, "--camid", "cam",
                "-r", "1" if mode == "realtime" else "0", "--api-url", f"{HOST}:{port}",
                f"--api-token={token}", "--spool-dir", str(tmp / f"spool-{mode}-{clip.stem}")]
        subprocess.run(args, check=True, capture_output=True, timeout=600,
                       env=dict(os.environ, PYTHONUNBUFFERED="1"))
        faces = _history(url, token, "cam")
    finally:
        srv.terminate()
        srv.wait(30)
        log.close()
    tracks = {(f.get("detectorParams", {}).get("run_id"), f.get("detectorParams", {})
               .get("track_id")) for f in faces}
    persons = Counter(f["person_id"] for f in faces if f["person_id"] is not None)
    return {"clip": clip.name, "mode": mode, "posts": len(faces), "tracks": len(tracks),
            "persons": len(persons), "unassigned": sum(f["person_id"] is None for f in faces),
            "faces": [(f.get("detectorParams", {}).get("track_id"),
                       f.get("detectorParams", {}).get("score"), f["x2"] - f["x1"],
                       f["person_id"]) for f in faces]}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--clips", nargs="*", default=None, help="file names (default: all)")
    ap.add_argument("--modes", nargs="*", default=["offline", "realtime"])
    ap.add_argument("--backend-arg", action="append", default=[],
                    help="extra fkvideo_backend flag (repeat), e.g. --person-min-quality=-6")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep the backends' data (images, database) in this folder")
    ns = ap.parse_args(argv)
    clips = [ns.data / c for c in CLIPS if ns.clips is None or Path(c).name in ns.clips]
    results: list[dict[str, Any]] = []
    print("| clip | mode | posts | tracks | persons | unassigned |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        tmp = str(ns.keep) if ns.keep else scratch
        Path(tmp).mkdir(parents=True, exist_ok=True)
        for clip in clips:
            if not clip.is_file():
                print(f"| {clip.name} | - | missing | | | |")
                continue
            for mode in ns.modes:
                r = run(clip, mode, ns.backend_arg, Path(tmp))
                results.append(r)
                print(f"| {r['clip']} | {mode} | {r['posts']} | {r['tracks']} | "
                      f"{r['persons']} | {r['unassigned']} |", flush=True)
                if ns.verbose:
                    print(json.dumps(r["faces"]), flush=True)
    return results


if __name__ == "__main__":
    main()
