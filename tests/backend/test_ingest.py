"""The ingestion path of detector snapshots (``/v1/face`` with photo, bbox and face0) and
what makes it fast: kept-alive connections without Nagle delays, no needless re-encoding,
group commit of concurrent requests."""

from __future__ import annotations

import asyncio
import socket

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
