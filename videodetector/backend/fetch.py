"""``--fetch-urls``: GET an image URL without letting a client reach the server's own network.

The host name is resolved once; every address it resolves to must be public (not loopback,
private, link-local, multicast, reserved, unspecified or shared, also when IPv4-mapped)
unless it lies in ``fetch_allow``. The request then goes to that checked address (so a
second, different DNS answer cannot be used: no DNS rebinding), with the original ``Host``
header and TLS server name. Redirects are not followed: any answer but 200 is an error.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

import httpx

from videodetector.backend.errors import bad_param, too_large

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def address_allowed(ip: IPAddress, allow: tuple[IPNetwork, ...] = ()) -> bool:
    """True for a public unicast address, or one inside an ``allow`` network."""
    if any(ip in net for net in allow if net.version == ip.version):
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return address_allowed(ip.ipv4_mapped, allow)
    special = (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
               or ip.is_reserved or ip.is_unspecified)
    return ip.is_global and not special


async def resolve(host: str, port: int) -> list[IPAddress]:
    """All addresses of ``host`` (an IP literal is its own address)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


async def checked_address(url: httpx.URL, name: str, allow: tuple[IPNetwork, ...]
                          ) -> IPAddress:
    """The address to fetch ``url`` from; BAD_PARAM naming ``name`` if any address the host
    resolves to is not allowed."""
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        addresses = await resolve(host, port)
    except (OSError, UnicodeError, ValueError) as exc:
        raise bad_param(name, f"could not resolve the host of {name}: {exc}", str(url)) from None
    blocked = [str(a) for a in addresses if not address_allowed(a, allow)]
    if blocked or not addresses:
        raise bad_param(name, f"{name} points to a non-public address ({', '.join(blocked)}); "
                        "only public addresses are fetched (see fetch_allow)", str(url))
    return addresses[0]


async def fetch_url(url: str, name: str, limit: int, timeout: float,
                    allow: tuple[IPNetwork, ...] = ()) -> bytes:
    """GET a public, direct (no redirects) image URL, at most ``limit`` bytes."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise bad_param(name, f"{name} is not a valid URL: {exc}", url) from None
    if parsed.scheme not in ("http", "https") or not parsed.host or parsed.userinfo:
        raise bad_param(name, f"{name} must be an http(s) URL without credentials", url)
    ip = await checked_address(parsed, name, allow)
    target = parsed.copy_with(host=str(ip))
    headers = {"Host": parsed.netloc.decode("ascii")}
    extensions = {"sni_hostname": parsed.host} if parsed.scheme == "https" else {}
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False,
                                     trust_env=False) as client:
            request = client.build_request("GET", target, headers=headers,
                                           extensions=extensions)
            resp = await client.send(request, stream=True)
            try:
                if resp.status_code != 200:
                    raise bad_param(name, f"could not fetch {name}: HTTP {resp.status_code} "
                                    "(redirects are not followed)", url)
                data = bytearray()
                async for chunk in resp.aiter_bytes():
                    data.extend(chunk)
                    if len(data) > limit:
                        raise too_large(name, len(data), limit)
                return bytes(data)
            finally:
                await resp.aclose()
    except httpx.HTTPError as exc:
        raise bad_param(name, f"could not fetch {name}: {exc}", url) from None
