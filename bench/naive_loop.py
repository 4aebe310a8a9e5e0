"""The naive OpenCV face loop that bench_naive.py compares fkvideo_detector with.

    python bench/naive_loop.py CLIP [--threads 2] [--max-frames N]

What one would write first with OpenCV alone: ``cv2.VideoCapture`` decoding,
``cv2.FaceDetectorYN`` (YuNet) on every frame at full size, ``cv2.FaceRecognizerSF`` (align +
SFace embedding) on every face. The model files are the pinned ones the project uses
(``videodetector.core.models.model_path``). Prints one JSON line: frames, faces, seconds
(the loop alone, model loading excluded). Kept apart from bench_naive.py so that its process
imports only what the loop needs (its whole-process time is compared too).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _env  # noqa: F401  (before numpy: sys.path, thread pools; bench/_env.py)
import cv2

from videodetector.core.models import SFACE, YUNET, model_path


def naive_loop(clip: Path, threads: int = 2, max_frames: int = 0) -> dict:
    """cv2 decode, YuNet on every frame at full size, align + SFace on every face."""
    cv2.setNumThreads(threads)
    cap = cv2.VideoCapture(str(clip))
    if not cap.isOpened():
        raise RuntimeError(f"OpenCV cannot open {clip}")
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    detector = cv2.FaceDetectorYN.create(str(model_path(YUNET)), "", (w, h), 0.6, 0.3, 5000)
    recognizer = cv2.FaceRecognizerSF.create(str(model_path(SFACE)), "")
    frames = faces = 0
    t0 = time.perf_counter()
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames += 1
        _, found = detector.detect(frame)
        for face in found if found is not None else ():
            recognizer.feature(recognizer.alignCrop(frame, face))
            faces += 1
        if max_frames and frames >= max_frames:
            break
    seconds = time.perf_counter() - t0
    cap.release()
    return {"frames": frames, "faces": faces, "seconds": seconds}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("clip", type=Path)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-frames", type=int, default=0)
    args = p.parse_args(argv)
    out = naive_loop(args.clip, args.threads, args.max_frames)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
