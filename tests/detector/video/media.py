"""Tiny synthetic videos for the video tests.

Each frame carries its number as 8 black/white 8x8 blocks along the top edge (bit 7 first), a
bright marker in the top-left corner below them (to check orientation) and a square moving
right.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

W, H = 128, 96
BLOCK = 8
PIX_FMT = {"mjpeg": "yuvj420p"}


def synthetic_frame(index: int, width: int = W, height: int = H) -> np.ndarray:
    img = np.full((height, width, 3), 40, np.uint8)
    for bit in range(8):
        if index >> (7 - bit) & 1:
            img[:BLOCK, bit * BLOCK : (bit + 1) * BLOCK] = 255
    img[BLOCK + 4 : BLOCK + 20, 4:20] = (0, 200, 255)  # orientation marker (orange, BGR)
    x = 20 + (index * 3) % (width - 40)
    img[height // 2 : height // 2 + 16, x : x + 16] = (255, 255, 255)
    return img


def read_index(image: np.ndarray) -> int:
    """The frame number written by :func:`synthetic_frame` (image in upright orientation)."""
    gray = image.mean(axis=2)
    value = 0
    for bit in range(8):
        block = gray[1 : BLOCK - 1, bit * BLOCK + 1 : (bit + 1) * BLOCK - 1]
        value = value << 1 | int(block.mean() > 128)
    return value


def make_video(
    path: Path,
    n: int = 64,
    *,
    codec: str = "mpeg4",
    fps: int = 25,
    rotation_ccw: int | None = None,
    audio: bool = False,
    size: tuple[int, int] = (W, H),
) -> Path:
    """Write ``n`` synthetic frames; ``rotation_ccw`` sets a display matrix."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = PIX_FMT.get(codec, "yuv420p")
        if codec != "mjpeg":
            stream.options = {"g": "12"}
        if rotation_ccw is not None:
            stream.set_display_rotation(rotation_ccw)
        sound = _add_audio(out) if audio else None
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(i, *size), format="bgr24")
            out.mux(stream.encode(frame))
            if sound is not None:
                _mux_audio(out, sound, i, fps)
        out.mux(stream.encode())
        if sound is not None:
            out.mux(sound.encode())
    return path


def _add_audio(out: av.container.OutputContainer) -> av.audio.stream.AudioStream:
    sound = out.add_stream("mp2", rate=44100)
    sound.layout = "mono"
    return sound


def _mux_audio(out: av.container.OutputContainer, sound, index: int, fps: int) -> None:
    samples = 44100 // fps
    tone = (np.sin(np.arange(samples) / 10.0) * 3000).astype(np.int16).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
    frame.sample_rate = 44100
    frame.pts = index * samples
    frame.time_base = Fraction(1, 44100)
    out.mux(sound.encode(frame))
