"""Which requests a browser may make on the user's behalf: the ``Host`` they name and the
``Origin`` they come from. Pure functions of header values (tests drive them without a socket);
``auth.middleware`` applies them to every request before any token check. docs/security.md.

Two attacks by a web page the user merely opens, against a server that trusts its network position:

* **Cross-site requests.** Any page may ``POST`` to any address: a "simple" request (``text/plain``,
  a form) is sent without a CORS preflight, and its answer is only hidden from the page, the
  request still happens. So a request that changes state is refused when a browser says it comes
  from another site: an ``Origin`` that is neither allowed (``--cors-origin``) nor this server's
  own page, or ``Sec-Fetch-Site: cross-site``. A read from a foreign ``Origin`` (a ``fetch`` in
  CORS mode) is refused too: the browser would hide the answer anyway, and the server then holds
  no stream open for a page that cannot read it. Clients that are not browsers send no ``Origin``
  and are not affected.
* **DNS rebinding.** A page on ``evil.example`` points its name at ``127.0.0.1`` and is then "the
  same origin" as this server: its requests carry ``Host: evil.example``. A server bound to a
  loopback address accepts only loopback host names (and ``--allowed-hosts``); a server bound
  elsewhere accepts any host unless ``--allowed-hosts`` is given. An IP address cannot be rebound,
  so IP literals never count as rebinding (on loopback: loopback addresses only).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from livedata.config import Config

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that do not change state (RFC 9110); anything else is checked as a write."""

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-._")


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _port(text: str) -> int | None:
    if text.isascii() and text.isdigit() and len(text) <= 5 and 0 < int(text) < 65536:
        return int(text)
    return None


def split_host(value: str) -> tuple[str, int | None] | None:
    """``Host`` (or an origin's authority) as (lower-case name without a trailing dot, port), or
    None when it is not a host name, an IPv4 address or a bracketed IPv6 address."""
    value = value.strip()
    port: int | None = None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1:]
        ip = _ip(name)
        if not isinstance(ip, ipaddress.IPv6Address):
            return None
        if rest:
            port = _port(rest[1:]) if rest.startswith(":") else None
            if port is None:
                return None
        return str(ip), port
    name, colon, rest = value.rpartition(":")
    if not colon:
        name = value
    else:
        port = _port(rest)
        if port is None:
            return None
    name = name.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253 or not set(name) <= _NAME_CHARS or ".." in name or name.startswith("."):
        return None
    return name, port


def is_loopback_name(name: str) -> bool:
    """``localhost``, a name under ``.localhost`` (browsers resolve both to loopback and never ask
    DNS: RFC 6761), or a loopback address."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    ip = _ip(name)
    return ip is not None and ip.is_loopback


def bound_to_loopback(host: str) -> bool:
    """True when ``--host`` names only loopback addresses."""
    return is_loopback_name(host.strip("[]").lower())


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    message: str


@dataclass(frozen=True, slots=True)
class Guard:
    """The host and origin policy of one server (built once from its :class:`Config`)."""

    loopback: bool
    """Bound to a loopback address: only loopback host names (and ``allowed_hosts``)."""
    allowed_hosts: tuple[str, ...]
    """Names from ``--allowed-hosts``: exact, ``.example.com`` (it and its subdomains) or ``*``."""
    origins: frozenset[str]
    """``--cors-origin``, normalized; ``*`` allows every origin."""

    @classmethod
    def of(cls, config: Config) -> Guard:
        hosts = []
        for h in config.allowed_hosts:
            h = h.strip().lower()
            if h.endswith(".") and h != ".":
                h = h[:-1]
            if h:
                hosts.append(h)
        origins = frozenset(o.strip().rstrip("/").lower() for o in config.cors_origin if o.strip())
        return cls(bound_to_loopback(config.host), tuple(hosts), origins)

    # --- Host ---------------------------------------------------------------------------------------

    def _listed(self, name: str) -> bool:
        for h in self.allowed_hosts:
            if h == "*" or h == name or (h.startswith(".") and (name == h[1:] or name.endswith(h))):
                return True
        return False

    def trusted_name(self, name: str) -> bool:
        """A host name no page can rebind: loopback, an allowed one, or (off loopback) an IP address."""
        if is_loopback_name(name) or self._listed(name):
            return True
        return not self.loopback and _ip(name) is not None

    def check_host(self, header: str | None) -> Refusal | None:
        """None when a request naming ``header`` may be served."""
        if header is None:
            return None  # HTTP/1.0 without Host: not a browser (browsers always send one)
        parsed = split_host(header)
        if parsed is None:
            return Refusal(400, f"invalid Host header {header[:100]!r}: expected a host name or address "
                                "and an optional port")
        name = parsed[0]
        if self.trusted_name(name) or (not self.loopback and not self.allowed_hosts):
            return None
        if self.loopback:
            return Refusal(403, f"host name {name[:100]!r} is not allowed: this server listens on a loopback "
                                "address and answers loopback names only (a page may have re-pointed a DNS "
                                "name at it); behind a proxy, add the name with --allowed-hosts")
        return Refusal(403, f"host name {name[:100]!r} is not allowed: add it with --allowed-hosts")

    # --- Origin -------------------------------------------------------------------------------------

    def origin_allowed(self, origin: str, scheme: str, host_header: str | None) -> bool:
        """An origin from ``--cors-origin`` (or ``*``), or this server's own: the live view page it
        serves, under a host name no page can rebind."""
        normal = origin.strip().rstrip("/").lower()
        if "*" in self.origins or normal in self.origins:
            return True
        own = _origin_parts(normal)
        if own is None or host_header is None:
            return False
        host = split_host(host_header)
        if host is None or not self.trusted_name(host[0]):
            return False
        port = host[1] if host[1] is not None else DEFAULT_PORTS.get(scheme)
        return own == (scheme, host[0], port)

    def check_origin(self, origin: str | None, fetch_site: str | None, scheme: str, host_header: str | None,
                     writes: bool) -> Refusal | None:
        """None when a request from ``origin`` (``Sec-Fetch-Site``: ``fetch_site``) may go on.

        ``writes``: the request may change state (a method other than GET/HEAD/OPTIONS, or a
        WebSocket, whose messages may publish).
        """
        if origin is not None:
            if self.origin_allowed(origin, scheme, host_header):
                return None
            return Refusal(403, f"origin {origin[:100]!r} is not allowed: a page of another site may not "
                                "call this server; allow it with --cors-origin")
        if writes and fetch_site is not None and fetch_site.strip().lower() == "cross-site":
            return Refusal(403, "a cross-site request (Sec-Fetch-Site: cross-site) may not change data; "
                                "allow the site with --cors-origin")
        return None


def _origin_parts(origin: str) -> tuple[str, str, int | None] | None:
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme not in DEFAULT_PORTS or "/" in rest or "@" in rest:
        return None
    host = split_host(rest)
    if host is None:
        return None
    return scheme, host[0], host[1] if host[1] is not None else DEFAULT_PORTS[scheme]


__all__ = ["SAFE_METHODS", "Guard", "Refusal", "bound_to_loopback", "is_loopback_name", "split_host"]
