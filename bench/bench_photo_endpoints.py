"""CPU per request of the photo endpoints on a phone-size JPEG (issue 10: reduced-scale decode).

Run from the project root:

    python bench/bench_photo_endpoints.py [--repeat 8] [--photo FACE.jpg] [--side 4032]

A real face photo (default: the MEDS-II mugshot S001-02, 480x600) is scaled up (cubic) to
the canvas height and placed in the middle of a ``side`` x ``side * 3 / 4`` canvas (its own
edge pixels stretched sideways), encoded as a quality-90 JPEG: a 4032x3024 phone photo with
one large face. The app runs in this process (``TestClient``: the real routes, models and
SQLite, no network), with gender/age/emotions on (``gae``). For each endpoint the figure is
the median over ``--repeat`` requests (after one warm-up) of this process's CPU time
(``time.process_time``: user + sys of every thread) per request; wall time is printed too
but is not a figure on a busy machine. The load average is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _env  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)
import cv2
from _env import ROOT

DEFAULT_PHOTO = ROOT.parent / "shared" / "data" / "stills_meds" / "S001-02-t10_01.jpg"
DEFAULT_SECOND = ROOT.parent / "shared" / "data" / "stills_meds" / "S001-03-t10_01.jpg"


def phone_photo(path: Path, side: int) -> bytes:
    """``path`` scaled to the canvas height, centred on a ``side`` x ``side*3/4`` canvas."""
    image = cv2.imread(str(path))
    if image is None:
        raise SystemExit(f"cannot read {path}")
    height = side * 3 // 4
    h, w = image.shape[:2]
    face = cv2.resize(image, (round(w * height / h), height), interpolation=cv2.INTER_CUBIC)
    left = (side - face.shape[1]) // 2
    canvas = cv2.copyMakeBorder(face, 0, 0, left, side - face.shape[1] - left,
                                cv2.BORDER_REPLICATE)
    return cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def cpu_ms(call: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median CPU ms, median wall ms) of ``call`` after one warm-up."""
    call()
    cpu, wall = [], []
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        call()
        cpu.append((time.process_time() - c0) * 1000)
        wall.append((time.perf_counter() - w0) * 1000)
    return statistics.median(cpu), statistics.median(wall)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=8)
    p.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    p.add_argument("--second", type=Path, default=DEFAULT_SECOND, help="/verify's photo2")
    p.add_argument("--side", type=int, default=4032, help="the canvas's longer side")
    args = p.parse_args(argv)

    from fastapi.testclient import TestClient

    from videodetector.backend.app import create_app
    from videodetector.backend.auth import create_token
    from videodetector.backend.settings import Settings

    one, two = phone_photo(args.photo, args.side), phone_photo(args.second, args.side)
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(data_dir=Path(tmp), gae=True, preload_models=False))
        key = create_token(app.state.backend.db)
        auth = {"Authorization": f"Token {key}"}
        with TestClient(app) as client:
            def post(path: str, data: dict | None = None, **photos: bytes) -> dict:
                files = {k: (f"{k}.jpg", v, "image/jpeg") for k, v in photos.items()}
                r = client.post(path, headers=auth, files=files, data=data or {})
                if r.status_code != 200:
                    raise SystemExit(f"{path}: {r.status_code} {r.text}")
                return r.json()

            def extract(photo: bytes) -> dict:
                request = {"image": "multipart:p", "need_facen": True, "need_gender": True,
                           "need_age": True, "need_emotions": True, "need_normalized": True}
                files = {"request": (None, json.dumps({"requests": [request]})),
                         "p": ("p.jpg", photo, "image/jpeg")}
                r = client.post("/v1/extract", headers=auth, files=files)
                if r.status_code != 200 or "error" in r.json()["responses"][0]:
                    raise SystemExit(f"/v1/extract: {r.status_code} {r.text[:300]}")
                return r.json()

            box = post("/v1/detect", photo=one)["faces"][0]
            bbox = f"[[{box['x1']},{box['y1']},{box['x2']},{box['y2']}]]"
            attrs = {"gender": "true", "age": "true", "emotions": "true"}
            cases: list[tuple[str, Callable[[], object]]] = [
                ("/detect (boxes)", lambda: post("/v1/detect", photo=one)),
                ("/detect gender+age+emotions", lambda: post("/v1/detect", attrs, photo=one)),
                ("/identify (whole photo)", lambda: post("/v1/identify", photo=one)),
                ("/identify bbox", lambda: post("/v1/identify", {"bbox": bbox}, photo=one)),
                ("/verify (two photos)", lambda: post("/v1/verify", photo1=one, photo2=two)),
                ("/face (enroll)", lambda: post("/v1/face", photo=one)),
                ("/extract facen+gae+normalized", lambda: extract(one)),
            ]
            print(f"photo {args.photo.name} on a {args.side}x{args.side * 3 // 4} canvas, "
                  f"{len(one)} bytes; load {os.getloadavg()[0]:.1f} at start")
            for name, call in cases:
                c, w = cpu_ms(call, args.repeat)
                print(f"  {name:32s} CPU {c:7.1f} ms/request   (wall {w:7.1f} ms)", flush=True)
            print(f"load {os.getloadavg()[0]:.1f} at end")
        app.state.backend.close()


if __name__ == "__main__":
    main()
