"""The client address of a request: the one function every per-client rule asks.

Behind a reverse proxy every connection comes from the proxy. With ``--trusted-proxies`` (CIDRs)
the address is taken from ``Forwarded`` (RFC 7239) or, when that is absent, ``X-Forwarded-For`` -
but only when the peer itself is a trusted proxy, and only as far as the chain of trusted proxies
goes: the list is read from the right (the hop nearest to us), trusted proxies are skipped, and
the first address that is not one is the client. An address a client wrote itself at the left of
the list is so never believed unless every hop after it is trusted. Without ``--trusted-proxies``
the headers are ignored and the peer's address is the client's.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_FOR = re.compile(r'(?:^|;)\s*for\s*=\s*("[^"]*"|[^;,\s]*)', re.IGNORECASE)


class TrustedProxies:
    """The networks whose forwarding headers are believed."""

    __slots__ = ("networks",)

    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        """Raises ValueError (with the CIDR in the sentence) for one that does not parse."""
        nets: list[Network] = []
        for cidr in cidrs:
            try:
                nets.append(ipaddress.ip_network(cidr.strip(), strict=False))
            except ValueError:
                raise ValueError(f"--trusted-proxies: {cidr.strip()!r} is not an IP address or CIDR "
                                 "(e.g. 10.0.0.0/8, 127.0.0.1, ::1)") from None
        self.networks = tuple(nets)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: str) -> bool:
        ip = parse_ip(address)
        if ip is None:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)


def parse_ip(text: str) -> Address | None:
    """An IP address from a header value: ``1.2.3.4``, ``1.2.3.4:5678``, ``[::1]:80``, ``::1``."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def forwarded_chain(headers: Mapping[str, str] | web.Request) -> list[str]:
    """The forwarded-for hops, leftmost (the original client, as claimed) first.

    ``Forwarded`` wins over ``X-Forwarded-For`` when both are present; every header of the name
    counts, in order.
    """
    get_all = getattr(headers, "getall", None)

    def values(name: str) -> list[str]:
        if get_all is not None:
            return list(get_all(name, []))
        value = headers.get(name)
        return [value] if value is not None else []

    hops: list[str] = []
    forwarded = values("Forwarded")
    if forwarded:
        for header in forwarded:
            for element in header.split(","):
                m = _FOR.search(element)
                hops.append(m.group(1).strip('"') if m else "")
        return hops
    for header in values("X-Forwarded-For"):
        hops.extend(part.strip() for part in header.split(","))
    return hops


def client_address(request: web.Request, trusted: TrustedProxies) -> str:
    """The address of the client that made ``request`` (see the module's doc): the peer's, or,
    when the peer is a trusted proxy, the nearest untrusted address its headers name."""
    peer = request.remote or ""
    if not trusted or not trusted.trusts(peer):
        return peer
    hop = peer
    for claimed in reversed(forwarded_chain(request.headers)):
        ip = parse_ip(claimed)
        if ip is None:
            return hop  # "unknown", an obfuscated name, garbage: the last address we can vouch for
        hop = str(ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip)
        if not trusted.trusts(hop):
            return hop
    return hop


__all__ = ["TrustedProxies", "client_address", "forwarded_chain", "parse_ip"]
