"""The main job: the whole system on one machine, with no external server and no test media.

``python -m videodetector.demo`` (the README's first command runs it):

1. makes two short "camera" clips from face photos an installed package ships
   (day 1: persons A and B walk past; day 2: A again, and a newcomer C);
2. starts the bundled backend (``fkvideo_backend serve``) with dynamic person
   creation and friend-or-foe (a friend = seen on 2 days by the same camera);
3. registers a camera under a detector name through ``POST /v1/camera``;
4. runs ``fkvideo_detector`` in camera-list mode (``--detector-name``,
   ``--single-pass``) once per day, with ``--start-ts`` set to that day;
5. prints the persons found, their friend-or-foe status and the camera history
   with snapshot URLs, and the address of the operator console (log in there with
   the printed token); stops the backend and exits 0, or with ``--serve`` keeps it
   up for the browser until Ctrl-C (or SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from videodetector.democlip import Walker, pick_sprites, write_clip

DETECTOR_NAME = "demo-entrance"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bin_path(name: str) -> str:
    """A console script of this environment (next to the running interpreter)."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


def make_clips(workdir: Path) -> tuple[Path, Path]:
    a, b, c = pick_sprites(3)
    day1 = write_clip(workdir / "day1.mp4", [
        Walker(a, 0.2, 4.0, 90), Walker(b, 2.0, 6.0, 230, left_to_right=False)], seconds=6.5)
    day2 = write_clip(workdir / "day2.mp4", [
        Walker(a, 0.2, 4.0, 150, left_to_right=False), Walker(c, 1.8, 5.6, 60)], seconds=6.0)
    return day1, day2


class Backend:
    """``fkvideo_backend serve`` as a child process."""

    def __init__(self, data_dir: Path, port: int, host: str = "127.0.0.1") -> None:
        self.data_dir, self.port = data_dir, port
        self.host = host
        self.url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""

    def start(self) -> None:
        out = subprocess.run([bin_path("fkvideo_backend"), "token", "--data-dir",
                              str(self.data_dir)], check=True, capture_output=True, text=True)
        self.token = out.stdout.split()[-1]
        log = open(self.data_dir / "backend.log", "wb")  # noqa: SIM115 (child keeps it)
        self.proc = subprocess.Popen(
            [bin_path("fkvideo_backend"), "serve", "--host", self.host, "--port",
             str(self.port), "--data-dir", str(self.data_dir), "--person-identify", "1",
             "--person-identify-threshold", "0.75", "--friend-count", "2",
             "--friend-interval", str(7 * 24 * 3600),
             # the demo's "camera" is a clip file next to the database
             "--camera-file-roots", str(self.data_dir.parent)],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"backend exited; see {self.data_dir / 'backend.log'}")
            try:
                if self.get("/v1/galleries").status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        raise RuntimeError("backend did not start within 120 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}

    def get(self, path: str, **params: Any) -> requests.Response:
        return requests.get(self.url + path, params=params, headers=self._headers(), timeout=10)

    def call(self, method: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        resp = requests.request(method, self.url + path, json=payload, headers=self._headers(),
                                timeout=10)
        resp.raise_for_status()
        return resp.json()


def run_detector(backend: Backend, start_ts: datetime, workdir: Path) -> int:
    cmd = [bin_path("fkvideo_detector"), "--api-url", backend.url, f"--api-token={backend.token}",
           "--detector-name", DETECTOR_NAME, "--camera-url", "/v1/camera", "--single-pass",
           "--realtime", "0", "--start-ts", start_ts.strftime("%Y-%m-%d %H:%M:%S"),
           "--spool-dir", str(workdir / "spool"), "--log-level", "WARNING"]
    return subprocess.run(cmd, timeout=600).returncode


def all_pages(backend: Backend, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    resp = backend.get(path, **params)
    while True:
        resp.raise_for_status()
        body = resp.json()
        items += body["results"]
        if not body.get("next_page"):
            return items
        resp = backend.get(body["next_page"])  # path and query, per 9.1 pagination


def report(backend: Backend, cam_id: str) -> int:
    events = sorted(all_pages(backend, "/v1/history/search", cam_ids=json.dumps([cam_id])),
                    key=lambda e: e["timestamp"])
    persons: dict[int, list[dict[str, Any]]] = {}
    for event in events:
        persons.setdefault(event["person_id"], []).append(event)
    print(f"\nPersons found: {len(persons)}")
    for pid, evs in sorted(persons.items()):
        person = backend.get(f"/v1/person/id/{pid}").json()
        days = sorted({e["timestamp"][:10] for e in evs})
        status = "FRIEND" if person.get("friend") else "not a friend (foe)"
        print(f"  person {pid}: {len(evs)} sighting(s) on {len(days)} day(s) "
              f"({', '.join(days)}) -> {status}")
    print(f"\nHistory of camera {cam_id} ({len(events)} events):")
    for e in events:
        print(f"  {e['timestamp'][:19]}  person {e['person_id']}  "
              f"friend={'yes' if e['friend'] else 'no '}  snapshot {e['photo']}")
        print(f"  {'':19}  face {e['face_id']}  normalized face {e['normalized']}")
    return len(persons)


def serve_until_stopped(backend: Backend) -> None:
    """Keep the backend up for the browser until Ctrl-C or SIGTERM (or until it exits)."""
    def stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        if backend.proc is not None:
            backend.proc.wait()
            print(f"the backend exited ({backend.proc.returncode}); see "
                  f"{backend.data_dir / 'backend.log'}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\nstopping the backend")
    finally:
        signal.signal(signal.SIGTERM, previous)


def console_lines(backend: Backend, serving: bool) -> list[str]:
    lines = [f"\nOperator console: {backend.url}/",
             f"  log in with the demo's API token {backend.token}"]
    if serving:
        lines.append("  the backend stays up until you press Ctrl-C")
    else:
        lines += ["  (run the demo with --serve to keep the backend up for the console, or "
                  "serve this data again with", f"   fkvideo_backend serve --port "
                  f"{backend.port} --data-dir {backend.data_dir})"]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", help="keep clips, database and logs here (default: a temp dir)")
    ap.add_argument("--serve", action="store_true",
                    help="keep the backend (and its operator console) up after the demo "
                         "until Ctrl-C")
    ap.add_argument("--port", type=int, default=0,
                    help="the backend's port (default: a free one)")
    ap.add_argument("--host", default="127.0.0.1",
                    help="the backend's address (default 127.0.0.1; 0.0.0.0 to reach the "
                         "console from another machine)")
    args = ap.parse_args(argv)
    if not 0 <= args.port <= 65535:
        ap.error(f"--port must be 0..65535, not {args.port}")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="videodetector-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"videodetector demo; working directory {workdir}")
    day1, day2 = make_clips(workdir)
    backend = Backend(workdir / "backend", args.port or free_port(), args.host)
    (workdir / "backend").mkdir(exist_ok=True)
    try:
        backend.start()
        print(f"backend up at {backend.url} (dynamic persons on, friend = seen on 2 days)")
        cam = backend.call("POST", "/v1/camera", {"detector": DETECTOR_NAME, "url": str(day1),
                                                  "meta": "Entrance", "enabled": True})
        print(f"camera {cam['id']} registered under detector {DETECTOR_NAME!r}")
        today = datetime.now().replace(hour=9, minute=0, second=0, microsecond=0)
        for label, clip, day in (("day 1", day1, today - timedelta(days=1)),
                                 ("day 2", day2, today)):
            backend.call("PUT", f"/v1/camera/{cam['id']}", {"url": str(clip)})
            print(f"{label} ({day:%Y-%m-%d}): fkvideo_detector processes {clip.name} ...")
            code = run_detector(backend, day, workdir)
            if code != 0:
                print(f"fkvideo_detector failed with exit code {code}", file=sys.stderr)
                return 1
        found = report(backend, cam["id"])
        print(f"\ndone: {found} persons.")
        print("\n".join(console_lines(backend, args.serve)), flush=True)
        if args.serve:
            serve_until_stopped(backend)
    finally:
        backend.stop()
    return 0 if found else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
