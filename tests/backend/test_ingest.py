"""The ingestion path of detector snapshots (``/v1/face`` with photo, bbox and face0) and
what makes it fast: kept-alive connections without Nagle delays, no needless re-encoding,
group commit of concurrent requests."""

from __future__ import annotations

import asyncio
import io
import socket

import numpy as np
import pytest
from PIL import Image, ImageOps

from videodetector.backend.imaging import decode_photo
from videodetector.backend.server import bind_socket


def test_accepted_connections_have_nagle_off() -> None:
    """asyncio sets TCP_NODELAY only on sockets whose ``proto`` is IPPROTO_TCP; with the
    listener made as ``socket(family, SOCK_STREAM)`` (proto 0) every second write of a
    response on a kept-alive connection waited for the client's delayed ACK (~40 ms)."""
    listener = bind_socket("127.0.0.1", 0)
    port = listener.getsockname()[1]
    seen: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, sock=listener)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(main())
    assert seen and seen[0] != 0


def _old_decode(data: bytes) -> np.ndarray:
    """decode_photo's pixels as they were made before (four copies)."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        rgb = ImageOps.exif_transpose(im).convert("RGB")
    return np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])


def _encoded(image: Image.Image, fmt: str, orientation: int = 1) -> bytes:
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    image.save(buf, format=fmt, exif=exif.tobytes()) if fmt == "JPEG" else image.save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("mode,fmt,orientation", [
    ("RGB", "JPEG", 1), ("RGB", "JPEG", 6), ("RGB", "JPEG", 3), ("L", "JPEG", 1),
    ("RGBA", "PNG", 1), ("P", "PNG", 1), ("RGB", "WEBP", 1)])
def test_decoded_pixels_are_those_of_before(mode: str, fmt: str, orientation: int) -> None:
    """decode_photo converts an upright RGB image with one copy now; every kind of image
    still decodes to the same BGR pixels (EXIF rotation, grey, alpha, palette)."""
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 255, (37, 53, 3), np.uint8)).convert(mode)
    data = _encoded(image, fmt, orientation)
    photo = decode_photo(data, "photo", 10**7, 4096)
    assert photo.orientation == orientation
    assert photo.image.flags["C_CONTIGUOUS"] and photo.image.dtype == np.uint8
    np.testing.assert_array_equal(photo.image, _old_decode(data))
