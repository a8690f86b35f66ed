"""Header rules for the reverse proxy (RFC 9110 §7.6.1, RFC 9112 §9.6)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from tornado.httputil import HTTPHeaders, HTTPServerRequest

# RFC 9110 §7.6.1: hop-by-hop fields never cross a proxy, plus every field the message's own
# Connection header names. Proxy-Connection and Keep-Alive are the historical spellings.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Client headers that describe the path to the gateway: believed from trusted proxies only.
FORWARDING = frozenset(
    {
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "forwarded",
        "x-real-ip",
    }
)

# Never forwarded: CVE-2025-29927 (this internal header makes Next.js skip middleware), and
# Expect, which Tornado has already answered with 100 Continue before reading the body.
NEVER_FORWARD = frozenset({"x-middleware-subrequest", "expect"})


def end_to_end(headers: HTTPHeaders) -> list[tuple[str, str]]:
    """The headers that may be forwarded: hop-by-hop ones and those named in Connection removed.

    Repeated headers (several Set-Cookie) stay separate and in order.
    """
    named = {
        token.strip().lower()
        for value in headers.get_list("Connection")
        for token in value.split(",")
        if token.strip()
    }
    return [
        (name, value)
        for name, value in headers.get_all()
        if name.lower() not in HOP_BY_HOP and name.lower() not in named
    ]


class ForwardingPolicy:
    """Builds the request headers Next.js sees, with ``X-Forwarded-*`` from the gateway's view.

    From an untrusted peer, every forwarding header the client sent is dropped and replaced:
    a browser cannot make Next believe it is another IP, scheme or host. From a peer listed in
    ``trusted_proxies`` (nginx, a load balancer) they are kept, and the peer is appended to
    ``X-Forwarded-For``.
    """

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self._trusted = [ipaddress.ip_network(n, strict=False) for n in trusted_proxies]

    def is_trusted(self, peer: str) -> bool:
        if not self._trusted:
            return False
        try:
            ip = ipaddress.ip_address(peer)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._trusted)

    def upstream_headers(
        self,
        headers: HTTPHeaders,
        peer: str,
        scheme: str,
        host: str,
        port: int,
        drop: frozenset[str] = frozenset(),
    ) -> HTTPHeaders:
        """Headers for the request to Next; ``drop`` names extra headers to leave out."""
        trusted = self.is_trusted(peer)
        out = HTTPHeaders()
        for name, value in end_to_end(headers):
            lower = name.lower()
            if lower in NEVER_FORWARD or lower in drop:
                continue
            if lower in FORWARDING and (not trusted or lower == "x-forwarded-for"):
                continue
            out.add(name, value)
        prior = ", ".join(headers.get_list("X-Forwarded-For")) if trusted else ""
        out["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
        for name, value in (
            ("X-Forwarded-Proto", scheme),
            ("X-Forwarded-Host", host),
            ("X-Forwarded-Port", str(port)),
        ):
            if name not in out:
                out[name] = value
        return out


def local_port(request: HTTPServerRequest) -> int:
    """The gateway port this request arrived on (for ``X-Forwarded-Port``)."""
    stream = getattr(request.connection, "stream", None)
    try:
        return int(stream.socket.getsockname()[1])  # type: ignore[union-attr]
    except (AttributeError, OSError):
        return 443 if request.protocol == "https" else 80
